//! The tee on a recorded response body.
//!
//! Frames go to the client exactly as the upstream sent them; a clone of
//! each data frame (a refcount, not a copy) is offered to the recorder with
//! `try_send`, so the client never waits on recording. When the recorder
//! cannot keep up, the recording is marked lossy and recorded as incomplete;
//! the response itself is untouched.
//!
//! When the client leaves before the end, the upstream body is not dropped
//! (which would close the upstream connection and lose the rest of the
//! answer): with `streams.on_disconnect = "finish"` a tracked task keeps
//! reading it to the end, for the recorder only.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use super::hub::Detached;
use crate::body::BoxError;
use crate::config::OnDisconnect;
use crate::proxy::UpstreamBody;

/// Chunks waiting for the recorder. A recorder only parses and folds, so it
/// falls this far behind only when the machine is starved; past it the
/// recording is given up (and marked incomplete) rather than buffering more
/// of a response in memory.
pub const RECORDER_QUEUE_CHUNKS: usize = 4096;

/// How a recorded response body ended, named once by whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The upstream sent its last frame.
    Complete,
    /// The upstream connection failed or went silent past the idle timeout.
    UpstreamError,
    /// The client left and the policy is to cancel.
    ClientGone,
    /// Read on after the client left for longer than `streams.max_duration_secs`.
    TooLong,
    /// Cancelled on request (`DELETE /tether/streams/{id}`, or too many detached streams).
    Cancelled,
}

#[derive(Debug, Default)]
struct TapState {
    end: Mutex<Option<End>>,
    lossy: AtomicBool,
    /// A collected body outgrew the recorder's limit: its chunks were let go.
    too_large: AtomicBool,
}

/// Starts the recorder of a collected body once the body has ended.
pub type StartRecorder = Box<dyn FnOnce(Recording) + Send>;

/// The tee's side of the recorder's queue.
pub struct Tap {
    sink: TapSink,
    state: Arc<TapState>,
}

enum TapSink {
    /// A live recorder takes every chunk as it arrives (SSE: resumers and
    /// checkpoints follow the stream).
    Live(mpsc::Sender<Bytes>),
    /// Nobody follows a whole-body response while it arrives: its chunks
    /// (refcounts) are kept here and the recorder starts once, at the end.
    /// That saves a task, a queue and a wake-up per chunk on the busiest
    /// kind of request.
    Collect {
        chunks: Vec<Bytes>,
        bytes: usize,
        max_bytes: usize,
        start: Option<StartRecorder>,
    },
}

/// The recorder's side: the chunks, then how the body ended.
pub struct Recording {
    source: Source,
    state: Arc<TapState>,
}

enum Source {
    Live(mpsc::Receiver<Bytes>),
    Collected(std::vec::IntoIter<Bytes>),
}

/// A connected tap and recording, for a recorder that runs beside the body.
pub fn tap() -> (Tap, Recording) {
    let (tx, rx) = mpsc::channel(RECORDER_QUEUE_CHUNKS);
    let state = Arc::new(TapState::default());
    (
        Tap {
            sink: TapSink::Live(tx),
            state: state.clone(),
        },
        Recording {
            source: Source::Live(rx),
            state,
        },
    )
}

/// A tap that keeps the chunks and hands them, with how the body ended, to
/// `start` once it has: for bodies that are recorded only as a whole. Past
/// `max_bytes` (the most a reply is assembled from) it lets them go rather
/// than hold a large body in memory until its end.
pub fn collecting_tap(max_bytes: usize, start: StartRecorder) -> Tap {
    Tap {
        sink: TapSink::Collect {
            chunks: Vec::new(),
            bytes: 0,
            max_bytes,
            start: Some(start),
        },
        state: Arc::default(),
    }
}

impl Tap {
    /// Offers a chunk to the recorder without waiting.
    fn offer(&mut self, data: &Bytes) {
        if self.state.lossy.load(Ordering::Relaxed) {
            return;
        }
        let kept = match &mut self.sink {
            TapSink::Live(tx) => tx.try_send(data.clone()).is_ok(),
            TapSink::Collect {
                chunks,
                bytes,
                max_bytes,
                ..
            } => {
                *bytes += data.len();
                if *bytes > *max_bytes {
                    if !self.state.too_large.swap(true, Ordering::Relaxed) {
                        *chunks = Vec::new();
                    }
                } else {
                    chunks.push(data.clone());
                }
                true
            }
        };
        if !kept {
            self.state.lossy.store(true, Ordering::Relaxed);
        }
    }

