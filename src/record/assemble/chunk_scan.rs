//! A chat chunk read by hand into [`ChunkText`], with the result serde's
//! derived read gives, for two thirds of its instructions: a stream's
//! chunks are read once per token, and serde's read was a third of the
//! cost of recording one (3,200 against 4,600 for a 190-byte chunk).
//!
//! The scan walks the text once. The members the fold looks at are taken
//! in their usual types (a string, null, an object, an array of objects);
//! a member of any other type has its text handed to serde as that
//! member's type, so serde's rules decide it exactly as they would have
//! inside the chunk. Strings with escapes are decoded by serde too. What
//! the scan cannot vouch for (a member name with escapes, a member given
//! twice, text that is not JSON, nesting past
//! [`MAX_DEPTH`](crate::record::json_scan::MAX_DEPTH)) makes it give
//! up, and the caller reads the chunk with serde as before. The tests below
//! hold the two reads equal on every event of the recorded streams, on
//! damaged copies of them, and on chunks whose members are any JSON value.

use serde_json::Value;

use super::chunk::{ChoiceText, ChunkText, DeltaText};
use crate::record::json_scan::{Scan, Seen};

/// How deep the members the scan reads sit (a delta's, in a choice, in the
/// choices, in the chunk): a skipped value is counted from there.
const MEMBER_DEPTH: usize = 4;

/// The chunk, or `None` when serde must decide.
pub(super) fn read(text: &str) -> Option<ChunkText<'_>> {
    let mut scan = Scan::new(text, MEMBER_DEPTH);
    let chunk = scan.chunk()?;
    scan.finished().then_some(chunk)
}

