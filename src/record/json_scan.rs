//! A strict JSON scanner for the hand-written reads of the recording path
//! (a chat chunk, a chat request): it walks valid text once, hands the
//! members a read wants to it by name, and checks everything it skips as
//! serde would. What it cannot vouch for (a member name with escapes, text
//! that is not JSON, nesting past [`MAX_DEPTH`]) makes it give up
//! (`None`), and the caller reads the text with serde as before. Strings
//! with escapes are decoded or checked by serde too. Each read adds its
//! own methods to [`Scan`] in its module (`assemble::chunk_scan`,
//! `request::chat_scan`).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::json_text::{MaybeStr, MaybeU64};

/// Deeper than this the scan gives up, well inside serde's own limit (128),
/// so that a member handed to serde on its own is never read where the
/// whole text would not have been.
pub const MAX_DEPTH: usize = 64;

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

/// The index of the first quote, backslash or control character of
/// `bytes` from `at` (its length when there is none): sixteen bytes at a
/// time on x86-64 (`block_stops`), then eight ([`stops`]), then one by
/// one. `memchr` costs more to set up than most strings of a chat take to
/// read this way; sixteen at a time read a 41-message request (7.2 KB)
/// for 12,000 instructions fewer than eight at a time.
pub fn plain_run_end(bytes: &[u8], mut at: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    while let Some(block) = bytes.get(at..).and_then(|rest| rest.first_chunk::<16>()) {
        match block_stops(block) {
            0 => at += 16,
            found => return at + found.trailing_zeros() as usize,
        }
    }
    while let Some(&word) = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
        match stops(u64::from_le_bytes(word)) {
            0 => at += 8,
            found => return at + found.trailing_zeros() as usize / 8,
        }
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len())
}

/// The end of the string whose text starts at `from` (just after its
/// opening quote): the index of its closing quote, and whether it has
/// escapes. `None` for a control character, which JSON does not allow in
/// a string, or no closing quote.
pub fn string_end(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    let (mut at, mut escaped) = (from, false);
    loop {
        at = plain_run_end(bytes, at);
        match *bytes.get(at)? {
            b'"' => return Some((at, escaped)),
            b'\\' => {
                escaped = true;
                at += 2;
            }
            _ => return None,
        }
    }
}

