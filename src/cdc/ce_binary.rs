//! The binary content mode of a CloudEvent: the document is the message body and every other
//! attribute travels beside it, in the protocol's message headers (NATS `ce-…`, Kafka `ce_…`).
//! Consumers read the document as it is and route on headers without parsing the body.

use std::borrow::Cow;

use super::event::{event_id, rfc3339_ms, Op};
use crate::store::EventRecord;

/// An attribute's name, and its header in the NATS (`ce-…`) and Kafka (`ce_…`) bindings,
/// which carry `datacontenttype` as the content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub name: &'static str,
    pub nats: &'static str,
    pub kafka: &'static str,
}

macro_rules! attr {
    ($name:literal) => {
        Attr {
            name: $name,
            nats: concat!("ce-", $name),
            kafka: concat!("ce_", $name),
        }
    };
}

const SPECVERSION: Attr = attr!("specversion");
const ID: Attr = attr!("id");
const SOURCE: Attr = attr!("source");
const TYPE: Attr = attr!("type");
const SUBJECT: Attr = attr!("subject");
const TIME: Attr = attr!("time");
const DATACONTENTTYPE: Attr = Attr {
    name: "datacontenttype",
    nats: "Content-Type",
    kafka: "content-type",
};
const PEATCOLLECTION: Attr = attr!("peatcollection");
const PEATDOCID: Attr = attr!("peatdocid");
const PEATCONTENTHASH: Attr = attr!("peatcontenthash");
const PEATLSN: Attr = attr!("peatlsn");
const PEATENCRYPTED: Attr = attr!("peatencrypted");

/// (attribute, value) in the order of the structured form.
pub type Attributes = Vec<(Attr, Cow<'static, str>)>;

/// The event's attributes and data, built straight from the record: the attributes of its
/// structured form in its order, values as strings, `datacontenttype` only when there is data
/// (a delete has none); checked against the structured form by the tests.
pub fn binary(gateway_id: &str, lsn: u64, e: &EventRecord) -> (Attributes, Vec<u8>) {
    let op = Op::from_byte(e.op);
    let data = match (&e.data, e.encrypted, op) {
        (_, _, Op::Delete) | (None, _, _) => None,
        // Canonical JSON, checked at capture.
        (Some(d), false, _) => Some(d.clone()),
        // An opaque ENC:v1 payload travels as a JSON string, as in the structured form.
        (Some(d), true, _) => {
            let mut out = Vec::with_capacity(d.len() + 2);
            super::ce_json::string(&mut out, String::from_utf8_lossy(d).as_bytes());
            Some(out)
        }
    };
    let mut attrs: Attributes = Vec::with_capacity(12);
    attrs.extend([
        (SPECVERSION, Cow::Borrowed("1.0")),
        (ID, event_id(gateway_id, lsn).into()),
        (SOURCE, format!("peat://{}/{}", e.org_id, e.app_id).into()),
        (TYPE, Cow::Borrowed(op.event_type())),
        (SUBJECT, format!("{}/{}", e.collection, e.doc_id).into()),
        (TIME, rfc3339_ms(e.observed_ms).into()),
    ]);
    if data.is_some() {
        attrs.push((DATACONTENTTYPE, Cow::Borrowed("application/json")));
    }
    attrs.extend([
        (PEATCOLLECTION, e.collection.clone().into()),
        (PEATDOCID, e.doc_id.clone().into()),
        (PEATCONTENTHASH, hex::encode(e.content_hash).into()),
        (PEATLSN, lsn.to_string().into()),
        (
            PEATENCRYPTED,
            Cow::Borrowed(if e.encrypted { "true" } else { "false" }),
        ),
    ]);
    (attrs, data.unwrap_or_default())
}

/// A header value as the HTTP binding writes it, which the NATS binding adopts: space, `"`,
/// `%` and everything outside printable ASCII percent-encoded from UTF-8, so a document id
/// with a line break can never end a header early.
pub fn percent_encoded(v: &str) -> Cow<'_, str> {
    let plain = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
    if v.bytes().all(plain) {
        return Cow::Borrowed(v);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(v.len() + 8);
    for b in v.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::event::cloud_event;

    fn record(op: u8, data: Option<&str>, encrypted: bool) -> EventRecord {
        crate::cdc::ce_json::test_record("t 1\r\nx", data, encrypted, op)
    }

    #[test]
    fn the_attributes_are_the_structured_events_and_the_body_its_data() {
        for (e, body) in [
            (
                record(1, Some(r#"{"a":1.50}"#), false),
                &br#"{"a":1.50}"#[..],
            ),
            (record(1, Some("ENC:v1:AAAA"), true), br#""ENC:v1:AAAA""#),
            (record(2, None, false), b""),
        ] {
            let structured = serde_json::to_value(cloud_event("gw:1", 7, &e)).unwrap();
            let (attrs, data) = binary("gw:1", 7, &e);
            assert_eq!(data, body);
            let mut want = structured.as_object().unwrap().clone();
            want.remove("data");
            if body.is_empty() {
                want.remove("datacontenttype");
            }
            let got: serde_json::Map<_, _> = attrs
                .iter()
                .map(|(a, v)| {
                    let k = a.name;
                    let v = match want.get(k) {
                        Some(serde_json::Value::Bool(_)) => serde_json::Value::Bool(v == "true"),
                        _ => serde_json::Value::String(v.to_string()),
                    };
                    (k.to_string(), v)
                })
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn header_values_never_carry_a_line_break_or_a_raw_non_ascii_byte() {
        assert_eq!(percent_encoded("tracks/t-1"), "tracks/t-1");
        assert_eq!(percent_encoded("t 1\r\nx"), "t%201%0D%0Ax");
        assert_eq!(percent_encoded("ü\"%"), "%C3%BC%22%25");
    }
}
