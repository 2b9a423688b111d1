//! The write-behind queue between recorders and the history store.
//!
//! Recorders hand finished turns over without waiting (`try_send` on a
//! queue of `store.queue_capacity`); one task writes them to the store in
//! order. When the store is down the task retries the turn at the head of
//! the queue with backoff, so turns wait (in order) instead of being lost,
//! and are flushed when the store returns. A turn that does not fit in the
//! queue is dropped, counted in `tether_history_dropped_total` and logged
//! with its session id. On shutdown the queue is flushed for what remains of
//! the grace period.

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

/// A store error that retrying will not fix (corrupt data, a wrong type) is
/// tried this often before the turn is dropped, so it cannot block the queue.
const PERMANENT_ATTEMPTS: u32 = 3;

/// A finished exchange waiting to be appended to its session's history.
/// The recorder builds the turn (`turn::build`, timestamped when the
/// exchange ended, however late the write), so the one writer task only
/// writes.
pub struct PendingTurn {
    pub tenant: Tenant,
    pub session: SessionId,
    /// Its `id` is unique per turn and kept across retries (see `Turn::id`).
    pub turn: Turn,
    /// Told when the turn is stored (true) or dropped (false).
    pub done: Option<oneshot::Sender<bool>>,
}

pub struct HistoryWriter {
    tx: std::sync::Mutex<Option<mpsc::Sender<PendingTurn>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    depth: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl HistoryWriter {
    /// Starts the writer task.
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>, capacity: usize) -> HistoryWriter {
        let (tx, rx) = mpsc::channel(capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(store, metrics.clone(), rx, depth.clone()));
        HistoryWriter {
            tx: std::sync::Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            depth,
            metrics,
        }
    }

    /// Queues a turn without waiting; a full queue drops it (counted, logged).
    pub fn submit(&self, turn: PendingTurn) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tx) = tx else {
            self.dropped(turn, "shutting down");
            return;
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tx.try_send(turn) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            let turn = match e {
                mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t) => t,
            };
            self.dropped(turn, "history queue full");
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
        self.depth.load(Ordering::Relaxed)
    }

    /// Stops taking turns and waits up to `limit` for the queue to be written.
    pub async fn drain(&self, limit: Duration) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let Some(task) = self.task.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(limit, task).await.is_err() {
            tracing::warn!(
                left = self.depth(),
                "grace period over with history turns unwritten"
            );
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<PendingTurn>,
    depth: Arc<AtomicUsize>,
) {
    // Reused from batch to batch: (tenant, session, turn) is the shape the
    // store takes, so turns move into it without a copy.
    let mut turns: Vec<(Tenant, SessionId, Turn)> = Vec::with_capacity(WRITE_BATCH);
    let mut waiting: Vec<Option<oneshot::Sender<bool>>> = Vec::with_capacity(WRITE_BATCH);
    let mut received: Vec<PendingTurn> = Vec::with_capacity(WRITE_BATCH);
    // Group commit: whatever else is waiting goes along, in order.
    while rx.recv_many(&mut received, WRITE_BATCH).await > 0 {
        for pending in received.drain(..) {
            turns.push((pending.tenant, pending.session, pending.turn));
            waiting.push(pending.done);
        }
        let stored = write_batch(&*store, &turns, &metrics).await;
        depth.fetch_sub(turns.len(), Ordering::Relaxed);
        metrics
            .history_queue_depth
            .set(depth.load(Ordering::Relaxed) as i64);
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