/// The bytes of `block` that end a plain run of a string's text, one bit
/// each (the first lowest), compared sixteen at once with SSE2.
#[cfg(target_arch = "x86_64")]
fn block_stops(block: &[u8; 16]) -> u32 {
    // SAFETY: SSE2 is part of every x86-64 processor: the baseline that
    // Rust's x86-64 targets compile for, so the feature is always there.
    unsafe { sse2_stops(block) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn sse2_stops(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: the load reads the sixteen bytes of `block`, unaligned.
    let text = unsafe { _mm_loadu_si128(block.as_ptr().cast()) };
    let quote = _mm_cmpeq_epi8(text, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(text, _mm_set1_epi8(b'\\' as i8));
    // Unsigned: a byte is a control character when the lesser of it and
    // 0x1f is itself.
    let control = _mm_cmpeq_epi8(_mm_min_epu8(text, _mm_set1_epi8(0x1f)), text);
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
}

/// A position in a JSON text.
pub struct Scan<'a> {
    text: &'a str,
    at: usize,
    /// How deep the members a read takes sit: a value skipped or handed to
    /// serde is counted from there.
    member_depth: usize,
}

impl<'a> Scan<'a> {
    /// At the start of `text`, past any whitespace.
    pub fn new(text: &'a str, member_depth: usize) -> Scan<'a> {
        let mut scan = Scan {
            text,
            at: 0,
            member_depth,
        };
        scan.space();
        scan
    }

    /// Whether only whitespace is left.
    pub fn finished(&mut self) -> bool {
        self.space();
        self.at == self.text.len()
    }

    /// Where the scan is, for [`Scan::since`].
    pub fn at(&self) -> usize {
        self.at
    }

    /// The text from `start` to where the scan is.
    pub fn since(&self, start: usize) -> &'a str {
        &self.text[start..self.at]
    }

    /// A string when it is one; any other value reads as `None`.
    pub fn maybe_str(&mut self) -> Option<MaybeStr<'a>> {
        if self.peek()? == b'"' {
            return Some(MaybeStr(Some(self.string()?)));
        }
        self.skip()?;
        Some(MaybeStr(None))
    }

    /// A plain whole number is read here; serde reads any other value.
    pub fn maybe_u64(&mut self) -> Option<MaybeU64> {
        match self.plain_u64() {
            Some(number) => Some(MaybeU64(Some(number))),
            None => self.by_serde(),
        }
    }

    /// The next value when it is a plain whole number that fits in a
    /// `u64` (no sign, fraction, exponent or leading zero), read past;
    /// otherwise `None`, and the scan stays where it was.
    pub fn plain_u64(&mut self) -> Option<u64> {
        let bytes = &self.bytes()[self.at..];
        // Nineteen digits at most: never more than a `u64` holds.
        let (mut number, mut digits) = (0u64, 0);
        while let Some(digit) = bytes.get(digits).filter(|b| b.is_ascii_digit()) {
            if digits == 19 {
                return None;
            }
            number = number * 10 + u64::from(digit - b'0');
            digits += 1;
        }
        let leading_zero = digits > 1 && bytes[0] == b'0';
        if digits == 0 || leading_zero || matches!(bytes.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.at += digits;
        Some(number)
    }

    /// The next value read by serde as `T`, as it would be in place.
    pub fn by_serde<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let (text, start) = (self.text, self.at);
        self.skip()?;
        serde_json::from_str(&text[start..self.at]).ok()
    }

    /// A string's text, borrowed unless it has escapes (serde decodes those).
    pub fn string(&mut self) -> Option<Cow<'a, str>> {
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
    pub fn raw_string(&mut self) -> Option<(&'a str, bool)> {
        let bytes = self.bytes();
        if bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let (end, escaped) = string_end(bytes, start)?;
        Some(self.string_to(start, end, escaped))
    }

    /// The string from `start` to its closing quote at `end`, moving past it.
    fn string_to(&mut self, start: usize, end: usize, escaped: bool) -> (&'a str, bool) {
        self.at = end + 1;
        (&self.text[start..end], escaped)
    }

    /// Skips a member's value, checking it is valid JSON.
    pub fn skip(&mut self) -> Option<()> {
        self.skip_at(self.member_depth)
    }

    /// Skips a value nested `depth` deep, checking it is valid JSON.
    pub fn skip_at(&mut self, depth: usize) -> Option<()> {
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
    pub fn object(
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

    pub fn array(
        &mut self,
        depth: usize,
        element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
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

    pub fn null(&mut self) -> Option<()> {
        self.literal("null")
    }

    pub fn literal(&mut self, word: &str) -> Option<()> {
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

    pub fn peek(&self) -> Option<u8> {
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
pub struct Seen(u8);

impl Seen {
    /// Reads member number `member` of its object, unless it came before.
    pub fn once<T>(&mut self, member: u8, read: impl FnOnce() -> Option<T>) -> Option<T> {
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_plain_run_ends_at_the_first_quote_backslash_or_control(
            bytes in proptest::collection::vec(
                prop_oneof![4 => 0x20u8..=0xff, 1 => prop::sample::select(b"\"\\\x00\x1f".to_vec())],
                0..80,
            ),
            from in 0..90usize,
        ) {
            let stop = |&b: &u8| b == b'"' || b == b'\\' || b < 0x20;
            let expected = match bytes.get(from..) {
                Some(rest) => from + rest.iter().position(stop).unwrap_or(rest.len()),
                None => from,
            };
            prop_assert_eq!(plain_run_end(&bytes, from), expected);
        }

        #[test]
        fn stops_finds_the_first_quote_backslash_or_control(word in any::<[u8; 8]>()) {
            let first = word.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let found = stops(u64::from_le_bytes(word));
            prop_assert_eq!(first, (found != 0).then(|| found.trailing_zeros() as usize / 8));
        }
    }
}

/// Generators of JSON, and a check, for the tests that hold a hand-written
/// read equal to serde's.
#[cfg(test)]
pub mod strategies {
    use proptest::prelude::*;
    use serde_json::Value;

    /// The scan reads each of `read_by_scan` and gives up on each of
    /// `given_up`. `agrees` is the test's own comparison with serde: false
    /// where the scan gave up.
    pub fn assert_reads(agrees: impl Fn(&str) -> bool, read_by_scan: &[&str], given_up: &[&str]) {
        for text in read_by_scan {
            assert!(agrees(text), "given up: {text}");
        }
        for text in given_up {
            assert!(!agrees(text), "read: {text}");
        }
    }

    /// Any JSON value as a member's value: strings with escapes, numbers
    /// of every kind, nested arrays and objects.
    pub fn any_value() -> impl Strategy<Value = Value> {
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
    pub fn members(
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

    /// Damaged copies of `texts`: one picked, then one to three bytes
    /// changed (to a byte JSON gives meaning to), dropped or repeated; the
    /// copies that are still UTF-8.
    pub fn damaged(texts: &'static [String]) -> impl Strategy<Value = String> {
        let damage = (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(b"\"\\{}[],: 09.eEnul\t\x01".to_vec()),
        );
        (
            any::<prop::sample::Index>(),
            proptest::collection::vec(damage, 1..4),
        )
            .prop_filter_map("not UTF-8", |(pick, damage)| {
                let mut bytes = pick.get(texts).as_bytes().to_vec();
                for (at, how, byte) in damage {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = at.index(bytes.len());
                    match how {
                        0 => bytes[at] = byte,
                        1 => drop(bytes.remove(at)),
                        _ => bytes.insert(at, bytes[at]),
                    }
                }
                String::from_utf8(bytes).ok()
            })
    }
}
