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
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::turn::{self, ReplyContext};
use super::{Reply, TurnRequest};
use crate::metrics::Metrics;
use crate::session::SessionId;
use crate::store::{Store, StoreError};
use crate::tenant::Tenant;

/// First and longest wait between retries of a write the store refused.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A store error that retrying will not fix (corrupt data, a wrong type) is
/// tried this often before the turn is dropped, so it cannot block the queue.
const PERMANENT_ATTEMPTS: u32 = 3;

/// A finished exchange waiting to be appended to its session's history.
pub struct PendingTurn {
    /// Unique per turn, kept across retries (see `Turn::id`).
    pub id: String,
    pub tenant: Tenant,
    pub session: SessionId,
    pub request: TurnRequest,
    pub reply: Option<Reply>,
    pub context: ReplyContext,
    /// When the exchange ended: the messages' timestamps, however late the write.
    pub at: SystemTime,
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
    while let Some(mut pending) = rx.recv().await {
        let stored = write_with_retry(&*store, &pending, &metrics).await;
        depth.fetch_sub(1, Ordering::Relaxed);
        metrics
            .history_queue_depth
            .set(depth.load(Ordering::Relaxed) as i64);
        if let Some(done) = pending.done.take() {
            let _ = done.send(stored);
        }
    }
}

/// Writes one turn, retrying while the store is unreachable.
async fn write_with_retry(store: &dyn Store, pending: &PendingTurn, metrics: &Metrics) -> bool {
    let mut wait = RETRY_MIN;
    let mut permanent_failures = 0;
    loop {
        match write(store, pending).await {
            Ok(messages) => {
                metrics.history_turns.inc();
                metrics.history_messages.inc_by(messages as u64);
                return true;
            }
            Err(e) if is_transient(&e) => {
                metrics.store_errors.inc();
                tracing::debug!(session = %pending.session, error = %e, retry_in = ?wait, "history write failed; will retry");
            }
            Err(e) => {
                metrics.store_errors.inc();
                permanent_failures += 1;
                if permanent_failures >= PERMANENT_ATTEMPTS {
                    metrics.history_dropped.inc();
                    tracing::warn!(session = %pending.session, error = %e, "history turn dropped: the store refuses it");
                    return false;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

async fn write(store: &dyn Store, pending: &PendingTurn) -> Result<usize, StoreError> {
    let mut turn = turn::build(
        &pending.request,
        pending.reply.as_ref(),
        &pending.context,
        pending.at,
    );
    turn.id = pending.id.clone();
    store
        .append_turn(&pending.tenant, &pending.session, &turn)
        .await?;
    Ok(turn.messages.len())
}

/// Errors that go away when the store comes back: timeouts and lost,
/// refused or not yet made connections, and a cluster that is failing over.
fn is_transient(error: &StoreError) -> bool {
    match error {
        StoreError::Timeout(_) => true,
        StoreError::Redis(e) => {
            e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_cluster_error()
        }
        StoreError::Corrupt(_) => false,
    }
}
