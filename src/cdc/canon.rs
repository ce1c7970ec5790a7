//! The canonical form of a document's JSON text, which its content hash is taken over and
//! its events carry: object keys sorted (byte order, the last of duplicate keys wins), no
//! insignificant whitespace, strings escaped minimally (as serde_json writes them), and every
//! number exactly as written. Numbers are never read into machine types: the node keeps the
//! text byte for byte, so `98765432109876543210` and `…211`, or `1.5` and `1.50`, are
//! different documents, and an event carries the number the document has.

use std::collections::BTreeMap;

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

impl Parser<'_> {
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
                let s = self.string()?;
                push_string(out, &s);
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

    /// A string, unescaped; serde_json decodes the escapes (surrogate pairs included).
    fn string(&mut self) -> Result<String, CanonError> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => self.i += 2,
                Some(_) => self.i += 1,
            }
        }
        serde_json::from_str::<String>(&self.text[start..self.i.min(self.b.len())])
            .map_err(|_| CanonError("malformed string", start))
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

    fn object(&mut self, out: &mut String, depth: usize) -> Result<(), CanonError> {
        self.i += 1;
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if self.b.get(self.i) != Some(&b'"') {
                    return Err(self.err("expected a key"));
                }
                let key = self.string()?;
                self.ws();
                if self.b.get(self.i) != Some(&b':') {
                    return Err(self.err("expected :"));
                }
                self.i += 1;
                self.ws();
                let mut v = String::new();
                self.value(&mut v, depth + 1)?;
                members.insert(key, v);
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
        out.push('{');
        for (n, (k, v)) in members.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            push_string(out, k);
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        Ok(())
    }
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
        ] {
            assert!(canonicalize(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(canonicalize(&deep).is_err());
    }
}
