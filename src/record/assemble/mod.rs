//! Folds that turn parsed SSE events (or one non-streamed JSON body) into the
//! assembled [`Reply`], one file per API. They follow the reference
//! assembler `assemble_reference.py` of the recorded-stream fixtures.
//!
//! The proxy knows the API from the request path ([`Api::from_path`]); when
//! it does not, [`Assembler`] detects it from the first telling event.

mod anthropic;
mod chat;
mod chunk;
mod chunk_scan;
mod completions;
mod gemini;
mod pyjson;
mod reply;
mod responses;
mod tool_calls;
mod usage;

#[cfg(test)]
mod fixture_tests;

pub use reply::{Checks, Choice, HistoryMessage, Reply, SseStats, ToolCall};
pub use usage::Usage;

use serde_json::{Map, Value};

use crate::record::sse::{SseEvent, SseTail};
use anthropic::AnthropicFold;
use chat::ChatFold;
use gemini::GeminiFold;
use responses::ResponsesFold;

/// Events held back while the API is still unknown. Every provider's first
/// event tells it, so this only bounds memory for streams that never do.
const MAX_UNDETECTED_EVENTS: usize = 64;

/// The APIs whose replies are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    ChatCompletions,
    /// Legacy `/v1/completions`.
    Completions,
    Responses,
    AnthropicMessages,
    /// Gemini native `generateContent` / `streamGenerateContent`.
    Gemini,
}

impl Api {
    /// The name used in the flat comparison form.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat.completions",
            Api::Completions => "completions",
            Api::Responses => "responses",
            Api::AnthropicMessages => "anthropic.messages",
            Api::Gemini => "gemini.generateContent",
        }
    }

    /// The API of a request path (any prefix, query ignored).
    pub fn from_path(path: &str) -> Option<Api> {
        let path = path
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        if path.ends_with(":streamGenerateContent") || path.ends_with(":generateContent") {
            return Some(Api::Gemini);
        }
        let mut segments = path.rsplit('/');
        match (segments.next(), segments.next()) {
            (Some("completions"), Some("chat")) => Some(Api::ChatCompletions),
            (Some("completions"), _) => Some(Api::Completions),
            (Some("responses"), _) => Some(Api::Responses),
            (Some("messages"), _) => Some(Api::AnthropicMessages),
            _ => None,
        }
    }

    /// Recognizes a streamed event's payload, as the reference does.
    fn detect(obj: &Map<String, Value>) -> Option<Api> {
        let kind = str_field(obj, "type");
        if kind.is_some_and(|k| k.starts_with("response.")) {
            return Some(Api::Responses);
        }
        let anthropic = [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "message_delta",
        ];
        if kind.is_some_and(|k| anthropic.contains(&k)) {
            return Some(Api::AnthropicMessages);
        }
        if obj.contains_key("candidates") || obj.contains_key("usageMetadata") {
            return Some(Api::Gemini);
        }
        if str_field(obj, "object") == Some("text_completion") {
            return Some(Api::Completions);
        }
        if obj.contains_key("choices") || str_field(obj, "object") == Some("chat.completion.chunk")
        {
            return Some(Api::ChatCompletions);
        }
        None
    }

    /// Recognizes a non-streamed response body.
    fn detect_body(obj: &Map<String, Value>) -> Option<Api> {
        match (str_field(obj, "object"), str_field(obj, "type")) {
            (Some("response"), _) => Some(Api::Responses),
            (_, Some("message")) => Some(Api::AnthropicMessages),
            _ => Api::detect(obj),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot tell which API the response belongs to")]
    UnknownApi,
    #[error("response body is not a JSON object: {0}")]
    InvalidJson(String),
}

/// One event's data, parsed.
#[derive(Debug)]
pub(crate) struct Payload<'a> {
    /// The event type, "message" when none was given.
    pub event: &'a str,
    /// `None` when the data is not JSON (`[DONE]`, garbage).
    pub json: Option<Value>,
    pub raw: &'a str,
}

impl<'a> Payload<'a> {
    fn of(event: &'a SseEvent) -> Self {
        Payload::of_data(event.name(), &event.data)
    }

    fn of_data(event: &'a str, data: &'a str) -> Self {
        Payload {
            event,
            json: serde_json::from_str(data).ok(),
            raw: data,
        }
    }
}

#[derive(Debug)]
enum Fold {
    Chat(ChatFold),
    Responses(ResponsesFold),
    Anthropic(AnthropicFold),
    Gemini(GeminiFold),
}

