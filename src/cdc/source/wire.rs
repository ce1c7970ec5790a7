//! The peat-node sidecar's Connect protocol, JSON flavour (reference: peat-wire §2): message
//! types with proto3 JSON rules (camelCase, omitted defaults, u64 as strings) and the 5-byte
//! stream envelope.

use serde::{Deserialize, Deserializer, Serialize};

pub const SERVICE: &str = "/peat.sidecar.v1.PeatSidecar/";
/// Largest frame accepted; a larger one is counted and skipped, never buffered.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
pub const FLAG_END: u8 = 0x02;
pub const FLAG_COMPRESSED: u8 = 0x01;

/// `0x00`/`0x02` flag, u32 big-endian length, payload.
pub fn frame(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One parsed stream frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    End(Vec<u8>),
    /// Over [`MAX_FRAME`] or compressed: skipped, with its length.
    Skipped(usize),
}

/// Incremental decoder: frames span chunks and chunks hold many frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of an oversize frame still to discard.
    skipping: usize,
}

impl Decoder {
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Frame> {
        if self.skipping > 0 {
            let n = self.skipping.min(chunk.len());
            self.skipping -= n;
            chunk = &chunk[n..];
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            if self.skipping > 0 {
                let n = self.skipping.min(self.buf.len());
                self.buf.drain(..n);
                self.skipping -= n;
                if self.skipping > 0 {
                    break;
                }
            }
            if self.buf.len() < 5 {
                break;
            }
            let flags = self.buf[0];
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_FRAME || flags & FLAG_COMPRESSED != 0 {
                self.buf.drain(..5);
                self.skipping = len;
                out.push(Frame::Skipped(len));
                continue;
            }
            if self.buf.len() < 5 + len {
                break;
            }
            let payload = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            out.push(if flags & FLAG_END != 0 {
                Frame::End(payload)
            } else {
                Frame::Message(payload)
            });
        }
        out
    }

    /// Bytes held of an unfinished frame (a body that ends here was cut mid-frame).
    pub fn pending(&self) -> usize {
        self.buf.len() + self.skipping
    }
}

/// Accepts a JSON number or a decimal string, as proto3 JSON allows for 64-bit integers.
fn u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u64),
        Str(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(0),
        Some(N::Num(n)) => Ok(n),
        Some(N::Str(s)) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint_addr: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sync_active: bool,
    #[serde(deserialize_with = "u64_lenient", skip_serializing_if = "is_zero")]
    pub connected_peers: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscribeRequest {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Upsert,
    Delete,
    Unknown,
}

impl ChangeType {
    pub fn name(self) -> &'static str {
        match self {
            ChangeType::Upsert => "CHANGE_TYPE_UPSERT",
            ChangeType::Delete => "CHANGE_TYPE_DELETE",
            ChangeType::Unknown => "CHANGE_TYPE_UNSPECIFIED",
        }
    }
}

impl Serialize for ChangeType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ChangeType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(match (&v, v.as_str()) {
            (_, Some("CHANGE_TYPE_UPSERT")) => ChangeType::Upsert,
            (_, Some("CHANGE_TYPE_DELETE")) => ChangeType::Delete,
            (serde_json::Value::Number(n), _) if n.as_u64() == Some(1) => ChangeType::Upsert,
            (serde_json::Value::Number(n), _) if n.as_u64() == Some(2) => ChangeType::Delete,
            _ => ChangeType::Unknown,
        })
    }
}

