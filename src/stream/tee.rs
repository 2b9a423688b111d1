//! The tee on a recorded response body.
//!
//! Frames go to the client exactly as the upstream sent them; a clone of
//! each data frame (a refcount, not a copy) is offered to the recorder
//! without waiting, so the client never waits on recording. When the recorder
//! cannot keep up, the recording is marked lossy and recorded as incomplete;
//! the response itself is untouched.
//!
//! When the client leaves before the end, the upstream body is not dropped
//! (which would close the upstream connection and lose the rest of the
//! answer): with `streams.on_disconnect = "finish"` a tracked task keeps
//! reading it to the end, for the recorder only.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
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
    /// A live recorder's queue. A deque behind a mutex rather than a tokio
    /// channel: one chunk or a few wait at a time, and a channel's first
    /// block (32 slots) and semaphore cost 1.4 KiB per open stream.
    queue: Mutex<Queue>,
    /// The recorder waiting for a chunk, woken when one is queued or the
    /// tap is gone. There is one waiter, so an `AtomicWaker` serves rather
    /// than a `Notify` and its list of waiters (230 instructions less a
    /// streamed chunk, counted with `bench/callgrind.sh stream`).
    arrived: AtomicWaker,
}

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    /// The tap is gone: nothing more will come.
    closed: bool,
}

impl TapState {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next queued chunk, waiting for one; `None` once the tap is gone
    /// and the queue empty.
    async fn next_live(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            if let Some(next) = self.take() {
                return Poll::Ready(next);
            }
            self.arrived.register(cx.waker());
            // Looked at again: a chunk queued between the first look and
            // the registration woke no one.
            match self.take() {
                Some(next) => Poll::Ready(next),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next chunk (`Some(None)` when there will be none), or `None`
    /// when the recorder must wait.
    fn take(&self) -> Option<Option<Bytes>> {
        let mut queue = self.queue();
        match queue.chunks.pop_front() {
            Some(chunk) => Some(Some(chunk)),
            None => queue.closed.then_some(None),
        }
    }
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
    /// checkpoints follow the stream), through `TapState::queue`.
    Live,
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
    Live,
    Collected(std::vec::IntoIter<Bytes>),
}

/// A connected tap and recording, for a recorder that runs beside the body.
pub fn tap() -> (Tap, Recording) {
    let state = Arc::new(TapState::default());
    (
        Tap {
            sink: TapSink::Live,
            state: state.clone(),
        },
        Recording {
            source: Source::Live,
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
            TapSink::Live => {
                let mut queue = self.state.queue();
                let room = queue.chunks.len() < RECORDER_QUEUE_CHUNKS;
                if room {
                    queue.chunks.push_back(data.clone());
                    drop(queue);
                    self.state.arrived.wake();
                }
                room
            }
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
        // Named before the tap goes (its drop closes the queue).
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

impl Drop for Tap {
    fn drop(&mut self) {
        if let TapSink::Live = self.sink {
            self.state.queue().closed = true;
            self.state.arrived.wake();
        }
    }
}

impl Recording {
    /// The next chunk, or `None` once the body has ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        match &mut self.source {
            Source::Live => self.state.next_live().await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_recorder_gets_every_chunk_in_order_then_the_end() {
        let (mut tap, mut recording) = tap();
        tap.offer(&Bytes::from_static(b"one"));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(chunk) = recording.next().await {
                got.push(chunk);
            }
            (got, recording.end(), recording.lossy())
        });
        // The recorder waits on an empty queue between these.
        tokio::time::sleep(Duration::from_millis(20)).await;
        tap.offer(&Bytes::from_static(b"two"));
        tap.offer(&Bytes::from_static(b"three"));
        tap.finish(End::Complete);
        let (got, end, lossy) = reader.await.unwrap();
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
        assert_eq!(end, End::Complete);
        assert!(!lossy);
    }

    #[tokio::test]
    async fn a_recorder_that_falls_behind_loses_chunks_and_knows_it() {
        let (mut tap, mut recording) = tap();
        for _ in 0..RECORDER_QUEUE_CHUNKS + 10 {
            tap.offer(&Bytes::from_static(b"x"));
        }
        tap.finish(End::Complete);
        let mut taken = 0;
        while recording.next().await.is_some() {
            taken += 1;
        }
        assert_eq!(
            taken, RECORDER_QUEUE_CHUNKS,
            "the queue keeps what it holds"
        );
        assert!(recording.lossy());
    }
}