impl Fold {
    fn new(api: Api) -> Self {
        match api {
            Api::ChatCompletions => Fold::Chat(ChatFold::new(api)),
            Api::Completions => Fold::Chat(completions::fold()),
            Api::Responses => Fold::Responses(ResponsesFold::default()),
            Api::AnthropicMessages => Fold::Anthropic(AnthropicFold::default()),
            Api::Gemini => Fold::Gemini(GeminiFold::default()),
        }
    }

    /// One event. A chat fold reads the data itself (see
    /// `ChatFold::push_text`); the others take it parsed.
    fn push_event(&mut self, event: &SseEvent) {
        match self {
            Fold::Chat(fold) => fold.push_text(event.name(), &event.data),
            other => other.push(&Payload::of(event)),
        }
    }

    fn push(&mut self, payload: &Payload) {
        match self {
            Fold::Chat(fold) => fold.push(payload),
            Fold::Responses(fold) => fold.push(payload),
            Fold::Anthropic(fold) => fold.push(payload),
            Fold::Gemini(fold) => fold.push(payload),
        }
    }

    fn finish(self) -> Reply {
        match self {
            Fold::Chat(fold) => fold.finish(),
            Fold::Responses(fold) => fold.finish(),
            Fold::Anthropic(fold) => fold.finish(),
            Fold::Gemini(fold) => fold.finish(),
        }
    }
}

#[derive(Debug)]
enum State {
    Detecting(Vec<SseEvent>),
    Folding(Box<Fold>),
    Unknown,
}

/// Folds a stream's events, in order, into its [`Reply`].
#[derive(Debug)]
pub struct Assembler {
    state: State,
    stats: SseStats,
}

impl Assembler {
    /// `api` from the request path; `None` detects it from the events.
    pub fn new(api: Option<Api>) -> Self {
        let state = match api {
            Some(api) => State::Folding(Box::new(Fold::new(api))),
            None => State::Detecting(Vec::new()),
        };
        Assembler {
            state,
            stats: SseStats::default(),
        }
    }

    pub fn push(&mut self, event: &SseEvent) {
        self.count(event);
        match &mut self.state {
            State::Folding(fold) => fold.push_event(event),
            State::Unknown => {}
            State::Detecting(held) => {
                let payload = Payload::of(event);
                let api = payload
                    .json
                    .as_ref()
                    .and_then(Value::as_object)
                    .and_then(Api::detect);
                if let Some(api) = api {
                    let mut fold = Fold::new(api);
                    held.iter().for_each(|e| fold.push(&Payload::of(e)));
                    fold.push(&payload);
                    self.state = State::Folding(Box::new(fold));
                } else if held.len() < MAX_UNDETECTED_EVENTS {
                    held.push(event.clone());
                } else {
                    self.state = State::Unknown;
                }
            }
        }
    }

    /// The assembled reply; `tail` is what the parser reported at the end.
    pub fn finish(self, tail: &SseTail) -> Result<Reply, AssembleError> {
        let State::Folding(fold) = self.state else {
            return Err(AssembleError::UnknownApi);
        };
        let mut reply = fold.finish();
        let mut stats = self.stats;
        stats.comments += tail.comments;
        stats.unterminated_tail = tail.unterminated;
        reply.sse = Some(stats);
        Ok(reply)
    }

    fn count(&mut self, event: &SseEvent) {
        let stats = &mut self.stats;
        stats.events += 1;
        stats.comments += event.comments;
        stats.done_sentinel |= event.is_done();
        if event.name() != "message" {
            *stats
                .event_names
                .entry(event.name().to_owned())
                .or_default() += 1;
        }
    }
}

