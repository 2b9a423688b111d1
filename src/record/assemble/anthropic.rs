//! Anthropic Messages fold: content blocks by index from
//! `content_block_start` / `content_block_delta` (text, thinking, signature,
//! tool input JSON, citations), stop reason and usage from `message_delta`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::chat::none_if_empty;
use super::reply::{Choice, Reply, ToolCall};
use super::{Api, Payload, Usage, error_of, pyjson, str_field, string_of};

#[derive(Debug, Default)]
pub(super) struct AnthropicFold {
    message: Map<String, Value>,
    /// Each block in the API's own shape, with its `input_json_delta`
    /// fragments kept apart until the end.
    blocks: BTreeMap<i64, (Map<String, Value>, Vec<String>)>,
    /// `message_start` usage, updated key by key by `message_delta` usage.
    usage: Map<String, Value>,
    stop_reason: Option<Value>,
    stop_sequence: Option<Value>,
    error: Option<Value>,
    pings: usize,
}

impl AnthropicFold {
    pub(super) fn push(&mut self, payload: &Payload) {
        let Some(Value::Object(obj)) = &payload.json else {
            return;
        };
        let kind = str_field(obj, "type")
            .filter(|k| !k.is_empty())
            .unwrap_or(payload.event);
        match kind {
            "message_start" => {
                if let Some(Value::Object(message)) = obj.get("message") {
                    self.start(message);
                }
            }
            "content_block_start" => {
                let index = obj.get("index").and_then(Value::as_i64);
                if let (Some(index), Some(Value::Object(block))) = (index, obj.get("content_block"))
                {
                    self.blocks.insert(index, (block.clone(), Vec::new()));
                }
            }
            "content_block_delta" => self.delta(obj),
            "message_delta" => self.message_delta(obj),
            "ping" => self.pings += 1,
            _ if kind == "error" || payload.event == "error" => self.error = error_of(obj),
            _ => {}
        }
    }

    /// A non-streamed `message` object.
    pub(super) fn from_body(body: &Map<String, Value>) -> Reply {
        let mut fold = AnthropicFold::default();
        fold.start(body);
        let content = body
            .get("content")
            .and_then(Value::as_array)
            .map(Vec::as_slice);
        for (index, block) in content.unwrap_or_default().iter().enumerate() {
            if let Some(block) = block.as_object() {
                fold.blocks
                    .insert(index as i64, (block.clone(), Vec::new()));
            }
        }
        fold.stop_reason = body.get("stop_reason").cloned();
        fold.stop_sequence = body.get("stop_sequence").cloned();
        fold.finish()
    }

    fn start(&mut self, message: &Map<String, Value>) {
        self.message = message.clone();
        self.usage = message
            .get("usage")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
    }

    fn delta(&mut self, obj: &Map<String, Value>) {
        let index = obj.get("index").and_then(Value::as_i64);
        let (Some(index), Some(Value::Object(delta))) = (index, obj.get("delta")) else {
            return;
        };
        let Some((block, fragments)) = self.blocks.get_mut(&index) else {
            return;
        };
        match str_field(delta, "type") {
            Some("text_delta") => append(block, "text", delta.get("text")),
            Some("thinking_delta") => append(block, "thinking", delta.get("thinking")),
            Some("signature_delta") => append(block, "signature", delta.get("signature")),
            Some("input_json_delta") => {
                fragments.extend(str_field(delta, "partial_json").map(str::to_owned));
            }
            Some("citations_delta") => {
                let citation = delta.get("citation").cloned().unwrap_or(Value::Null);
                match block.get_mut("citations") {
                    Some(Value::Array(list)) => list.push(citation),
                    _ => {
                        block.insert("citations".into(), Value::Array(vec![citation]));
                    }
                }
            }
            _ => {}
        }
    }

