//! Facts about JSON text read without parsing it into a tree, for the
//! strict reads of the recording path (a request's messages, a chat chunk)
//! that must accept exactly what `serde_json::Value` accepts.

/// serde_json's nesting limit: text nested deeper is not a `Value`.
const MAX_DEPTH: usize = 127;

/// Whether JSON text is an object: a derived struct would also take an
/// array of its members in order, which the general way ignores.
pub fn is_object(text: &[u8]) -> bool {
    text.trim_ascii_start().first() == Some(&b'{')
}

/// Whether valid JSON text nests no deeper than a `Value` may. Skipping a
/// member (as a strict read does with what it does not look at) has no such
/// limit.
pub fn within_depth(text: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
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
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Valid JSON text without the whitespace between its tokens.
pub fn compact(json: &str) -> String {
    let bytes = json.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return json.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
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
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    // Only ASCII whitespace outside strings was removed from valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn depth_is_counted_as_serde_json_counts_it() {
        for depth in [1, 126, 127, 128, 50_000] {
            let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let parsed = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(within_depth(text.as_bytes()), parsed, "depth {depth}");
        }
        let brackets_in_strings = format!("[\"{}\\\"\"]", "[{".repeat(200));
        assert!(within_depth(brackets_in_strings.as_bytes()));
        assert!(is_object(b" \n{}") && !is_object(b"[{}]"));
    }
}
