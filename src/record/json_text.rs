//! JSON text handled without parsing it into a tree, for the strict reads of
//! the recording path (a request's messages, a chat chunk).

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::json_scan;

/// serde_json's nesting limit: text nested deeper is not a `Value`.
const MAX_DEPTH: usize = 127;

/// Whether JSON text is an object: a derived struct would also take an
/// array of its members in order, which the general way ignores.
pub fn is_object(text: &[u8]) -> bool {
    text.trim_ascii_start().first() == Some(&b'{')
}

/// The end of the string whose text starts at `from` in valid JSON text
/// (which callers pass): its closing quote, and whether it has escapes.
fn string_end(bytes: &[u8], from: usize) -> (usize, bool) {
    json_scan::string_end(bytes, from).unwrap_or((bytes.len(), false))
}

/// Appends valid JSON text to `out` without the whitespace between its
/// tokens.
pub fn compact_into(text: &[u8], out: &mut Vec<u8>) {
    out.reserve(text.len());
    let mut at = 0;
    while at < text.len() {
        match text[at] {
            b'"' => {
                let (end, _) = string_end(text, at + 1);
                let end = (end + 1).min(text.len());
                out.extend_from_slice(&text[at..end]);
                at = end;
            }
            b' ' | b'\t' | b'\n' | b'\r' => at += 1,
            b => {
                out.push(b);
                at += 1;
            }
        }
    }
}

/// What one pass over the text of an object finds out about it.
#[derive(Debug, PartialEq, Eq)]
pub enum ObjectScan<'a> {
    /// Its `role` when that is a string (`None` for any other value or
    /// none), and whether it has a `model` or `timestamp` member.
    Read {
        role: Option<&'a str>,
        stamped: bool,
    },
    /// A member name or the role with escapes, or one of those three
    /// members given twice: a parser's rules decide.
    Unusual,
    /// Nested deeper than a `serde_json::Value` may be: it could not be
    /// read back. Skipping a member, as a strict read does, has no such
    /// limit, so it is counted here.
    TooDeep,
}

/// Reads an object's valid JSON text once, without building anything: the
/// members history looks at, and its depth.
pub fn scan_object(text: &str) -> ObjectScan<'_> {
    let bytes = text.as_bytes();
    let (mut depth, mut at) = (0usize, 0usize);
    // At depth 1: the next string is a member's name, or the role's value.
    let (mut expect_name, mut role_next) = (false, false);
    let (mut role, mut seen_role, mut seen_model, mut seen_timestamp) = (None, false, false, false);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                let (end, escaped) = string_end(bytes, at + 1);
                if depth == 1 {
                    let name_or_value = &bytes[at + 1..end.min(bytes.len())];
                    if expect_name {
                        expect_name = false;
                        let seen = match name_or_value {
                            b"role" => &mut seen_role,
                            b"model" => &mut seen_model,
                            b"timestamp" => &mut seen_timestamp,
                            _ if escaped => return ObjectScan::Unusual,
                            _ => {
                                role_next = false;
                                at = end + 1;
                                continue;
                            }
                        };
                        if std::mem::replace(seen, true) {
                            return ObjectScan::Unusual;
                        }
                        role_next = name_or_value == b"role";
                    } else if role_next {
                        if escaped {
                            return ObjectScan::Unusual;
                        }
                        role = Some(&text[at + 1..end.min(bytes.len())]);
                        role_next = false;
                    }
                }
                at = end + 1;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return ObjectScan::TooDeep;
                }
                expect_name = depth == 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_name = true,
            _ => {}
        }
        at += 1;
    }
    ObjectScan::Read {
        role,
        stamped: seen_model || seen_timestamp,
    }
}

/// A member read as a string when it is one, as `Value::as_str` reads it:
/// any other value is skipped unparsed and reads as `None`. Borrowed from
/// the text unless it has escapes.
#[derive(Debug, Default, PartialEq)]
pub struct MaybeStr<'a>(pub Option<Cow<'a, str>>);

/// A member that is `true` only when it is the JSON `true`
/// (`Value::as_bool(..).unwrap_or(false)`).
#[derive(Debug, Default, PartialEq)]
pub struct MaybeTrue(pub bool);

/// A member read as a whole number when it is a non-negative integer, as
/// `Value::as_u64` reads it.
#[derive(Debug, Default, PartialEq)]
pub struct MaybeU64(pub Option<u64>);

