//! Chat Completions fold (also used for legacy Completions, see
//! `completions.rs`): merges `choices[].delta` chunks per choice index, keeps
//! the last non-null finish reason and usage, and picks up in-stream errors.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::chunk::{ChoiceView, ChunkText, DeltaText, DeltaView};
use super::reply::{Choice, Reply};
use super::tool_calls::ToolCalls;
use super::{Api, Payload, Usage, error_of, string_of};
use crate::record::json_text;

/// One choice being assembled.
#[derive(Debug, Default)]
struct ChoiceState {
    role: Option<String>,
    content: String,
    reasoning: String,
    refusal: String,
    calls: ToolCalls,
    finish_reason: Option<String>,
    /// `(content, refusal)` token logprobs, once any `logprobs` object came.
    logprobs: Option<(Vec<Value>, Vec<Value>)>,
}

#[derive(Debug)]
pub(super) struct ChatFold {
    api: Api,
    /// Boxed: a map node has room for 11 entries, and nearly every stream
    /// has one choice (unboxed, 2.4 KiB per stream for it).
    choices: BTreeMap<u64, Box<ChoiceState>>,
    id: Option<String>,
    model: Option<String>,
    usage: Option<Usage>,
    error: Option<Value>,
}

impl ChatFold {
    pub(super) fn new(api: Api) -> Self {
        ChatFold {
            api,
            choices: BTreeMap::new(),
            id: None,
            model: None,
            usage: None,
            error: None,
        }
    }

    pub(super) fn push(&mut self, payload: &Payload) {
        if payload.raw == "[DONE]" {
            return;
        }
        if payload.event == "error" {
            self.error = match &payload.json {
                Some(Value::Object(obj)) => error_of(obj),
                _ => Some(Value::String(payload.raw.to_owned())),
            };
            return;
        }
        if let Some(Value::Object(obj)) = &payload.json {
            self.chunk(obj);
        }
    }

    /// One chunk's data as sent. Read straight into the members the fold
    /// looks at ([`ChunkText`]) rather than into a `Value` tree, which was
    /// most of the cost of recording a chat answer; data that is not the
    /// usual shape (a member of another type, a member given twice, not
    /// JSON) goes the general way, with the same result. One difference,
    /// on purpose: a member the fold does not look at may nest deeper than
    /// a `Value` can, where the general way would drop the whole chunk.
    pub(super) fn push_text(&mut self, event: &str, data: &str) {
        if event != "error"
            && json_text::is_object(data.as_bytes())
            && let Some(chunk) = ChunkText::read(data)
        {
            self.chunk_text(chunk, false);
            return;
        }
        self.push(&Payload::of_data(event, data));
    }

    /// A non-streamed `chat.completion` (or `text_completion`) body read as
    /// [`push_text`](Self::push_text) reads a chunk, each choice's `message`
    /// as its delta. `None` when the body needs the general way.
    pub(super) fn body_text(api: Api, body: &[u8]) -> Option<Reply> {
        if !json_text::is_object(body) {
            return None;
        }
        // Checked as UTF-8 once: read from bytes, serde checks every string
        // of the body on its own, a tenth of the read.
        let chunk = ChunkText::read(std::str::from_utf8(body).ok()?)?;
        let mut fold = ChatFold::new(api);
        fold.chunk_text(chunk, true);
        Some(fold.finish())
    }

