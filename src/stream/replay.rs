//! Resume bodies: a stream's events from a position on, then live to the
//! end, byte-identical to what the first client got from there on. From
//! this replica's hub when it has the stream, else from the checkpoint store
//! (the backlog, then a blocking read of the live tail on a connection of
//! its own).
//!
//! With `ids` every event gets an `id: N` line first (N counts data events
//! from 1), for browsers' `EventSource`, which resume with `Last-Event-ID`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::watch;

use super::hub::Hub;
use crate::body::{Body, BoxError};
use crate::store::{CheckpointStore, Follower, now_ms};

/// Where a resume starts and how its events are framed.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Data events the client already has.
    pub after: u64,
    /// Prefix every event with `id: N`.
    pub ids: bool,
}

/// Events ready to send, numbered as they are queued.
struct Outbox {
    queue: VecDeque<Bytes>,
    /// Number of the last queued event (1-based), for `id:` lines.
    sent: u64,
    ids: bool,
    done: bool,
}

impl Outbox {
    fn new(options: ReplayOptions) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            sent: options.after,
            ids: options.ids,
            done: false,
        }
    }

    fn events(&mut self, events: Vec<Bytes>) {
        for event in events {
            self.sent += 1;
            let framed = if self.ids {
                let mut with_id = format!("id: {}\n", self.sent).into_bytes();
                with_id.extend_from_slice(&event);
                Bytes::from(with_id)
            } else {
                event
            };
            self.queue.push_back(framed);
        }
    }

    fn end(&mut self, tail: Option<Bytes>) {
        self.queue.extend(tail.filter(|t| !t.is_empty()));
        self.done = true;
    }
}

/// Follows a hub of this replica.
pub fn from_hub(hub: Arc<Hub>, options: ReplayOptions) -> Body {
    struct State {
        hub: Arc<Hub>,
        changes: watch::Receiver<u64>,
        outbox: Outbox,
    }
    let state = State {
        changes: hub.subscribe(),
        hub,
        outbox: Outbox::new(options),
    };
    let frames = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.outbox.queue.pop_front() {
                return Some((Ok::<_, BoxError>(Frame::data(bytes)), st));
            }
            if st.outbox.done {
                return None;
            }
            // Mark the current version seen before looking, so a change
            // after the look wakes `changed()` below.
            st.changes.borrow_and_update();
            let snapshot = st.hub.snapshot(st.outbox.sent as usize);
            if !snapshot.events.is_empty() {
                st.outbox.events(snapshot.events);
            } else if snapshot.state.is_final() {
                st.outbox.end(snapshot.tail);
            } else if st.changes.changed().await.is_err() {
                st.outbox.done = true;
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Follows a stream owned by another replica, through the checkpoint store.
/// `lapse`: a heartbeat older than this means the owner died.
pub fn from_store(
    store: Arc<dyn CheckpointStore>,
    id: String,
    options: ReplayOptions,
    lapse: Duration,
    block: Duration,
) -> Body {
    struct State {
        store: Arc<dyn CheckpointStore>,
        follower: Option<Box<dyn Follower>>,
        id: String,
        cursor: Option<String>,
        outbox: Outbox,
        lapse: Duration,
        block: Duration,
    }
    let state = State {
        store,
        follower: None,
        id,
        cursor: None,
        outbox: Outbox::new(options),
        lapse,
        block,
    };
    let frames = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.outbox.queue.pop_front() {
                return Some((Ok::<_, BoxError>(Frame::data(bytes)), st));
            }
            if st.outbox.done {
                return None;
            }
            if let Err(e) = step(
                &mut st.store,
                &mut st.follower,
                &st.id,
                &mut st.cursor,
                &mut st.outbox,
                st.lapse,
                st.block,
            )
            .await
            {
                tracing::warn!(stream = %st.id, error = %e, "resume from the store failed");
                st.outbox.done = true;
                return Some((Err(e), st));
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// One round of a store-backed resume: the backlog first, then the live tail.
async fn step(
    store: &mut Arc<dyn CheckpointStore>,
    follower: &mut Option<Box<dyn Follower>>,
    id: &str,
    cursor: &mut Option<String>,
    outbox: &mut Outbox,
    lapse: Duration,
    block: Duration,
) -> Result<(), BoxError> {
    let Some(position) = cursor.as_mut() else {
        // The owner writes what it holds now rather than at the end of its
        // batch interval, so the live tail starts without that wait.
        if let Err(e) = store.request_flush(id).await {
            tracing::debug!(stream = %id, error = %e, "could not ask for a flush");
        }
        // State first: a stream that had ended is read once, whole.
        let ended = store
            .stream_record(id)
            .await?
            .is_none_or(|r| r.effective_state(now_ms(), lapse).is_final());
        let read = store.read_events(id, outbox.sent).await?;
        outbox.events(read.events);
        if read.tail.is_some() || ended {
            outbox.end(read.tail);
        }
        *cursor = Some(read.cursor);
        return Ok(());
    };
    if follower.is_none() {
        *follower = Some(store.follower().await?);
    }
    let live = follower.as_mut().expect("set above");
    let (events, tail) = live.next(id, position, outbox.sent, block).await?;
    let quiet = events.is_empty() && tail.is_none();
    outbox.events(events);
    if tail.is_some() {
        outbox.end(tail);
        return Ok(());
    }
    if quiet {
        let ended = store
            .stream_record(id)
            .await?
            .is_none_or(|r| r.effective_state(now_ms(), lapse).is_final());
        if ended {
            // Whatever was written before the end, then stop.
            let read = store.read_events(id, outbox.sent).await?;
            outbox.events(read.events);
            outbox.end(read.tail);
        }
    }
    Ok(())
}
