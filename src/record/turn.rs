//! History de-duplication and the stored message shape.
//!
//! A chat request carries the whole conversation every turn; history keeps
//! each message once. What is new in a request: its system/developer
//! messages when the session is new, then every message after the request's
//! last assistant message. The reply is appended after them.

use std::time::SystemTime;

use serde_json::Value;

use serde::Serialize;

use super::assemble::{HistoryMessage, Usage};
use super::json_write;
use super::{Message, Reply, Role, TurnRequest};
use crate::store::{StoredMessage, Turn, UsageTotals};

/// How the response that produced a reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    /// False when the reply was cut short (upstream failure, cancel, a
    /// recording that could not keep up).
    pub complete: bool,
    pub stream_id: Option<String>,
}

/// The messages of `request` that history does not have yet.
pub fn new_messages(request: &TurnRequest, session_is_new: bool) -> Vec<Message> {
    let (if_new, always) = split(request.system.clone(), request.messages.clone());
    if session_is_new {
        if_new.into_iter().chain(always).collect()
    } else {
        always
    }
}

/// The turn to append: the new request messages and the reply, each with
/// its model and timestamp. Takes the request and the reply by value: their
/// messages move into the turn instead of being copied.
pub fn build(
    request: TurnRequest,
    reply: Option<Reply>,
    context: ReplyContext,
    now: SystemTime,
) -> Turn {
    let timestamp = crate::timestamp::rfc3339_micros(now);
    let timestamp = timestamp.as_str();
    let model = reply
        .as_ref()
        .and_then(|r| r.model.clone())
        .or(request.model);
    let model_json = serde_json::to_string(&model).unwrap_or_else(|_| "null".into());
    let (if_new, always) = split(request.system, request.messages);
    let if_new: Vec<StoredMessage> = if_new
        .into_iter()
        .map(|m| m.stamp(&model_json, timestamp))
        .collect();
    let mut messages: Vec<StoredMessage> = Vec::with_capacity(always.len() + 1);
    messages.extend(always.into_iter().map(|m| m.stamp(&model_json, timestamp)));
    let mut usage = UsageTotals::default();
    if let Some(reply) = reply {
        usage = reply.usage.as_ref().map(Usage::totals).unwrap_or_default();
        let stored = StoredReply {
            message: reply.history_message(),
            model: model.as_deref(),
            timestamp,
            finish_reason: reply.finish_reason(),
            usage: reply.usage.as_ref(),
            error: reply.error.as_ref().filter(|e| !e.is_null()),
            stream_id: context.stream_id.as_deref(),
            api: reply.api.as_str(),
            complete: context.complete,
        };
        messages.push(StoredMessage::from_json(stored.to_json().into()));
    }
    Turn {
        id: String::new(),
        if_new,
        messages,
        usage,
        model,
        at_ms: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default(),
    }
}

/// The stored reply: the history message, then what history adds to it, in
/// this order; what is absent is left out (`model` is null instead).
/// Written by hand ([`StoredReply::to_json`]): serde's serializer cost a
/// turn 3,000 instructions. `Serialize` is what the tests compare it with.
#[derive(Serialize)]
struct StoredReply<'a> {
    #[serde(flatten)]
    message: HistoryMessage<'a>,
    model: Option<&'a str>,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<&'a str>,
    api: &'a str,
    complete: bool,
}

impl StoredReply<'_> {
    /// The JSON text `Serialize` writes.
    fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut object = json_write::Object::open(&mut out);
        self.message.write_members(&mut object);
        object.str_or_null("model", self.model);
        object.str("timestamp", self.timestamp);
        object.some_str("finish_reason", self.finish_reason);
        if let Some(usage) = self.usage {
            object.raw("usage", usage.text());
        }
        if let Some(error) = self.error {
            object.value("error", error);
        }
        object.some_str("stream_id", self.stream_id);
        object.str("api", self.api);
        object.bool("complete", self.complete);
        object.close();
        out
    }
}