    /// Takes the chunk by value: its `usage` and `error` move into the fold.
    fn chunk_text(&mut self, chunk: ChunkText, body: bool) {
        first_non_empty_str(&mut self.id, chunk.id.as_deref());
        first_non_empty_str(&mut self.model, chunk.model.as_deref());
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            self.error = Some(*error);
        }
        self.take_usage(
            chunk.usage.map(|u| Usage::from_raw(u.0)),
            chunk
                .x_groq
                .and_then(|x| x.usage)
                .map(|u| Usage::from_raw(u.0)),
        );
        let text_mode = self.api == Api::Completions;
        for (position, choice) in chunk.choices.iter().flatten().enumerate() {
            // A body's `message` stands in for the delta, even as null.
            let delta = match (&choice.message, body) {
                (Some(message), true) => message.as_deref(),
                _ => choice.delta.as_ref(),
            };
            let index = choice.index.0.unwrap_or(position as u64);
            self.choices.entry(index).or_default().apply(
                ChoiceView {
                    text: choice.text.as_deref(),
                    delta: delta.map(DeltaText::view),
                    finish_reason: choice.finish_reason.as_ref(),
                    logprobs: choice.logprobs.as_deref(),
                },
                text_mode,
            );
        }
    }

    /// One chunk (or a whole non-streamed body, its messages as deltas).
    pub(super) fn chunk(&mut self, obj: &Map<String, Value>) {
        first_non_empty(&mut self.id, obj.get("id"));
        first_non_empty(&mut self.model, obj.get("model"));
        if let Some(error) = obj.get("error").filter(|e| !e.is_null()) {
            self.error = Some(error.clone());
        }
        let usage = |value: Option<&Value>| value.filter(|u| !u.is_null()).map(Usage::from_value);
        let groq = obj.get("x_groq").and_then(|x| x.get("usage"));
        self.take_usage(usage(obj.get("usage")), usage(groq));
        let Some(Value::Array(choices)) = obj.get("choices") else {
            return;
        };
        let text_mode = self.api == Api::Completions;
        for (position, choice) in choices.iter().enumerate() {
            let Some(choice) = choice.as_object() else {
                continue;
            };
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let delta = choice
                .get("delta")
                .and_then(Value::as_object)
                .map(DeltaView::of_map);
            self.choices.entry(index).or_default().apply(
                ChoiceView {
                    text: choice.get("text").and_then(Value::as_str),
                    delta,
                    finish_reason: choice.get("finish_reason"),
                    logprobs: choice.get("logprobs"),
                },
                text_mode,
            );
        }
    }

    /// The last non-null `usage`; Groq's `x_groq.usage` only when no
    /// top-level usage came before.
    /// (Null usages are left out by the callers.)
    fn take_usage(&mut self, usage: Option<Usage>, groq: Option<Usage>) {
        if let Some(usage) = usage {
            self.usage = Some(usage);
            return;
        }
        if let (Some(usage), None) = (groq, &self.usage) {
            self.usage = Some(usage);
        }
    }

    pub(super) fn finish(self) -> Reply {
        let mut reply = Reply::new(self.api);
        reply.id = self.id;
        reply.model = self.model;
        reply.usage = self.usage;
        reply.error = self.error;
        reply.choices = self.choices.into_iter().map(|(i, c)| c.finish(i)).collect();
        reply
    }
}

impl ChoiceState {
    fn apply(&mut self, choice: ChoiceView, text_mode: bool) {
        if text_mode {
            if let Some(text) = choice.text {
                self.content.push_str(text);
            }
        } else if let Some(delta) = choice.delta {
            self.apply_delta(delta);
        }
        if let Some(reason) = choice.finish_reason.filter(|r| !r.is_null()) {
            self.finish_reason = Some(string_of(reason));
        }
        if !text_mode {
            self.take_logprobs(choice.logprobs);
        }
    }

    fn apply_delta(&mut self, delta: DeltaView) {
        if let Some(role) = delta.role.filter(|r| !r.is_empty()) {
            self.role = Some(role.to_owned());
        }
        self.add_content(delta.content);
        self.add_reasoning(&delta);
        if let Some(Value::String(refusal)) = delta.refusal {
            self.refusal.push_str(refusal);
        }
        if let Some(Value::Array(calls)) = delta.tool_calls {
            for call in calls.iter().filter_map(Value::as_object) {
                self.calls.add(call);
            }
        }
    }

