//! The embedded store, used when no Redis is configured. It lives in the
//! process: nothing survives a restart, and replicas do not share it.
//!
//! Sessions are spread over [`SHARDS`] maps, each behind its own
//! `std::sync::Mutex`: every operation is a few map lookups with no `.await`
//! while a lock is held, so a blocking mutex is both simpler and cheaper
//! than an async one. Shards keep each map small, so growing one (a rehash
//! of every entry) stalls the writer for a fraction of what one map of every
//! session would: 89 ms at 229,376 sessions in one map, which at 23,000
//! turns a second overflowed the write-behind queue in the benchmark.
//!
//! The store is bounded twice: sessions past `history.ttl_secs` are swept
//! out at least every [`SWEEP_EVERY`] (not only when read), and when what it
//! holds passes `store.memory_max_mb` the least recently written sessions
//! are evicted, counted in `tether_history_evicted_total` and logged.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;

use super::{
    MessageRange, Messages, Retention, Scope, SessionEntry, SessionInfo, SessionPage, Store,
    StoreError, StoreHealth, StoreKind, StoredMessage, Turn,
};
use crate::session::SessionId;
use crate::tenant::Tenant;

/// Maps the sessions are spread over.
const SHARDS: usize = 32;

/// Expired sessions are removed at least this often (more often when the
/// TTL is shorter: every half TTL).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A full store logs its evictions at most this often (the metric counts each).
const EVICTION_LOG_EVERY: Duration = Duration::from_secs(60);

/// What a session costs besides its messages' text (its key, info and map
/// slot), and what each message costs besides its text, as counted against
/// the budget. Estimates: the budget bounds memory, it does not measure it.
const SESSION_OVERHEAD: usize = 256;
const MESSAGE_OVERHEAD: usize = 48;

/// An eviction frees the shard down to this share of its budget, so that
/// the next write does not evict again.
const EVICT_TO: f64 = 0.9;

#[derive(Debug)]
struct Session {
    messages: Vec<StoredMessage>,
    info: SessionInfo,
    /// History expires `history_ttl` after the last write, as in Redis.
    expires: Instant,
    /// What the session counts against the budget.
    bytes: usize,
}

impl Session {
    /// A session with no messages yet, created at `at_ms`; its expiry and
    /// bytes are the caller's to set.
    fn empty(at_ms: u64) -> Session {
        Session {
            messages: Vec::new(),
            info: SessionInfo {
                created_at_ms: at_ms,
                ..SessionInfo::default()
            },
            expires: Instant::now(),
            bytes: 0,
        }
    }
}

type SessionKey = (Tenant, String);

#[derive(Debug, Default)]
struct Shard {
    sessions: HashMap<SessionKey, Session>,
    bytes: usize,
}

impl Shard {
    fn remove(&mut self, key: &SessionKey) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        self.bytes -= session.bytes;
        Some(session)
    }

    /// Drops the session at `key` if it has expired by `now`.
    fn drop_if_expired(&mut self, key: &SessionKey, now: Instant) {
        if self.sessions.get(key).is_some_and(|s| s.expires <= now) {
            self.remove(key);
        }
    }

    /// Drops the sessions that expire at `cutoff` or before; returns how
    /// many went.
    fn drop_expiring_by(&mut self, cutoff: Instant) -> usize {
        let before = self.sessions.len();
        let mut freed = 0;
        self.sessions.retain(|_, s| {
            let keep = s.expires > cutoff;
            if !keep {
                freed += s.bytes;
            }
            keep
        });
        self.bytes -= freed;
        before - self.sessions.len()
    }

    /// Drops the least recently written sessions until the shard holds
    /// `target` bytes or less, or until only sessions written at `newest`
    /// are left: the session just written is kept even when it alone is
    /// over the budget (the others go), rather than lost as it is stored.
    /// Returns how many went. Finds the newest write time that must go,
    /// then drops every session written no later (a session's expiry is
    /// its last write plus the TTL).
    fn evict_to(&mut self, target: usize, newest: Instant) -> usize {
        let mut by_age: Vec<(Instant, usize)> = self
            .sessions
            .values()
            .filter(|s| s.expires < newest)
            .map(|s| (s.expires, s.bytes))
            .collect();
        by_age.sort_unstable_by_key(|(expires, _)| *expires);
        let mut left = self.bytes;
        let cutoff = by_age.iter().find_map(|(expires, bytes)| {
            left -= bytes;
            (left <= target).then_some(*expires)
        });
        let cutoff = cutoff.or(by_age.last().map(|(expires, _)| *expires));
        cutoff.map_or(0, |cutoff| self.drop_expiring_by(cutoff))
    }
}

