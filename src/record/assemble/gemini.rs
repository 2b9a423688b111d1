//! Gemini native (`:streamGenerateContent?alt=sse` and `:generateContent`):
//! text and thought parts of the first candidate, whole `functionCall`
//! parts, the last `finishReason` and `usageMetadata`.

use serde_json::{Map, Value};

use super::chat::none_if_empty;
use super::reply::{Choice, Reply, ToolCall};
use super::{Api, Payload, Usage, pyjson, str_field, string_of, truthy};

#[derive(Debug, Default)]
pub(super) struct GeminiFold {
    /// `id` and `model` come from the first chunk only.
    seen_first: bool,
    id: Option<String>,
    model: Option<String>,
    text: String,
    thoughts: String,
    calls: Vec<ToolCall>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl GeminiFold {
    pub(super) fn push(&mut self, payload: &Payload) {
        if let Some(Value::Object(obj)) = &payload.json {
            self.chunk(obj);
        }
    }

    /// One streamed chunk, or a whole non-streamed response (same shape).
    pub(super) fn chunk(&mut self, obj: &Map<String, Value>) {
        if !self.seen_first {
            self.seen_first = true;
            self.id = str_field(obj, "responseId").map(str::to_owned);
            self.model = str_field(obj, "modelVersion").map(str::to_owned);
        }
        if let Some(usage) = obj.get("usageMetadata").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        let first = obj
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let Some(Value::Object(candidate)) = first else {
            return;
        };
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array);
        for part in parts
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_object)
        {
            self.part(part);
        }
        if let Some(reason) = candidate.get("finishReason").filter(|r| truthy(r)) {
            self.finish_reason = Some(string_of(reason));
        }
    }

    fn part(&mut self, part: &Map<String, Value>) {
        if let Some(text) = str_field(part, "text") {
            let thought = part.get("thought").is_some_and(truthy);
            (if thought {
                &mut self.thoughts
            } else {
                &mut self.text
            })
            .push_str(text);
        }
        if let Some(Value::Object(call)) = part.get("functionCall") {
            let args = call.get("args").filter(|a| truthy(a)).cloned();
            self.calls.push(ToolCall {
                id: str_field(call, "id").map(str::to_owned),
                item_id: None,
                name: str_field(call, "name").map(str::to_owned),
                arguments: pyjson::compact(
                    &args.unwrap_or_else(|| Value::Object(Map::new())),
                    false,
                ),
            });
        }
    }

    pub(super) fn finish(self) -> Reply {
        let mut reply = Reply::new(Api::Gemini);
        reply.id = self.id;
        reply.model = self.model;
        reply.usage = self.usage.as_ref().map(Usage::from_value);
        reply.choices.push(Choice {
            content: none_if_empty(self.text),
            reasoning: none_if_empty(self.thoughts),
            tool_calls: self.calls,
            finish_reason: self.finish_reason,
            ..Choice::default()
        });
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thoughts_text_and_function_calls() {
        let mut fold = GeminiFold::default();
        fold.chunk(json!({"responseId": "r1", "modelVersion": "gemini-2.5", "candidates": [{"content": {"parts": [
            {"text": "hmm", "thought": true}, {"text": "Hi"},
            {"functionCall": {"name": "get", "args": {"q": "ü"}}}]}, "finishReason": "STOP"}]})
            .as_object()
            .unwrap());
        let reply = fold.finish();
        let message = reply.message().unwrap();
        assert_eq!(
            (message.content.as_deref(), message.reasoning.as_deref()),
            (Some("Hi"), Some("hmm"))
        );
        assert_eq!(message.tool_calls[0].arguments, "{\"q\":\"ü\"}");
        assert_eq!(message.finish_reason.as_deref(), Some("STOP"));
        assert_eq!(reply.id.as_deref(), Some("r1"));
    }
}
