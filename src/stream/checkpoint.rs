//! The checkpoint writer: one task per stream that batches its events into
//! the checkpoint store (Redis), so another replica can resume it. A batch
//! (one XADD) goes out every `streams.checkpoint_interval_ms` or at
//! `streams.checkpoint_max_events` events, whichever comes first. The
//! heartbeat (with the event count, and a look for a missed cancel request)
//! goes out every third of `streams.idle_timeout_secs`.
//!
//! The writer never slows the stream: it is fed with `try_send`, and when
//! the store is slow or down it stops writing that stream's events (the
//! checkpointed prefix stays consistent, resume from this replica still
//! works from memory) and counts it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{CheckpointStore, EventBatch, StreamRecord, StreamState, now_ms};

/// Events waiting for the writer. At the default flush interval this is
/// minutes of tokens; past it the store is too slow to be worth waiting for.
pub const CHECKPOINT_QUEUE: usize = 4096;

/// What the recorder hands the writer.
pub enum Checkpoint {
    Event(Bytes),
    End {
        state: StreamState,
        tail: Option<Bytes>,
    },
}

/// The recorder's side of the writer's queue.
pub struct CheckpointTx {
    tx: mpsc::Sender<Checkpoint>,
    metrics: Arc<Metrics>,
    broken: bool,
}

impl CheckpointTx {
    /// Offers an event without waiting; a full queue ends checkpointing for this stream.
    pub fn event(&mut self, event: Bytes) {
        if !self.broken && self.tx.try_send(Checkpoint::Event(event)).is_err() {
            self.broken = true;
            self.metrics.checkpoint_dropped("queue_full");
            tracing::warn!(
                "checkpoint queue full; this stream is no longer resumable on other replicas"
            );
        }
    }

    /// The end always gets through (it waits for room), so the record's state is right.
    pub async fn end(self, state: StreamState, tail: Option<Bytes>) {
        let _ = self.tx.send(Checkpoint::End { state, tail }).await;
    }
}

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub interval: Duration,
    pub max_events: usize,
    /// How often a quiet active stream refreshes its heartbeat.
    pub heartbeat: Duration,
    /// TTL of an active stream's keys (its longest life plus retention).
    pub active_ttl: Duration,
    pub retention: Duration,
    pub history_ttl: Duration,
}

/// Starts the writer for `hub`; the future is to be spawned on the tracker.
pub fn writer(
    store: Arc<dyn CheckpointStore>,
    hub: Arc<Hub>,
    settings: WriterSettings,
    metrics: Arc<Metrics>,
) -> (CheckpointTx, impl std::future::Future<Output = ()> + Send) {
    let (tx, rx) = mpsc::channel(CHECKPOINT_QUEUE);
    let checkpoint_tx = CheckpointTx {
        tx,
        metrics: metrics.clone(),
        broken: false,
    };
    (checkpoint_tx, run(store, hub, settings, metrics, rx))
}

async fn run(
    store: Arc<dyn CheckpointStore>,
    hub: Arc<Hub>,
    settings: WriterSettings,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Checkpoint>,
) {
    let mut record = StreamRecord {
        id: hub.id.clone(),
        tenant: hub.tenant.clone(),
        session: hub.session.as_str().to_owned(),
        state: StreamState::Active,
        events: 0,
        created_ms: hub.created_ms,
        heartbeat_ms: now_ms(),
    };
    let mut healthy = match store
        .open_stream(&record, settings.active_ttl, settings.history_ttl)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            metrics.checkpoint_dropped("store_error");
            tracing::warn!(stream = %hub.id, error = %e, "cannot checkpoint stream");
            false
        }
    };
    let mut batch = EventBatch::default();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_beat = Instant::now();
    let (state, tail) = loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Checkpoint::Event(event)) => {
                    batch.events.push(event);
                    if batch.events.len() >= settings.max_events {
                        healthy = flush(&*store, &hub, &mut batch, &mut record, healthy, &settings, &metrics).await;
                    }
                }
                Some(Checkpoint::End { state, tail }) => break (state, tail),
                None => break (StreamState::Interrupted, None),
            },
            _ = tick.tick() => {
                healthy = flush(&*store, &hub, &mut batch, &mut record, healthy, &settings, &metrics).await;
                if healthy && last_beat.elapsed() >= settings.heartbeat {
                    last_beat = Instant::now();
                    match store.heartbeat(&hub.id, now_ms(), record.events).await {
                        Ok(true) => hub.cancel(),
                        Ok(false) => {}
                        Err(e) => tracing::debug!(stream = %hub.id, error = %e, "heartbeat failed"),
                    }
                }
            }
        }
    };
    healthy = flush(
        &*store,
        &hub,
        &mut batch,
        &mut record,
        healthy,
        &settings,
        &metrics,
    )
    .await;
    record.state = state;
    record.heartbeat_ms = now_ms();
    // Even a stream whose events could not all be written gets its final
    // state, so other replicas stop following it.
    let tail = if healthy { tail } else { None };
    if let Err(e) = store.close_stream(&record, tail, settings.retention).await {
        metrics.checkpoint_dropped("store_error");
        tracing::warn!(stream = %hub.id, error = %e, "cannot record the end of stream");
    }
}

/// Writes the batch; returns whether checkpointing is still healthy.
async fn flush(
    store: &dyn CheckpointStore,
    hub: &Hub,
    batch: &mut EventBatch,
    record: &mut StreamRecord,
    healthy: bool,
    settings: &WriterSettings,
    metrics: &Metrics,
) -> bool {
    if batch.events.is_empty() || !healthy {
        batch.events.clear();
        return healthy;
    }
    batch.first = record.events;
    match store
        .append_events(&hub.id, batch, settings.active_ttl)
        .await
    {
        Ok(()) => {
            record.events += batch.events.len() as u64;
            metrics
                .checkpointed_events
                .inc_by(batch.events.len() as u64);
            batch.events.clear();
            true
        }
        Err(e) => {
            metrics.checkpoint_dropped("store_error");
            tracing::warn!(stream = %hub.id, error = %e, "checkpoint write failed; this stream is no longer resumable on other replicas");
            batch.events.clear();
            false
        }
    }
}
