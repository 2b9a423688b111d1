//! The stream hub: one per recorded stream, holding its events as they were
//! sent (numbered, byte for byte) so that any number of clients on this
//! replica can follow it from any point, live, to the end. The registry
//! keeps the hubs of active streams and, for `streams.retention_secs`, of
//! finished ones.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cancels::ControlLink;

use crate::session::SessionId;
use crate::store::StreamState;
use crate::tenant::Tenant;

/// How often at most the registry looks for expired hubs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What a follower sees at one moment.
pub struct Snapshot {
    /// Events from the asked position on.
    pub events: Vec<Bytes>,
    pub state: StreamState,
    /// Trailing bytes after the last event, once the stream has ended.
    pub tail: Option<Bytes>,
}

#[derive(Default)]
struct Log {
    events: Vec<Bytes>,
    tail: Option<Bytes>,
    state: Option<StreamState>,
    finished_at: Option<Instant>,
}

pub struct Hub {
    pub id: String,
    pub tenant: Tenant,
    pub session: SessionId,
    pub created_ms: u64,
    log: Mutex<Log>,
    /// Bumped on every new event and on the end, to wake followers.
    changed: watch::Sender<u64>,
    /// Fired by `DELETE /tether/streams/{id}`: the tee stops reading the upstream.
    cancel: CancellationToken,
    /// Wakes the checkpoint writer before its interval is up: a reader on
    /// another replica is about to follow.
    flush: tokio::sync::Notify,
    /// Set by the first flush request: from then on every new event wakes
    /// the checkpoint writer (`news`).
    followed: AtomicBool,
    /// Wakes the checkpoint writer at the end, and for each new event once
    /// the stream is `followed`. Before that the writer sleeps until its
    /// interval is up: a writer woken by every event only to wait again
    /// cost a task wake per chunk of every stream.
    news: tokio::sync::Notify,
}

impl Hub {
    pub fn new(id: String, tenant: Tenant, session: SessionId, created_ms: u64) -> Hub {
        Hub {
            id,
            tenant,
            session,
            created_ms,
            log: Mutex::default(),
            changed: watch::Sender::new(0),
            cancel: CancellationToken::new(),
            flush: tokio::sync::Notify::new(),
            followed: AtomicBool::new(false),
            news: tokio::sync::Notify::new(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes whoever follows. With nobody subscribed there is nothing to
    /// wake, and the bump is skipped: a send wakes each of the channel's
    /// eight notifiers, 630 instructions a streamed chunk of every stream.
    /// A follower subscribes before it first reads the log, so the events
    /// a skipped bump would have announced are in what it reads.
    fn bump(&self) {
        if self.changed.receiver_count() > 0 {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Appends the next event (the recorder calls this, in order).
    pub fn push(&self, event: Bytes) {
        let mut log = self.log();
        if log.state.is_none() {
            log.events.push(event);
            drop(log);
            self.bump();
            if self.followed.load(Ordering::Acquire) {
                self.news.notify_one();
            }
        }
    }

    /// Marks the end; the first call wins.
    pub fn finish(&self, state: StreamState, tail: Option<Bytes>) {
        let mut log = self.log();
        if log.state.is_some() {
            return;
        }
        log.state = Some(state);
        log.tail = tail.filter(|t| !t.is_empty());
        log.finished_at = Some(Instant::now());
        drop(log);
        self.bump();
        self.news.notify_one();
    }

    pub fn state(&self) -> StreamState {
        self.log().state.unwrap_or(StreamState::Active)
    }

    pub fn event_count(&self) -> usize {
        self.log().events.len()
    }

    /// The events from number `from` (0-based) on, and the state.
    pub fn snapshot(&self, from: usize) -> Snapshot {
        let log = self.log();
        Snapshot {
            events: log
                .events
                .get(from..)
                .map(<[Bytes]>::to_vec)
                .unwrap_or_default(),
            state: log.state.unwrap_or(StreamState::Active),
            tail: log.tail.clone(),
        }
    }

    /// Changes after this call wake `changed()` on the receiver; read the
    /// log after subscribing for what came before (see [`Hub::bump`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Asks the checkpoint writer to write what is new now, and each new
    /// event from then on.
    pub fn request_flush(&self) {
        self.followed.store(true, Ordering::Release);
        self.flush.notify_one();
    }

    /// Completes when a flush is requested.
    pub async fn flush_requested(&self) {
        self.flush.notified().await;
    }

    /// Completes when the stream has ended or, once a flush was requested,
    /// when it has a new event (several events between two calls wake it
    /// once).
    pub async fn news(&self) {
        self.news.notified().await;
    }

    /// Asks the tee to stop reading the upstream; idempotent.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    fn expired(&self, retention: Duration, now: Instant) -> bool {
        self.log()
            .finished_at
            .is_some_and(|at| now.duration_since(at) > retention)
    }
}

/// The hubs of this replica.
pub struct Registry {
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
    /// A session's latest stream on this replica.
    latest: Mutex<HashMap<(Tenant, String), String>>,
    last_sweep: Mutex<Instant>,
    retention: Duration,
    detached: Arc<Detached>,
    control: Arc<ControlLink>,
}

impl Registry {
    pub fn new(retention: Duration, max_detached: usize, detached_gauge: Gauge) -> Registry {
        Registry {
            hubs: Mutex::default(),
            latest: Mutex::default(),
            last_sweep: Mutex::new(Instant::now()),
            retention,
            detached: Arc::new(Detached::new(max_detached, detached_gauge)),
            control: Arc::default(),
        }
    }

    /// The state of this replica's subscription to control requests.
    pub fn control_link(&self) -> Arc<ControlLink> {
        self.control.clone()
    }

    pub fn insert(&self, hub: Arc<Hub>) {
        self.sweep();
        let key = (hub.tenant.clone(), hub.session.as_str().to_owned());
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, hub.id.clone());
        self.hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hub.id.clone(), hub);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Hub>> {
        self.sweep();
        self.hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The session's latest stream on this replica, if it is still kept.
    pub fn latest_of(&self, tenant: &Tenant, session: &str) -> Option<Arc<Hub>> {
        let id = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant.clone(), session.to_owned()))
            .cloned()?;
        self.get(&id)
    }

    /// Streams whose clients left and that are still read to the end.
    pub fn detached(&self) -> Arc<Detached> {
        self.detached.clone()
    }

    /// Drops finished hubs older than the retention, at most once a second.
    fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*last) < SWEEP_INTERVAL {
                return;
            }
            *last = now;
        }
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|_, hub| !hub.expired(self.retention, now));
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.retain(|_, id| hubs.contains_key(id));
    }
}