    fn finish(mut self, end: End) {
        *self.state.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
        if let TapSink::Collect { chunks, start, .. } = &mut self.sink
            && let Some(start) = start.take()
        {
            start(Recording {
                source: Source::Collected(std::mem::take(chunks).into_iter()),
                state: self.state.clone(),
            });
        }
    }
}

impl Recording {
    /// The next chunk, or `None` once the body has ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        match &mut self.source {
            Source::Live(rx) => rx.recv().await,
            Source::Collected(chunks) => chunks.next(),
        }
    }

    /// How the body ended; meaningful once [`Recording::next`] returned `None`.
    pub fn end(&self) -> End {
        self.state
            .end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(End::UpstreamError)
    }

    /// True when chunks were lost because the recorder fell behind.
    pub fn lossy(&self) -> bool {
        self.state.lossy.load(Ordering::Relaxed)
    }

    /// True when a collected body was let go for being larger than the
    /// recorder would assemble.
    pub fn too_large(&self) -> bool {
        self.state.too_large.load(Ordering::Relaxed)
    }
}

/// What to do with the upstream body when the client leaves early.
#[derive(Clone)]
pub struct Detach {
    pub policy: OnDisconnect,
    pub max_duration: Duration,
    pub tracker: TaskTracker,
    pub detached: std::sync::Arc<Detached>,
}

pub struct TeeBody {
    /// `None` once handed to a drain task or dropped on cancel.
    inner: Option<UpstreamBody>,
    /// `None` once the end is named.
    tap: Option<Tap>,
    detach: Detach,
    cancel: CancellationToken,
    /// Polled only while the upstream has nothing, so a busy stream pays nothing for it.
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl TeeBody {
    pub fn new(inner: UpstreamBody, tap: Tap, detach: Detach, cancel: CancellationToken) -> Self {
        Self {
            inner: Some(inner),
            tap: Some(tap),
            detach,
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
            cancel,
        }
    }

    fn finish(&mut self, end: End) {
        if let Some(tap) = self.tap.take() {
            tap.finish(end);
        }
    }
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(tap), Some(data)) = (&mut this.tap, frame.data_ref()) {
                    tap.offer(data);
                }
                // Once is_end_stream() is true the body may never be polled
                // again: the end must be named here, not only on `None`.
                if inner.is_end_stream() {
                    this.finish(End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(End::UpstreamError),
            Poll::Ready(None) => this.finish(End::Complete),
            Poll::Pending => {
                if this.cancelled.as_mut().poll(cx).is_ready() {
                    // Dropping the body closes the upstream connection; the
                    // client's stream ends cleanly.
                    this.inner = None;
                    this.finish(End::Cancelled);
                    return Poll::Ready(None);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        let Some(tap) = self.tap.take() else { return };
        match (self.detach.policy, self.inner.take()) {
            (_, Some(_)) if self.cancel.is_cancelled() => tap.finish(End::Cancelled),
            (OnDisconnect::Finish, Some(body)) => {
                let max = self.detach.max_duration;
                let guard = self.detach.detached.enter(self.cancel.clone());
                let cancel = self.cancel.clone();
                self.detach.tracker.spawn(async move {
                    drain(body, tap, max, cancel).await;
                    drop(guard);
                });
            }
            // Dropping the body closes the upstream connection.
            _ => tap.finish(End::ClientGone),
        }
    }
}

/// Reads the rest of an upstream body nobody is waiting for, for the
/// recorder, until it ends, `max` passes, or the stream is cancelled.
async fn drain(mut body: UpstreamBody, mut tap: Tap, max: Duration, cancel: CancellationToken) {
    let read = async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        tap.offer(data);
                    }
                }
                Some(Err(_)) => return End::UpstreamError,
                None => return End::Complete,
            }
        }
    };
    let end = tokio::select! {
        end = tokio::time::timeout(max, read) => end.unwrap_or(End::TooLong),
        () = cancel.cancelled() => End::Cancelled,
    };
    drop(body);
    tap.finish(end);
}