/// What a lenient member took from a value of the type it wants; every
/// other value is skipped by [`Lenient`] and gives `Default`.
trait Want<'de>: Default {
    fn str(_: Cow<'de, str>) -> Self {
        Self::default()
    }
    fn bool(_: bool) -> Self {
        Self::default()
    }
    fn u64(_: u64) -> Self {
        Self::default()
    }
}

impl<'de: 'a, 'a> Want<'de> for MaybeStr<'a> {
    fn str(text: Cow<'de, str>) -> Self {
        MaybeStr(Some(text))
    }
}

impl Want<'_> for MaybeTrue {
    fn bool(value: bool) -> Self {
        MaybeTrue(value)
    }
}

impl Want<'_> for MaybeU64 {
    fn u64(value: u64) -> Self {
        MaybeU64(Some(value))
    }
}

/// The visitor behind the lenient members: it takes any JSON value.
struct Lenient<T>(PhantomData<T>);

impl<'de, T: Want<'de>> Visitor<'de> for Lenient<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<T, E> {
        Ok(T::str(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<T, E> {
        Ok(T::str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<T, E> {
        Ok(T::str(Cow::Owned(text)))
    }

    fn visit_bool<E>(self, value: bool) -> Result<T, E> {
        Ok(T::bool(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<T, E> {
        Ok(T::u64(value))
    }

    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
}

macro_rules! lenient_deserialize {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(Lenient(PhantomData))
            }
        }
    )*};
}

lenient_deserialize!(MaybeTrue, MaybeU64);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient(PhantomData))
    }
}

impl MaybeStr<'_> {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn into_owned(self) -> Option<String> {
        self.0.map(Cow::into_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(text: &str) -> String {
        let mut out = Vec::new();
        compact_into(text.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn whitespace_inside_strings_is_kept() {
        assert_eq!(
            compact("{ \"a\" : \"x \\\" y\" ,\n\t\"b\": [ 1 , 2 ] }"),
            "{\"a\":\"x \\\" y\",\"b\":[1,2]}"
        );
        assert_eq!(compact(r#"{"a":"\\"}"#), r#"{"a":"\\"}"#);
        assert_eq!(compact(r#"{"a":"\\" , "b":" "}"#), r#"{"a":"\\","b":" "}"#);
    }

    #[test]
    fn lenient_members_read_what_a_value_would() {
        use serde_json::Value;
        for text in [
            r#""text""#,
            r#""esc\u00e9""#,
            "true",
            "false",
            "null",
            "7",
            "-7",
            "7.0",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            "[1,[2]]",
            r#"{"a":{"b":1}}"#,
            "{}",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let s: MaybeStr = serde_json::from_str(text).unwrap();
            assert_eq!(s.as_deref(), value.as_str(), "{text}");
            let b: MaybeTrue = serde_json::from_str(text).unwrap();
            assert_eq!(b.0, value.as_bool().unwrap_or(false), "{text}");
            let n: MaybeU64 = serde_json::from_str(text).unwrap();
            assert_eq!(n.0, value.as_u64(), "{text}");
        }
        let borrowed: MaybeStr = serde_json::from_str(r#""plain""#).unwrap();
        assert!(matches!(borrowed.0, Some(Cow::Borrowed("plain"))));
    }

    #[test]
    fn cut_text_is_read_without_panicking() {
        // Callers pass valid JSON; a cut one still must not take the
        // process down.
        for text in [r#"{"a":"\"#, r#"{"role":"x"#, r#"{"role":"\"#, "{\"", "{"] {
            let _ = scan_object(text);
            compact(text);
        }
    }

    #[test]
    fn depth_is_counted_as_serde_json_counts_it() {
        for depth in [1, 126, 127, 128, 50_000] {
            let text = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
            let object = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(
                scan_object(&text) != ObjectScan::TooDeep,
                object,
                "depth {depth}"
            );
        }
        let brackets_in_strings = format!("{{\"a\":\"{}\\\"\"}}", "[{".repeat(200));
        assert!(matches!(
            scan_object(&brackets_in_strings),
            ObjectScan::Read { .. }
        ));
        assert!(is_object(b" \n{}") && !is_object(b"[{}]"));
    }
}