#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    retention: Retention,
    /// `store.memory_max_mb`, split evenly between the shards.
    shard_budget: usize,
    swept: Mutex<Instant>,
    evicted: Counter,
    /// Evictions not logged yet, and when the last warning went out: a full
    /// store evicts on every few writes, and says so once a minute.
    unlogged: Mutex<(u64, Option<Instant>)>,
}

impl MemoryStore {
    /// A store that holds up to about `max_bytes` of history, counting each
    /// session it evicts to stay under it in `evicted`.
    pub fn new(retention: Retention, max_bytes: usize, evicted: Counter) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            retention,
            shard_budget: (max_bytes / SHARDS).max(1),
            swept: Mutex::new(Instant::now()),
            evicted,
            unlogged: Mutex::new((0, None)),
        }
    }

    fn shard(&self, key: &SessionKey) -> std::sync::MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shard of the session about to be written, locked, with the
    /// session dropped first if it has expired (and every shard swept of
    /// expired sessions when a sweep is due).
    fn shard_for_write(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        now: Instant,
    ) -> (SessionKey, std::sync::MutexGuard<'_, Shard>) {
        self.sweep_if_due(now);
        let key = (tenant.clone(), session.as_str().to_owned());
        let mut shard = self.shard(&key);
        shard.drop_if_expired(&key, now);
        (key, shard)
    }

    /// Runs `f` on the live session, dropping it first if it has expired.
    fn with_session<R>(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        f: impl FnOnce(Option<&mut Session>) -> R,
    ) -> R {
        let key = (tenant.clone(), session.as_str().to_owned());
        let mut shard = self.shard(&key);
        shard.drop_if_expired(&key, Instant::now());
        f(shard.sessions.get_mut(&key))
    }

    /// Removes expired sessions from every shard, when a sweep is due.
    fn sweep_if_due(&self, now: Instant) {
        let every = (self.retention.history_ttl / 2).min(SWEEP_EVERY);
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*swept) < every {
                return;
            }
            *swept = now;
        }
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drop_expiring_by(now);
        }
    }

    fn evicted_sessions(&self, count: u64, now: Instant) {
        self.evicted.inc_by(count);
        let mut unlogged = self.unlogged.lock().unwrap_or_else(|e| e.into_inner());
        unlogged.0 += count;
        if unlogged
            .1
            .is_some_and(|at| now.duration_since(at) < EVICTION_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            evicted = unlogged.0,
            "embedded store over store.memory_max_mb: least recently written sessions evicted"
        );
        *unlogged = (0, Some(now));
    }

    /// What the store holds, as counted against its budget.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }

    /// Every live session, with its shard locked in turn.
    fn live_sessions<T>(&self, mut keep: impl FnMut(&SessionKey, &Session) -> Option<T>) -> Vec<T> {
        let now = Instant::now();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(
                shard
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.expires > now)
                    .filter_map(|(key, s)| keep(key, s)),
            );
        }
        out
    }
}

/// What a session costs against the budget before its messages.
fn session_bytes(key: &SessionKey) -> usize {
    SESSION_OVERHEAD + key.0.as_str().len() + key.1.len()
}

