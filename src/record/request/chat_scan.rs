//! A Chat Completions body read by hand, with the result serde's derived
//! read and [`Message::from_raw`] give together, in one pass instead of
//! two. A client sends the whole conversation on every turn, so a chat's
//! later turn is kilobytes of messages that history mostly drops: serde
//! checked every byte of them as JSON, then each message was walked again
//! for its role. That was two fifths of the instructions of recording a
//! 41-message turn.
//!
//! The scan checks the text as strictly as serde (the shared
//! [`Scan`]) while it reads each message's role. It gives up (`None`, and
//! serde reads the body as before) where it cannot vouch for the result:
//! a member name with escapes, a member recording reads given twice (at
//! the top or in a message), a role with escapes, `messages` that is not
//! an array, text that is not JSON, nesting past
//! [`MAX_DEPTH`](crate::record::json_scan::MAX_DEPTH). The tests hold the
//! two reads equal on the recorded requests, on damaged copies of them and
//! on bodies whose members are any JSON value.

use serde_json::Value;

use super::ChatTop;
use crate::record::json_scan::{Scan, Seen};
use crate::record::message::{Message, Role};
use crate::record::turn::history_may_keep;

/// A message as read: its text, its role (`None` for a value that is not a
/// string) and whether it has a `model` or `timestamp` member.
type Scanned<'a> = (&'a str, Option<&'a str>, bool);

/// How deep a message's members sit (in a message, in the messages, in the
/// body): a skipped value is counted from there.
const MEMBER_DEPTH: usize = 3;

/// The body's top level, or `None` when serde must decide.
pub(super) fn read(text: &str) -> Option<ChatTop<'_>> {
    let mut scan = Scan::new(text, MEMBER_DEPTH);
    if scan.peek()? != b'{' {
        return None;
    }
    let mut top = ChatTop::default();
    let mut messages = None;
    let mut seen = Seen::default();
    scan.object(1, |scan, name| {
        match name {
            "model" => top.model = seen.once(0, || scan.maybe_str())?,
            "stream" => top.stream = seen.once(1, || scan.is_true())?,
            "messages" => messages = Some(seen.once(2, || scan.messages())?),
            "metadata" => top.metadata = seen.once(3, || scan.unless_null())?,
            "user" => top.user = seen.once(4, || scan.maybe_str())?,
            "stream_options" => {
                top.stream_options = Some(seen.once(5, || scan.by_serde::<Value>())?)
            }
            _ => scan.skip()?,
        }
        Some(())
    })?;
    top.messages = messages?;
    scan.finished().then_some(top)
}

/// The chat request's own reads, beside the scan's general ones.
impl<'a> Scan<'a> {
    /// The objects among the messages that history may keep (any other
    /// value is skipped), each copied only once it is known to be kept.
    fn messages(&mut self) -> Option<Vec<Message>> {
        if self.peek()? != b'[' {
            return None;
        }
        let mut scanned = Vec::with_capacity(16);
        self.array(2, |scan| {
            if scan.peek()? == b'{' {
                scanned.push(scan.message()?);
            } else {
                scan.skip()?;
            }
            Some(())
        })?;
        let kept = history_may_keep(scanned, |&(_, role, _)| Role::of(role.unwrap_or("")));
        Some(
            kept.into_iter()
                .map(|(text, role, stamped)| Message::scanned(text, role, stamped))
                .collect(),
        )
    }

