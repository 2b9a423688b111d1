//! The one place that builds Redis keys. Hash tags (`{...}`) keep each
//! session's keys, each tenant's index and each stream's keys on one Cluster
//! slot, so every multi-key pipeline stays within a slot.

use crate::session::SessionId;
use crate::tenant::Tenant;

/// Every key tether writes.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    /// Sorted set of a tenant's session ids, score = last activity (ms).
    Sessions(&'a Tenant),
    /// Sorted set of `tenant/session` over all tenants, for the admin token.
    AllSessions,
    /// List of a session's messages as JSON, oldest first.
    Messages(&'a Tenant, &'a SessionId),
    /// Hash of a session's info: created, updated, usage, models, streams.
    SessionMeta(&'a Tenant, &'a SessionId),
    /// Stream (XADD) of a stream's event batches.
    StreamEvents(&'a str),
    /// Hash of a stream's record: state, tenant, session, heartbeat.
    StreamMeta(&'a str),
}

impl Key<'_> {
    pub fn to_redis(&self) -> String {
        match self {
            Key::Sessions(t) => format!("tether:{{t:{t}}}:sessions"),
            Key::AllSessions => "tether:{all}:sessions".to_string(),
            Key::Messages(t, s) => format!("tether:{{s:{t}:{s}}}:messages"),
            Key::SessionMeta(t, s) => format!("tether:{{s:{t}:{s}}}:meta"),
            Key::StreamEvents(id) => format!("tether:{{x:{id}}}:events"),
            Key::StreamMeta(id) => format!("tether:{{x:{id}}}:meta"),
        }
    }
}

/// The member of [`Key::AllSessions`] for a session.
pub fn all_sessions_member(tenant: &Tenant, session: &str) -> String {
    format!("{tenant}/{session}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: the text inside the first `{...}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = key[open..].find('}').unwrap() + open;
        &key[open + 1..close]
    }

    #[test]
    fn a_sessions_keys_share_one_slot() {
        let tenant = Tenant::from_credential("k");
        let session = SessionId::parse("chat-1").unwrap();
        let messages = Key::Messages(&tenant, &session).to_redis();
        let meta = Key::SessionMeta(&tenant, &session).to_redis();
        assert_eq!(hash_tag(&messages), hash_tag(&meta));
        assert_eq!(messages, format!("tether:{{s:{tenant}:chat-1}}:messages"));
        assert_ne!(
            hash_tag(&messages),
            hash_tag(&Key::Sessions(&tenant).to_redis())
        );
    }
}
