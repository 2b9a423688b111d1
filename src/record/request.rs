//! What a recorded request says: its model, whether it streams, where it may
//! name a session, and its conversation turned into OpenAI-shaped messages
//! (`{"role", "content", "tool_calls", "tool_call_id"}`), whatever the API.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::Api;
use super::json_text::{self, MaybeStr, MaybeTrue};
use super::message::{Message, Role};
use super::turn::history_may_keep;

mod chat_scan;

/// A recorded request, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRequest {
    pub api: Api,
    pub model: Option<String>,
    pub stream: bool,
    /// Instructions given beside the conversation (Anthropic `system`,
    /// Responses `instructions`, Gemini `systemInstruction`) as system messages.
    pub system: Vec<Message>,
    /// The conversation in the OpenAI message shape, as sent, without what
    /// history never keeps ([`history_may_keep`]).
    pub messages: Vec<Message>,
    /// `metadata.session_id` of the body.
    pub metadata_session: Option<String>,
    /// The body's `user` field.
    pub user: Option<String>,
    /// The body's `stream_options` when given (`null` included), which
    /// `record.include_usage` looks at: read here, in the one pass over a
    /// body that carries the whole conversation.
    pub stream_options: Option<Value>,
}

/// Why a request body cannot be recorded (it is still forwarded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("no conversation in the body ({0})")]
    NoConversation(&'static str),
}

impl RequestError {
    /// The metric label of this reason.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::NotJson(_) => "invalid_json",
            RequestError::NotAnObject => "not_an_object",
            RequestError::NoConversation(_) => "no_conversation",
        }
    }
}

pub fn parse(api: Api, body: &[u8]) -> Result<TurnRequest, RequestError> {
    if api == Api::ChatCompletions
        && let Some(request) = parse_chat(body)
    {
        return Ok(request);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(RequestError::NotAnObject);
    };
    let (system, messages) = conversation(api, &obj, Converted::HistoryMayKeep)?;
    let kept = |values: Vec<Value>| values.iter().filter_map(Message::from_value).collect();
    // What history never keeps is left out before it is written as text.
    let messages = history_may_keep(messages, Role::of_value);
    Ok(TurnRequest {
        api,
        model: obj.get("model").and_then(Value::as_str).map(str::to_owned),
        stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
        system: kept(system),
        messages: kept(messages),
        metadata_session: obj
            .get("metadata")
            .and_then(|m| m.get("session_id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        user: obj.get("user").and_then(Value::as_str).map(str::to_owned),
        stream_options: obj.get("stream_options").cloned(),
    })
}

/// Which messages a conversion must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converted {
    /// Every message (what the tests of the conversions look at).
    #[cfg(test)]
    All,
    /// At least those [`history_may_keep`] keeps of all of them: a
    /// conversion may leave out the others.
    HistoryMayKeep,
}

impl Converted {
    /// Where a conversion starts to convert everything: the last of `items`
    /// that becomes an assistant message when only what history may keep
    /// is asked for (before it, only instructions are), else the first.
    fn first_kept<T>(self, items: &[T], becomes_assistant: impl Fn(&T) -> bool) -> usize {
        match self {
            #[cfg(test)]
            Converted::All => 0,
            Converted::HistoryMayKeep => items.iter().rposition(becomes_assistant).unwrap_or(0),
        }
    }
}

/// A body's instructions and conversation, each message in the OpenAI
/// shape, whatever the API.
fn conversation(
    api: Api,
    obj: &Map<String, Value>,
    converted: Converted,
) -> Result<(Vec<Value>, Vec<Value>), RequestError> {
    Ok(match api {
        Api::ChatCompletions => (Vec::new(), chat_messages(obj)?),
        Api::Completions => (Vec::new(), completion_prompt(obj)?),
        Api::Responses => responses_input(obj, converted)?,
        Api::AnthropicMessages => anthropic_messages(obj, converted)?,
        Api::Gemini => gemini_contents(obj)?,
    })
}

/// The top level of a Chat Completions body: only what recording reads, each
/// as the text it was sent as. Every other member is skipped unparsed.
#[derive(Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow, default)]
    model: MaybeStr<'a>,
    #[serde(default)]
    stream: MaybeTrue,
    /// Each message as the text it was sent as. Not an array: the parse
    /// fails, and the general way names the error.
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: MaybeStr<'a>,
    #[serde(default, deserialize_with = "given")]
    stream_options: Option<Value>,
}

/// `Some` for a member that is there, `null` included.
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    session_id: MaybeStr<'a>,
}

