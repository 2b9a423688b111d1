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
//! twice, text that is not JSON, nesting past [`MAX_DEPTH`]) makes it give
//! up, and the caller reads the chunk with serde as before. The tests below
//! hold the two reads equal on every event of the recorded streams, on
//! damaged copies of them, and on chunks whose members are any JSON value.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::chunk::{ChoiceText, ChunkText, DeltaText};
use crate::record::json_text::{MaybeStr, MaybeU64};

/// Deeper than this the scan gives up, well inside serde's own limit (128),
/// so that a member handed to serde on its own is never read where the
/// whole chunk would not have been.
const MAX_DEPTH: usize = 64;

/// The bytes of `word` (eight of a string, the first lowest) that end a
/// plain run of its text: a quote, a backslash, a control character. Each
/// has its high bit set; a false one can only follow a true one, so the
/// lowest set bit is the first such byte.
fn stops(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control
}

/// How deep the members the scan reads sit (a delta's, in a choice, in the
/// choices, in the chunk): a skipped value is counted from there.
const MEMBER_DEPTH: usize = 4;

/// The chunk, or `None` when serde must decide.
pub(super) fn read(text: &str) -> Option<ChunkText<'_>> {
    let mut scan = Scan { text, at: 0 };
    scan.space();
    let chunk = scan.chunk()?;
    scan.space();
    (scan.at == text.len()).then_some(chunk)
}

struct Scan<'a> {
    text: &'a str,
    at: usize,
}

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
                "index" => choice.index = seen.once(0, || scan.index())?,
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

    /// A string when it is one; any other value reads as `None`.
    fn maybe_str(&mut self) -> Option<MaybeStr<'a>> {
        if self.peek()? == b'"' {
            return Some(MaybeStr(Some(self.string()?)));
        }
        self.skip()?;
        Some(MaybeStr(None))
    }

    /// A plain whole number is the common index; serde reads the rest.
    fn index(&mut self) -> Option<MaybeU64> {
        let start = self.at;
        let digits = self.bytes()[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if (1..=19).contains(&digits) && (digits == 1 || self.bytes()[start] != b'0') {
            let number = self.text[start..start + digits].parse::<u64>().ok()?;
            if !matches!(
                self.bytes().get(start + digits),
                Some(b'.' | b'e' | b'E' | b'0'..=b'9')
            ) {
                self.at += digits;
                return Some(MaybeU64(Some(number)));
            }
        }
        self.by_serde()
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

    /// The next value read by serde as `T`, as it would be in place.
    fn by_serde<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let (text, start) = (self.text, self.at);
        self.skip()?;
        serde_json::from_str(&text[start..self.at]).ok()
    }

    /// A string's text, borrowed unless it has escapes (serde decodes those).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (inner, escaped) = self.raw_string()?;
        if !escaped {
            return Some(Cow::Borrowed(inner));
        }
        self.decoded::<String>(inner).map(Cow::Owned)
    }

    /// The string just read, whose text between quotes is `inner`, read by
    /// serde as `T`: how a string with escapes is decoded or checked.
    fn decoded<T: Deserialize<'a>>(&self, inner: &str) -> Option<T> {
        serde_json::from_str(&self.text[self.at - inner.len() - 2..self.at]).ok()
    }

    /// The text between a string's quotes, and whether it has escapes;
    /// `None` for a control character, which JSON does not allow there.
    /// Looked through eight bytes at a time ([`stops`]), then a byte at a
    /// time in the text's last seven.
    fn raw_string(&mut self) -> Option<(&'a str, bool)> {
        let bytes = self.bytes();
        if bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let mut at = start;
        let mut escaped = false;
        loop {
            if let Some(&word) = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
                let found = stops(u64::from_le_bytes(word));
                if found == 0 {
                    at += 8;
                    continue;
                }
                at += found.trailing_zeros() as usize / 8;
            }
            match *bytes.get(at)? {
                b'"' => return Some(self.string_to(start, at, escaped)),
                b'\\' => {
                    escaped = true;
                    at += 2;
                }
                byte if byte < 0x20 => return None,
                _ => at += 1,
            }
        }
    }

    /// The string from `start` to its closing quote at `end`, moving past it.
    fn string_to(&mut self, start: usize, end: usize, escaped: bool) -> (&'a str, bool) {
        self.at = end + 1;
        (&self.text[start..end], escaped)
    }

    /// Skips a member's value, checking it is valid JSON.
    fn skip(&mut self) -> Option<()> {
        self.skip_at(MEMBER_DEPTH)
    }

    /// Skips a value nested `depth` deep.
    fn skip_at(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => {
                let (inner, escaped) = self.raw_string()?;
                if escaped {
                    self.decoded::<IgnoredAny>(inner)?;
                }
                Some(())
            }
            b'{' => self.object(depth + 1, |scan, _| scan.skip_at(depth + 1)),
            b'[' => self.array(depth + 1, |scan| scan.skip_at(depth + 1)),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.null(),
            _ => self.number(),
        }
    }

    /// An object's members, each handed by name to `member`, which reads
    /// the value. Names with escapes give up: serde matches them decoded.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.items(depth, b'}', |scan| {
            let (name, escaped) = scan.raw_string()?;
            if escaped {
                return None;
            }
            scan.space();
            scan.expect(b':')?;
            scan.space();
            member(scan, name)
        })
    }

    fn array(&mut self, depth: usize, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.items(depth, b']', element)
    }

    /// The comma-separated items of an object or array, from its opening
    /// bracket to `close`.
    fn items(
        &mut self,
        depth: usize,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.space();
        if self.eat(close) {
            return Some(());
        }
        loop {
            item(self)?;
            self.space();
            if self.eat(close) {
                return Some(());
            }
            self.expect(b',')?;
            self.space();
        }
    }

    /// A number as JSON writes one: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            self.some_digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.some_digits()?;
        }
        Some(())
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn null(&mut self) -> Option<()> {
        self.literal("null")
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.text[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }
}

