//! The upstream's response body on its way to the client. Frames pass
//! through as they arrive, untouched; the wrapper only notices an upstream
//! that goes silent for longer than `upstream.idle_timeout_secs` and ends the
//! client's stream with an error instead of letting it hang. Once it has
//! read the last frame, it gives the connection back to the plain pool.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::pool::Lease;
use crate::body::BoxError;

/// The upstream sent nothing for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    /// When the last frame arrived. The timer is re-armed from it only when it
    /// fires, so a busy stream pays for an `Instant::now()` per frame, not for
    /// a timer-wheel update.
    last_frame: Instant,
    timer: Pin<Box<Sleep>>,
    /// The plain pool's connection, given back at the end.
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, idle: Duration, lease: Option<Lease>) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            last_frame: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            lease,
        }
    }

    fn give_back(&mut self) {
        if let Some(lease) = self.lease.as_mut() {
            lease.give_back();
        }
    }

    /// Ready with the error once the upstream has been silent for `idle`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<IdleTimeout> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last_frame + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(IdleTimeout(self.idle));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last_frame = Instant::now();
                // hyper's server may not ask again once the length is read.
                if this.inner.is_end_stream() {
                    this.give_back();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.give_back();
                Poll::Ready(None)
            }
            Poll::Pending => match this.poll_idle(cx) {
                Poll::Ready(timeout) => Poll::Ready(Some(Err(timeout.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
