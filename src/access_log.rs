//! One log line per request, written when the response body ends (or the
//! client goes away), so a stream's line carries its whole duration and size.
//! Only the method and path are logged: query strings can carry keys
//! (`?key=` on Gemini's native API) and headers are never logged.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// How a response body ended: named once, by whichever comes first of the
/// last frame, an error, or the client dropping the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Error,
    ClientGone,
}

pub struct AccessLog {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub started: Instant,
    pub upstream: Option<Duration>,
}

impl AccessLog {
    fn write(&self, end: End, bytes: u64) {
        let total_ms = millis(self.started.elapsed());
        let upstream_ms = self.upstream.map(millis);
        tracing::info!(
            target: "tether::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            upstream_ms,
            total_ms,
            bytes,
            end = ?end,
            "request"
        );
    }
}

/// Milliseconds with microsecond precision, as log tools read them.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A response body that writes the access log line when it ends.
pub struct LoggedBody {
    inner: Body,
    log: Option<AccessLog>,
    bytes: u64,
}

impl LoggedBody {
    pub fn new(inner: Body, log: AccessLog) -> Self {
        let mut body = Self {
            inner,
            log: Some(log),
            bytes: 0,
        };
        if body.inner.is_end_stream() {
            body.finish(End::Complete);
        }
        body
    }

    fn finish(&mut self, end: End) {
        if let Some(log) = self.log.take() {
            log.write(end, self.bytes);
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // http-body's contract: once is_end_stream() is true the body
                // may never be polled again, so finish here too.
                if this.inner.is_end_stream() {
                    this.finish(End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(End::Error),
            Poll::Ready(None) => this.finish(End::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish(End::ClientGone);
    }
}