impl Reply {
    /// Assembles a non-streamed response body (`chat.completion`,
    /// `text_completion`, a Responses `response`, an Anthropic `message`, a
    /// Gemini `GenerateContentResponse`).
    pub fn from_body(api: Option<Api>, body: &[u8]) -> Result<Reply, AssembleError> {
        if let Some(api @ (Api::ChatCompletions | Api::Completions)) = api
            && let Some(reply) = ChatFold::body_text(api, body)
        {
            return Ok(reply);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| AssembleError::InvalidJson(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(AssembleError::InvalidJson("not an object".into()));
        };
        let api = api
            .or_else(|| Api::detect_body(&obj))
            .ok_or(AssembleError::UnknownApi)?;
        Ok(match api {
            Api::ChatCompletions | Api::Completions => {
                let mut fold = ChatFold::new(api);
                fold.chunk(&chat::body_as_chunk(obj));
                fold.finish()
            }
            Api::Responses => ResponsesFold::from_body(&obj),
            Api::AnthropicMessages => AnthropicFold::from_body(&obj),
            Api::Gemini => {
                let mut fold = GeminiFold::default();
                fold.chunk(&obj);
                fold.finish()
            }
        })
    }
}

/// A string member.
pub(crate) fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// A string value as is; anything else as its JSON text.
pub(crate) fn string_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Python's truthiness, which the reference uses for "present".
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// An error event's error: its `error` member, else the whole object.
pub(crate) fn error_of(obj: &Map<String, Value>) -> Option<Value> {
    match obj.get("error") {
        Some(Value::Null) => None,
        Some(error) => Some(error.clone()),
        None => Some(Value::Object(obj.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::sse::parse_all;
    use serde_json::json;

    #[test]
    fn api_from_request_path() {
        assert_eq!(
            Api::from_path("/s/chat-42/v1/chat/completions"),
            Some(Api::ChatCompletions)
        );
        assert_eq!(
            Api::from_path("/v1/completions?x=1"),
            Some(Api::Completions)
        );
        assert_eq!(Api::from_path("/api/v1/responses"), Some(Api::Responses));
        assert_eq!(
            Api::from_path("/v1/messages?beta=true"),
            Some(Api::AnthropicMessages)
        );
        let gemini = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
        assert_eq!(Api::from_path(gemini), Some(Api::Gemini));
        assert_eq!(Api::from_path("/v1/embeddings"), None);
    }

    #[test]
    fn interleaved_tool_call_stream_end_to_end() {
        let chunk = |index: u64, extra: Value| {
            let mut call = json!({"index": index, "function": {"arguments": ""}});
            if let (Some(call), Value::Object(extra)) = (call.as_object_mut(), extra) {
                call.extend(extra);
            }
            let body = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]});
            format!("data: {body}\n\n")
        };
        let stream = [
            chunk(
                0,
                json!({"id": "call_0", "function": {"name": "a", "arguments": "[1"}}),
            ),
            chunk(
                1,
                json!({"id": "call_1", "function": {"name": "b", "arguments": "[2"}}),
            ),
            chunk(0, json!({"function": {"arguments": ",3]"}})),
            chunk(1, json!({"function": {"arguments": ",4]"}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let (events, tail) = parse_all(stream.as_bytes()).expect("parses");
        let mut assembler = Assembler::new(None);
        events.iter().for_each(|e| assembler.push(e));
        let reply = assembler.finish(&tail).expect("detected");
        let calls = &reply.message().expect("one choice").tool_calls;
        assert_eq!(
            (calls[0].arguments.as_str(), calls[1].arguments.as_str()),
            ("[1,3]", "[2,4]")
        );
        assert!(reply.sse.expect("stats").done_sentinel);
    }

    #[test]
    fn non_streamed_bodies() {
        let chat = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,
            "message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
            "function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"total_tokens":9}}"#;
        let reply = Reply::from_body(None, chat).expect("chat body");
        assert_eq!(reply.api, Api::ChatCompletions);
        assert_eq!(reply.finish_reason(), Some("tool_calls"));
        assert_eq!(reply.to_message()["tool_calls"][0]["function"]["name"], "f");
        let legacy = br#"{"object":"text_completion","choices":[{"text":"hi","index":0,"finish_reason":"stop"}]}"#;
        let reply = Reply::from_body(None, legacy).expect("legacy body");
        assert_eq!(
            (reply.api, reply.to_message()["content"].as_str()),
            (Api::Completions, Some("hi"))
        );
        assert_eq!(
            Reply::from_body(None, b"{}"),
            Err(AssembleError::UnknownApi)
        );
        assert!(matches!(
            Reply::from_body(None, b"[1]"),
            Err(AssembleError::InvalidJson(_))
        ));
    }

    #[test]
    fn undetectable_stream_is_an_error_not_a_panic() {
        let (events, tail) = parse_all(b"data: hello\n\ndata: [DONE]\n\n").expect("parses");
        let mut assembler = Assembler::new(None);
        events.iter().for_each(|e| assembler.push(e));
        assert_eq!(
            assembler.finish(&tail).err(),
            Some(AssembleError::UnknownApi)
        );
    }
}
