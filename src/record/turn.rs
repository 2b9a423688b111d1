//! History de-duplication and the stored message shape.
//!
//! A chat request carries the whole conversation every turn; history keeps
//! each message once. What is new in a request: its system/developer
//! messages when the session is new, then every message after the request's
//! last assistant message. The reply is appended after them.

use std::time::SystemTime;

use serde_json::Value;

use super::{Reply, TurnRequest};
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
pub fn new_messages(request: &TurnRequest, session_is_new: bool) -> Vec<Value> {
    let (if_new, always) = new_messages_split(request);
    if session_is_new {
        if_new.into_iter().chain(always).collect()
    } else {
        always
    }
}

/// The new messages in two parts: those only a new session takes (the
/// system/developer messages that precede the last assistant message, and
/// instructions given beside the conversation), and those every turn adds.
/// The store decides between them, in the same step that appends.
pub fn new_messages_split(request: &TurnRequest) -> (Vec<Value>, Vec<Value>) {
    let messages = &request.messages;
    let after_last_assistant = messages
        .iter()
        .rposition(|m| role(m) == "assistant")
        .map_or(0, |i| i + 1);
    let if_new = request
        .system
        .iter()
        .chain(
            messages[..after_last_assistant]
                .iter()
                .filter(|m| matches!(role(m), "system" | "developer")),
        )
        .cloned()
        .collect();
    (if_new, messages[after_last_assistant..].to_vec())
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
    let timestamp = Value::String(humantime::format_rfc3339_micros(now).to_string());
    let model = reply
        .as_ref()
        .and_then(|r| r.model.clone())
        .or(request.model);
    let model_value = Value::from(model.clone());
    let stamp = |mut message: Value| {
        if let Value::Object(obj) = &mut message {
            obj.insert("model".into(), model_value.clone());
            obj.insert("timestamp".into(), timestamp.clone());
        }
        message
    };
    let (if_new, always) = split_owned(request.system, request.messages);
    let if_new: Vec<StoredMessage> = if_new
        .into_iter()
        .map(|m| StoredMessage::new(&stamp(m)))
        .collect();
    let mut messages: Vec<StoredMessage> = Vec::with_capacity(always.len() + 1);
    messages.extend(always.into_iter().map(|m| StoredMessage::new(&stamp(m))));
    let mut usage = UsageTotals::default();
    if let Some(mut reply) = reply {
        usage = usage_totals(reply.usage.as_ref());
        let mut message = stamp(reply.to_message());
        let obj = message.as_object_mut().expect("to_message is an object");
        for (key, value) in [
            ("finish_reason", reply.finish_reason().map(Value::from)),
            ("usage", reply.usage.take()),
            ("error", reply.error.take()),
            ("stream_id", context.stream_id.map(Value::from)),
        ] {
            if let Some(value) = value.filter(|v| !v.is_null()) {
                obj.insert(key.into(), value);
            }
        }
        obj.insert("api".into(), reply.api.as_str().into());
        obj.insert("complete".into(), Value::Bool(context.complete));
        messages.push(StoredMessage::new(&message));
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

/// [`new_messages_split`] on owned messages, moving them instead of cloning.
fn split_owned(system: Vec<Value>, mut messages: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let after_last_assistant = messages
        .iter()
        .rposition(|m| role(m) == "assistant")
        .map_or(0, |i| i + 1);
    let always = messages.split_off(after_last_assistant);
    let if_new = system
        .into_iter()
        .chain(
            messages
                .into_iter()
                .filter(|m| matches!(role(m), "system" | "developer")),
        )
        .collect();
    (if_new, always)
}

/// Token counts from a provider's own usage object, whatever it calls them:
/// `prompt_tokens`/`completion_tokens` (Chat), `input_tokens`/`output_tokens`
/// (Responses, Anthropic), `promptTokenCount`/`candidatesTokenCount` (Gemini).
pub fn usage_totals(usage: Option<&Value>) -> UsageTotals {
    let Some(usage) = usage else {
        return UsageTotals::default();
    };
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| usage.get(*k).and_then(Value::as_u64))
    };
    let prompt = first(&["prompt_tokens", "input_tokens", "promptTokenCount"]).unwrap_or(0);
    let completion =
        first(&["completion_tokens", "output_tokens", "candidatesTokenCount"]).unwrap_or(0);
    let total = first(&["total_tokens", "totalTokenCount"]).unwrap_or(prompt + completion);
    UsageTotals {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
    }
}

fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
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
            messages: messages.as_array().unwrap().clone(),
            metadata_session: None,
            user: None,
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
            stored.push(answer.clone());
            conversation.push(answer);
        }
        assert_eq!(stored.len(), 21, "20 messages plus the system message once");
        assert_eq!(stored, conversation);
    }

    #[test]
    fn usage_is_normalised_across_providers() {
        let chat = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
        let anthropic = json!({"input_tokens": 3, "output_tokens": 4});
        let gemini =
            json!({"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7});
        for usage in [chat, anthropic, gemini] {
            assert_eq!(
                usage_totals(Some(&usage)),
                UsageTotals {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                    total_tokens: 7
                },
                "{usage}"
            );
        }
        assert_eq!(usage_totals(None), UsageTotals::default());
    }
}
