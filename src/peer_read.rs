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
