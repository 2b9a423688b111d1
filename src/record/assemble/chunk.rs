//! A Chat Completions chunk as the fold reads it, from either form: its
//! text read strictly into the members the fold looks at ([`ChunkText`],
//! borrowed where they are strings), or a parsed map ([`DeltaView::of_map`]
//! and the fold's `chunk`). The strict read is the common way; anything it
//! turns away (a member of an unexpected type, a member given twice, not
//! JSON) goes the general way with the same result, which the tests below
//! check on every event of the recorded streams.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::record::json_text::{MaybeStr, MaybeU64};

/// The members of a chunk that the fold reads, borrowed from its text where
/// they are strings. Strict: a member of an unexpected type fails the parse,
/// and the chunk goes the general way. Members that a content chunk seldom
/// has are boxed: serde moves a chunk's structs by value several times as it
/// builds them, and unboxed they made a choice some 600 bytes, whose copies
/// were a fifth of a chunk's parse.
#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct ChunkText<'a> {
    #[serde(borrow, default)]
    pub(super) id: MaybeStr<'a>,
    #[serde(borrow, default)]
    pub(super) model: MaybeStr<'a>,
    #[serde(default)]
    pub(super) error: Option<Box<Value>>,
    #[serde(borrow, default)]
    pub(super) usage: Option<RawJson<'a>>,
    #[serde(borrow, default)]
    pub(super) x_groq: Option<Box<GroqText<'a>>>,
    #[serde(borrow, default)]
    pub(super) choices: Option<Vec<ChoiceText<'a>>>,
}

#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct GroqText<'a> {
    #[serde(borrow, default)]
    pub(super) usage: Option<RawJson<'a>>,
}

/// A member kept as its JSON text: a usage object, which history stores as
/// it came and reads three counts from ([`Usage`](super::Usage)).
#[derive(Clone, Copy, Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(transparent)]
pub(super) struct RawJson<'a>(#[serde(borrow)] pub(super) &'a RawValue);

#[cfg(test)]
impl PartialEq for RawJson<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct ChoiceText<'a> {
    #[serde(default)]
    pub(super) index: MaybeU64,
    #[serde(borrow, default)]
    pub(super) text: MaybeStr<'a>,
    #[serde(borrow, default)]
    pub(super) delta: Option<DeltaText<'a>>,
    /// Present (even as null) or not: a body's message replaces the delta.
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) message: Option<Option<Box<DeltaText<'a>>>>,
    #[serde(default)]
    pub(super) finish_reason: Option<Value>,
    #[serde(default)]
    pub(super) logprobs: Option<Box<Value>>,
}

#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct DeltaText<'a> {
    #[serde(borrow, default)]
    pub(super) role: MaybeStr<'a>,
    #[serde(default)]
    pub(super) content: Option<Value>,
    /// Present-as-null counts: it turns `reasoning_details` off.
    #[serde(default, deserialize_with = "present")]
    pub(super) reasoning_content: Option<Box<Value>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) reasoning: Option<Box<Value>>,
    #[serde(default)]
    pub(super) reasoning_details: Option<Box<Value>>,
    #[serde(default)]
    pub(super) refusal: Option<Box<Value>>,
    #[serde(default)]
    pub(super) tool_calls: Option<Box<Value>>,
}

impl<'a> ChunkText<'a> {
    /// A chunk's text read strictly: by hand when it is of the usual shape
    /// ([`chunk_scan`](super::chunk_scan)), by serde when the scan gives up.
    pub(super) fn read(text: &'a str) -> Option<Self> {
        super::chunk_scan::read(text).or_else(|| serde_json::from_str(text).ok())
    }
}

impl DeltaText<'_> {
    pub(super) fn view(&self) -> DeltaView<'_> {
        DeltaView {
            role: self.role.as_deref(),
            content: self.content.as_ref(),
            reasoning_content: self.reasoning_content.as_deref(),
            reasoning: self.reasoning.as_deref(),
            reasoning_details: self.reasoning_details.as_deref(),
            refusal: self.refusal.as_deref(),
            tool_calls: self.tool_calls.as_deref(),
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
pub(super) struct ChoiceView<'a> {
    pub(super) text: Option<&'a str>,
    pub(super) delta: Option<DeltaView<'a>>,
    pub(super) finish_reason: Option<&'a Value>,
    pub(super) logprobs: Option<&'a Value>,
}

/// A delta as the fold reads it; a member is `Some` when present, null
/// included.
pub(super) struct DeltaView<'a> {
    pub(super) role: Option<&'a str>,
    pub(super) content: Option<&'a Value>,
    pub(super) reasoning_content: Option<&'a Value>,
    pub(super) reasoning: Option<&'a Value>,
    pub(super) reasoning_details: Option<&'a Value>,
    pub(super) refusal: Option<&'a Value>,
    pub(super) tool_calls: Option<&'a Value>,
}

impl<'a> DeltaView<'a> {
    pub(super) fn of_map(delta: &'a Map<String, Value>) -> Self {
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::chat::{ChatFold, body_as_chunk};
    use super::super::fixture_tests::recorded_data;
    use super::super::{Api, Payload};

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
}
