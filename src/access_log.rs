//! One log line and one set of request metrics per request, written when
//! the response body ends (or the client goes away), so a stream's line
//! carries its whole duration and size. Only the method and path are logged:
//! query strings can carry keys (`?key=` on Gemini's native API) and headers
//! are never logged.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};

use std::sync::Arc;

use crate::body::{Body, BoxError};
use crate::log::AccessLine;
use crate::metrics::{Metrics, RequestFigures};

/// Which part of tether answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// A recorded API, forwarded and tee'd.
    Recorded,
    /// Forwarded as is.
    Proxy,
    /// One of tether's own routes.
    Own,
    /// Refused before anything was forwarded.
    Rejected,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Recorded => "recorded",
            RouteClass::Proxy => "proxy",
            RouteClass::Own => "own",
            RouteClass::Rejected => "rejected",
        }
    }
}

/// How a response body ended: named once, by whichever comes first of the
/// last frame, an error, or the client dropping the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Error,
    ClientGone,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Complete => "Complete",
            End::Error => "Error",
            End::ClientGone => "ClientGone",
        }
    }
}

pub struct AccessLog {
    pub request_id: String,
    pub class: RouteClass,
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub started: Instant,
    /// When the response headers were handed to hyper.
    pub headers_at: Instant,
    /// Time until the upstream's response headers, when it was asked.
    pub upstream: Option<Duration>,
    pub metrics: Arc<Metrics>,
}

impl AccessLog {
    fn write(&self, end: End, bytes: u64, first_byte: Option<Instant>) {
        let total = self.started.elapsed();
        let upstream_class = match (self.upstream, self.status.as_u16()) {
            (None, _) => "none",
            (Some(_), 200..=299) => "2xx",
            (Some(_), 300..=399) => "3xx",
            (Some(_), 400..=499) => "4xx",
            (Some(_), _) => "5xx",
        };
        let to_headers = self.headers_at.duration_since(self.started);
        let overhead = to_headers.saturating_sub(self.upstream.unwrap_or_default());
        self.metrics.request_done(&RequestFigures {
            class: self.class.as_str(),
            status: self.status.as_u16(),
            upstream: upstream_class,
            total_secs: total.as_secs_f64(),
            overhead_secs: overhead.as_secs_f64(),
            first_byte_secs: first_byte.map(|f| f.duration_since(self.started).as_secs_f64()),
        });
        if let Some(upstream) = self.upstream {
            self.metrics
                .upstream_latency
                .observe(upstream.as_secs_f64());
        }
        crate::log::access(&AccessLine {
            request_id: &self.request_id,
            class: self.class.as_str(),
            method: self.method.as_str(),
            path: &self.path,
            status: self.status.as_u16(),
            upstream: self.upstream,
            overhead,
            total,
            bytes,
            end: end.as_str(),
        });
    }
}

/// A response body that writes the access log line when it ends.
pub struct LoggedBody {
    inner: Body,
    log: Option<AccessLog>,
    bytes: u64,
    first_byte: Option<Instant>,
}

impl LoggedBody {
    pub fn new(inner: Body, log: AccessLog) -> Self {
        let mut body = Self {
            inner,
            log: Some(log),
            bytes: 0,
            first_byte: None,
        };
        if body.inner.is_end_stream() {
            body.finish(End::Complete);
        }
        body
    }

    fn finish(&mut self, end: End) {
        if let Some(log) = self.log.take() {
            log.write(end, self.bytes, self.first_byte);
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
                    if this.first_byte.is_none() {
                        this.first_byte = Some(Instant::now());
                    }
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
