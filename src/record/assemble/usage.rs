//! A provider's own usage object, kept as the JSON text it came in.
//!
//! History stores it verbatim in the reply's message and reads three token
//! counts from it; nothing else looks inside. Kept as text, a Chat
//! Completions answer's usage is copied once, where a `serde_json::Value`
//! cost a map hashed with SipHash and a string per member to build, then a
//! walk to write it out again: about 4,300 instructions of a non-streamed
//! request's 115,000 (`bench/callgrind.sh`).

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::record::json_scan::Scan;
use crate::store::UsageTotals;

/// A usage object (or whatever JSON value a provider sent as its usage).
#[derive(Debug, Clone)]
pub struct Usage(Box<RawValue>);

impl Usage {
    /// The usage as it was in the provider's text, without the whitespace
    /// between its tokens (as history keeps a request's messages).
    pub fn from_raw(raw: &RawValue) -> Usage {
        let text = raw.get().as_bytes();
        if !text
            .iter()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Usage(raw.to_owned());
        }
        let mut compact = Vec::with_capacity(text.len());
        crate::record::json_text::compact_into(text, &mut compact);
        let compact = String::from_utf8(compact).expect("compacting keeps UTF-8");
        Usage(RawValue::from_string(compact).expect("compacted JSON is JSON"))
    }

    /// The usage of a reply read as a `Value` (the APIs other than Chat
    /// Completions, whose events are read that way).
    pub fn from_value(value: &Value) -> Usage {
        Usage(serde_json::value::to_raw_value(value).expect("a Value is always JSON"))
    }

    pub fn text(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.text()).expect("a RawValue holds JSON")
    }

    /// Token counts, whatever the provider calls them:
    /// `prompt_tokens`/`completion_tokens` (Chat), `input_tokens`/
    /// `output_tokens` (Responses, Anthropic), `promptTokenCount`/
    /// `candidatesTokenCount` (Gemini). Each count is taken from the first
    /// of its names, in that order, that holds a whole number; a name given
    /// twice counts with its last value, as a JSON object read into a map
    /// keeps it. The members are walked once, nothing is built.
    pub fn totals(&self) -> UsageTotals {
        let Found([prompt, completion, total]) = scanned(self.text())
            .or_else(|| serde_json::from_str(self.text()).ok())
            .unwrap_or_default();
        // (`array::map` with `flatten` here compiled to 64 KiB of code that
        // ran 10,000 instructions a call.)
        let first = |ranks: [Option<u64>; 3]| ranks.iter().find_map(|count| *count);
        let (prompt, completion, total) = (first(prompt), first(completion), first(total));
        let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        UsageTotals {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total.unwrap_or(prompt.saturating_add(completion)),
        }
    }
}

/// Equal when they hold the same JSON, however it is spaced.
impl PartialEq for Usage {
    fn eq(&self, other: &Usage) -> bool {
        self.text() == other.text() || self.to_value() == other.to_value()
    }
}

impl Serialize for Usage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The names of each count, by rank.
const NAMES: [&[&str]; 3] = [
    &["prompt_tokens", "input_tokens", "promptTokenCount"],
    &["completion_tokens", "output_tokens", "candidatesTokenCount"],
    &["total_tokens", "totalTokenCount"],
];

/// The counts of a usage's text read by the JSON scan: a third of the
/// instructions of serde's walk below, which decides where the scan gives
/// up (a member name with escapes, nesting past the scan's depth).
fn scanned(text: &str) -> Option<Found> {
    let mut scan = Scan::new(text, 1);
    let mut found = Found::default();
    if scan.peek()? != b'{' {
        return Some(found);
    }
    scan.object(1, |scan, name| {
        match place(name) {
            Some((count, rank)) => {
                found.0[count][rank] = match scan.plain_u64() {
                    Some(number) => Some(number),
                    None => scan.by_serde::<Count>()?.0,
                }
            }
            None => scan.skip()?,
        }
        Some(())
    })?;
    Some(found)
}

/// Where a member's name ranks among the names of a count, if it is one.
fn place(name: &str) -> Option<(usize, usize)> {
    NAMES
        .iter()
        .enumerate()
        .find_map(|(count, names)| Some((count, names.iter().position(|n| *n == name)?)))
}

/// By count, then by the rank of the name it was found under. Anything but
/// an object is refused, and `totals` reads the refusal as no counts.
#[derive(Default)]
struct Found([[Option<u64>; 3]; 3]);

impl<'de> Deserialize<'de> for Found {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_any(FoundVisitor)
    }
}

struct FoundVisitor;