/// The chunk's own reads, beside the scan's general ones.
impl<'a> Scan<'a> {
    fn chunk(&mut self) -> Option<ChunkText<'a>> {
        if self.peek()? != b'{' {
            return None;
        }
        let mut chunk = ChunkText::default();
        let mut seen = Seen::default();
        self.object(1, |scan, name| {
            match name {
                "id" => chunk.id = seen.once(0, || scan.maybe_str())?,
                "model" => chunk.model = seen.once(1, || scan.maybe_str())?,
                "error" => chunk.error = seen.once(2, || scan.boxed_value())?,
                "usage" => chunk.usage = seen.once(3, || scan.by_serde())?,
                "x_groq" => chunk.x_groq = seen.once(4, || scan.by_serde())?,
                "choices" => chunk.choices = seen.once(5, || scan.choices())?,
                _ => scan.skip()?,
            }
            Some(())
        })?;
        Some(chunk)
    }

    fn choices(&mut self) -> Option<Option<Vec<ChoiceText<'a>>>> {
        match self.peek()? {
            b'n' => self.null().map(|()| None),
            b'[' => {
                let mut choices = Vec::with_capacity(1);
                self.array(2, |scan| {
                    let choice = match scan.peek()? {
                        b'{' => scan.choice()?,
                        _ => scan.by_serde()?,
                    };
                    choices.push(choice);
                    Some(())
                })?;
                Some(Some(choices))
            }
            _ => self.by_serde(),
        }
    }

    fn choice(&mut self) -> Option<ChoiceText<'a>> {
        let mut choice = ChoiceText::default();
        let mut seen = Seen::default();
        self.object(3, |scan, name| {
            match name {
                "index" => choice.index = seen.once(0, || scan.maybe_u64())?,
                "text" => choice.text = seen.once(1, || scan.maybe_str())?,
                "delta" => {
                    choice.delta = seen.once(2, || match scan.peek()? {
                        b'{' => Some(Some(scan.delta()?)),
                        b'n' => scan.null().map(|()| None),
                        _ => scan.by_serde(),
                    })?
                }
                // Present, even as null: a body's message replaces the delta.
                "message" => {
                    choice.message = Some(seen.once(3, || match scan.peek()? {
                        b'{' => Some(Some(Box::new(scan.delta()?))),
                        b'n' => scan.null().map(|()| None),
                        _ => scan.by_serde(),
                    })?)
                }
                "finish_reason" => choice.finish_reason = seen.once(4, || scan.value())?,
                "logprobs" => choice.logprobs = seen.once(5, || scan.boxed_value())?,
                _ => scan.skip()?,
            }
            Some(())
        })?;
        Some(choice)
    }

    fn delta(&mut self) -> Option<DeltaText<'a>> {
        let mut delta = DeltaText::default();
        let mut seen = Seen::default();
        self.object(4, |scan, name| {
            match name {
                "role" => delta.role = seen.once(0, || scan.maybe_str())?,
                "content" => delta.content = seen.once(1, || scan.value())?,
                // Present, even as null: it turns `reasoning_details` off.
                "reasoning_content" => {
                    delta.reasoning_content = Some(seen.once(2, || scan.present_value())?)
                }
                "reasoning" => delta.reasoning = Some(seen.once(3, || scan.present_value())?),
                "reasoning_details" => {
                    delta.reasoning_details = seen.once(4, || scan.boxed_value())?
                }
                "refusal" => delta.refusal = seen.once(5, || scan.boxed_value())?,
                "tool_calls" => delta.tool_calls = seen.once(6, || scan.boxed_value())?,
                _ => scan.skip()?,
            }
            Some(())
        })?;
        Some(delta)
    }

    /// An `Option<Value>` member: null is `None`.
    fn value(&mut self) -> Option<Option<Value>> {
        match self.peek()? {
            b'n' => self.null().map(|()| None),
            b'"' => Some(Some(Value::String(self.string()?.into_owned()))),
            _ => self.by_serde(),
        }
    }

    fn boxed_value(&mut self) -> Option<Option<Box<Value>>> {
        Some(self.value()?.map(Box::new))
    }

    /// A member whose presence counts: null is `Value::Null`.
    fn present_value(&mut self) -> Option<Box<Value>> {
        Some(Box::new(self.value()?.unwrap_or(Value::Null)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::assemble::fixture_tests::recorded_data;
    use crate::record::json_scan::strategies::{any_value, assert_reads, damaged, members};

    fn by_serde(text: &str) -> Option<ChunkText<'_>> {
        serde_json::from_str(text).ok()
    }

    /// The scan either gives up or reads what serde reads.
    fn agrees(text: &str) -> bool {
        match read(text) {
            Some(chunk) => {
                assert_eq!(Some(&chunk), by_serde(text).as_ref(), "{text:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn reads_every_recorded_chat_chunk_as_serde_does() {
        let data = recorded_data();
        let chat_chunks: Vec<&String> = data
            .iter()
            .filter(|d| d.contains(r#""chat.completion.chunk""#))
            .collect();
        assert!(chat_chunks.len() > 500, "{} chat chunks", chat_chunks.len());
        for chunk in chat_chunks {
            assert!(agrees(chunk), "given up: {chunk}");
        }
        // The other APIs' events: read alike, or left to serde.
        for event in &data {
            agrees(event);
        }
    }

    #[test]
    fn reads_members_of_unusual_types_as_serde_does() {
        // Read by the scan, serde reading the members of unusual types.
        let read_by_scan = [
            r#"{"id":5,"model":null,"choices":[{"index":"0","delta":{"content":"a","reasoning":null}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"role":"assistant","content":[{"type":"text","text":"p"}]},"finish_reason":7}],"usage":null,"x_groq":{"usage":{"t":1}}}"#,
            r#"{"choices":[{"index":0,"message":null,"delta":null},{"index":2,"message":{"content":"m"}}]}"#,
            r#"{"choices":[{"index":1.0,"delta":{"reasoning_content":"rc","refusal":"no","tool_calls":[{"index":0}]},"logprobs":{"content":[]}}]}"#,
            r#"{"choices":[{"index":18446744073709551615},{"index":18446744073709551616},{"index":-0},{"index":1e2},{"index":9999999999999999999}]}"#,
            r#"{"id":"x\u00e9\n","choices":[{"text":"a\"b\\c","finish_reason":"st\/op"}], "usage" : {"prompt_tokens": 1.5e3}}"#,
            r#" { "x" : [ 1 , -2.5E+3 , true , false , null , { } , [ ] , "s\t" ] , "choices" : [ ] } "#,
            r#"{"choices":[{"delta":{"content":"\ud83d\ude00"}}]}"#,
            r#"{"x_groq":[{"t":1}]}"#,
            r#"{"choices":[[0,"t"]]}"#,
            "{}",
        ];
        // Given up: serde decides (it refuses most of these).
        let given_up = [
            r#"{"choices":[{"index":00}]}"#,
            r#"{"choices":[{"delta":{"content":"\ud83d"}}]}"#,
            r#"{"choices":[1,{"delta":{}}]}"#,
            r#"{"choices":[{"delta":{"content":"twice","content":"again"}}]}"#,
            r#"{"choices":[],"choices":[{"delta":{"content":"twice"}}]}"#,
            r#"{"\u0069d":"escaped name"}"#,
            "{\"x\":\"a\ttab\"}",
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":.5}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":1,}"#,
            r#"{"x":nul}"#,
            r#"{"x":"\q"}"#,
            r#"{"x":1} trailing"#,
            r#"{"id":"a"}{"#,
            r#"["id"]"#,
            "{",
            "",
        ];
        assert_reads(agrees, &read_by_scan, &given_up);
    }

    #[test]
    fn gives_up_past_its_depth_where_serde_decides() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let text = format!(r#"{{"x":{deep},"choices":[{{"delta":{{"content":"kept"}}}}]}}"#);
        assert!(read(&text).is_none());
        assert!(by_serde(&text).is_some());
    }

    /// The data of recorded events, read once for all cases.
    fn recorded() -> &'static [String] {
        static DATA: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        DATA.get_or_init(|| {
            let mut data = recorded_data();
            data.retain(|d| d.starts_with('{'));
            data
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A chunk whose every member the scan reads is any JSON value, or
        /// absent.
        #[test]
        fn reads_members_of_any_value_as_serde_does(chunk in members(
            &["id", "model", "error", "usage", "x_groq", "choices", "object"],
            prop_oneof![
                any_value(),
                proptest::collection::vec(
                    members(
                        &["index", "text", "delta", "message", "finish_reason", "logprobs", "x"],
                        prop_oneof![
                            any_value(),
                            members(
                                &["role", "content", "reasoning_content", "reasoning",
                                  "reasoning_details", "refusal", "tool_calls", "x"],
                                any_value().boxed(),
                            ),
                        ].boxed(),
                    ),
                    0..3,
                ).prop_map(Value::from),
            ].boxed(),
        )) {
            // Well-formed, with no member twice: the scan never gives up
            // where serde reads, and reads what it reads.
            let text = chunk.to_string();
            prop_assert_eq!(read(&text), by_serde(&text), "{}", text);
        }

        /// Damaged copies of the recorded events: bytes changed, dropped or
        /// repeated. The scan reads each as serde does, or gives up.
        #[test]
        fn reads_damaged_events_as_serde_does_or_gives_up(text in damaged(recorded())) {
            agrees(&text);
        }
    }
}