/// A Chat Completions request read without building a `Value` of the body:
/// its messages stay the text they were sent as ([`Message`]), read by hand
/// ([`chat_scan`]) or, where the scan gives up, by serde. `None` when the
/// body is not the usual shape (not JSON, a member given twice, no array
/// of messages, a message too deep to store): the general parse then
/// decides, and names the error.
fn parse_chat(body: &[u8]) -> Option<TurnRequest> {
    if !json_text::is_object(body) {
        return None;
    }
    // Checked as UTF-8 once: read from bytes, serde checks every string of
    // the body on its own.
    let text = std::str::from_utf8(body).ok()?;
    let top = chat_scan::read(text).or_else(|| read_chat_by_serde(text))?;
    Some(top.into_request())
}

/// What recording takes from the top level of a Chat Completions body,
/// whichever read took it.
#[derive(Default)]
struct ChatTop<'a> {
    model: MaybeStr<'a>,
    stream: bool,
    messages: Vec<Message>,
    /// The member's text, unless it is `null`.
    metadata: Option<&'a str>,
    user: MaybeStr<'a>,
    stream_options: Option<Value>,
}

/// The body read by serde's derived read, each message then scanned for
/// its role ([`Message::from_raw`]).
fn read_chat_by_serde(text: &str) -> Option<ChatTop<'_>> {
    let top: ChatBody = serde_json::from_str(text).ok()?;
    let messages = top
        .messages?
        .iter()
        .filter_map(|m| Message::from_raw(m.get()).transpose())
        .collect::<Result<_, _>>()
        .ok()?;
    let messages = history_may_keep(messages, Message::role);
    Some(ChatTop {
        model: top.model,
        stream: top.stream.0,
        messages,
        metadata: top.metadata.map(RawValue::get),
        user: top.user,
        stream_options: top.stream_options,
    })
}

impl ChatTop<'_> {
    fn into_request(self) -> TurnRequest {
        // Metadata is rare: read only when present, and only as an object.
        let session = self
            .metadata
            .filter(|m| json_text::is_object(m.as_bytes()))
            .and_then(|m| serde_json::from_str::<Metadata>(m).ok())
            .and_then(|m| m.session_id.into_owned());
        TurnRequest {
            api: Api::ChatCompletions,
            model: self.model.into_owned(),
            stream: self.stream,
            system: Vec::new(),
            messages: self.messages,
            metadata_session: session,
            user: self.user.into_owned(),
            stream_options: self.stream_options,
        }
    }
}

/// Chat Completions: `messages`, the objects among them.
fn chat_messages(obj: &Map<String, Value>) -> Result<Vec<Value>, RequestError> {
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(RequestError::NoConversation("messages is not an array"));
    };
    Ok(messages.iter().filter(|m| m.is_object()).cloned().collect())
}

fn completion_prompt(obj: &Map<String, Value>) -> Result<Vec<Value>, RequestError> {
    let prompts: Vec<&str> = match obj.get("prompt") {
        Some(Value::String(p)) => vec![p],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => return Err(RequestError::NoConversation("prompt is not text")),
    };
    Ok(prompts
        .into_iter()
        .map(|p| json!({"role": "user", "content": p}))
        .collect())
}

/// Responses API: `instructions` and `input` (a string or a list of items).
/// Where history keeps only what follows the last assistant message, the
/// items before the last one that becomes an assistant message are not
/// converted, instructions aside (each conversion clones the item's parts).
fn responses_input(
    obj: &Map<String, Value>,
    converted: Converted,
) -> Result<(Vec<Value>, Vec<Value>), RequestError> {
    let system = obj
        .get("instructions")
        .and_then(Value::as_str)
        .map(|text| vec![json!({"role": "system", "content": text})])
        .unwrap_or_default();
    let messages = match obj.get("input") {
        Some(Value::String(text)) => vec![json!({"role": "user", "content": text})],
        Some(Value::Array(items)) => {
            let becomes_assistant = |item: &Value| match responses_kind(item) {
                "message" => responses_role(item) == "assistant" && item.get("content").is_some(),
                kind => kind == "function_call",
            };
            let first_kept = converted.first_kept(items, becomes_assistant);
            items
                .iter()
                .enumerate()
                .filter(|(at, item)| {
                    *at >= first_kept
                        || responses_kind(item) == "message"
                            && Role::of(responses_role(item)).instructs()
                })
                .filter_map(|(_, item)| responses_item(item))
                .collect()
        }
        _ => return Err(RequestError::NoConversation("input is missing")),
    };
    Ok((system, messages))
}

/// A Responses input item's type (`message` unless given as a string).
fn responses_kind(item: &Value) -> &str {
    item.get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
}

/// A Responses message's role (`user` unless given as a string).
fn responses_role(item: &Value) -> &str {
    item.get("role").and_then(Value::as_str).unwrap_or("user")
}

