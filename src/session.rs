//! Session ids: what a valid one is, and the `/s/{session}/...` path prefix
//! that lets an SDK's base URL alone carry one.

use std::fmt;

/// Longest accepted session id, in bytes (ASCII only, so also characters).
pub const MAX_SESSION_ID_LEN: usize = 128;

/// A checked session id: 1 to 128 characters of `[A-Za-z0-9._:-]`, starting
/// with a letter or digit. The rule keeps ids safe inside Redis keys, URLs,
/// headers and log lines without any escaping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(String);

/// Why a string is not a session id; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSessionId {
    #[error("session id is empty")]
    Empty,
    #[error("session id is longer than {MAX_SESSION_ID_LEN} characters")]
    TooLong,
    #[error("session id must start with a letter or digit")]
    BadStart,
    #[error("session id may contain only letters, digits and . _ : -")]
    BadCharacter,
}

impl SessionId {
    pub fn parse(raw: &str) -> Result<SessionId, InvalidSessionId> {
        let bytes = raw.as_bytes();
        match bytes.first() {
            None => return Err(InvalidSessionId::Empty),
            Some(b) if !b.is_ascii_alphanumeric() => return Err(InvalidSessionId::BadStart),
            Some(_) => {}
        }
        if bytes.len() > MAX_SESSION_ID_LEN {
            return Err(InvalidSessionId::TooLong);
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
        {
            return Err(InvalidSessionId::BadCharacter);
        }
        Ok(SessionId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new random id, for a request that names no session.
    pub fn generate() -> SessionId {
        SessionId(uuid::Uuid::new_v4().to_string())
    }

    /// The session of a body's `user` field: the field itself when it is a
    /// valid id, else a stable id derived from it (`user-` and 32 hex digits),
    /// so `"alice@example.com"` still gets one session of its own.
    pub fn from_user(user: &str) -> SessionId {
        SessionId::parse(user).unwrap_or_else(|_| {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(user.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            SessionId(format!("user-{hex}"))
        })
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `/s/{session}/rest` into the raw session segment and `/rest`.
/// Returns `None` when the path has no session prefix. `/s/{session}` alone
/// yields the rest `/`.
pub fn split_session_prefix(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/s/")?;
    match after.find('/') {
        Some(slash) => Some((&after[..slash], &after[slash..])),
        None => Some((after, "/")),
    }
}

/// True when a segment of `path` is `.` or `..`, spelled out or
/// percent-encoded: clients remove them (RFC 3986 5.2.4), so one that
/// arrives is a trick to reach a path that a prefix check did not see.
pub fn has_dot_segments(path: &str) -> bool {
    // Most paths hold neither: one look for either byte settles them.
    if memchr::memchr2(b'.', b'%', path.as_bytes()).is_none() {
        return false;
    }
    path.split('/')
        .any(|segment| matches!(dots(segment), Some(1 | 2)))
}

/// How many dots `segment` is made of, each `.` or `%2e` (any case); `None`
/// when it holds anything else. Checked on every request, so it allocates
/// nothing.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut count = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return None,
        };
        count += 1;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ids_of_the_documented_alphabet() {
        for ok in ["a", "chat-42", "user:123.abc_def", "9", &"x".repeat(128)] {
            assert!(
                SessionId::parse(ok).is_ok(),
                "{ok:?} should be a valid session id"
            );
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        let cases = [
            ("", InvalidSessionId::Empty),
            ("-abc", InvalidSessionId::BadStart),
            (".hidden", InvalidSessionId::BadStart),
            ("a b", InvalidSessionId::BadCharacter),
            ("a/b", InvalidSessionId::BadCharacter),
            ("a\r\nSet-Cookie:x", InvalidSessionId::BadCharacter),
            ("caf\u{e9}", InvalidSessionId::BadCharacter),
            ("a%2Fb", InvalidSessionId::BadCharacter),
        ];
        for (raw, want) in cases {
            assert_eq!(SessionId::parse(raw), Err(want.clone()), "{raw:?}");
        }
        assert_eq!(
            SessionId::parse(&"x".repeat(129)),
            Err(InvalidSessionId::TooLong)
        );
    }

    #[test]
    fn users_that_are_not_ids_get_a_stable_derived_one() {
        assert_eq!(SessionId::from_user("alice").as_str(), "alice");
        let derived = SessionId::from_user("alice@example.com");
        assert!(
            derived.as_str().starts_with("user-") && derived.as_str().len() == 37,
            "{derived}"
        );
        assert_eq!(derived, SessionId::from_user("alice@example.com"));
        assert!(SessionId::parse(SessionId::generate().as_str()).is_ok());
    }

    #[test]
    fn dot_segments_are_found_spelled_out_or_encoded() {
        for tricky in [
            "/s/../tether/sessions",
            "/v1/./models",
            "/v1/%2E%2E/tether",
            "/v1/%2e",
            "/v1/.%2E/x",
            "/..",
        ] {
            assert!(has_dot_segments(tricky), "{tricky}");
        }
        for plain in [
            "/v1/chat/completions",
            "/v1/files/a..b",
            "/v1/.well-known",
            "/v1/...",
            "/v1/%2",
            "//v1/",
        ] {
            assert!(!has_dot_segments(plain), "{plain}");
        }
    }

    #[test]
    fn session_prefix_is_split_from_the_path() {
        assert_eq!(
            split_session_prefix("/s/chat-42/v1/chat/completions"),
            Some(("chat-42", "/v1/chat/completions"))
        );
        assert_eq!(split_session_prefix("/s/chat-42"), Some(("chat-42", "/")));
        assert_eq!(
            split_session_prefix("/s//v1/models"),
            Some(("", "/v1/models"))
        );
        assert_eq!(split_session_prefix("/v1/s/x/models"), None);
        assert_eq!(split_session_prefix("/sessions"), None);
    }
}
