//! The binary content mode of a CloudEvent: the document is the message body and every other
//! attribute travels beside it, in the protocol's message headers (NATS `ce-…`, Kafka `ce_…`).
//! Consumers read the document as it is and route on headers without parsing the body.

use std::borrow::Cow;

use super::event::CloudEvent;

/// (attribute name, value) in the order of the structured form.
pub type Attributes = Vec<(&'static str, Cow<'static, str>)>;

/// Splits an event into its attributes and its data. The attributes are the structured form's,
/// values as strings; `datacontenttype` only when there is data (a delete has none).
pub fn split(ce: CloudEvent) -> (Attributes, Vec<u8>) {
    let data = ce
        .data
        .map(|d| Box::<str>::from(d).into_string().into_bytes());
    let mut attrs: Attributes = vec![
        ("specversion", Cow::Borrowed(ce.specversion)),
        ("id", ce.id.into()),
        ("source", ce.source.into()),
        ("type", Cow::Borrowed(ce.kind)),
        ("subject", ce.subject.into()),
        ("time", ce.time.into()),
    ];
    if data.is_some() {
        attrs.push(("datacontenttype", Cow::Borrowed(ce.datacontenttype)));
    }
    attrs.extend([
        ("peatcollection", ce.peatcollection.into()),
        ("peatdocid", ce.peatdocid.into()),
        ("peatcontenthash", ce.peatcontenthash.into()),
        ("peatlsn", ce.peatlsn.into()),
        (
            "peatencrypted",
            Cow::Borrowed(if ce.peatencrypted { "true" } else { "false" }),
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
    let mut out = String::with_capacity(v.len() + 8);
    for b in v.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&format!("{b:02X}"));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::event::cloud_event;
    use crate::store::EventRecord;

    fn record(op: u8, data: Option<&str>, encrypted: bool) -> EventRecord {
        crate::cdc::ce_json::tests::record("t 1\r\nx", data, encrypted, op)
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
            let ce = cloud_event("gw:1", 7, &e);
            let structured = serde_json::to_value(&ce).unwrap();
            let (attrs, data) = split(ce);
            assert_eq!(data, body);
            let mut want = structured.as_object().unwrap().clone();
            want.remove("data");
            if body.is_empty() {
                want.remove("datacontenttype");
            }
            let got: serde_json::Map<_, _> = attrs
                .iter()
                .map(|(k, v)| {
                    let v = match want.get(*k) {
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