/// Detached streams, bounded: beyond `streams.max_detached` the oldest is
/// cancelled (and recorded as incomplete).
pub struct Detached {
    max: usize,
    gauge: Gauge,
    entries: Mutex<VecDeque<(u64, CancellationToken)>>,
    next: Mutex<u64>,
}

/// Leaves the detached set when dropped.
pub struct DetachedGuard {
    owner: Arc<Detached>,
    seq: u64,
}

impl Detached {
    fn new(max: usize, gauge: Gauge) -> Detached {
        Detached {
            max,
            gauge,
            entries: Mutex::default(),
            next: Mutex::new(0),
        }
    }

    /// Registers a detached stream; cancels the oldest ones over the limit.
    pub fn enter(self: &Arc<Self>, cancel: CancellationToken) -> DetachedGuard {
        let seq = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.push_back((seq, cancel));
        while entries.len() > self.max {
            if let Some((_, oldest)) = entries.pop_front() {
                tracing::warn!(
                    limit = self.max,
                    "too many detached streams: cancelling the oldest"
                );
                oldest.cancel();
            }
        }
        DetachedGuard {
            owner: self.clone(),
            seq,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for DetachedGuard {
    fn drop(&mut self) {
        let mut entries = self.owner.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(seq, _)| *seq != self.seq);
        self.owner.gauge.set(entries.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(
            "s1".into(),
            Tenant::shared(),
            SessionId::parse("c").unwrap(),
            0,
        )
    }

    #[test]
    fn snapshots_return_events_from_a_position_and_the_end() {
        let hub = hub();
        for e in ["data: a\n\n", "data: b\n\n", "data: c\n\n"] {
            hub.push(Bytes::from(e));
        }
        let snap = hub.snapshot(1);
        assert_eq!(
            snap.events,
            vec![Bytes::from("data: b\n\n"), Bytes::from("data: c\n\n")]
        );
        assert_eq!(snap.state, StreamState::Active);
        hub.finish(StreamState::Done, Some(Bytes::from(": bye\n")));
        hub.push(Bytes::from("data: late\n\n"));
        hub.finish(StreamState::Cancelled, None);
        let snap = hub.snapshot(3);
        assert!(snap.events.is_empty(), "nothing after the end");
        assert_eq!(snap.state, StreamState::Done, "the first end wins");
        assert_eq!(snap.tail, Some(Bytes::from(": bye\n")));
    }

    /// Whether `news()` completes at once, without waiting.
    fn news_ready(hub: &Hub) -> bool {
        use std::future::Future;
        let news = std::pin::pin!(hub.news());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        news.poll(&mut cx).is_ready()
    }

    #[test]
    fn the_checkpoint_writer_hears_of_events_only_once_the_stream_is_followed() {
        let hub = hub();
        hub.push(Bytes::from("data: a\n\n"));
        hub.push(Bytes::from("data: b\n\n"));
        assert!(!news_ready(&hub), "events alone wait for the interval");
        hub.request_flush();
        assert!(
            !news_ready(&hub),
            "the flush request wakes the flush branch"
        );
        hub.push(Bytes::from("data: c\n\n"));
        hub.push(Bytes::from("data: d\n\n"));
        assert!(
            news_ready(&hub),
            "a followed stream's events wake the writer"
        );
        assert!(!news_ready(&hub), "two events between looks wake it once");
        let unfollowed = self::hub();
        unfollowed.finish(StreamState::Done, None);
        assert!(news_ready(&unfollowed), "the end wakes the writer");
    }

    #[test]
    fn the_oldest_detached_stream_is_cancelled_over_the_limit() {
        let detached = Arc::new(Detached::new(2, Gauge::default()));
        let tokens: Vec<_> = (0..3).map(|_| CancellationToken::new()).collect();
        let _a = detached.enter(tokens[0].clone());
        let b = detached.enter(tokens[1].clone());
        let _c = detached.enter(tokens[2].clone());
        assert!(tokens[0].is_cancelled(), "the oldest went");
        assert!(!tokens[1].is_cancelled() && !tokens[2].is_cancelled());
        drop(b);
        assert_eq!(detached.len(), 1, "a finished drain leaves the set");
    }
}
