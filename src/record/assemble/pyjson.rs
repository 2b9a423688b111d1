//! Re-serialization of JSON the way the reference assembler (Python's
//! `json.dumps(v, separators=(",", ":"))`) does it, for the few providers that
//! send tool-call arguments as an object instead of a string.
//!
//! Known difference: floats in exponent form (`1e-07` in Python, `1e-7`
//! here). Key order follows the input only with serde_json's
//! `preserve_order` feature.

use serde_json::Value;

/// Compact JSON; with `ascii_only`, every character from U+007F up is
/// written as a `\uXXXX` escape (surrogate pairs above U+FFFF), as Python's
/// default `ensure_ascii=True` does.
pub(crate) fn compact(value: &Value, ascii_only: bool) -> String {
    let text = value.to_string();
    if !ascii_only || text.bytes().all(|b| b < 0x7f) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if (c as u32) < 0x7f {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{unit:04x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_dumps() {
        let v = json!({"city": "Zürich 😀", "n": [1, 2.5, null, true], "q": "a\"b\n\u{7f}"});
        assert_eq!(
            compact(&v, false),
            "{\"city\":\"Zürich 😀\",\"n\":[1,2.5,null,true],\"q\":\"a\\\"b\\n\u{7f}\"}"
        );
        assert_eq!(
            compact(&v, true),
            "{\"city\":\"Z\\u00fcrich \\ud83d\\ude00\",\"n\":[1,2.5,null,true],\"q\":\"a\\\"b\\n\\u007f\"}"
        );
    }
}
