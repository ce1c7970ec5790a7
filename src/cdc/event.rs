//! Captured changes: validation, the content hash that suppresses duplicates, and the
//! CloudEvents 1.0 form every sink delivers.

use serde::Serialize;
use serde_json::value::RawValue;
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
    /// The document's JSON, in canonical form (`canon`): numbers exactly as written.
    Json(String),
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

impl DocState {
    /// A document from its JSON text, canonicalised (numbers kept exactly).
    pub fn json(text: &str) -> Result<DocState, super::CanonError> {
        super::canonicalize(text).map(DocState::Json)
    }
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
            if !v.starts_with('{') {
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
            Some(s) => DocState::json(s).map_err(|_| CdcError::invalid("jsonData", "not JSON")),
        }
    }
}

/// Canonical bytes and hash of a state: keys sorted, no insignificant whitespace.
/// `None` for deletion. Takes the state: its text becomes the bytes, uncopied.
pub fn canonical(state: DocState) -> Option<(Vec<u8>, [u8; 32])> {
    let bytes = match state {
        DocState::Json(v) | DocState::Encrypted(v) => v.into_bytes(),
        DocState::Deleted => return None,
    };
    let hash = Sha256::digest(&bytes).into();
    Some((bytes, hash))
}

/// The event's id, stable across retries and restarts.
pub fn event_id(gateway_id: &str, lsn: u64) -> String {
    // Once per delivered event: no formatting machinery.
    let mut id = Vec::with_capacity(gateway_id.len() + 21);
    id.extend_from_slice(gateway_id.as_bytes());
    id.push(b':');
    super::ce_json::digits(&mut id, lsn, 1);
    String::from_utf8(id).unwrap_or_default()
}

/// A CloudEvent 1.0 in structured JSON mode. `data` is the document's canonical text,
/// embedded as it is, so every number reaches the receiver exactly as the document has it.
#[derive(Debug, Clone, Serialize)]
pub struct CloudEvent {
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subject: String,
    pub time: String,
    pub datacontenttype: &'static str,
    pub peatcollection: String,
    pub peatdocid: String,
    pub peatcontenthash: String,
    pub peatlsn: String,
    pub peatencrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl CloudEvent {
    /// The event as JSON bytes (what every sink sends).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// CloudEvents 1.0, structured JSON mode.
pub fn cloud_event(gateway_id: &str, lsn: u64, e: &EventRecord) -> CloudEvent {
    let op = Op::from_byte(e.op);
    let data = match (&e.data, e.encrypted, op) {
        (_, _, Op::Delete) | (None, _, _) => None,
        (Some(d), false, _) => RawValue::from_string(String::from_utf8_lossy(d).into_owned()).ok(),
        // An opaque ENC:v1 payload travels as a JSON string.
        (Some(d), true, _) => serde_json::to_string(&String::from_utf8_lossy(d))
            .ok()
            .and_then(|s| RawValue::from_string(s).ok()),
    };
    CloudEvent {
        specversion: "1.0",
        id: event_id(gateway_id, lsn),
        source: format!("peat://{}/{}", e.org_id, e.app_id),
        kind: op.event_type(),
        subject: format!("{}/{}", e.collection, e.doc_id),
        time: rfc3339_ms(e.observed_ms),
        datacontenttype: "application/json",
        peatcollection: e.collection.clone(),
        peatdocid: e.doc_id.clone(),
        peatcontenthash: hex::encode(e.content_hash),
        peatlsn: lsn.to_string(),
        peatencrypted: e.encrypted,
        data,
    }
}

/// UTC time with milliseconds (RFC 3339).
pub fn rfc3339_ms(ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    super::ce_json::rfc3339_ms_into(&mut out, ms);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_whitespace() {
        let a = DocState::json(r#"{"b":1, "a":{"y":2,"x":[1, 2]}}"#).unwrap();
        let b = DocState::json(r#"{"a":{"x":[1,2],"y":2},"b":1}"#).unwrap();
        let (ca, ha) = canonical(a).unwrap();
        assert_eq!(ca, br#"{"a":{"x":[1,2],"y":2},"b":1}"#);
        assert_eq!(Some(ha), canonical(b).map(|c| c.1));
        assert!(canonical(DocState::Deleted).is_none());
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
            state: DocState::json("[1]").unwrap(),
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
        let v: serde_json::Value =
            serde_json::from_slice(&cloud_event("gw1", 7, &e).to_bytes()).unwrap();
        assert_eq!(v["id"], "gw1:7");
        assert_eq!(v["source"], "peat://acme/mesh");
        assert_eq!(v["subject"], "tracks/t-1");
        assert_eq!(v["type"], "io.peat.document.upserted");
        assert_eq!(v["data"], serde_json::json!({"a": 1}));
        assert_eq!(v["peatlsn"], "7");
        // Numbers reach the receiver exactly as the document has them.
        let big = EventRecord {
            data: Some(br#"{"big":98765432109876543210,"f":1.50}"#.to_vec()),
            ..e
        };
        let text = String::from_utf8(cloud_event("gw1", 8, &big).to_bytes()).unwrap();
        assert!(
            text.contains(r#""data":{"big":98765432109876543210,"f":1.50}"#),
            "{text}"
        );
    }
}