/// The messages of a conversation that [`split`] can return, in order:
/// the system/developer messages before the last assistant message, that
/// message (it marks where the new ones begin), and every message after it.
/// A client sends the whole conversation on every turn, of which history
/// keeps the last few: what this leaves out is dropped as a request is
/// read, before its text is copied (a chat's 21st turn, 41 messages: 11,400
/// instructions of copies, `EARLIER=20 bench/callgrind.sh`). `role` tells
/// each message's role.
pub fn history_may_keep<T>(mut messages: Vec<T>, role: impl Fn(&T) -> Role) -> Vec<T> {
    let Some(last_assistant) = messages.iter().rposition(|m| role(m) == Role::Assistant) else {
        return messages;
    };
    let mut at = 0;
    messages.retain(|m| {
        at += 1;
        at > last_assistant || role(m).instructs()
    });
    messages
}

/// The new messages in two parts: those only a new session takes (the
/// instructions given beside the conversation, and the system/developer
/// messages that precede the last assistant message), and those every turn
/// adds (everything after the last assistant message). The store decides
/// between them, in the same step that appends.
fn split(system: Vec<Message>, mut messages: Vec<Message>) -> (Vec<Message>, Vec<Message>) {
    let after_last_assistant = messages
        .iter()
        .rposition(|m| m.role() == Role::Assistant)
        .map_or(0, |i| i + 1);
    let always = messages.split_off(after_last_assistant);
    let if_new = system
        .into_iter()
        .chain(messages.into_iter().filter(|m| m.role().instructs()))
        .collect();
    (if_new, always)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Api;
    use serde_json::json;

    fn chat(messages: Value) -> TurnRequest {
        TurnRequest {
            api: Api::ChatCompletions,
            model: Some("m".into()),
            stream: true,
            system: vec![],
            messages: messages
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Message::from_value)
                .collect(),
            metadata_session: None,
            user: None,
            stream_options: None,
        }
    }

    #[test]
    fn the_first_turn_keeps_everything() {
        let request = chat(
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]),
        );
        assert_eq!(new_messages(&request, true), request.messages);
    }

    #[test]
    fn later_turns_keep_only_what_follows_the_last_assistant_message() {
        let request = chat(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "how are you?"}
        ]));
        assert_eq!(
            new_messages(&request, false),
            vec![json!({"role": "user", "content": "how are you?"})]
        );
        assert_eq!(
            new_messages(&request, true),
            vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": "how are you?"})
            ],
            "a new session also keeps the system message"
        );
    }

    #[test]
    fn tool_results_after_a_tool_call_are_new() {
        let request = chat(json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
        ]));
        assert_eq!(
            new_messages(&request, false),
            vec![json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})]
        );
    }

    #[test]
    fn a_ten_turn_conversation_is_stored_once() {
        let mut conversation = vec![json!({"role": "system", "content": "sys"})];
        let mut stored = Vec::new();
        for turn in 0..10 {
            conversation.push(json!({"role": "user", "content": format!("q{turn}")}));
            let request = chat(Value::Array(conversation.clone()));
            stored.extend(new_messages(&request, turn == 0));
            let answer = json!({"role": "assistant", "content": format!("a{turn}")});
            stored.push(Message::from_value(&answer).unwrap());
            conversation.push(answer);
        }
        assert_eq!(stored.len(), 21, "20 messages plus the system message once");
        assert_eq!(stored, conversation);
    }

    #[test]
    fn a_turn_stores_the_new_messages_and_the_reply_stamped_in_order() {
        let request = chat(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"}
        ]));
        let body = br#"{"id":"c1","model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let reply = Reply::from_body(Some(crate::record::Api::ChatCompletions), body).unwrap();
        let context = ReplyContext {
            complete: true,
            stream_id: Some("st-1".into()),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_765_000_000_000_001);
        let turn = build(request, Some(reply), context, at);
        let text = |m: &StoredMessage| String::from_utf8(m.as_bytes().to_vec()).unwrap();
        assert_eq!(
            turn.if_new.iter().map(text).collect::<Vec<_>>(),
            [
                r#"{"role":"system","content":"be brief","model":"gpt-4o-2024","timestamp":"2025-12-06T05:46:40.000001Z"}"#
            ]
        );
        assert_eq!(
            turn.messages.iter().map(text).collect::<Vec<_>>(),
            [
                r#"{"role":"user","content":"again","model":"gpt-4o-2024","timestamp":"2025-12-06T05:46:40.000001Z"}"#,
                concat!(
                    r#"{"role":"assistant","content":"hello","model":"gpt-4o-2024","timestamp":"2025-12-06T05:46:40.000001Z","#,
                    r#""finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},"#,
                    r#""stream_id":"st-1","api":"chat.completions","complete":true}"#
                )
            ]
        );
        assert_eq!(turn.usage.total_tokens, 4);
        assert_eq!(turn.model.as_deref(), Some("gpt-4o-2024"));
    }

    #[test]
    fn a_request_keeps_only_what_history_may_store() {
        let roles = |messages: &[Message]| messages.iter().map(Message::role).collect::<Vec<_>>();
        let request = chat(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "developer", "content": "now in French"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
            {"role": "user", "content": "q3"},
            {"role": "tool", "content": "sunny"}
        ]));
        let kept = history_may_keep(request.messages.clone(), Message::role);
        use Role::{Assistant, Developer, Other, System};
        assert_eq!(
            roles(&kept),
            [System, Developer, Assistant, Other, Other],
            "the instructions, the last assistant message and what follows it"
        );
        let without_assistant = chat(json!([{"role": "system"}, {"role": "user"}]));
        assert_eq!(
            history_may_keep(without_assistant.messages.clone(), Message::role),
            without_assistant.messages
        );
    }

    /// Any text, escapes and all.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        "(?s).{0,24}"
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// What a request keeps changes nothing history takes from it.
        #[test]
        fn what_history_may_keep_gives_the_same_new_messages(
            roles in proptest::collection::vec(
                proptest::sample::select(vec!["system", "developer", "user", "assistant", "tool"]),
                0..12,
            ),
        ) {
            let messages: Vec<Value> = roles
                .iter()
                .enumerate()
                .map(|(i, role)| json!({"role": role, "content": i}))
                .collect();
            let request = chat(Value::Array(messages));
            let mut kept = request.clone();
            kept.messages = history_may_keep(kept.messages, Message::role);
            for session_is_new in [true, false] {
                proptest::prop_assert_eq!(
                    new_messages(&kept, session_is_new),
                    new_messages(&request, session_is_new)
                );
            }
        }

        /// The stored reply written by hand is what serde writes.
        #[test]
        fn a_stored_reply_is_written_as_serde_writes_it(
            role in proptest::option::of(text()),
            content in proptest::option::of(text()),
            reasoning in proptest::option::of(text()),
            refusal in proptest::option::of(text()),
            calls in proptest::collection::vec(
                (proptest::option::of(text()), proptest::option::of(text()), text()), 0..3),
            model in proptest::option::of(text()),
            finish_reason in proptest::option::of(text()),
            usage in proptest::option::of(crate::record::json_scan::strategies::any_value()),
            error in proptest::option::of(crate::record::json_scan::strategies::any_value()),
            stream_id in proptest::option::of(text()),
            complete in proptest::prelude::any::<bool>(),
        ) {
            let mut reply = Reply::new(Api::ChatCompletions);
            reply.choices.push(crate::record::assemble::Choice {
                role,
                content,
                reasoning,
                refusal,
                tool_calls: calls
                    .into_iter()
                    .map(|(id, name, arguments)| crate::record::assemble::ToolCall {
                        id,
                        item_id: None,
                        name,
                        arguments,
                    })
                    .collect(),
                ..Default::default()
            });
            let usage = usage.as_ref().map(Usage::from_value);
            let stored = StoredReply {
                message: reply.history_message(),
                model: model.as_deref(),
                timestamp: "2026-12-07T12:00:00.000001Z",
                finish_reason: finish_reason.as_deref(),
                usage: usage.as_ref(),
                error: error.as_ref(),
                stream_id: stream_id.as_deref(),
                api: "chat.completions",
                complete,
            };
            let by_serde = serde_json::to_vec(&stored).unwrap();
            proptest::prop_assert_eq!(
                String::from_utf8(stored.to_json()).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }
}
