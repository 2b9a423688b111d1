//! The assembled reply: one shape for every API, its flat comparison form
//! (the reference assembler's `expected.json` shape, which is what `Serialize`
//! produces), and the OpenAI chat message the history stores.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::{Api, Usage};
use crate::record::json_write;

/// One assembled assistant message: the only choice, or one of several when a
/// Chat Completions request asked for `n > 1`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Choice {
    pub index: u64,
    /// `delta.role` as sent (Chat Completions only).
    pub role: Option<String>,
    /// Concatenated text deltas; `None` when no non-empty delta came.
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub refusal: Option<String>,
    /// In the order the calls were started.
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    /// `{"content": [{"token", "logprob"}], "refusal": [...]}` when the
    /// provider sent logprobs.
    pub logprobs: Option<Value>,
}

/// A tool call with its arguments exactly as streamed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub id: Option<String>,
    /// Responses API output item id (`fc_...`), distinct from the call id.
    pub item_id: Option<String>,
    pub name: Option<String>,
    /// The concatenated argument fragments, byte for byte.
    pub arguments: String,
}

/// Do the Responses API deltas agree with the final items?
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checks {
    pub deltas_match_final: bool,
    pub problems: Vec<String>,
}

/// Framing facts of a streamed reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SseStats {
    /// Dispatched events.
    pub events: usize,
    /// Comment lines, trailing ones included.
    pub comments: usize,
    pub done_sentinel: bool,
    /// Count per event type other than "message".
    pub event_names: BTreeMap<String, usize>,
    pub unterminated_tail: bool,
}

/// The assembled reply. Fields that an API does not have stay empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub api: Api,
    pub id: Option<String>,
    pub model: Option<String>,
    /// Every choice, by index. Chat Completions may have none (a stream that
    /// failed before its first chunk) or several; the others always have one.
    pub choices: Vec<Choice>,
    /// The provider's own usage object, unnormalized.
    pub usage: Option<Usage>,
    /// An error reported inside a successful response.
    pub error: Option<Value>,
    /// Anthropic: the stop sequence that ended the message.
    pub stop_sequence: Option<String>,
    /// Responses API: `incomplete_details.reason`.
    pub incomplete_reason: Option<String>,
    /// Anthropic: the content blocks in the Messages API's own shape.
    pub blocks: Vec<Value>,
    /// Anthropic: `ping` events seen.
    pub pings: usize,
    /// Responses API: consistency of the deltas with the final items.
    pub checks: Option<Checks>,
    /// Set for streamed replies.
    pub sse: Option<SseStats>,
}

impl Reply {
    pub(crate) fn new(api: Api) -> Self {
        Reply {
            api,
            id: None,
            model: None,
            choices: Vec::new(),
            usage: None,
            error: None,
            stop_sequence: None,
            incomplete_reason: None,
            blocks: Vec::new(),
            pings: 0,
            checks: None,
            sse: None,
        }
    }

    /// The message the history records: the first choice.
    pub fn message(&self) -> Option<&Choice> {
        self.choices.first()
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.message()?.finish_reason.as_deref()
    }

    /// The OpenAI chat message shape the history stores, nulls omitted:
    /// `{"role", "content", "tool_calls": [{"id", "type": "function",
    /// "function": {"name", "arguments"}}], "reasoning", "refusal"}`.
    pub fn to_message(&self) -> Value {
        serde_json::to_value(self.history_message()).unwrap_or(Value::Null)
    }