    fn message_delta(&mut self, obj: &Map<String, Value>) {
        if let Some(Value::Object(delta)) = obj.get("delta") {
            if let Some(reason) = delta.get("stop_reason") {
                self.stop_reason = Some(reason.clone());
            }
            if let Some(sequence) = delta.get("stop_sequence") {
                self.stop_sequence = Some(sequence.clone());
            }
        }
        if let Some(Value::Object(usage)) = obj.get("usage") {
            for (key, value) in usage {
                self.usage.insert(key.clone(), value.clone());
            }
        }
    }

    pub(super) fn finish(self) -> Reply {
        let (mut content, mut reasoning, mut tool_calls) =
            (String::new(), String::new(), Vec::new());
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (_, (mut block, fragments)) in self.blocks {
            let joined = fragments.concat();
            if !joined.is_empty() && block.contains_key("input") {
                // Unparseable streamed input leaves the start block's input.
                if let Ok(input) = serde_json::from_str(&joined) {
                    block.insert("input".into(), input);
                }
            }
            match str_field(&block, "type") {
                Some("text") => content.push_str(str_field(&block, "text").unwrap_or_default()),
                Some("thinking") => {
                    reasoning.push_str(str_field(&block, "thinking").unwrap_or_default())
                }
                Some("tool_use") => tool_calls.push(tool_call(&block, joined)),
                _ => {}
            }
            blocks.push(Value::Object(block));
        }
        let mut reply = Reply::new(Api::AnthropicMessages);
        reply.id = str_field(&self.message, "id").map(str::to_owned);
        reply.model = str_field(&self.message, "model").map(str::to_owned);
        reply.choices.push(Choice {
            content: none_if_empty(content),
            reasoning: none_if_empty(reasoning),
            tool_calls,
            finish_reason: self
                .stop_reason
                .filter(|r| !r.is_null())
                .map(|r| string_of(&r)),
            ..Choice::default()
        });
        reply.stop_sequence = self
            .stop_sequence
            .filter(|s| !s.is_null())
            .map(|s| string_of(&s));
        reply.usage =
            (!self.usage.is_empty()).then(|| Usage::from_value(&Value::Object(self.usage)));
        reply.error = self.error;
        reply.blocks = blocks;
        reply.pings = self.pings;
        reply
    }
}

/// Streamed input fragments verbatim; else the start block's whole input,
/// serialized as the reference does (Python's ASCII-only compact JSON).
fn tool_call(block: &Map<String, Value>, joined: String) -> ToolCall {
    let arguments = if joined.is_empty() {
        let input = block
            .get("input")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        pyjson::compact(&input, true)
    } else {
        joined
    };
    ToolCall {
        id: str_field(block, "id").map(str::to_owned),
        item_id: None,
        name: str_field(block, "name").map(str::to_owned),
        arguments,
    }
}

fn append(block: &mut Map<String, Value>, key: &str, text: Option<&Value>) {
    let Some(Value::String(text)) = text else {
        return;
    };
    let mut joined = str_field(block, key).unwrap_or_default().to_owned();
    joined.push_str(text);
    block.insert(key.into(), Value::String(joined));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_streamed_message_body() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "Hi"},
                        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Zürich", "a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 4}});
        let reply = AnthropicFold::from_body(body.as_object().unwrap());
        let message = reply.message().unwrap();
        assert_eq!(message.content.as_deref(), Some("Hi"));
        assert_eq!(message.finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            message.tool_calls[0].arguments, "{\"city\":\"Z\\u00fcrich\",\"a\":1}",
            "input key order kept"
        );
        assert_eq!(
            reply.usage.map(|u| u.to_value()),
            Some(json!({"input_tokens": 3, "output_tokens": 4}))
        );
        assert_eq!(reply.blocks.len(), 2);
    }

    #[test]
    fn error_event_mid_stream() {
        let mut fold = AnthropicFold::default();
        let data = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let json = serde_json::from_str(data).ok();
        fold.push(&Payload {
            event: "error",
            json,
            raw: data,
        });
        let reply = fold.finish();
        assert_eq!(
            reply.error,
            Some(json!({"type": "overloaded_error", "message": "Overloaded"}))
        );
        assert_eq!(reply.finish_reason(), None);
    }
}
