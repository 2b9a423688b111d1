//! The embedded store, used when no Redis is configured. It lives in the
//! process: nothing survives a restart, and replicas do not share it.
//!
//! One `std::sync::Mutex` guards the maps: every operation is a few map
//! lookups with no `.await` while it is held, so a blocking mutex is both
//! simpler and cheaper than an async one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    MessageRange, Messages, Retention, Scope, SessionEntry, SessionInfo, SessionPage, Store,
    StoreError, StoreHealth, StoreKind, StoredMessage, Turn,
};
use crate::session::SessionId;
use crate::tenant::Tenant;

#[derive(Debug)]
struct Session {
    messages: Vec<StoredMessage>,
    info: SessionInfo,
    /// History expires `history_ttl` after the last write, as in Redis.
    expires: Instant,
}

type SessionKey = (Tenant, String);

#[derive(Debug)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<SessionKey, Session>>,
    retention: Retention,
}

impl MemoryStore {
    pub fn new(retention: Retention) -> Self {
        Self {
            sessions: Mutex::default(),
            retention,
        }
    }

    /// Runs `f` on the live session, dropping it first if it has expired.
    fn with_session<R>(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        f: impl FnOnce(Option<&mut Session>) -> R,
    ) -> R {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.clone(), session.as_str().to_owned());
        if sessions
            .get(&key)
            .is_some_and(|s| s.expires <= Instant::now())
        {
            sessions.remove(&key);
        }
        f(sessions.get_mut(&key))
    }
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
        Ok(self.with_session(tenant, session, |s| s.is_some()))
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = (tenant.clone(), session.as_str().to_owned());
        if sessions.get(&key).is_some_and(|s| s.expires <= now) {
            sessions.remove(&key);
        }
        let fresh = !sessions.contains_key(&key);
        let entry = sessions.entry(key).or_insert_with(|| Session {
            messages: Vec::new(),
            info: SessionInfo {
                created_at_ms: turn.at_ms,
                ..SessionInfo::default()
            },
            expires: now,
        });
        if fresh {
            entry.messages.extend(turn.if_new.iter().cloned());
        }
        entry.messages.extend(turn.messages.iter().cloned());
        let info = &mut entry.info;
        info.message_count = entry.messages.len();
        info.last_message_ms = turn.at_ms;
        info.usage.prompt_tokens += turn.usage.prompt_tokens;
        info.usage.completion_tokens += turn.usage.completion_tokens;
        info.usage.total_tokens += turn.usage.total_tokens;
        if let Some(model) = &turn.model
            && !info.models.contains(model)
        {
            info.models.push(model.clone());
        }
        entry.expires = now + self.retention.history_ttl;
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
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        let mut entries: Vec<SessionEntry> = sessions
            .iter()
            .filter(|((tenant, _), _)| match scope {
                Scope::All => true,
                Scope::Tenant(t) => t == tenant,
            })
            .map(|((tenant, id), s)| SessionEntry {
                tenant: tenant.clone(),
                session_id: id.clone(),
                last_activity_ms: s.info.last_message_ms,
            })
            .collect();
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
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let removed = sessions.remove(&(tenant.clone(), session.as_str().to_owned()));
        Ok(removed.is_some_and(|s| s.expires > Instant::now()))
    }

    async fn tenants_of(&self, session: &SessionId) -> Result<Vec<Tenant>, StoreError> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut tenants: Vec<Tenant> = sessions
            .iter()
            .filter(|((_, id), s)| id == session.as_str() && s.expires > now)
            .map(|((tenant, _), _)| tenant.clone())
            .collect();
        tenants.sort();
        Ok(tenants)
    }
}