    /// A message as its text, with its role and whether it is stamped.
    fn message(&mut self) -> Option<Scanned<'a>> {
        let start = self.at();
        let (mut role, mut stamped) = (None, false);
        let mut seen = Seen::default();
        self.object(MEMBER_DEPTH, |scan, name| {
            match name {
                "role" => role = seen.once(0, || scan.role())?,
                "model" => seen.once(1, || scan.skip())?,
                "timestamp" => seen.once(2, || scan.skip())?,
                _ => return scan.skip(),
            }
            stamped |= name != "role";
            Some(())
        })?;
        Some((self.since(start), role, stamped))
    }

    /// A role: a string without escapes, or `None` for any other value. A
    /// role with escapes gives up (the general read decodes it).
    fn role(&mut self) -> Option<Option<&'a str>> {
        if self.peek()? != b'"' {
            self.skip()?;
            return Some(None);
        }
        match self.raw_string()? {
            (role, false) => Some(Some(role)),
            (_, true) => None,
        }
    }

    /// `true` only for the JSON `true` (`Value::as_bool(..).unwrap_or(false)`).
    fn is_true(&mut self) -> Option<bool> {
        if self.peek()? == b't' {
            return self.literal("true").map(|()| true);
        }
        self.skip()?;
        Some(false)
    }

    /// A value's text, `None` for `null`.
    fn unless_null(&mut self) -> Option<Option<&'a str>> {
        if self.peek()? == b'n' {
            return self.null().map(|()| None);
        }
        let start = self.at();
        self.skip()?;
        Some(Some(self.since(start)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::json_scan::strategies::{any_value, assert_reads, damaged, members};
    use crate::record::message::Role;
    use crate::record::request::read_chat_by_serde;

    /// Everything a read of the body gives, messages by their text.
    type Read = (
        Option<String>,
        bool,
        Vec<(String, Role, bool)>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Value>,
    );

    fn parts(top: ChatTop) -> Read {
        let metadata = top.metadata.map(str::to_owned);
        let request = top.into_request();
        let messages = request.messages.iter().map(|m| {
            let (text, role, stamped) = m.parts();
            (text.to_owned(), role, stamped)
        });
        (
            request.model,
            request.stream,
            messages.collect(),
            metadata,
            request.metadata_session,
            request.user,
            request.stream_options,
        )
    }

    fn by_scan(text: &str) -> Option<Read> {
        read(text).map(parts)
    }

    fn by_serde(text: &str) -> Option<Read> {
        read_chat_by_serde(text).map(parts)
    }

    /// The scan either gives up or reads what serde reads.
    fn agrees(text: &str) -> bool {
        match by_scan(text) {
            Some(read) => {
                assert_eq!(Some(read), by_serde(text), "{text}");
                true
            }
            None => false,
        }
    }

    /// The bodies of the recorded requests.
    fn recorded() -> &'static [String] {
        static BODIES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        BODIES.get_or_init(|| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams");
            let mut bodies = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.to_string_lossy().ends_with(".request.json") {
                    bodies.push(std::fs::read_to_string(&path).unwrap());
                }
            }
            bodies
        })
    }

    #[test]
    fn reads_every_recorded_request_with_messages_as_serde_does() {
        let mut read_by_scan = 0;
        for body in recorded() {
            if by_serde(body).is_some() {
                assert!(agrees(body), "given up: {body}");
                read_by_scan += 1;
            } else {
                assert_eq!(by_scan(body), None, "{body}");
            }
        }
        assert!(read_by_scan >= 15, "{read_by_scan} requests read");
    }

    #[test]
    fn reads_unusual_bodies_as_serde_does_or_gives_up() {
        let read_by_scan = [
            r#"{"messages":[]}"#,
            r#" { "model" : 5 , "stream" : "true" , "user" : null , "messages" : [ 1 , "s" , null , [ ] , { } ] } "#,
            r#"{"model":"m\u00e9\n","stream":true,"user":"\ud83d\ude00","messages":[{"content":"a\"b\\c\/d","role":"user"}]}"#,
            r#"{"stream":false,"messages":[{"role":null,"model":null},{"role":["assistant"],"timestamp":{"x":1}}]}"#,
            r#"{"metadata":null,"stream_options":null,"messages":[{"role":"system"}]}"#,
            r#"{"metadata":{"session_id":"s1","x":[1,2]},"stream_options":{"include_usage":true},"messages":[]}"#,
            r#"{"metadata":"text","messages":[{"role":"tool","content":[{"type":"text","text":"t"}]}],"x":{"y":[-1.5e-3,0,true]}}"#,
            r#"{"metadata":{"session_id":"a","session_id":"b"},"messages":[]}"#,
            r#"{"x":1,"x":2,"messages":[{"name":"n","name":"again","role":"developer"}]}"#,
            r#"{"messages":[{"content":{"role":"assistant","model":"m"},"role":"user"}]}"#,
        ];
        // Given up: serde decides (it refuses most of these).
        let given_up = [
            r#"{"messages":null}"#,
            r#"{"messages":{"role":"user"}}"#,
            r#"{"model":"a","model":"b","messages":[]}"#,
            r#"{"messages":[],"messages":[]}"#,
            r#"{"messages":[{"role":"user","role":"assistant"}]}"#,
            r#"{"messages":[{"role":"user","model":1,"model":2}]}"#,
            r#"{"messages":[{"role":"\u0073ystem"}]}"#,
            r#"{"messages":[{"r\u006fle":"system"}]}"#,
            r#"{"messages":[{"content":{"\u0061":1}}]}"#,
            r#"{"messages":[{"content":"\ud83d"}],"user":"\ud83d"}"#,
            "{\"messages\":[{\"content\":\"a\ttab\"}]}",
            r#"{"messages":[{"content":01}]}"#,
            r#"{"messages":[{"content":1.}]}"#,
            r#"{"messages":[{"content":[1,]}]}"#,
            r#"{"messages":[{"content":1,}]}"#,
            r#"{"messages":[] } x"#,
            r#"{"messages":[]"#,
            r#"[{"messages":[]}]"#,
            "",
        ];
        assert_reads(agrees, &read_by_scan, &given_up);
    }

    #[test]
    fn gives_up_past_its_depth_where_serde_decides() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let text = format!(r#"{{"messages":[{{"role":"user","content":{deep}}}]}}"#);
        assert!(read(&text).is_none());
        assert!(by_serde(&text).is_some());
    }

    /// A message: the members history looks at, and others, each any JSON
    /// value or left out; the role mostly one of the usual ones.
    fn message() -> BoxedStrategy<Value> {
        let role = prop_oneof![
            3 => prop::sample::select(vec!["system", "developer", "user", "assistant", "tool"])
                .prop_map(Value::from),
            1 => any_value(),
        ];
        (
            proptest::option::of(role),
            members(
                &["content", "model", "timestamp", "name", "tool_calls"],
                any_value().boxed(),
            ),
        )
            .prop_map(|(role, mut message)| {
                if let (Some(role), Value::Object(members)) = (role, &mut message) {
                    members.insert("role".into(), role);
                }
                message
            })
            .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A body whose every member recording reads is any JSON value, or
        /// absent, its messages any values and mostly messages. Written
        /// compact or pretty.
        #[test]
        fn reads_members_of_any_value_as_serde_does(
            body in members(
                &["model", "stream", "messages", "metadata", "user", "stream_options", "x"],
                prop_oneof![
                    any_value(),
                    proptest::collection::vec(prop_oneof![4 => message(), 1 => any_value()], 0..5)
                        .prop_map(Value::from),
                ].boxed(),
            ),
            pretty in any::<bool>(),
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&body).unwrap()
            } else {
                body.to_string()
            };
            // Without escapes, the scan never gives up where serde reads.
            if !text.contains('\\') {
                prop_assert_eq!(by_scan(&text), by_serde(&text), "{}", text);
            } else {
                agrees(&text);
            }
        }

        /// Damaged copies of the recorded requests: bytes changed, dropped
        /// or repeated. The scan reads each as serde does, or gives up.
        #[test]
        fn reads_damaged_requests_as_serde_does_or_gives_up(text in damaged(recorded())) {
            agrees(&text);
        }
    }
}
