//! Chat Completions fold (also used for legacy Completions, see
//! `completions.rs`): merges `choices[].delta` chunks per choice index, keeps
//! the last non-null finish reason and usage, and picks up in-stream errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::reply::{Choice, Reply};
use super::tool_calls::ToolCalls;
use super::{Api, Payload, error_of, string_of};
use crate::record::json_text::{self, MaybeStr, MaybeU64};

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
    usage: Option<Value>,
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
            && let Ok(chunk) = serde_json::from_str::<ChunkText>(data)
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
        let chunk: ChunkText = serde_json::from_slice(body).ok()?;
        let mut fold = ChatFold::new(api);
        fold.chunk_text(chunk, true);
        Some(fold.finish())
    }

    /// Takes the chunk by value: its `usage` and `error` move into the fold.
    fn chunk_text(&mut self, chunk: ChunkText, body: bool) {
        first_non_empty_str(&mut self.id, chunk.id.as_deref());
        first_non_empty_str(&mut self.model, chunk.model.as_deref());
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            self.error = Some(error);
        }
        match (chunk.usage.filter(|u| !u.is_null()), &self.usage) {
            (Some(usage), _) => self.usage = Some(usage),
            (None, None) => {
                self.usage = chunk.x_groq.and_then(|x| x.usage).filter(|u| !u.is_null());
            }
            (None, Some(_)) => {}
        }
        let text_mode = self.api == Api::Completions;
        for (position, choice) in chunk.choices.iter().flatten().enumerate() {
            // A body's `message` stands in for the delta, even as null.
            let delta = match (&choice.message, body) {
                (Some(message), true) => message.as_ref(),
                _ => choice.delta.as_ref(),
            };
            let index = choice.index.0.unwrap_or(position as u64);
            self.choices.entry(index).or_default().apply(
                ChoiceView {
                    text: choice.text.as_deref(),
                    delta: delta.map(DeltaText::view),
                    finish_reason: choice.finish_reason.as_ref(),
                    logprobs: choice.logprobs.as_ref(),
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
        let groq = obj.get("x_groq").and_then(|x| x.get("usage"));
        self.take_usage(obj.get("usage"), groq);
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
    fn take_usage(&mut self, usage: Option<&Value>, groq: Option<&Value>) {
        if let Some(usage) = usage.filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
            return;
        }
        if let (Some(usage), None) = (groq.filter(|u| !u.is_null()), &self.usage) {
            self.usage = Some(usage.clone());
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

/// The members of a chunk that the fold reads, borrowed from its text where
/// they are strings. Strict: a member of an unexpected type fails the parse,
/// and the chunk goes the general way.
#[derive(Deserialize)]
struct ChunkText<'a> {
    #[serde(borrow, default)]
    id: MaybeStr<'a>,
    #[serde(borrow, default)]
    model: MaybeStr<'a>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    x_groq: Option<GroqText>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceText<'a>>>,
}

#[derive(Deserialize)]
struct GroqText {
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct ChoiceText<'a> {
    #[serde(default)]
    index: MaybeU64,
    #[serde(borrow, default)]
    text: MaybeStr<'a>,
    #[serde(borrow, default)]
    delta: Option<DeltaText<'a>>,
    /// Present (even as null) or not: a body's message replaces the delta.
    #[serde(borrow, default, deserialize_with = "present")]
    message: Option<Option<DeltaText<'a>>>,
    #[serde(default)]
    finish_reason: Option<Value>,
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Deserialize)]
struct DeltaText<'a> {
    #[serde(borrow, default)]
    role: MaybeStr<'a>,
    #[serde(default)]
    content: Option<Value>,
    /// Present-as-null counts: it turns `reasoning_details` off.
    #[serde(default, deserialize_with = "present")]
    reasoning_content: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    reasoning: Option<Value>,
    #[serde(default)]
    reasoning_details: Option<Value>,
    #[serde(default)]
    refusal: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Value>,
}

impl DeltaText<'_> {
    fn view(&self) -> DeltaView<'_> {
        DeltaView {
            role: self.role.as_deref(),
            content: self.content.as_ref(),
            reasoning_content: self.reasoning_content.as_ref(),
            reasoning: self.reasoning.as_ref(),
            reasoning_details: self.reasoning_details.as_ref(),
            refusal: self.refusal.as_ref(),
            tool_calls: self.tool_calls.as_ref(),
        }
    }
}

/// `Some` for a member that is there, whatever its value (null included).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One choice of a chunk as the fold reads it, from either form.
struct ChoiceView<'a> {
    text: Option<&'a str>,
    delta: Option<DeltaView<'a>>,
    finish_reason: Option<&'a Value>,
    logprobs: Option<&'a Value>,
}

/// A delta as the fold reads it; a member is `Some` when present, null
/// included.
struct DeltaView<'a> {
    role: Option<&'a str>,
    content: Option<&'a Value>,
    reasoning_content: Option<&'a Value>,
    reasoning: Option<&'a Value>,
    reasoning_details: Option<&'a Value>,
    refusal: Option<&'a Value>,
    tool_calls: Option<&'a Value>,
}