fn responses_item(item: &Value) -> Option<Value> {
    match responses_kind(item) {
        "message" => Some(json!({
            "role": responses_role(item),
            "content": flatten_text(item.get("content")?),
        })),
        "function_call" => Some(json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {"name": item.get("name").cloned().unwrap_or(Value::Null),
                             "arguments": item.get("arguments").cloned().unwrap_or(Value::Null)},
            }],
        })),
        "function_call_output" => Some(json!({
            "role": "tool",
            "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null),
            "content": item.get("output").map(flatten_text).unwrap_or(Value::Null),
        })),
        // Reasoning items and other server-side state are not conversation.
        _ => None,
    }
}

/// An Anthropic message's role (`user` unless given as a string).
fn anthropic_role(message: &Value) -> &str {
    message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user")
}

/// Anthropic Messages: `system` plus `messages` whose content may be blocks.
/// Converting a message clones its blocks; where history keeps only what
/// follows the last assistant message, the messages before the last one
/// that becomes an assistant message are not converted, instructions aside
/// (a 41-message conversation: 565,328 -> 355,999 instructions to read,
/// `bench/record_cost.sh`).
fn anthropic_messages(
    obj: &Map<String, Value>,
    converted: Converted,
) -> Result<(Vec<Value>, Vec<Value>), RequestError> {
    let system = match obj.get("system") {
        Some(s @ (Value::String(_) | Value::Array(_))) => {
            vec![json!({"role": "system", "content": flatten_text(s)})]
        }
        _ => Vec::new(),
    };
    let raw = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or(RequestError::NoConversation("messages is not an array"))?;
    // What the loop below makes an assistant message: one whose content is
    // not blocks, or whose blocks have text or tool calls.
    let becomes_assistant = |message: &Value| {
        anthropic_role(message) == "assistant"
            && match message.get("content") {
                Some(Value::Array(blocks)) => blocks.iter().any(|b| {
                    (b["type"] == "text" && b["text"].is_string()) || b["type"] == "tool_use"
                }),
                _ => true,
            }
    };
    let first_kept = converted.first_kept(raw, becomes_assistant);
    let mut messages = Vec::new();
    for (at, message) in raw.iter().enumerate() {
        let role = anthropic_role(message);
        if at < first_kept && !Role::of(role).instructs() {
            continue;
        }
        let Some(Value::Array(blocks)) = message.get("content") else {
            messages.push(json!({"role": role, "content": message.get("content").cloned().unwrap_or(Value::Null)}));
            continue;
        };
        let text: Vec<&str> = blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect();
        let calls: Vec<Value> = blocks
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| {
                json!({"id": b["id"], "type": "function",
                       "function": {"name": b["name"], "arguments": b["input"].to_string()}})
            })
            .collect();
        for result in blocks.iter().filter(|b| b["type"] == "tool_result") {
            let content = result
                .get("content")
                .map(flatten_text)
                .unwrap_or(Value::Null);
            messages.push(
                json!({"role": "tool", "tool_call_id": result["tool_use_id"], "content": content}),
            );
        }
        if !text.is_empty() || !calls.is_empty() {
            let mut m = json!({"role": role, "content": if text.is_empty() { Value::Null } else { text.concat().into() }});
            if !calls.is_empty() {
                m["tool_calls"] = calls.into();
            }
            messages.push(m);
        }
    }
    Ok((system, messages))
}

/// Gemini native: `systemInstruction` and `contents` with `parts`.
fn gemini_contents(obj: &Map<String, Value>) -> Result<(Vec<Value>, Vec<Value>), RequestError> {
    let parts_text = |v: &Value| -> String {
        v.get("parts")
            .and_then(Value::as_array)
            .map(|parts| parts.iter().filter_map(|p| p["text"].as_str()).collect())
            .unwrap_or_default()
    };
    let system = obj
        .get("systemInstruction")
        .map(|s| vec![json!({"role": "system", "content": parts_text(s)})])
        .unwrap_or_default();
    let contents = obj
        .get("contents")
        .and_then(Value::as_array)
        .ok_or(RequestError::NoConversation("contents is not an array"))?;
    let messages = contents
        .iter()
        .map(|c| {
            let role = match c.get("role").and_then(Value::as_str) {
                Some("model") => "assistant",
                _ => "user",
            };
            json!({"role": role, "content": parts_text(c)})
        })
        .collect();
    Ok((system, messages))
}

/// Content as a string when it is all text parts (`[{"type": "text"|"input_text"|
/// "output_text", "text"}]`), else as sent (images and files stay structured).
fn flatten_text(content: &Value) -> Value {
    let Value::Array(parts) = content else {
        return content.clone();
    };
    let texts: Option<Vec<&str>> = parts
        .iter()
        .map(|p| match p.get("type").and_then(Value::as_str) {
            Some("text" | "input_text" | "output_text") => p.get("text").and_then(Value::as_str),
            _ => None,
        })
        .collect();
    match texts {
        Some(texts) => texts.concat().into(),
        None => content.clone(),
    }
}

#[cfg(test)]
mod tests;
