//! The one place that builds Redis keys. Hash tags (`{...}`) keep each
//! session's keys, each tenant's index and each stream's keys on one Cluster
//! slot, so every multi-key pipeline stays within a slot.

use crate::session::SessionId;
use crate::tenant::Tenant;

/// Every key tether writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key<'a> {
    /// Sorted set of a tenant's session ids, score = last activity (ms).
    Sessions(&'a Tenant),
    /// Sorted set of `tenant/session` over all tenants, for the admin token.
    AllSessions,
    /// List of a session's messages as JSON, oldest first.
    Messages(&'a Tenant, &'a SessionId),
    /// Hash of a session's info: created, updated, usage, models, streams.
    SessionMeta(&'a Tenant, &'a SessionId),
    /// Stream (XADD) of a stream's record and event batches: its opening
    /// (tenant, session), its batches, its closing (the final state).
    StreamEvents(&'a str),
    /// Hash of what a stream's owner writes while no batch flows (its
    /// heartbeat) and of a cancel request; absent otherwise.
    StreamMeta(&'a str),
}

impl Key<'_> {
    /// The key's text, pushed piece by piece (`format!` costs about four
    /// times as much, and a turn builds four keys).
    pub fn to_redis(&self) -> String {
        let (tag, parts, suffix): (&str, [&str; 2], &str) = match self {
            Key::Sessions(t) => ("t:", [t.as_str(), ""], "sessions"),
            Key::AllSessions => return "tether:{all}:sessions".to_string(),
            Key::Messages(t, s) => ("s:", [t.as_str(), s.as_str()], "messages"),
            Key::SessionMeta(t, s) => ("s:", [t.as_str(), s.as_str()], "meta"),
            Key::StreamEvents(id) => ("x:", [id, ""], "events"),
            Key::StreamMeta(id) => ("x:", [id, ""], "meta"),
        };
        let mut key = String::with_capacity(16 + parts[0].len() + parts[1].len() + suffix.len());
        key.push_str("tether:{");
        key.push_str(tag);
        key.push_str(parts[0]);
        if !parts[1].is_empty() {
            key.push(':');
            key.push_str(parts[1]);
        }
        key.push_str("}:");
        key.push_str(suffix);
        key
    }
}

/// The member of [`Key::AllSessions`] for a session.
pub fn all_sessions_member(tenant: &Tenant, session: &str) -> String {
    let mut member = String::with_capacity(tenant.as_str().len() + 1 + session.len());
    member.push_str(tenant.as_str());
    member.push('/');
    member.push_str(session);
    member
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

    #[test]
    fn every_key_reads_as_the_layout_in_the_readme_says() {
        let tenant = Tenant::from_credential("k");
        let session = SessionId::parse("chat-1").unwrap();
        let cases = [
            (
                Key::Sessions(&tenant),
                format!("tether:{{t:{tenant}}}:sessions"),
            ),
            (Key::AllSessions, "tether:{all}:sessions".into()),
            (
                Key::Messages(&tenant, &session),
                format!("tether:{{s:{tenant}:chat-1}}:messages"),
            ),
            (
                Key::SessionMeta(&tenant, &session),
                format!("tether:{{s:{tenant}:chat-1}}:meta"),
            ),
            (Key::StreamEvents("st-1"), "tether:{x:st-1}:events".into()),
            (Key::StreamMeta("st-1"), "tether:{x:st-1}:meta".into()),
        ];
        for (key, text) in cases {
            assert_eq!(key.to_redis(), text);
        }
        assert_eq!(
            all_sessions_member(&tenant, "chat-1"),
            format!("{tenant}/chat-1")
        );
    }
}