impl<'a> DeltaView<'a> {
    fn of_map(delta: &'a Map<String, Value>) -> Self {
        DeltaView {
            role: delta.get("role").and_then(Value::as_str),
            content: delta.get("content"),
            reasoning_content: delta.get("reasoning_content"),
            reasoning: delta.get("reasoning"),
            reasoning_details: delta.get("reasoning_details"),
            refusal: delta.get("refusal"),
            tool_calls: delta.get("tool_calls"),
        }
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
        assert_eq!(reply.usage, Some(json!({"total_tokens": 1})));
        assert_eq!(reply.id.as_deref(), Some("a"));
    }

    /// Odd shapes that the strict read turns away or must read alike.
    const ODD_CHUNKS: &[&str] = &[
        r#"{"id":5,"model":"","choices":[{"index":"0","delta":{"content":"a","reasoning":null,"reasoning_details":[{"text":"no"}]}}]}"#,
        r#"{"choices":[{"index":1,"delta":{"role":"assistant","content":[{"type":"text","text":"p"}]},"finish_reason":7}],"usage":null,"x_groq":{"usage":{"t":1}}}"#,
        r#"{"choices":[{"delta":{"role":7,"content":"r"}}]}"#,
        r#"[{"id":"array"}]"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{"}}]}},{"delta":null,"text":"t"}]}"#,
        r#"{"choices":[{"index":0,"message":null,"delta":{"content":"d"}},{"index":2,"message":{"content":"m"}}]}"#,
        r#"{"choices":[1,{"delta":{"refusal":"no"}}],"error":null}"#,
        r#"{"choices":[],"choices":[{"delta":{"content":"twice"}}]}"#,
        r#"{"choices":{"0":{}},"error":{"message":"boom"}}"#,
        r#"{"choices":[{"index":1.0,"delta":{"reasoning_content":"rc","reasoning":"r"},"logprobs":{"content":[{"token":"a","logprob":-1}]}}]}"#,
        r#"{"id":"x\u00e9","choices":[{"index":18446744073709551616,"text":"big","finish_reason":"stop"}]}"#,
        "not json",
        "[DONE]",
    ];

    /// Every event's data of every recorded stream, whatever its API.
    fn recorded_data() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/");
        let mut data = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sse") {
                let body = std::fs::read(&path).unwrap();
                let (events, _) = crate::record::sse::parse_all(&body).unwrap();
                data.extend(events.into_iter().map(|e| e.data));
            }
        }
        data
    }

    #[test]
    fn read_as_text_or_as_a_value_chunks_fold_alike() {
        let mut all: Vec<String> = ODD_CHUNKS.iter().map(|s| s.to_string()).collect();
        all.extend(recorded_data());
        assert!(all.len() > 1000, "{} events", all.len());
        for api in [Api::ChatCompletions, Api::Completions] {
            let (mut text, mut general) = (ChatFold::new(api), ChatFold::new(api));
            for data in &all {
                text.push_text("message", data);
                general.push(&Payload::of_data("message", data));
                // One at a time too, so a difference names its chunk.
                let (mut one, mut other) = (ChatFold::new(api), ChatFold::new(api));
                one.push_text("message", data);
                other.push(&Payload::of_data("message", data));
                assert_eq!(one.finish().to_json(), other.finish().to_json(), "{data}");
            }
            assert_eq!(text.finish().to_json(), general.finish().to_json());
        }
    }

    #[test]
    fn read_as_text_or_as_a_value_bodies_fold_alike() {
        let mut read_as_text = 0;
        for data in ODD_CHUNKS
            .iter()
            .map(|s| s.to_string())
            .chain(recorded_data())
        {
            for api in [Api::ChatCompletions, Api::Completions] {
                let general = match serde_json::from_str::<Value>(&data) {
                    Ok(Value::Object(obj)) => {
                        let mut fold = ChatFold::new(api);
                        fold.chunk(&body_as_chunk(obj));
                        Some(fold.finish().to_json())
                    }
                    _ => None,
                };
                // When the strict read declines, `from_body` goes the general way.
                if let Some(reply) = ChatFold::body_text(api, data.as_bytes()) {
                    assert_eq!(Some(reply.to_json()), general, "{data}");
                    read_as_text += 1;
                }
            }
        }
        assert!(read_as_text > 1000, "{read_as_text} bodies read as text");
    }

    #[test]
    fn a_member_nested_too_deep_for_a_value_does_not_lose_the_chunk() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let data = format!(r#"{{"x":{deep},"choices":[{{"delta":{{"content":"kept"}}}}]}}"#);
        let mut fold = ChatFold::new(Api::ChatCompletions);
        fold.push_text("message", &data);
        let reply = fold.finish();
        assert_eq!(reply.message().unwrap().content.as_deref(), Some("kept"));
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
