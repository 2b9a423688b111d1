//! JSON text handled without parsing it into a tree, for the strict reads of
//! the recording path (a request's messages, a chat chunk).

/// serde_json's nesting limit: text nested deeper is not a `Value`.
const MAX_DEPTH: usize = 127;

/// Whether JSON text is an object: a derived struct would also take an
/// array of its members in order, which the general way ignores.
pub fn is_object(text: &[u8]) -> bool {
    text.trim_ascii_start().first() == Some(&b'{')
}

/// Valid JSON text without the whitespace between its tokens; `None` when
/// it nests deeper than a `Value` may (it could not be read back). Skipping
/// a member, as a strict read does with what it does not look at, has no
/// such limit, so it is counted here, in the same pass.
pub fn compact(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return None;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(b);
    }
    // Only ASCII whitespace outside strings was removed from valid UTF-8.
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_inside_strings_is_kept() {
        let compact = |text: &str| compact(text).unwrap();
        assert_eq!(
            compact("{ \"a\" : \"x \\\" y\" ,\n\t\"b\": [ 1 , 2 ] }"),
            "{\"a\":\"x \\\" y\",\"b\":[1,2]}"
        );
        assert_eq!(compact(r#"{"a":"\\"}"#), r#"{"a":"\\"}"#);
        assert_eq!(compact(r#"{"a":"\\" , "b":" "}"#), r#"{"a":"\\","b":" "}"#);
    }

    #[test]
    fn depth_is_counted_as_serde_json_counts_it() {
        for depth in [1, 126, 127, 128, 50_000] {
            let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let parsed = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(compact(&text).is_some(), parsed, "depth {depth}");
        }
        let brackets_in_strings = format!("[\"{}\\\"\"]", "[{".repeat(200));
        assert!(compact(&brackets_in_strings).is_some());
        assert!(is_object(b" \n{}") && !is_object(b"[{}]"));
    }
}
