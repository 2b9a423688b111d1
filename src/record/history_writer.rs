//! The write-behind queue between recorders and the history store.
//!
//! Recorders hand finished turns over without waiting; `store.writers`
//! tasks write them to the store, each the turns of the sessions that hash
//! to it, so a session's turns are written in order. One writer has one
//! batch in flight at a time and is one task among hundreds: a replica
//! saturated with long conversations outruns it, and a second writer's round
//! trips overlap the first's (fewer drops), at the price of smaller batches
//! when the load is ordinary (more CPU per request): BENCHMARKS.md has both.
//! The queues share two bounds, `store.queue_capacity` turns and
//! `store.queue_max_mb` of their messages (a turn of a long conversation
//! weighs a hundred short ones), so a burst that Redis takes a while to
//! store, or an outage, waits in memory that stays bounded. When the
//! store is down each writer retries the batch at the head of its queue with
//! backoff, so turns wait (in order) instead of being lost, and are flushed
//! when the store returns. A turn that does not fit in the
//! queue is dropped, counted in `tether_history_dropped_total` and logged
//! with its session id. On shutdown the queue is flushed for what remains of
//! the grace period.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::session::SessionId;
use crate::store::{Store, Turn};
use crate::tenant::Tenant;

/// Turns written together at most: a batch is one pipeline, and this keeps
/// it to a few megabytes at most.
const WRITE_BATCH: usize = 256;

/// First and longest wait between retries of a write the store refused.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// What a queued turn weighs beyond its messages' bytes (the turn, its
/// session and tenant, the queue's slot), so that the byte bound bounds
/// memory even for turns of empty messages.
const TURN_OVERHEAD_BYTES: usize = 256;

/// The bounds of the write-behind queue, over all writers.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    pub turns: usize,
    /// The queued turns' weight ([`weight`]).
    pub bytes: usize,
}

/// What a turn weighs in the queue: its messages' bytes and its overhead.
fn weight(turn: &Turn) -> usize {
    TURN_OVERHEAD_BYTES + turn.message_bytes()
}

/// A store error that retrying will not fix (corrupt data, a wrong type) is
/// tried this often before the turn is dropped, so it cannot block the queue.
const PERMANENT_ATTEMPTS: u32 = 3;

/// A finished exchange waiting to be appended to its session's history.
/// The recorder builds the turn (`turn::build`, timestamped when the
/// exchange ended, however late the write), so the writer tasks only
/// write.
pub struct PendingTurn {
    pub tenant: Tenant,
    pub session: SessionId,
    /// Its `id` is unique per turn and kept across retries (see `Turn::id`).
    pub turn: Turn,
    /// Told when the turn is stored (true) or dropped (false).
    pub done: Option<oneshot::Sender<bool>>,
}

pub struct HistoryWriter {
    /// One queue per writer task; `None` once draining began.
    tx: std::sync::Mutex<Option<Vec<mpsc::UnboundedSender<Queued>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Over all writers, within `bounds`.
    counts: Arc<QueueCounts>,
    bounds: QueueBounds,
    /// How many writer tasks there are (fixed at start).
    writers: usize,
    /// Spreads sessions over the writers. Not SipHash: no table is built
    /// from it, so ids chosen to collide only put their turns on one writer,
    /// and SipHash cost 370 instructions a request.
    hasher: foldhash::fast::RandomState,
    metrics: Arc<Metrics>,
}

impl HistoryWriter {
    /// Starts the writer tasks.
    pub fn spawn(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        bounds: QueueBounds,
        writers: usize,
    ) -> HistoryWriter {
        let writers = writers.max(1);
        let counts = Arc::new(QueueCounts::default());
        let (senders, tasks): (Vec<_>, _) = (0..writers)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(run(store.clone(), metrics.clone(), rx, counts.clone()));
                (tx, task)
            })
            .unzip();
        HistoryWriter {
            tx: std::sync::Mutex::new(Some(senders)),
            tasks: Mutex::new(tasks),
            counts,
            bounds,
            writers,
            hasher: foldhash::fast::RandomState::default(),
            metrics,
        }
    }

    /// Queues a turn without waiting; a full queue drops it (counted, logged).
    pub fn submit(&self, turn: PendingTurn) {
        let weight = weight(&turn.turn);
        if let Err(why) = self.counts.take(weight, self.bounds) {
            self.dropped(turn, why);
            return;
        }
        let writer = self.writer_of(&turn.tenant, &turn.session);
        let queued = Queued { turn, weight };
        let sent = match &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(senders) => senders[writer].send(queued).map_err(|e| e.0),
            None => Err(queued),
        };
        if let Err(queued) = sent {
            self.counts.release(1, weight);
            self.dropped(queued.turn, "shutting down");
        }
    }

    /// The writer that owns a session: always the same one, so that its
    /// turns are written in the order they ended.
    fn writer_of(&self, tenant: &Tenant, session: &SessionId) -> usize {
        match self.writers {
            1 => 0,
            n => self.hasher.hash_one((tenant, session)) as usize % n,
        }
    }

    fn dropped(&self, turn: PendingTurn, why: &str) {
        self.metrics.history_dropped.inc();
        tracing::warn!(session = %turn.session, reason = why, "history turn dropped");
        if let Some(done) = turn.done {
            let _ = done.send(false);
        }
    }

    /// Turns waiting to be written.
    pub fn depth(&self) -> usize {
        self.counts.turns.load(Ordering::Relaxed)
    }

    /// What the turns waiting to be written weigh ([`weight`]).
    pub fn queued_bytes(&self) -> usize {
        self.counts.bytes.load(Ordering::Relaxed)
    }

    /// Stops taking turns and waits up to `limit` for the queue to be written.
    pub async fn drain(&self, limit: Duration) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let tasks = std::mem::take(&mut *self.tasks.lock().await);
        if tasks.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(
                left = self.depth(),
                "grace period over with history turns unwritten"
            );
        }
    }
}

