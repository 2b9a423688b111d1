//! Why a request could not be forwarded, grouped by who is at fault, with the
//! one mapping to an HTTP status and an OpenAI-shaped body.

use std::time::Duration;

use http::{Response, StatusCode};

use crate::body::Body;
use crate::error::error_response;
use crate::session::InvalidSessionId;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The client's fault.
    #[error("invalid session id: {0}")]
    InvalidSession(#[from] InvalidSessionId),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("this path is reserved for tether's own routes")]
    ReservedPath,
    #[error("could not read the request body: {0}")]
    ClientBody(String),
    #[error("a credential is required: Authorization: Bearer <key> (or x-api-key)")]
    Unauthorized,
    #[error("the path has dot segments (. or ..); send it normalized")]
    DotSegments,

    // The upstream's fault.
    #[error("could not connect to the upstream: {0}")]
    Unreachable(String),
    #[error("the upstream did not accept a connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the upstream sent no response headers within {0:?}")]
    HeaderTimeout(Duration),
    #[error("the upstream failed before sending a response: {0}")]
    UpstreamFailed(String),

    // tether's own fault.
    #[error("could not build the upstream request: {0}")]
    BadUpstreamRequest(#[from] http::Error),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::InvalidSession(_) => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ReservedPath => StatusCode::NOT_FOUND,
            ProxyError::ClientBody(_) | ProxyError::DotSegments => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::Unreachable(_) | ProxyError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout(_) | ProxyError::HeaderTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::BadUpstreamRequest(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable reason, the `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::InvalidSession(_) => "invalid_session_id",
            ProxyError::PayloadTooLarge { .. } => "request_too_large",
            ProxyError::ReservedPath => "not_found",
            ProxyError::ClientBody(_) => "invalid_body",
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::DotSegments => "invalid_path",
            ProxyError::Unreachable(_) => "upstream_unreachable",
            ProxyError::ConnectTimeout(_) => "upstream_connect_timeout",
            ProxyError::HeaderTimeout(_) => "upstream_timeout",
            ProxyError::UpstreamFailed(_) => "upstream_failed",
            ProxyError::BadUpstreamRequest(_) => "internal_error",
        }
    }

    /// True when the client sent something wrong: logged quietly, not as an error.
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }

    pub fn to_response(&self) -> Response<Body> {
        let kind = match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        };
        let message = match self {
            // Internals stay in the log.
            ProxyError::BadUpstreamRequest(_) => {
                "tether could not forward this request".to_string()
            }
            other => other.to_string(),
        };
        error_response(self.status(), kind, self.code(), &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_maps_to_its_status() {
        let cases = [
            (ProxyError::InvalidSession(InvalidSessionId::Empty), 400),
            (ProxyError::PayloadTooLarge { limit: 1 }, 413),
            (ProxyError::ReservedPath, 404),
            (ProxyError::Unauthorized, 401),
            (ProxyError::DotSegments, 400),
            (ProxyError::Unreachable("refused".into()), 502),
            (ProxyError::UpstreamFailed("reset".into()), 502),
            (ProxyError::ConnectTimeout(Duration::from_secs(1)), 504),
            (ProxyError::HeaderTimeout(Duration::from_secs(1)), 504),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.to_response().status().as_u16(), status, "{error}");
        }
    }
}