    /// [`to_message`](Self::to_message) as a borrowing `Serialize` value,
    /// written out without building a `Value` first.
    pub fn history_message(&self) -> HistoryMessage<'_> {
        let choice = self.message();
        HistoryMessage {
            role: choice
                .and_then(|c| c.role.as_deref())
                .unwrap_or("assistant"),
            content: choice.and_then(|c| c.content.as_deref()),
            tool_calls: choice
                .map(|c| c.tool_calls.iter().map(HistoryToolCall::of).collect())
                .unwrap_or_default(),
            reasoning: choice.and_then(|c| c.reasoning.as_deref()),
            refusal: choice.and_then(|c| c.refusal.as_deref()),
        }
    }

    /// The flat comparison form of the reference assembler: per API the same
    /// keys, so a test can compare it to `expected.json` as a whole.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("api".into(), self.api.as_str().into());
        out.insert("id".into(), json!(self.id));
        out.insert("model".into(), json!(self.model));
        match self.api {
            Api::ChatCompletions | Api::Completions => self.chat_fields(&mut out),
            Api::Responses => self.responses_fields(&mut out),
            Api::AnthropicMessages => self.anthropic_fields(&mut out),
            Api::Gemini => self.gemini_fields(&mut out),
        }
        if let Some(sse) = &self.sse {
            out.insert("sse".into(), json!(sse));
        }
        Value::Object(out)
    }

    fn chat_fields(&self, out: &mut Map<String, Value>) {
        match self.choices.as_slice() {
            [] => {}
            [only] => choice_fields(only, out, false, true),
            many => {
                let list = many
                    .iter()
                    .map(|c| {
                        let mut m = Map::new();
                        m.insert("index".into(), c.index.into());
                        choice_fields(c, &mut m, false, true);
                        Value::Object(m)
                    })
                    .collect();
                out.insert("choices".into(), Value::Array(list));
            }
        }
        out.insert("usage".into(), json!(self.usage));
        out.insert("error".into(), json!(self.error));
    }

    fn responses_fields(&self, out: &mut Map<String, Value>) {
        self.single_choice_fields(out, true);
        out.insert("incomplete_reason".into(), json!(self.incomplete_reason));
        out.insert("usage".into(), json!(self.usage));
        out.insert("error".into(), json!(self.error));
        out.insert("checks".into(), json!(self.checks));
    }

    fn anthropic_fields(&self, out: &mut Map<String, Value>) {
        self.single_choice_fields(out, false);
        out.insert("stop_sequence".into(), json!(self.stop_sequence));
        out.insert("usage".into(), json!(self.usage));
        out.insert("error".into(), json!(self.error));
        out.insert("blocks".into(), Value::Array(self.blocks.clone()));
        out.insert("pings".into(), self.pings.into());
    }

    fn gemini_fields(&self, out: &mut Map<String, Value>) {
        self.single_choice_fields(out, false);
        out.insert("usage".into(), json!(self.usage));
        out.insert("error".into(), json!(self.error));
    }

    fn single_choice_fields(&self, out: &mut Map<String, Value>, item_ids: bool) {
        let empty = Choice::default();
        choice_fields(self.message().unwrap_or(&empty), out, item_ids, false);
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

fn choice_fields(choice: &Choice, out: &mut Map<String, Value>, item_ids: bool, chat: bool) {
    if chat {
        out.insert("role".into(), json!(choice.role));
    }
    out.insert("content".into(), json!(choice.content));
    out.insert("reasoning".into(), json!(choice.reasoning));
    out.insert("refusal".into(), json!(choice.refusal));
    let calls = choice
        .tool_calls
        .iter()
        .map(|c| flat_tool_call(c, item_ids))
        .collect();
    out.insert("tool_calls".into(), Value::Array(calls));
    out.insert("finish_reason".into(), json!(choice.finish_reason));
    if let Some(logprobs) = &choice.logprobs {
        out.insert("logprobs".into(), logprobs.clone());
    }
}

fn flat_tool_call(call: &ToolCall, item_id: bool) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(call.id));
    if item_id {
        m.insert("item_id".into(), json!(call.item_id));
    }
    m.insert("name".into(), json!(call.name));
    m.insert("arguments".into(), call.arguments.clone().into());
    Value::Object(m)
}

/// The message history stores for a reply (see [`Reply::to_message`]).
#[derive(Debug, Serialize)]
pub struct HistoryMessage<'a> {
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<HistoryToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
}

impl HistoryMessage<'_> {
    /// Writes the members `Serialize` writes, into an object being written
    /// by hand (the stored reply: its tests hold the two equal).
    pub fn write_members(&self, object: &mut json_write::Object) {
        object.str("role", self.role);
        object.some_str("content", self.content);
        if !self.tool_calls.is_empty() {
            object.objects("tool_calls", &self.tool_calls, |call, tool| {
                call.some_str("id", tool.id);
                call.str("type", tool.kind);
                call.object("function", |function| {
                    function.some_str("name", tool.function.name);
                    function.str("arguments", tool.function.arguments);
                });
            });
        }
        object.some_str("reasoning", self.reasoning);
        object.some_str("refusal", self.refusal);
    }
}

/// A tool call in the OpenAI shape, whatever API made it.
#[derive(Debug, Serialize)]
struct HistoryToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: HistoryFunction<'a>,
}

#[derive(Debug, Serialize)]
struct HistoryFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl<'a> HistoryToolCall<'a> {
    fn of(call: &'a ToolCall) -> Self {
        HistoryToolCall {
            id: call.id.as_deref(),
            kind: "function",
            function: HistoryFunction {
                name: call.name.as_deref(),
                arguments: &call.arguments,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_message_omits_nulls_and_uses_openai_tool_calls() {
        let mut reply = Reply::new(Api::AnthropicMessages);
        reply.choices.push(Choice {
            content: Some("hi".into()),
            tool_calls: vec![ToolCall {
                id: Some("toolu_1".into()),
                item_id: None,
                name: Some("get".into()),
                arguments: "{\"a\":1}".into(),
            }],
            ..Choice::default()
        });
        let want = json!({"role": "assistant", "content": "hi", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}}]});
        assert_eq!(reply.to_message(), want);
    }

    #[test]
    fn chat_without_choices_has_no_message_keys() {
        let value = Reply::new(Api::ChatCompletions).to_json();
        assert!(value.get("content").is_none(), "{value}");
        assert_eq!(
            Reply::new(Api::ChatCompletions).to_message(),
            json!({"role": "assistant"})
        );
    }
}