/// A turn in a writer's queue, with the weight it was counted at.
struct Queued {
    turn: PendingTurn,
    weight: usize,
}

/// What the queues hold over all writers, shared by the writers and `submit`.
#[derive(Default)]
struct QueueCounts {
    turns: AtomicUsize,
    bytes: AtomicUsize,
}

impl QueueCounts {
    /// Counts a turn of `weight` in, or says which bound it would pass.
    fn take(&self, weight: usize, bounds: QueueBounds) -> Result<(), &'static str> {
        if self.turns.fetch_add(1, Ordering::Relaxed) >= bounds.turns {
            self.turns.fetch_sub(1, Ordering::Relaxed);
            return Err("history queue full");
        }
        if self.bytes.fetch_add(weight, Ordering::Relaxed) + weight > bounds.bytes {
            self.release(1, weight);
            return Err("history queue over store.queue_max_mb");
        }
        Ok(())
    }

    fn release(&self, turns: usize, bytes: usize) {
        self.turns.fetch_sub(turns, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

async fn run(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    counts: Arc<QueueCounts>,
) {
    // Reused from batch to batch: (tenant, session, turn) is the shape the
    // store takes, so turns move into it without a copy.
    let mut turns: Vec<(Tenant, SessionId, Turn)> = Vec::with_capacity(WRITE_BATCH);
    let mut waiting: Vec<Option<oneshot::Sender<bool>>> = Vec::with_capacity(WRITE_BATCH);
    let mut received: Vec<Queued> = Vec::with_capacity(WRITE_BATCH);
    // Group commit: whatever else is waiting goes along, in order.
    while rx.recv_many(&mut received, WRITE_BATCH).await > 0 {
        let mut weight = 0;
        for Queued {
            turn: pending,
            weight: w,
        } in received.drain(..)
        {
            turns.push((pending.tenant, pending.session, pending.turn));
            waiting.push(pending.done);
            weight += w;
        }
        let stored = write_batch(&*store, &turns, &metrics).await;
        counts.release(turns.len(), weight);
        metrics
            .history_queue_depth
            .set(counts.turns.load(Ordering::Relaxed) as i64);
        metrics
            .history_queue_bytes
            .set(counts.bytes.load(Ordering::Relaxed) as i64);
        for (done, stored) in waiting.drain(..).zip(stored) {
            if let Some(done) = done {
                let _ = done.send(stored);
            }
        }
        turns.clear();
    }
}

/// Writes a batch in one go (one round trip where the store can), retrying
/// it whole while the store is unreachable: appending a turn twice changes
/// nothing, so the retry is safe. A batch the store refuses is written turn
/// by turn instead, so one bad turn cannot take the others with it.
/// Returns, per turn, whether it was stored.
async fn write_batch(
    store: &dyn Store,
    turns: &[(Tenant, SessionId, Turn)],
    metrics: &Metrics,
) -> Vec<bool> {
    let mut wait = RETRY_MIN;
    loop {
        match store.append_turns(turns).await {
            Ok(()) => {
                metrics.history_turns.inc_by(turns.len() as u64);
                let messages: usize = turns.iter().map(|(_, _, t)| message_count(t)).sum();
                metrics.history_messages.inc_by(messages as u64);
                return vec![true; turns.len()];
            }
            Err(e) if e.is_transient() => {
                metrics.store_errors.inc();
                tracing::debug!(turns = turns.len(), error = %e, retry_in = ?wait, "history batch failed; will retry");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
            Err(_) => {
                metrics.store_errors.inc();
                let mut stored = Vec::with_capacity(turns.len());
                for turn in turns {
                    stored.push(write_with_retry(store, turn, metrics).await);
                }
                return stored;
            }
        }
    }
}

/// The messages a turn counts for (`tether_history_messages_total`).
fn message_count(turn: &Turn) -> usize {
    turn.messages.len()
}

/// Writes one turn, retrying while the store is unreachable.
async fn write_with_retry(
    store: &dyn Store,
    (tenant, session, turn): &(Tenant, SessionId, Turn),
    metrics: &Metrics,
) -> bool {
    let mut wait = RETRY_MIN;
    let mut permanent_failures = 0;
    loop {
        match store.append_turn(tenant, session, turn).await {
            Ok(()) => {
                metrics.history_turns.inc();
                metrics.history_messages.inc_by(message_count(turn) as u64);
                return true;
            }
            Err(e) if e.is_transient() => {
                metrics.store_errors.inc();
                tracing::debug!(%session, error = %e, retry_in = ?wait, "history write failed; will retry");
            }
            Err(e) => {
                metrics.store_errors.inc();
                permanent_failures += 1;
                if permanent_failures >= PERMANENT_ATTEMPTS {
                    metrics.history_dropped.inc();
                    tracing::warn!(%session, error = %e, "history turn dropped: the store refuses it");
                    return false;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::store::{MemoryStore, MessageRange, Retention, UsageTotals};

    fn pending(session: &SessionId, n: usize) -> PendingTurn {
        PendingTurn {
            tenant: Tenant::anonymous(),
            session: session.clone(),
            turn: Turn {
                id: format!("{session}-{n}"),
                if_new: Vec::new(),
                messages: vec![json!({"role": "user", "content": n.to_string()}).into()],
                usage: UsageTotals::default(),
                model: None,
                at_ms: n as u64,
            },
            done: None,
        }
    }

    /// A bound of `turns` turns, and bytes enough for them.
    fn turns(turns: usize) -> QueueBounds {
        QueueBounds {
            turns,
            bytes: usize::MAX,
        }
    }

    fn memory_store() -> (Arc<MemoryStore>, Arc<Metrics>) {
        let retention = Retention {
            history_ttl: Duration::from_secs(60),
        };
        let store = MemoryStore::new(retention, usize::MAX, Default::default());
        (Arc::new(store), Arc::new(Metrics::new()))
    }

    fn sessions(count: usize) -> Vec<SessionId> {
        (0..count)
            .map(|i| SessionId::parse(&format!("s{i}")).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_sessions_turns_are_written_in_the_order_they_were_submitted() {
        let (store, metrics) = memory_store();
        let writer = HistoryWriter::spawn(store.clone(), metrics.clone(), turns(10_000), 3);
        let sessions = sessions(20);
        for n in 0..50 {
            for session in &sessions {
                writer.submit(pending(session, n));
            }
        }
        writer.drain(Duration::from_secs(10)).await;
        assert_eq!(metrics.history_turns.get(), 1000);
        for session in &sessions {
            let stored = store
                .read_messages(&Tenant::anonymous(), session, MessageRange::All)
                .await
                .unwrap()
                .unwrap();
            let order: Vec<String> = stored
                .messages
                .iter()
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect();
            let expected: Vec<String> = (0..50).map(|n| n.to_string()).collect();
            assert_eq!(order, expected, "{session}");
        }
    }

    #[tokio::test]
    async fn past_its_capacity_over_all_writers_a_turn_is_dropped_and_counted() {
        let (store, metrics) = memory_store();
        // On a current-thread runtime the writers cannot run while this
        // test submits: every turn past the capacity finds the queues full.
        let writer = HistoryWriter::spawn(store, metrics.clone(), turns(100), 2);
        let sessions = sessions(40);
        for n in 0..3 {
            for session in &sessions {
                writer.submit(pending(session, n));
            }
        }
        assert_eq!(writer.depth(), 100);
        assert_eq!(metrics.history_dropped.get(), 20);
        writer.drain(Duration::from_secs(10)).await;
        assert_eq!(metrics.history_turns.get(), 100);
        assert_eq!(writer.depth(), 0);
    }

    #[tokio::test]
    async fn past_its_bytes_a_turn_is_dropped_and_counted_whatever_the_turn_count() {
        let (store, metrics) = memory_store();
        let sessions = sessions(40);
        let one = weight(&pending(&sessions[0], 0).turn);
        // Room for ten turns' weight; a hundred would fit by count. As above,
        // the writers cannot run while this test submits.
        let bounds = QueueBounds {
            turns: 100,
            bytes: 10 * one,
        };
        let writer = HistoryWriter::spawn(store, metrics.clone(), bounds, 2);
        for session in &sessions {
            writer.submit(pending(session, 0));
        }
        assert_eq!(writer.depth(), 10);
        assert_eq!(writer.queued_bytes(), 10 * one);
        assert_eq!(metrics.history_dropped.get(), 30);
        writer.drain(Duration::from_secs(10)).await;
        assert_eq!(metrics.history_turns.get(), 10);
        assert_eq!(writer.queued_bytes(), 0, "written turns leave the count");
    }
}
