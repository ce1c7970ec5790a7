//! The reversible token encoding of names in NATS subjects and MQTT topics: a token keeps
//! `[A-Za-z0-9_-]` and writes every other byte as `~HH` (hex), so `.`, `*`, `>`, `/`, `#`,
//! `+`, `~`, whitespace and non-ASCII never split or widen a subject or topic.

/// Encodes one subject token reversibly.
pub fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('~');
            out.push_str(&format!("{b:02X}"));
        }
    }
    out
}

/// Reverses [`token`]; `None` for text [`token`] cannot produce.
pub fn untoken(t: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(t.len());
    let mut it = t.bytes();
    while let Some(b) = it.next() {
        if b == b'~' {
            let hi = char::from(it.next()?).to_digit(16)?;
            let lo = char::from(it.next()?).to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reversible_and_subject_safe() {
        for s in [
            "t-1",
            "a.b",
            "x*y>z",
            "with space",
            "ü",
            "~7E",
            "deployments/n1:pkg",
        ] {
            let t = token(s);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-~".contains(&b)),
                "{t}"
            );
            assert_eq!(untoken(&t).as_deref(), Some(s));
        }
        assert_eq!(token("a.b"), "a~2Eb");
        assert_eq!(untoken("~Z1"), None);
    }
}
