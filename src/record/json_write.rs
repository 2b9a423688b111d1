//! JSON written by hand where serde's serializer was a cost of every
//! recorded turn: the stored reply. The output is byte for byte what
//! serde_json writes (the tests hold the two equal): strings escaped as it
//! escapes them, no whitespace.

use serde_json::Value;

use super::json_scan::plain_run_end;

/// Appends `text` as a JSON string, escaped as serde_json escapes it: a
/// quote, a backslash and the control characters, `\b \t \n \f \r` in
/// short, the others as `\u00xx`; everything else as it is.
pub fn string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut from = 0;
    loop {
        let stop = plain_run_end(bytes, from);
        out.extend_from_slice(&bytes[from..stop]);
        let Some(&byte) = bytes.get(stop) else {
            break;
        };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]),
        }
        from = stop + 1;
    }
    out.push(b'"');
}

/// An object being written: its members in the order they are given.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// Writes `"name":`; the value is the caller's to write next. Names are
    /// the program's own: plain text, never escaped.
    pub fn name(&mut self, name: &str) -> &mut Vec<u8> {
        if !std::mem::replace(&mut self.empty, false) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn str(&mut self, name: &str, value: &str) {
        string(self.name(name), value);
    }

    /// A string, or nothing when there is none.
    pub fn some_str(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(name, value);
        }
    }

    /// A string, or `null`.
    pub fn str_or_null(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(value) => self.str(name, value),
            None => self.name(name).extend_from_slice(b"null"),
        }
    }

    /// JSON text, written as it is.
    pub fn raw(&mut self, name: &str, json: &str) {
        self.name(name).extend_from_slice(json.as_bytes());
    }

    pub fn bool(&mut self, name: &str, value: bool) {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.name(name).extend_from_slice(text);
    }

    /// A value, written by serde.
    pub fn value(&mut self, name: &str, value: &Value) {
        let out = self.name(name);
        // Writing a `Value` into a vector cannot fail.
        let _ = serde_json::to_writer(out, value);
    }

    /// A nested object, written by `members`.
    pub fn object(&mut self, name: &str, members: impl FnOnce(&mut Object)) {
        let mut nested = Object::open(self.name(name));
        members(&mut nested);
        nested.close();
    }

    /// A nested array of objects, each written by `members`.
    pub fn objects<T>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        mut members: impl FnMut(&mut Object, T),
    ) {
        let out = self.name(name);
        out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut nested = Object::open(&mut *out);
            members(&mut nested, item);
            nested.close();
        }
        out.push(b']');
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn written(text: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_escapes_them() {
        for text in [
            "",
            "plain",
            "a\"b\\c/d",
            "\u{0}\u{1f}\u{7f}\u{8}\u{c}\n\r\t",
            "é😀",
        ] {
            assert_eq!(written(text), serde_json::to_string(text).unwrap());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_string_is_written_as_serde_writes_it(text in "(?s).{0,80}") {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }
    }
}
