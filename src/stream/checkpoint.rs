//! The checkpoint writer: one task per stream that copies the stream's
//! events from its hub into the checkpoint store (Redis), so another replica
//! can resume it. It follows the hub rather than a queue of its own: every
//! `streams.checkpoint_interval_ms` (and at once when the stream ends) it
//! writes whatever the hub holds past what is already checkpointed, in
//! batches (one XADD each) of at most `streams.checkpoint_max_events`.
//!
//! Once a reader on another replica follows the stream (it asks for a flush
//! as it starts), the interval would be the pace of that reader's live
//! tail: seconds between bursts of text. From then on every new event is
//! written as it comes, at most once per `streams.follow_interval_ms`
//! (events that come closer together go out together), until the end.
//!
//! Every third of `streams.idle_timeout_secs` the owner shows it is alive
//! and looks for a cancel request it may have missed, each only when
//! needed: a batch written since the last beat is itself a heartbeat (each
//! batch carries its time), and a replica whose subscription to cancel
//! broadcasts has not broken since the stream began has missed none. A
//! stream that flows costs its batches and nothing else.
//!
//! The writer never slows the stream: it reads the hub, which the recorder
//! fills without waiting. When the store is slow or away, the checkpoints
//! fall behind and catch up when it answers again (the hub keeps every
//! event), so a stream stays resumable on every replica through an outage;
//! `tether_checkpoint_dropped_total{reason="store_error"}` counts the failed
//! writes, and the end of the stream is retried for `streams.retention_secs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::cancels::ControlLink;
use super::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{CheckpointStore, EventBatch, StoreError, StreamRecord, StreamState, now_ms};

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub interval: Duration,
    /// The shortest time between two writes once another replica follows.
    pub follow_interval: Duration,
    pub max_events: usize,
    /// How often an active stream refreshes its heartbeat.
    pub heartbeat: Duration,
    /// TTL of an active stream's keys (its longest life plus retention).
    pub active_ttl: Duration,
    pub retention: Duration,
    pub history_ttl: Duration,
}

impl WriterSettings {
    /// How often the writer wakes: every batch interval, but at least once
    /// a heartbeat period, or an interval longer than that would leave a
    /// flowing stream without a sign of life for a whole interval and
    /// other replicas would report it `interrupted`.
    fn tick(&self) -> Duration {
        self.interval.min(self.heartbeat)
    }

    /// How long after the last beat a wake-up beats again: a heartbeat
    /// period, less half a tick, so that when the two are equal every tick
    /// beats (a tick comes a period after the previous one, whose beat
    /// went out a little after it: a whole period would skip every other).
    fn beat_due(&self) -> Duration {
        self.heartbeat.saturating_sub(self.tick() / 2)
    }
}

/// Checkpoints `hub` until its stream has ended and the end is written.
pub async fn run(
    store: Arc<dyn CheckpointStore>,
    hub: Arc<Hub>,
    settings: WriterSettings,
    control: Arc<ControlLink>,
    metrics: Arc<Metrics>,
) {
    let mut writer = Writer {
        control_mark: control.mark(),
        control,
        batch_since_beat: false,
        record: StreamRecord {
            id: hub.id.clone(),
            tenant: hub.tenant.clone(),
            session: hub.session.as_str().to_owned(),
            state: StreamState::Active,
            events: 0,
            created_ms: hub.created_ms,
            heartbeat_ms: now_ms(),
        },
        opened: false,
        failing: false,
        resync: false,
        beaten: false,
        beat_expires: false,
        store,
        hub,
        settings,
        metrics,
    };
    let mut tick = tokio::time::interval(settings.tick());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_beat = Instant::now();
    let mut ended_at: Option<Instant> = None;
    let mut last_write = Instant::now();
    // A followed event came too soon after the last write: the next tick
    // was moved to when it may go (the tick rather than a timer of its own
    // keeps the task small: it lives as long as the stream, 10,000 at once).
    let mut due = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A reader on another replica is about to follow the stream:
            // what is new goes out at once, and each new event from now on
            // (`news`).
            () = writer.hub.flush_requested() => {}
            // The end (written at once, not at the next tick), or a new
            // event of a followed stream.
            () = writer.hub.news(), if ended_at.is_none() => {
                if writer.hub.state().is_final() {
                    ended_at.get_or_insert_with(Instant::now);
                } else if due {
                    continue;
                } else {
                    let next = last_write + settings.follow_interval;
                    if next > Instant::now() {
                        tick.reset_at(next);
                        due = true;
                        continue;
                    }
                }
            }
        }
        due = false;
        if writer.hub.state().is_final() {
            ended_at.get_or_insert_with(Instant::now);
        }
        last_write = Instant::now();
        let result = writer.step(ended_at.is_some(), &mut last_beat).await;
        match result {
            Ok(true) => return,
            Ok(false) => writer.failing = false,
            Err(e) => writer.failed(&e),
        }
        if ended_at.is_some_and(|at| at.elapsed() > settings.retention) {
            tracing::warn!(stream = %writer.hub.id, "gave up writing the end of the stream");
            return;
        }
    }
}