impl<'de> Visitor<'de> for FoundVisitor {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Found, A::Error> {
        let mut found = Found::default();
        while let Some(Place(place)) = members.next_key()? {
            match place {
                Some((count, rank)) => found.0[count][rank] = members.next_value::<Count>()?.0,
                None => {
                    members.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// Where a member's name ranks among the names of a count, if it is one:
/// read from the name in place, borrowed or decoded, without a copy.
struct Place(Option<(usize, usize)>);

impl<'de> Deserialize<'de> for Place {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Place, D::Error> {
        struct PlaceVisitor;
        impl Visitor<'_> for PlaceVisitor {
            type Value = Place;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, name: &str) -> Result<Place, E> {
                Ok(Place(place(name)))
            }
        }
        deserializer.deserialize_str(PlaceVisitor)
    }
}

/// A member's value as a count: a whole number that fits in a `u64`
/// (what `Value::as_u64` takes), anything else none.
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_u64<E>(self, n: u64) -> Result<Count, E> {
                Ok(Count(Some(n)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(n).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut items: A,
            ) -> Result<Count, A::Error> {
                while items.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Count, A::Error> {
                while members.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn usage(value: Value) -> Usage {
        Usage::from_value(&value)
    }

    fn totals(prompt: u64, completion: u64, total: u64) -> UsageTotals {
        UsageTotals {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
        }
    }

    /// What the totals were when usage was a `Value`: the reference the
    /// walk over the text must agree with.
    fn totals_of_value(value: &Value) -> UsageTotals {
        let Value::Object(members) = value else {
            return UsageTotals::default();
        };
        let mut found = [[None; 3]; 3];
        for (name, value) in members {
            for (count, names) in NAMES.iter().enumerate() {
                if let Some(rank) = names.iter().position(|n| n == name) {
                    found[count][rank] = value.as_u64();
                }
            }
        }
        let [prompt, completion, total] = found.map(|ranks| ranks.into_iter().flatten().next());
        let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        totals(
            prompt,
            completion,
            total.unwrap_or(prompt.saturating_add(completion)),
        )
    }

    #[test]
    fn usage_is_normalised_across_providers() {
        let chat = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
        let anthropic = json!({"input_tokens": 3, "output_tokens": 4});
        let gemini =
            json!({"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7});
        for value in [chat, anthropic, gemini] {
            assert_eq!(usage(value.clone()).totals(), totals(3, 4, 7), "{value}");
        }
    }

    #[test]
    fn usage_takes_each_count_from_its_first_name_that_holds_a_number() {
        let both = json!({"input_tokens": 3, "prompt_tokens": 5, "output_tokens": 2});
        let skipped = json!({"prompt_tokens": "5", "input_tokens": 3, "total_tokens": -1});
        assert_eq!(usage(both).totals(), totals(5, 2, 7));
        assert_eq!(usage(skipped).totals(), totals(3, 0, 3));
        assert_eq!(usage(json!([1, 2])).totals(), totals(0, 0, 0));
        assert_eq!(usage(json!(7)).totals(), totals(0, 0, 0));
        // The total of counts too large to add is the largest there is.
        let huge = json!({"prompt_tokens": u64::MAX, "completion_tokens": 2});
        assert_eq!(usage(huge).totals(), totals(u64::MAX, 2, u64::MAX));
    }

    #[test]
    fn the_text_is_kept_as_the_provider_wrote_it_without_whitespace() {
        let text = r#"{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}"#;
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        let kept = Usage::from_raw(raw);
        assert_eq!(kept.text(), text);
        assert_eq!(serde_json::to_string(&kept).unwrap(), text);
        assert_eq!(kept.totals(), totals(3, 4, 7));
        let spaced = "{ \"prompt_tokens\" :3,\n \"note\": \"a b\",\"x\":1.50}";
        let raw: &RawValue = serde_json::from_str(spaced).unwrap();
        let kept = Usage::from_raw(raw);
        assert_eq!(kept.text(), r#"{"prompt_tokens":3,"note":"a b","x":1.50}"#);
        assert_eq!(kept.totals(), totals(3, 0, 3));
        // A name given twice counts with its last value, as in a map.
        let twice =
            r#"{"prompt_tokens":3,"prompt_tokens":"x","input_tokens":2,"\u0069nput_tokens":5}"#;
        let raw: &RawValue = serde_json::from_str(twice).unwrap();
        assert_eq!(Usage::from_raw(raw).totals(), totals(5, 0, 5));
    }

    #[test]
    fn the_scan_reads_unusual_counts_as_serde_does() {
        for text in [
            r#"{"prompt_tokens":-0,"completion_tokens":18446744073709551615,"total_tokens":1e2}"#,
            r#"{"prompt_tokens":00,"completion_tokens":18446744073709551616,"total_tokens":-1}"#,
            r#"{ "prompt_tokens" : 12 , "x" : [ {"prompt_tokens": 1} ], "output_tokens" : 5.0 }"#,
            r#"{"input_tokens":"3","promptTokenCount":true,"prompt_tokens":null,"total_tokens":{}}"#,
            r#"{"prompt_tokens":3,"prompt_tokens":4}"#,
            r#"[{"prompt_tokens":3}]"#,
            "7",
        ] {
            let walked: Found = serde_json::from_str(text).unwrap_or_default();
            match scanned(text) {
                Some(found) => assert_eq!(found.0, walked.0, "{text}"),
                None => assert!(text.contains("00"), "given up: {text}"),
            }
        }
        // A name with escapes: serde's walk decides.
        assert!(scanned(r#"{"\u0069nput_tokens":5}"#).is_none());
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            Just("prompt_tokens".to_string()),
            Just("input_tokens".to_string()),
            Just("promptTokenCount".to_string()),
            Just("completion_tokens".to_string()),
            Just("output_tokens".to_string()),
            Just("candidatesTokenCount".to_string()),
            Just("total_tokens".to_string()),
            Just("totalTokenCount".to_string()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z0-9]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((name.clone(), inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The walk over the text finds what reading it into a `Value` did.
        #[test]
        fn the_walk_finds_what_a_value_held(value in any_json()) {
            prop_assert_eq!(usage(value.clone()).totals(), totals_of_value(&value));
            // The scan reads what serde's walk reads, or gives up.
            let text = value.to_string();
            if let Some(Found(scanned)) = scanned(&text) {
                let Found(walked) = serde_json::from_str(&text).unwrap_or_default();
                prop_assert_eq!(scanned, walked, "{}", text);
            }
        }
    }
}