fn unknown_change() -> ChangeType {
    ChangeType::Unknown
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentChange {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub collection: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub doc_id: String,
    #[serde(default = "unknown_change")]
    pub change_type: ChangeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_data: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListDocumentsRequest {
    pub collection: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListDocumentsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub doc_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DocumentKey {
    pub collection: String,
    pub doc_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetDocumentResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_data: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PutDocumentRequest {
    pub collection: String,
    pub doc_id: String,
    pub json_data: String,
}

/// A Connect error body, unary or in an end-of-stream frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndOfStream {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ConnectError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Connect stream as the sidecar sends it: frames whatever the chunking, and each
    /// message's JSON read as the capture loop reads it.
    #[test]
    fn fuzz_connect_stream_and_sidecar_json() {
        let change = |t: &str, data: &str| {
            frame(
                0,
                format!(r#"{{"collection":"tracks","docId":"d-1","changeType":"{t}","jsonData":{data}}}"#)
                    .as_bytes(),
            )
        };
        let seeds = vec![
            [
                change("CHANGE_TYPE_UPSERT", r#""{\"a\":1}""#),
                change("CHANGE_TYPE_DELETE", "null"),
                frame(
                    FLAG_END,
                    br#"{"error":{"code":"unavailable","message":"x"}}"#,
                ),
            ]
            .concat(),
            frame(0, br#"{"docIds":["a","b"],"nextPageToken":"2"}"#),
            frame(0, br#"{"jsonData":"{}","updatedAtMs":"17"}"#),
            frame(0x01, &[0x1f, 0x8b, 0, 0]),
        ];
        crate::fuzz::run("sidecar-stream", seeds, |b| {
            let whole = Decoder::default().push(b);
            for size in [1, 3, 7, 64] {
                let mut d = Decoder::default();
                let split: Vec<Frame> = b.chunks(size).flat_map(|c| d.push(c)).collect();
                if split != whole {
                    return Err(format!("chunks of {size} read other frames"));
                }
            }
            for f in whole {
                if let Frame::Message(m) | Frame::End(m) = f {
                    let _ = serde_json::from_slice::<DocumentChange>(&m);
                    let _ = serde_json::from_slice::<ListDocumentsResponse>(&m);
                    let _ = serde_json::from_slice::<GetDocumentResponse>(&m);
                    let _ = serde_json::from_slice::<EndOfStream>(&m);
                }
            }
            Ok(())
        });
    }

    #[test]
    fn frames_are_found_across_and_within_chunks() {
        let mut bytes = frame(0, br#"{"a":1}"#);
        bytes.extend(frame(0, br#"{"b":2}"#));
        bytes.extend(frame(FLAG_END, b"{}"));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            got.extend(d.push(chunk));
        }
        assert_eq!(
            got,
            [
                Frame::Message(br#"{"a":1}"#.to_vec()),
                Frame::Message(br#"{"b":2}"#.to_vec()),
                Frame::End(b"{}".to_vec())
            ]
        );
        assert_eq!(d.pending(), 0);
        // The worked example's header bytes.
        assert_eq!(
            &frame(0, br#"{"collections":["tracks"]}"#)[..5],
            &[0, 0, 0, 0, 0x1a]
        );
    }

    #[test]
    fn oversize_and_compressed_frames_are_skipped_without_buffering() {
        let mut d = Decoder::default();
        let mut head = vec![0u8];
        head.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert_eq!(d.push(&head), [Frame::Skipped(MAX_FRAME + 1)]);
        assert_eq!(d.push(&vec![7u8; MAX_FRAME + 1]), []);
        assert_eq!(d.push(&frame(0, b"{}")), [Frame::Message(b"{}".to_vec())]);
        assert_eq!(d.push(&frame(FLAG_COMPRESSED, b"zz")), [Frame::Skipped(2)]);
    }

    #[test]
    fn proto3_json_defaults_and_lenient_numbers() {
        let s: Status =
            serde_json::from_str(r#"{"nodeId":"n","connectedPeers":"3","extra":1}"#).unwrap();
        assert_eq!(
            (s.node_id.as_str(), s.connected_peers, s.sync_active),
            ("n", 3, false)
        );
        let c: DocumentChange = serde_json::from_str(
            r#"{"collection":"tracks","docId":"t-1","changeType":"CHANGE_TYPE_UPSERT"}"#,
        )
        .unwrap();
        assert_eq!((c.change_type, c.json_data), (ChangeType::Upsert, None));
        let c: DocumentChange = serde_json::from_str(r#"{"changeType":2}"#).unwrap();
        assert_eq!(c.change_type, ChangeType::Delete);
        let c: DocumentChange =
            serde_json::from_str(r#"{"changeType":"CHANGE_TYPE_NEW"}"#).unwrap();
        assert_eq!(c.change_type, ChangeType::Unknown);
        let l: ListDocumentsResponse = serde_json::from_str("{}").unwrap();
        assert!(l.doc_ids.is_empty());
        assert_eq!(
            serde_json::to_string(&GetDocumentResponse::default()).unwrap(),
            "{}"
        );
    }
}