struct Writer {
    store: Arc<dyn CheckpointStore>,
    hub: Arc<Hub>,
    settings: WriterSettings,
    metrics: Arc<Metrics>,
    record: StreamRecord,
    opened: bool,
    /// In a streak of failed writes (counted and logged once per streak).
    failing: bool,
    /// A write failed: what it was writing may have landed anyway, so the
    /// next round asks the store how far the checkpoints got.
    resync: bool,
    /// Heartbeats were written (they expire with the stream's end).
    beaten: bool,
    /// A heartbeat landed, and with it the TTL of what heartbeats write:
    /// the next ones need not give it again.
    beat_expires: bool,
    control: Arc<ControlLink>,
    /// Cancel requests broadcast since this mark have all been heard if the
    /// link has not broken since.
    control_mark: u64,
    /// A batch went out since the last heartbeat (and stands for one).
    batch_since_beat: bool,
}

impl Writer {
    /// One round: open the record, write the new events, beat, and at the
    /// end close. True once the end is written.
    async fn step(&mut self, ended: bool, last_beat: &mut Instant) -> Result<bool, StoreError> {
        if !self.opened {
            self.store
                .open_stream(
                    &self.record,
                    self.settings.active_ttl,
                    self.settings.history_ttl,
                )
                .await?;
            self.opened = true;
        }
        if self.resync {
            let stored = self.store.checkpointed(&self.hub.id).await?;
            self.resync = false;
            if stored.closed {
                // The end landed, its answer lost.
                return Ok(true);
            }
            self.record.events = stored.events;
        }
        let snapshot = self.hub.snapshot(self.record.events as usize);
        let closing = ended && snapshot.state.is_final();
        let mut batches: Vec<&[bytes::Bytes]> = snapshot
            .events
            .chunks(self.settings.max_events.max(1))
            .collect();
        // The last batch of a stream goes out with its end, in one round trip.
        let last = if closing { batches.pop() } else { None };
        for chunk in batches {
            let batch = EventBatch {
                first: self.record.events,
                events: chunk.to_vec(),
            };
            self.store.append_events(&self.hub.id, &batch).await?;
            self.record.events += chunk.len() as u64;
            self.metrics.checkpointed_events.inc_by(chunk.len() as u64);
            self.batch_since_beat = true;
        }
        if closing {
            let last = last.map(|chunk| EventBatch {
                first: self.record.events,
                events: chunk.to_vec(),
            });
            let added = last.as_ref().map_or(0, |b| b.events.len() as u64);
            let mut record = self.record.clone();
            record.state = snapshot.state;
            record.heartbeat_ms = now_ms();
            record.events += added;
            // A cancel sent through another replica left its flag beside
            // the heartbeats.
            let beaten = self.beaten || record.state == StreamState::Cancelled;
            self.store
                .close_stream(
                    &record,
                    last.as_ref(),
                    snapshot.tail,
                    self.settings.retention,
                    beaten,
                )
                .await?;
            self.metrics.checkpointed_events.inc_by(added);
            self.record = record;
            return Ok(true);
        }
        if last_beat.elapsed() >= self.settings.beat_due() {
            *last_beat = Instant::now();
            let beat = !std::mem::take(&mut self.batch_since_beat);
            // Marked before asking: a break after the mark is seen next time.
            let mark = self.control.mark();
            let poll = !self.control.unbroken_since(self.control_mark);
            if beat {
                // Set first: a beat whose answer was lost may have landed.
                self.beaten = true;
                let ttl = (!self.beat_expires).then_some(self.settings.active_ttl);
                self.store
                    .heartbeat(&self.hub.id, now_ms(), self.record.events, ttl)
                    .await?;
                self.beat_expires = true;
            }
            if poll {
                if self.store.cancel_requested(&self.hub.id).await? {
                    self.hub.cancel();
                }
                self.control_mark = mark;
            }
        }
        Ok(false)
    }

    fn failed(&mut self, error: &StoreError) {
        self.resync = self.opened;
        if !self.failing {
            self.failing = true;
            self.metrics.checkpoint_dropped("store_error");
            tracing::warn!(stream = %self.hub.id, %error, "checkpoint write failed; retrying (resume on other replicas lags meanwhile)");
        }
    }
}
