//! The records kept in the outbox database (`cdc.redb`): captured events, each document's
//! last captured state, and dead letters. Field order is part of the format.

use serde::{Deserialize, Serialize};

use super::codec::{decode_body, decode_current};
use super::{Record, StoreError};

/// One captured change in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub org_id: String,
    pub app_id: String,
    pub collection: String,
    pub doc_id: String,
    /// 1 upsert, 2 delete.
    pub op: u8,
    /// Canonical JSON of the document, or the node's opaque `ENC:v1:` text when `encrypted`.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    pub encrypted: bool,
    pub content_hash: [u8; 32],
    pub observed_ms: u64,
    /// The owning org's immutable uid: what every delivery path compares, never the name.
    /// All zero for events written before version 2 until start-up stamps them.
    pub org_uid: [u8; 16],
}

/// Version 1 of [`EventRecord`]: no org uid.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct EventRecordV1 {
    org_id: String,
    app_id: String,
    collection: String,
    doc_id: String,
    op: u8,
    data: Option<Vec<u8>>,
    encrypted: bool,
    content_hash: [u8; 32],
    observed_ms: u64,
}

impl From<EventRecordV1> for EventRecord {
    fn from(v: EventRecordV1) -> Self {
        Self {
            org_id: v.org_id,
            app_id: v.app_id,
            collection: v.collection,
            doc_id: v.doc_id,
            op: v.op,
            data: v.data,
            encrypted: v.encrypted,
            content_hash: v.content_hash,
            observed_ms: v.observed_ms,
            org_uid: [0; 16],
        }
    }
}

/// Events as older files hold them, for the tests of what reads them.
#[cfg(test)]
impl EventRecord {
    pub(crate) fn encode_v1(&self) -> Vec<u8> {
        let v1 = EventRecordV1 {
            org_id: self.org_id.clone(),
            app_id: self.app_id.clone(),
            collection: self.collection.clone(),
            doc_id: self.doc_id.clone(),
            op: self.op,
            data: self.data.clone(),
            encrypted: self.encrypted,
            content_hash: self.content_hash,
            observed_ms: self.observed_ms,
        };
        postcard::to_extend(&v1, vec![1u8]).unwrap_or_default()
    }
}

impl Record for EventRecord {
    const KIND: &'static str = "event";
    const VERSION: u8 = 2;

    fn size_hint(&self) -> usize {
        let text = self.org_id.len() + self.app_id.len() + self.collection.len();
        80 + text + self.doc_id.len() + self.data.as_ref().map_or(0, Vec::len)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(1) => decode_body::<EventRecordV1>(Self::KIND, &bytes[1..]).map(Into::into),
            _ => decode_current(bytes),
        }
    }
}

/// Last captured state of one document: what suppresses duplicate notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    /// `None` when the last captured state is "deleted".
    pub content_hash: Option<[u8; 32]>,
    pub lsn: u64,
}

impl Record for DocRecord {
    const KIND: &'static str = "doc";
    const VERSION: u8 = 1;
}

/// An event a sink refused permanently, parked for an operator to retry or skip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub reason: String,
    pub parked_at_ms: u64,
    pub event: EventRecord,
}

#[derive(Deserialize)]
struct DeadLetterRecordV1 {
    reason: String,
    parked_at_ms: u64,
    event: EventRecordV1,
}

impl Record for DeadLetterRecord {
    const KIND: &'static str = "dead-letter";
    const VERSION: u8 = 2;

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(1) => decode_body::<DeadLetterRecordV1>(Self::KIND, &bytes[1..]).map(|v| Self {
                reason: v.reason,
                parked_at_ms: v.parked_at_ms,
                event: v.event.into(),
            }),
            _ => decode_current(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_keep_their_stored_bytes() {
        // The layout as first written (data a sequence of u8): every stored outbox reads back.
        #[derive(Serialize)]
        struct Written {
            org_id: String,
            app_id: String,
            collection: String,
            doc_id: String,
            op: u8,
            data: Option<Vec<u8>>,
            encrypted: bool,
            content_hash: [u8; 32],
            observed_ms: u64,
            org_uid: [u8; 16],
        }
        let data = br#"{"a":1,"pad":"\u00e9x"}"#.repeat(20);
        let r = EventRecord {
            org_id: "acme".into(),
            app_id: "mesh".into(),
            collection: "tracks".into(),
            doc_id: "t-1".into(),
            op: 1,
            data: Some(data.clone()),
            encrypted: false,
            content_hash: [9; 32],
            observed_ms: 1_700_000_000_000,
            org_uid: [3; 16],
        };
        let w = Written {
            org_id: r.org_id.clone(),
            app_id: r.app_id.clone(),
            collection: r.collection.clone(),
            doc_id: r.doc_id.clone(),
            op: 1,
            data: Some(data),
            encrypted: false,
            content_hash: [9; 32],
            observed_ms: r.observed_ms,
            org_uid: [3; 16],
        };
        let mut old = vec![EventRecord::VERSION];
        old.extend(postcard::to_allocvec(&w).unwrap());
        assert_eq!(r.encode().unwrap(), old);
        assert_eq!(EventRecord::decode(&old).unwrap(), r);
        let deleted = EventRecord { data: None, ..r };
        assert_eq!(
            EventRecord::decode(&deleted.encode().unwrap()).unwrap(),
            deleted
        );
    }
}
