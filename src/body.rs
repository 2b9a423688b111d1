//! The one response body type that every route returns, so the server can
//! hand any of them to hyper.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// The error type of a boxed body: whatever the inner body failed with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: a proxied upstream stream or a small body of tether's own.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}
