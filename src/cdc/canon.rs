//! The canonical form of a document's JSON text, which its content hash is taken over and
//! its events carry: object keys sorted (byte order, the last of duplicate keys wins), no
//! insignificant whitespace, strings escaped minimally (as serde_json writes them), and every
//! number exactly as written. Numbers are never read into machine types: the node keeps the
//! text byte for byte, so `98765432109876543210` and `…211`, or `1.5` and `1.50`, are
//! different documents, and an event carries the number the document has.

use std::borrow::Cow;

/// Deepest nesting accepted (as serde_json's own limit).
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not JSON: {0} at byte {1}")]
pub struct CanonError(&'static str, usize);

/// The canonical form of `text`, or why it is not JSON.
pub fn canonicalize(text: &str) -> Result<String, CanonError> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
        text,
    };
    let mut out = String::with_capacity(text.len());
    p.ws();
    p.value(&mut out, 0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(CanonError("trailing characters", p.i));
    }
    Ok(out)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    text: &'a str,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err(&self, what: &'static str) -> CanonError {
        CanonError(what, self.i)
    }

    fn value(&mut self, out: &mut String, depth: usize) -> Result<(), CanonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        match self.b.get(self.i) {
            Some(b'{') => self.object(out, depth),
            Some(b'[') => self.array(out, depth),
            Some(b'"') => {
                self.string_into(out)?;
                Ok(())
            }
            Some(b't') => self.literal(out, "true"),
            Some(b'f') => self.literal(out, "false"),
            Some(b'n') => self.literal(out, "null"),
            Some(b'-' | b'0'..=b'9') => self.number(out),
            _ => Err(self.err("expected a value")),
        }
    }

    fn literal(&mut self, out: &mut String, word: &'static str) -> Result<(), CanonError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            out.push_str(word);
            Ok(())
        } else {
            Err(self.err("expected true, false or null"))
        }
    }

    /// A JSON number (RFC 8259 grammar), copied as written.
    fn number(&mut self, out: &mut String) -> Result<(), CanonError> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i > s
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err("malformed number")),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.err("malformed number"));
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.err("malformed number"));
            }
        }
        out.push_str(&self.text[start..self.i]);
        Ok(())
    }

    /// A string, unescaped; serde_json decodes the escapes (surrogate pairs included). A
    /// string without escapes or control characters is its own text: borrowed, not decoded.
    fn string(&mut self) -> Result<Cow<'a, str>, CanonError> {
        let start = self.i;
        // Quotes and backslashes found with memchr; a document's strings are most of its bytes.
        let mut at = start + 1;
        let mut plain = true;
        loop {
            let Some(n) = self
                .b
                .get(at..)
                .and_then(|r| memchr::memchr2(b'"', b'\\', r))
            else {
                self.i = self.b.len();
                return Err(self.err("unterminated string"));
            };
            at += n;
            if self.b[at] == b'"' {
                break;
            }
            plain = false;
            at += 2;
        }
        plain = plain && !has_control(&self.b[start + 1..at]);
        self.i = at + 1;
        let quoted = &self.text[start..self.i.min(self.b.len())];
        if plain {
            return Ok(Cow::Borrowed(&quoted[1..quoted.len() - 1]));
        }
        serde_json::from_str::<String>(quoted)
            .map(Cow::Owned)
            .map_err(|_| CanonError("malformed string", start))
    }

    /// A string value in canonical form.
    fn string_into(&mut self, out: &mut String) -> Result<(), CanonError> {
        let start = self.i;
        let s = self.string()?;
        self.put_string(out, &s, start);
        Ok(())
    }

    /// Writes string `s`, read from `start`: as written when it needed no escape, which is
    /// what serde_json would write for it (it escapes only `"`, `\` and control characters).
    #[allow(clippy::ptr_arg)] // whether it is borrowed is what says it needed no escape
    fn put_string(&self, out: &mut String, s: &Cow<'a, str>, start: usize) {
        match s {
            Cow::Borrowed(b) => out.push_str(&self.text[start..start + b.len() + 2]),
            Cow::Owned(s) => push_string(out, s),
        }
    }

    fn array(&mut self, out: &mut String, depth: usize) -> Result<(), CanonError> {
        self.i += 1;
        out.push('[');
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            out.push(']');
            return Ok(());
        }
        loop {
            self.ws();
            self.value(out, depth + 1)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    out.push(',');
                }
                Some(b']') => {
                    self.i += 1;
                    out.push(']');
                    return Ok(());
                }
                _ => return Err(self.err("expected , or ]")),
            }
        }
    }

    /// Members are written as they come; only an object whose keys are not already in
    /// strictly ascending order is rewritten sorted (the last of equal keys kept).
    fn object(&mut self, out: &mut String, depth: usize) -> Result<(), CanonError> {
        self.i += 1;
        out.push('{');
        let open = out.len();
        // Each member's key and where its `"key":value` text lies in `out`.
        let mut members: Vec<(Cow<'a, str>, usize, usize)> = Vec::new();
        let mut sorted = true;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if self.b.get(self.i) != Some(&b'"') {
                    return Err(self.err("expected a key"));
                }
                let at = self.i;
                let key = self.string()?;
                self.ws();
                if self.b.get(self.i) != Some(&b':') {
                    return Err(self.err("expected :"));
                }
                self.i += 1;
                self.ws();
                if !members.is_empty() {
                    out.push(',');
                }
                let from = out.len();
                self.put_string(out, &key, at);
                out.push(':');
                self.value(out, depth + 1)?;
                sorted &= members.last().is_none_or(|(prev, _, _)| *prev < key);
                members.push((key, from, out.len()));
                self.ws();
                match self.b.get(self.i) {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.err("expected , or }")),
                }
            }
        }
        if !sorted {
            let written = out.split_off(open);
            // Stable: of equal keys the last written stays last, and is the one kept.
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let mut first = true;
            for (n, (key, from, to)) in members.iter().enumerate() {
                if members.get(n + 1).is_some_and(|next| next.0 == *key) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&written[from - open..to - open]);
            }
        }
        out.push('}');
        Ok(())
    }
}