    /// A string, or typed parts: `text` parts are content, Mistral's
    /// `thinking` parts (which hold text parts) are reasoning.
    fn add_content(&mut self, content: Option<&Value>) {
        match content {
            Some(Value::String(text)) => self.content.push_str(text),
            Some(Value::Array(parts)) => {
                for part in parts.iter().filter_map(Value::as_object) {
                    match part.get("type").and_then(Value::as_str) {
                        Some("text") => push_str_value(&mut self.content, part.get("text")),
                        Some("thinking") => self.add_thinking_parts(part.get("thinking")),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn add_thinking_parts(&mut self, thinking: Option<&Value>) {
        let Some(Value::Array(inner)) = thinking else {
            return;
        };
        for part in inner.iter().filter_map(Value::as_object) {
            if part.get("type").and_then(Value::as_str) == Some("text") {
                push_str_value(&mut self.reasoning, part.get("text"));
            }
        }
    }

    /// `reasoning_content` (DeepSeek), else `reasoning` (Groq, OpenRouter,
    /// vLLM, Ollama). OpenRouter repeats the text in `reasoning_details`,
    /// read only when neither plain field is present at all.
    fn add_reasoning(&mut self, delta: &DeltaView) {
        if let Some(Value::String(text)) = delta.reasoning_content {
            self.reasoning.push_str(text);
        } else if let Some(Value::String(text)) = delta.reasoning {
            self.reasoning.push_str(text);
        } else if delta.reasoning.is_none() && delta.reasoning_content.is_none() {
            let Some(Value::Array(details)) = delta.reasoning_details else {
                return;
            };
            for detail in details {
                if let Some(Value::String(text)) = detail.get("text") {
                    self.reasoning.push_str(text);
                }
            }
        }
    }

    fn take_logprobs(&mut self, logprobs: Option<&Value>) {
        let Some(Value::Object(lp)) = logprobs else {
            return;
        };
        let (content, refusal) = self.logprobs.get_or_insert_default();
        for (key, list) in [("content", content), ("refusal", refusal)] {
            let Some(Value::Array(tokens)) = lp.get(key) else {
                continue;
            };
            for token in tokens.iter().filter_map(Value::as_object) {
                let mut entry = Map::new();
                entry.insert(
                    "token".into(),
                    token.get("token").cloned().unwrap_or(Value::Null),
                );
                entry.insert(
                    "logprob".into(),
                    token.get("logprob").cloned().unwrap_or(Value::Null),
                );
                list.push(Value::Object(entry));
            }
        }
    }

    fn finish(self, index: u64) -> Choice {
        let logprobs = self.logprobs.map(|(content, refusal)| {
            let mut out = Map::new();
            for (key, list) in [("content", content), ("refusal", refusal)] {
                if !list.is_empty() {
                    out.insert(key.into(), Value::Array(list));
                }
            }
            Value::Object(out)
        });
        Choice {
            index,
            role: self.role,
            content: none_if_empty(self.content),
            reasoning: none_if_empty(self.reasoning),
            refusal: none_if_empty(self.refusal),
            tool_calls: self.calls.finish(),
            finish_reason: self.finish_reason,
            logprobs,
        }
    }
}

fn push_str_value(target: &mut String, value: Option<&Value>) {
    if let Some(Value::String(text)) = value {
        target.push_str(text);
    }
}

/// A non-streamed `chat.completion` (or `text_completion`) as one chunk:
/// each choice's `message` becomes its `delta`.
pub(super) fn body_as_chunk(body: Map<String, Value>) -> Map<String, Value> {
    let mut chunk = body;
    if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
        for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(message) = choice.remove("message") {
                choice.insert("delta".into(), message);
            }
        }
    }
    chunk
}

/// Keeps the first non-empty string seen (chunk `id` and `model`).
pub(super) fn first_non_empty(slot: &mut Option<String>, value: Option<&Value>) {
    first_non_empty_str(slot, value.and_then(Value::as_str));
}

fn first_non_empty_str(slot: &mut Option<String>, text: Option<&str>) {
    if slot.is_none()
        && let Some(text) = text.filter(|s| !s.is_empty())
    {
        *slot = Some(text.to_owned());
    }
}

pub(super) fn none_if_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fold(chunks: &[Value]) -> Reply {
        let mut chat = ChatFold::new(Api::ChatCompletions);
        for chunk in chunks {
            chat.chunk(chunk.as_object().unwrap());
        }
        chat.finish()
    }

    #[test]
    fn last_non_null_finish_reason_and_usage_with_groq_fallback() {
        let reply = fold(&[
            json!({"id": "a", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "length"}],
                   "x_groq": {"usage": {"total_tokens": 1}}}),
            json!({"id": "b", "choices": [{"index": 0, "delta": {}, "finish_reason": null}], "usage": null}),
        ]);
        assert_eq!(reply.finish_reason(), Some("length"));
        assert_eq!(
            reply.usage.map(|u| u.to_value()),
            Some(json!({"total_tokens": 1}))
        );
        assert_eq!(reply.id.as_deref(), Some("a"));
    }

    #[test]
    fn think_tags_stay_in_content_and_reasoning_details_are_a_fallback() {
        let reply = fold(&[
            json!({"choices": [{"delta": {"content": "<think>hm</think>ok"}}]}),
            json!({"choices": [{"delta": {"reasoning_details": [{"text": "r1"}]}}]}),
            json!({"choices": [{"delta": {"reasoning": null, "reasoning_details": [{"text": "no"}]}}]}),
        ]);
        let message = reply.message().unwrap();
        assert_eq!(message.content.as_deref(), Some("<think>hm</think>ok"));
        assert_eq!(message.reasoning.as_deref(), Some("r1"));
    }
}