fn message_bytes(message: &StoredMessage) -> usize {
    message.as_bytes().len() + MESSAGE_OVERHEAD
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth {
            store: StoreKind::Memory,
            connected: true,
            error: None,
        }
    }

    async fn session_exists(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<bool, StoreError> {
        Ok(self.with_session(tenant, session, |s| {
            s.is_some_and(|s| !s.messages.is_empty())
        }))
    }

    async fn stream_started(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let (key, mut shard) = self.shard_for_write(tenant, session, now);
        if shard.sessions.contains_key(&key) {
            return Ok(());
        }
        let bytes = session_bytes(&key);
        let mut entry = Session::empty(at_ms);
        entry.expires = now + self.retention.history_ttl;
        entry.bytes = bytes;
        shard.sessions.insert(key, entry);
        shard.bytes += bytes;
        Ok(())
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let (key, mut shard) = self.shard_for_write(tenant, session, now);
        // What this write adds against the budget.
        let mut grown = 0;
        let entry = shard.sessions.entry(key).or_insert_with_key(|key| {
            grown += session_bytes(key);
            Session::empty(turn.at_ms)
        });
        // New, or listed while its first answer streamed.
        let fresh = entry.messages.is_empty();
        let first: &[StoredMessage] = if fresh { &turn.if_new } else { &[] };
        for message in first.iter().chain(&turn.messages) {
            grown += message_bytes(message);
            entry.messages.push(message.clone());
        }
        let info = &mut entry.info;
        info.message_count = entry.messages.len();
        info.last_message_ms = turn.at_ms;
        info.usage.prompt_tokens += turn.usage.prompt_tokens;
        info.usage.completion_tokens += turn.usage.completion_tokens;
        info.usage.total_tokens += turn.usage.total_tokens;
        if let Some(model) = &turn.model
            && !info.models.contains(model)
        {
            grown += model.len() + MESSAGE_OVERHEAD;
            info.models.push(model.clone());
        }
        entry.expires = now + self.retention.history_ttl;
        entry.bytes += grown;
        shard.bytes += grown;
        if shard.bytes > self.shard_budget {
            let target = (self.shard_budget as f64 * EVICT_TO) as usize;
            let evicted = shard.evict_to(target, now + self.retention.history_ttl);
            drop(shard);
            self.evicted_sessions(evicted as u64, now);
        }
        Ok(())
    }

    async fn read_messages(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        range: MessageRange,
    ) -> Result<Option<Messages>, StoreError> {
        Ok(self.with_session(tenant, session, |s| {
            let all = &s?.messages;
            if all.is_empty() {
                return None;
            }
            let total = all.len();
            let (start, end) = match range {
                MessageRange::All => (0, total),
                MessageRange::Slice {
                    offset,
                    len,
                    from_end: false,
                } => (offset.min(total), offset.saturating_add(len).min(total)),
                MessageRange::Slice {
                    offset,
                    len,
                    from_end: true,
                } => {
                    let end = total.saturating_sub(offset);
                    (end.saturating_sub(len), end)
                }
            };
            Some(Messages {
                messages: all[start..end]
                    .iter()
                    .map(StoredMessage::to_value)
                    .collect(),
                first_index: start,
                total,
            })
        }))
    }

    async fn session_info(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<Option<SessionInfo>, StoreError> {
        Ok(self.with_session(tenant, session, |s| s.map(|s| s.info.clone())))
    }

    async fn list_sessions(
        &self,
        scope: &Scope,
        offset: usize,
        limit: usize,
    ) -> Result<SessionPage, StoreError> {
        let mut entries: Vec<SessionEntry> = self.live_sessions(|(tenant, id), s| {
            let visible = match scope {
                Scope::All => true,
                Scope::Tenant(t) => t == tenant,
            };
            visible.then(|| SessionEntry {
                tenant: tenant.clone(),
                session_id: id.clone(),
                // A session whose first answer streams has no message yet.
                last_activity_ms: s.info.last_message_ms.max(s.info.created_at_ms),
            })
        });
        entries.sort_by(|a, b| {
            b.last_activity_ms
                .cmp(&a.last_activity_ms)
                .then_with(|| b.session_id.cmp(&a.session_id))
        });
        let total = entries.len();
        let entries = entries.into_iter().skip(offset).take(limit).collect();
        Ok(SessionPage { entries, total })
    }

    async fn delete_session(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<bool, StoreError> {
        let key = (tenant.clone(), session.as_str().to_owned());
        let removed = self.shard(&key).remove(&key);
        Ok(removed.is_some_and(|s| s.expires > Instant::now()))
    }

    async fn tenants_of(&self, session: &SessionId) -> Result<Vec<Tenant>, StoreError> {
        let mut tenants: Vec<Tenant> =
            self.live_sessions(|(tenant, id), _| (id == session.as_str()).then(|| tenant.clone()));
        tenants.sort();
        Ok(tenants)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::UsageTotals;

    fn store(ttl: Duration, max_bytes: usize) -> MemoryStore {
        let retention = Retention { history_ttl: ttl };
        MemoryStore::new(retention, max_bytes, Counter::default())
    }

    fn turn(text: &str) -> Turn {
        Turn {
            id: text.to_owned(),
            if_new: Vec::new(),
            messages: vec![json!({"role": "user", "content": text}).into()],
            usage: UsageTotals::default(),
            model: None,
            at_ms: 1,
        }
    }

    async fn write(store: &MemoryStore, session: &str) {
        write_of(store, session, 200).await;
    }

    /// One turn of a message of about `bytes` bytes.
    async fn write_of(store: &MemoryStore, session: &str, bytes: usize) {
        let id = SessionId::parse(session).unwrap();
        let text = format!("{session} {}", "x".repeat(bytes));
        store
            .append_turn(&Tenant::anonymous(), &id, &turn(&text))
            .await
            .unwrap();
    }

    async fn exists(store: &MemoryStore, session: &str) -> bool {
        let id = SessionId::parse(session).unwrap();
        store
            .session_exists(&Tenant::anonymous(), &id)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn expired_sessions_are_swept_out_without_being_read() {
        let store = store(Duration::from_millis(40), usize::MAX);
        for i in 0..50 {
            write(&store, &format!("old-{i}")).await;
        }
        let fifty = store.bytes();
        assert!(fifty > 50 * 200, "{fifty}");
        tokio::time::sleep(Duration::from_millis(60)).await;
        write(&store, "new").await;
        assert!(
            store.bytes() < fifty / 40,
            "{} left of {fifty}",
            store.bytes()
        );
        let all = store.list_sessions(&Scope::All, 0, 100).await.unwrap();
        assert_eq!(all.total, 1);
    }

    #[tokio::test]
    async fn over_its_budget_the_store_evicts_the_least_recently_written_sessions() {
        let budget = SHARDS * 8 * 1024;
        let store = store(Duration::from_secs(3600), budget);
        for i in 0..3000 {
            write(&store, &format!("s-{i}")).await;
        }
        assert!(store.bytes() <= budget, "{} > {budget}", store.bytes());
        let evicted = store.evicted.get();
        assert!(evicted > 2000, "{evicted} evicted");
        let kept = store
            .list_sessions(&Scope::All, 0, 1000)
            .await
            .unwrap()
            .total;
        assert_eq!(kept as u64 + evicted, 3000);
        // Each shard keeps its newest sessions: the last ones written are all there.
        for i in 2990..3000 {
            assert!(exists(&store, &format!("s-{i}")).await, "s-{i} evicted");
        }
        assert!(!exists(&store, "s-0").await, "the oldest kept");
        // A session written again is recent again: the oldest one left
        // survives the writes after it that evict its former peers.
        let mut oldest = 0;
        while !exists(&store, &format!("s-{oldest}")).await {
            oldest += 1;
        }
        write(&store, &format!("s-{oldest}")).await;
        for i in 3000..3100 {
            write(&store, &format!("s-{i}")).await;
        }
        assert!(exists(&store, &format!("s-{oldest}")).await);
    }

    #[tokio::test]
    async fn a_session_over_its_shard_s_budget_is_kept_and_the_older_ones_go() {
        // Room for about 15 small sessions a shard; about 3 written to each.
        let budget = SHARDS * 8 * 1024;
        let store = store(Duration::from_secs(3600), budget);
        let small = SHARDS * 3;
        for i in 0..small {
            write(&store, &format!("s-{i}")).await;
        }
        assert_eq!(store.evicted.get(), 0);
        let before = store.bytes();
        write_of(&store, "big", 20 * 1024).await;
        assert!(
            exists(&store, "big").await,
            "the session just written was evicted"
        );
        // Whatever shared its shard went, and nothing else.
        let evicted = store.evicted.get();
        let kept = store.list_sessions(&Scope::All, 0, 1000).await.unwrap();
        assert_eq!(kept.total as u64 + evicted, small as u64 + 1);
        assert!(evicted < 16, "{evicted} evicted");
        assert!(store.bytes() < before + 22 * 1024);
        // Written again, bigger still: kept again.
        write_of(&store, "big", 20 * 1024).await;
        assert!(exists(&store, "big").await);
    }

    #[tokio::test]
    async fn deleting_a_session_gives_its_bytes_back() {
        let store = store(Duration::from_secs(3600), usize::MAX);
        write(&store, "a").await;
        write(&store, "a").await;
        assert!(store.bytes() > 0);
        let id = SessionId::parse("a").unwrap();
        assert!(
            store
                .delete_session(&Tenant::anonymous(), &id)
                .await
                .unwrap()
        );
        assert_eq!(store.bytes(), 0);
    }
}