/// Whether any byte is under 0x20, eight bytes a turn (a byte loop is not vectorized at
/// `opt-level = "z"`).
fn has_control(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let mut words = b.chunks_exact(8);
    let found = words.by_ref().any(|w| {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // Sets a byte's high bit where the byte is under 0x20 (exact for bounds up to 0x80).
        x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0
    });
    found || words.remainder().iter().any(|&c| c < 0x20)
}

fn push_string(out: &mut String, s: &str) {
    // serde_json's escaping, so documents without unusual numbers keep the form (and hash)
    // they had when values were canonicalised through serde_json.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::canonicalize;

    #[test]
    fn numbers_stay_exactly_as_written() {
        for (text, want) in [
            (
                r#"{"big":98765432109876543210}"#,
                r#"{"big":98765432109876543210}"#,
            ),
            (
                r#"{ "n" : -12345678901234567890 }"#,
                r#"{"n":-12345678901234567890}"#,
            ),
            (
                r#"{"a":1.50,"b":1e2,"c":-0.0}"#,
                r#"{"a":1.50,"b":1e2,"c":-0.0}"#,
            ),
        ] {
            assert_eq!(canonicalize(text).unwrap(), want);
        }
        assert_ne!(
            canonicalize(r#"{"big":98765432109876543210}"#),
            canonicalize(r#"{"big":98765432109876543211}"#)
        );
    }

    #[test]
    fn ordinary_documents_keep_the_form_serde_json_gave_them() {
        for text in [
            r#"{"z":1,"a":{"y":[1,2,{"b":true,"a":null}],"x":"é\n\"q\"\u0001"},"m":-3,"f":2.5}"#,
            r#"{"k":"\ud83d\ude00 /slash"}"#,
            "{}",
            "[ ]",
        ] {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                canonicalize(text).unwrap(),
                serde_json::to_string(&v).unwrap(),
                "{text}"
            );
        }
        // The last of duplicate keys wins, as with serde_json.
        assert_eq!(canonicalize(r#"{"a":1,"a":2}"#).unwrap(), r#"{"a":2}"#);
    }

    /// Any document serde_json can write, however its keys are ordered, spaced or escaped,
    /// canonicalizes to what serde_json writes for its value (keys sorted).
    #[test]
    fn any_document_gets_the_form_serde_json_gives_it() {
        use proptest::prelude::*;
        use serde_json::Value;
        let text = "\\PC{0,6}|[\\x00-\\x1f\"\\\\/\\x7f ]{0,3}|[a-c]{1,2}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text, inner), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        let mut runner = proptest::test_runner::TestRunner::default();
        let written = (value, any::<bool>(), any::<u64>());
        runner
            .run(&written, |(v, pretty, shuffle)| {
                let want = serde_json::to_string(&v).unwrap();
                let mut text = if pretty {
                    serde_json::to_string_pretty(&v).unwrap()
                } else {
                    want.clone()
                };
                // The same members in another order.
                if let Value::Object(m) = &v {
                    let mut members: Vec<_> = m.iter().collect();
                    members.sort_by_key(|(k, _)| {
                        k.bytes()
                            .fold(shuffle, |h, b| h.rotate_left(5) ^ u64::from(b))
                    });
                    let parts: Vec<String> = members
                        .iter()
                        .map(|(k, x)| format!("{}:{}", serde_json::to_string(k).unwrap(), x))
                        .collect();
                    if !pretty {
                        text = format!("{{{}}}", parts.join(","));
                    }
                }
                prop_assert_eq!(canonicalize(&text).unwrap(), want);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn unsorted_members_are_sorted_and_the_last_of_equal_keys_kept() {
        assert_eq!(
            canonicalize(r#"{"b":1,"a":{"d":[{"z":0,"y":1}],"c":"\u0041"},"b":3}"#).unwrap(),
            r#"{"a":{"c":"A","d":[{"y":1,"z":0}]},"b":3}"#
        );
        assert_eq!(
            canonicalize(r#"{"\u0062":1,"a":2}"#).unwrap(),
            r#"{"a":2,"b":1}"#
        );
        assert_eq!(
            canonicalize("{\"k\":\"\u{7f}é\\/\"}").unwrap(),
            "{\"k\":\"\u{7f}é/\"}"
        );
    }

    #[test]
    fn control_bytes_are_found_wherever_they_lie() {
        for len in 0..24 {
            let clean = vec![b'x'; len];
            assert!(!super::has_control(&clean));
            for at in 0..len {
                for c in [0u8, 0x1f] {
                    let mut b = clean.clone();
                    b[at] = c;
                    assert!(super::has_control(&b), "{len} {at} {c}");
                }
                let mut b = clean.clone();
                b[at] = 0x20;
                b[len - 1] = 0xff;
                assert!(!super::has_control(&b));
            }
        }
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "[1,]",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"x",
            "{\"a\":1} x",
            "[\"\\x\"]",
            "[\"a\u{1}\"]",
            "{\"a\u{1f}\":1}",
        ] {
            assert!(canonicalize(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(canonicalize(&deep).is_err());
    }
}
