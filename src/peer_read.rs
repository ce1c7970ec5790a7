//! Reading answers from network peers (sidecar, identity providers, key services) with a cap
//! on their size: a peer that answers with a huge body is refused once it passes the cap,
//! never buffered whole. Time limits are the clients' own (each sets one).

use serde_json::Value;

/// The body of `resp`, refused once it passes `max` bytes (a declared length over the cap is
/// refused before reading).
pub async fn capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("the answer is larger than {max} bytes"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// [`capped`], then JSON; anything else is `Null` (callers report the status).
pub async fn json_or_null(resp: reqwest::Response, max: usize) -> Value {
    match capped(resp, max).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// An error with every cause behind it (`a: b: c`), the way operators need to read it:
/// a client library's top-level message rarely names the root cause.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Libraries often repeat their cause in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn every_cause_is_named_once() {
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "connect",
                Some(Box::new(E("Connection refused (os error 111)", None))),
            ))),
        );
        assert_eq!(
            super::chain(&e),
            "error sending request: connect: Connection refused (os error 111)"
        );
    }
}