/// The members of one object already read: serde's derived read refuses a
/// member given twice, so the scan gives up on one.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    /// Reads member number `member` of its object, unless it came before.
    fn once<T>(&mut self, member: u8, read: impl FnOnce() -> Option<T>) -> Option<T> {
        let bit = 1 << member;
        let fresh = self.0 & bit == 0;
        self.0 |= bit;
        if fresh { read() } else { None }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::assemble::fixture_tests::recorded_data;

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
        for text in read_by_scan {
            assert!(agrees(text), "given up: {text}");
        }
        for text in given_up {
            assert!(read(text).is_none(), "read: {text}");
        }
    }

    #[test]
    fn gives_up_past_its_depth_where_serde_decides() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let text = format!(r#"{{"x":{deep},"choices":[{{"delta":{{"content":"kept"}}}}]}}"#);
        assert!(read(&text).is_none());
        assert!(by_serde(&text).is_some());
    }

    /// Any JSON value as a member's value: strings with escapes, numbers
    /// of every kind, nested arrays and objects.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z\"\\\n\u{e9}\u{1F600}]{0,48}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Members the scan reads at one level, each given a random value or
    /// left out.
    fn members(
        names: &'static [&'static str],
        value: BoxedStrategy<Value>,
    ) -> BoxedStrategy<Value> {
        proptest::collection::vec(proptest::option::of(value), names.len())
            .prop_map(move |values| {
                let members = names.iter().zip(values);
                Value::Object(
                    members
                        .filter_map(|(n, v)| Some((n.to_string(), v?)))
                        .collect(),
                )
            })
            .boxed()
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

        #[test]
        fn stops_finds_the_first_quote_backslash_or_control(word in any::<[u8; 8]>()) {
            let first = word.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let found = stops(u64::from_le_bytes(word));
            prop_assert_eq!(first, (found != 0).then(|| found.trailing_zeros() as usize / 8));
        }

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
        fn reads_damaged_events_as_serde_does_or_gives_up(
            pick in any::<prop::sample::Index>(),
            damage in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0..3u8, prop::sample::select(
                    b"\"\\{}[],: 09.eEnul\t\x01".to_vec())),
                1..4,
            ),
        ) {
            let mut bytes = pick.get(recorded()).as_bytes().to_vec();
            for (at, how, byte) in damage {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes[at] = byte,
                    1 => drop(bytes.remove(at)),
                    _ => bytes.insert(at, bytes[at]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(text) = String::from_utf8(bytes) {
                agrees(&text);
            }
        }
    }
}
