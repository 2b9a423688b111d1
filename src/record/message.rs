//! One message of a recorded conversation, kept as the JSON text it came as.
//!
//! A chat request's messages are most of what history stores, and each
//! stored message is the request's message plus the turn's `model` and
//! `timestamp`. Parsing every message into a `serde_json::Value` tree,
//! inserting two members and writing it out again was about a fifth of the
//! instructions of a recorded request; a message is instead kept as its own
//! text, read once for its role and depth, and only when it is stored
//! written out without whitespace with the two members appended. A client
//! sends the whole conversation on every turn, so most messages of a long
//! one are read and never stored. Only a message that already has a
//! `model` or `timestamp` member (whose value history replaces) goes
//! through a `Value`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::json_text::{ObjectScan, compact_into, scan_object};
use crate::store::StoredMessage;

/// Who wrote a message, as far as history's de-duplication cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    Assistant,
    /// `user`, `tool`, `function`, anything else, or none.
    Other,
}

impl Role {
    pub fn of(role: &str) -> Role {
        match role {
            "system" => Role::System,
            "developer" => Role::Developer,
            "assistant" => Role::Assistant,
            _ => Role::Other,
        }
    }

    /// The role of an OpenAI-shaped message as a JSON value.
    pub fn of_value(message: &Value) -> Role {
        Role::of(message.get("role").and_then(Value::as_str).unwrap_or(""))
    }

    /// Instructions: kept from before the last assistant message only for a
    /// new session.
    pub fn instructs(self) -> bool {
        matches!(self, Role::System | Role::Developer)
    }
}

/// A JSON object as the client sent it, with its role read once.
#[derive(Debug, Clone)]
pub struct Message {
    /// The object's text, whitespace and all: it is compacted only if it
    /// is stored, and a client sends the whole conversation on every turn,
    /// of which history stores the last few messages.
    json: Box<str>,
    role: Role,
    /// Whether the object has a `model` or `timestamp` member already.
    stamped: bool,
}

/// A message nested deeper than a `serde_json::Value` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

/// The members of a message that history looks at, read by a parser when
/// the text is unusual (see [`ObjectScan::Unusual`]); the rest is skipped.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    model: bool,
    #[serde(default, deserialize_with = "present")]
    timestamp: bool,
}

/// True for a member that is there, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(true)
}

impl Message {
    /// A message from the valid JSON text of an object, as a client sent
    /// it. `Ok(None)` when `raw` is not an object; an error when it nests
    /// deeper than a `Value` may (it could not be read back).
    pub fn from_raw(raw: &str) -> Result<Option<Message>, TooDeep> {
        if !raw.starts_with('{') {
            return Ok(None);
        }
        let message = |role, stamped| Message::scanned(raw, role, stamped);
        Ok(match scan_object(raw) {
            ObjectScan::Read { role, stamped } => Some(message(role, stamped)),
            ObjectScan::TooDeep => return Err(TooDeep),
            ObjectScan::Unusual => match serde_json::from_str::<Head>(raw) {
                Ok(head) => Some(message(head.role.as_deref(), head.model || head.timestamp)),
                // A member given twice: the rules of a `Value` decide (the
                // last of duplicates wins).
                Err(_) => serde_json::from_str(raw)
                    .ok()
                    .as_ref()
                    .and_then(Message::from_value),
            },
        })
    }

    /// A message from the valid JSON text of an object whose members a
    /// strict scan has read: its role (`None` for a value that is not a
    /// string) and whether it has a `model` or `timestamp` member.
    pub fn scanned(raw: &str, role: Option<&str>, stamped: bool) -> Message {
        Message {
            json: raw.into(),
            role: Role::of(role.unwrap_or("")),
            stamped,
        }
    }

    /// The message's text, role and whether it is stamped: what two reads
    /// of one body must agree on.
    #[cfg(test)]
    pub fn parts(&self) -> (&str, Role, bool) {
        (&self.json, self.role, self.stamped)
    }

