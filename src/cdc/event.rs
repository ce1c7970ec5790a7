//! Captured changes: validation, the content hash that suppresses duplicates, and the
//! CloudEvents 1.0 form every sink delivers.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::CdcError;
use crate::store::EventRecord;

/// Longest collection or document id the node forwards (reference: peat-wire §2.6 item 9).
pub const MAX_ID_BYTES: usize = 1024;
const ENC_PREFIX: &str = "ENC:v1:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub fn to_byte(self) -> u8 {
        match self {
            Op::Upsert => 1,
            Op::Delete => 2,
        }
    }

    pub fn from_byte(b: u8) -> Op {
        if b == 2 {
            Op::Delete
        } else {
            Op::Upsert
        }
    }

    pub fn event_type(self) -> &'static str {
        match self {
            Op::Upsert => "io.peat.document.upserted",
            Op::Delete => "io.peat.document.deleted",
        }
    }
}

/// A document's observed state, before it is compared with the last captured one.
#[derive(Debug, Clone, PartialEq)]
pub enum DocState {
    /// The document's JSON object.
    Json(Value),
    /// An `ENC:v1:` payload from a node lacking the at-rest key: opaque, never parsed.
    Encrypted(String),
    Deleted,
}

/// One change to capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub collection: String,
    pub doc_id: String,
    pub state: DocState,
}

impl Change {
    /// Checks ids the way the node and our key layout need them.
    pub fn validate(&self) -> Result<(), CdcError> {
        let c = &self.collection;
        let ok = !c.is_empty()
            && c.len() <= MAX_ID_BYTES
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(CdcError::invalid(
                "collection",
                "1 to 1024 of letters, digits, '.', '_', '-', starting with a letter or digit",
            ));
        }
        let d = &self.doc_id;
        if d.is_empty() || d.len() > MAX_ID_BYTES || d.chars().any(char::is_control) {
            return Err(CdcError::invalid(
                "doc_id",
                "1 to 1024 bytes without control characters",
            ));
        }
        if let DocState::Json(v) = &self.state {
            if !v.is_object() {
                return Err(CdcError::invalid("data", "must be a JSON object"));
            }
        }
        Ok(())
    }

    /// Interprets a node's `jsonData` text: JSON, an encrypted payload, or (absent) deletion.
    pub fn state_from_node(json_data: Option<&str>) -> Result<DocState, CdcError> {
        match json_data {
            None => Ok(DocState::Deleted),
            Some(s) if s.starts_with(ENC_PREFIX) => Ok(DocState::Encrypted(s.to_owned())),
            Some(s) => serde_json::from_str(s)
                .map(DocState::Json)
                .map_err(|_| CdcError::invalid("jsonData", "not JSON")),
        }
    }
}

/// Canonical bytes and hash of a state: keys sorted, no insignificant whitespace.
/// `None` for deletion.
pub fn canonical(state: &DocState) -> Option<(Vec<u8>, [u8; 32])> {
    let bytes = match state {
        // serde_json's map is ordered by key, so this is the canonical form.
        DocState::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
        DocState::Encrypted(s) => s.as_bytes().to_vec(),
        DocState::Deleted => return None,
    };
    let hash = Sha256::digest(&bytes).into();
    Some((bytes, hash))
}

/// The event's id, stable across retries and restarts.
pub fn event_id(gateway_id: &str, lsn: u64) -> String {
    format!("{gateway_id}:{lsn}")
}

/// CloudEvents 1.0, structured JSON mode.
pub fn cloud_event(gateway_id: &str, lsn: u64, e: &EventRecord) -> Value {
    let op = Op::from_byte(e.op);
    let data = match (&e.data, e.encrypted) {
        (Some(d), false) => serde_json::from_slice(d).unwrap_or(Value::Null),
        (Some(d), true) => Value::String(String::from_utf8_lossy(d).into_owned()),
        (None, _) => Value::Null,
    };
    let mut ev = json!({
        "specversion": "1.0",
        "id": event_id(gateway_id, lsn),
        "source": format!("peat://{}/{}", e.org_id, e.app_id),
        "type": op.event_type(),
        "subject": format!("{}/{}", e.collection, e.doc_id),
        "time": rfc3339_ms(e.observed_ms),
        "datacontenttype": "application/json",
        "peatcollection": e.collection,
        "peatdocid": e.doc_id,
        "peatcontenthash": hex::encode(e.content_hash),
        "peatlsn": lsn.to_string(),
        "peatencrypted": e.encrypted,
    });
    if op == Op::Upsert {
        ev["data"] = data;
    }
    ev
}

/// UTC time with milliseconds (RFC 3339).
pub fn rfc3339_ms(ms: u64) -> String {
    let t = crate::time::Utc::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.milli
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_whitespace() {
        let a = DocState::Json(serde_json::from_str(r#"{"b":1, "a":{"y":2,"x":[1, 2]}}"#).unwrap());
        let b = DocState::Json(serde_json::from_str(r#"{"a":{"x":[1,2],"y":2},"b":1}"#).unwrap());
        let (ca, ha) = canonical(&a).unwrap();
        assert_eq!(ca, br#"{"a":{"x":[1,2],"y":2},"b":1}"#);
        assert_eq!(Some(ha), canonical(&b).map(|c| c.1));
        assert!(canonical(&DocState::Deleted).is_none());
    }

    #[test]
    fn node_payloads_are_classified_not_guessed() {
        assert_eq!(Change::state_from_node(None).unwrap(), DocState::Deleted);
        assert!(matches!(
            Change::state_from_node(Some("ENC:v1:AAAA")).unwrap(),
            DocState::Encrypted(_)
        ));
        assert!(Change::state_from_node(Some("{nope")).is_err());
    }

    #[test]
    fn ids_are_validated() {
        let c = |col: &str, doc: &str| Change {
            collection: col.into(),
            doc_id: doc.into(),
            state: DocState::Deleted,
        };
        assert!(c("tracks", "deployments/n1:pkg").validate().is_ok());
        for (col, doc) in [
            ("", "x"),
            ("a:b", "x"),
            ("_a", "x"),
            ("a", ""),
            ("a", "x\ny"),
        ] {
            assert!(c(col, doc).validate().is_err(), "{col:?} {doc:?}");
        }
        assert!(c(&"a".repeat(1025), "x").validate().is_err());
        let arr = Change {
            collection: "a".into(),
            doc_id: "x".into(),
            state: DocState::Json(json!([1])),
        };
        assert!(arr.validate().is_err());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_500_461_452), "2026-11-24T06:07:41.452Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn cloud_event_carries_stable_id_and_extensions() {
        let e = EventRecord {
            org_id: "acme".into(),
            app_id: "mesh".into(),
            collection: "tracks".into(),
            doc_id: "t-1".into(),
            op: 1,
            data: Some(br#"{"a":1}"#.to_vec()),
            encrypted: false,
            content_hash: [1; 32],
            observed_ms: 0,
            org_uid: [2; 16],
        };
        let v = cloud_event("gw1", 7, &e);
        assert_eq!(v["id"], "gw1:7");
        assert_eq!(v["source"], "peat://acme/mesh");
        assert_eq!(v["subject"], "tracks/t-1");
        assert_eq!(v["type"], "io.peat.document.upserted");
        assert_eq!(v["data"], json!({"a": 1}));
        assert_eq!(v["peatlsn"], "7");
    }
}