    /// A message from an object. `None` when `value` is not an object.
    pub fn from_value(value: &Value) -> Option<Message> {
        let obj = value.as_object()?;
        Some(Message {
            json: serde_json::to_string(value).unwrap_or_default().into(),
            role: Role::of(obj.get("role").and_then(Value::as_str).unwrap_or("")),
            stamped: obj.contains_key("model") || obj.contains_key("timestamp"),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The message as a JSON value (what the routes that show it return).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// The stored form: the message without whitespace between its tokens,
    /// with `model` (the JSON text of a string or `null`) and `timestamp`
    /// set, in that order after its own members.
    pub fn stamp(self, model: &str, timestamp: &str) -> StoredMessage {
        if self.stamped {
            let mut value = self.to_value();
            if let Value::Object(obj) = &mut value {
                obj.insert(
                    "model".into(),
                    serde_json::from_str(model).unwrap_or(Value::Null),
                );
                obj.insert("timestamp".into(), Value::from(timestamp));
            }
            return StoredMessage::new(&value);
        }
        let mut json = Vec::with_capacity(self.json.len() + model.len() + timestamp.len() + 28);
        compact_into(self.json.as_bytes(), &mut json);
        // Compact text of an object: its last byte is the closing brace.
        json.pop();
        if json.len() > 1 {
            json.push(b',');
        }
        json.extend_from_slice(b"\"model\":");
        json.extend_from_slice(model.as_bytes());
        json.extend_from_slice(b",\"timestamp\":\"");
        json.extend_from_slice(timestamp.as_bytes());
        json.extend_from_slice(b"\"}");
        StoredMessage::from_json(json.into())
    }
}

/// Messages are equal when their objects are, whatever whitespace their
/// text has.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.role == other.role && self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Message {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TIME: &str = "2026-12-06T10:00:00.000001Z";

    fn stored(message: Message) -> Value {
        message.stamp("\"gpt-4o\"", TIME).to_value()
    }

    #[test]
    fn a_message_is_stored_with_its_members_in_order_then_model_and_timestamp() {
        let raw = r#"{ "role" : "user",
            "content": "a \"quoted\" \\ word  with  spaces\n" , "name":"x" }"#;
        let message = Message::from_raw(raw).unwrap().unwrap();
        assert_eq!(message.role(), Role::Other);
        let text = message.stamp("\"gpt-4o\"", TIME);
        assert_eq!(
            std::str::from_utf8(text.as_bytes()).unwrap(),
            r#"{"role":"user","content":"a \"quoted\" \\ word  with  spaces\n","name":"x","model":"gpt-4o","timestamp":"2026-12-06T10:00:00.000001Z"}"#
        );
    }

    #[test]
    fn raw_and_parsed_messages_are_stored_alike() {
        for value in [
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                   "function": {"name": "f", "arguments": "{\"a\": [1, 2]}"}}]}),
            json!({"role": "system", "content": "é \u{1F600} \t tab"}),
            json!({}),
            json!({"role": "user", "content": "old", "model": "other", "timestamp": 5}),
            json!({"role": "user", "content": "x", "model": null}),
        ] {
            let raw = serde_json::to_string_pretty(&value).unwrap();
            let from_raw = Message::from_raw(&raw).unwrap().unwrap();
            let from_value = Message::from_value(&value).unwrap();
            assert_eq!(from_raw, value);
            let mut expected = value.clone();
            expected["model"] = json!("gpt-4o");
            expected["timestamp"] = json!(TIME);
            assert_eq!(stored(from_raw), expected, "{raw}");
            assert_eq!(stored(from_value), expected, "{raw}");
        }
    }

    #[test]
    fn only_the_top_level_members_name_the_role_and_the_stamps() {
        for raw in [
            r#"{"content":{"role":"assistant","model":"m"},"role":"user"}"#,
            r#"{"content":"\"role\":\"assistant\", \\","role":"system"}"#,
            r#"{"a":[{"timestamp":1},"role"],"role":"developer"}"#,
            r#" { "role" : "assistant" , "timestamp" : 5 } "#,
            r#"{"model":null,"role":["assistant"]}"#,
            r#"{"r\u006fle":"assistant","content":"x"}"#,
            r#"{"content":"x","model\u0000":1}"#,
            r#"{"role":"assistant","role":"user"}"#,
            "{}",
        ] {
            let value: Value = serde_json::from_str(raw).unwrap();
            let read = Message::from_raw(raw.trim()).unwrap().unwrap();
            let parsed = Message::from_value(&value).unwrap();
            assert_eq!(read.role(), parsed.role(), "{raw}");
            assert_eq!(read.stamped, parsed.stamped, "{raw}");
            assert_eq!(stored(read), stored(parsed), "{raw}");
        }
    }

    #[test]
    fn roles_are_read_whatever_the_text_looks_like() {
        let role = |raw: &str| Message::from_raw(raw).unwrap().unwrap().role();
        assert_eq!(role(r#"{"role":"assistant"}"#), Role::Assistant);
        assert_eq!(
            role(r#"{"content":"x","role":"\u0073ystem"}"#),
            Role::System
        );
        assert_eq!(
            role(r#"{"role":"developer","role":"assistant"}"#),
            Role::Assistant
        );
        assert_eq!(role(r#"{"role":7}"#), Role::Other);
        assert_eq!(role(r#"{"role":null}"#), Role::Other);
        assert_eq!(Message::from_raw("[1]"), Ok(None));
        assert_eq!(Message::from_raw("\"text\""), Ok(None));
        let deep = format!("{{\"content\":{}1{}}}", "[".repeat(127), "]".repeat(127));
        assert_eq!(Message::from_raw(&deep), Err(TooDeep));
    }
}
