//! The structured CloudEvent of an outbox event written straight into bytes, for the sink
//! loops that send every event of a backlog: byte for byte what `serde_json::to_vec` makes of
//! [`cloud_event`](super::event::cloud_event) (checked by the tests), at a fraction of the
//! work (no intermediate strings, no formatting machinery).

use super::event::Op;
use crate::store::EventRecord;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string as serde_json escapes it: `"`, `\` and control characters only.
pub(super) fn string(out: &mut Vec<u8>, s: &[u8]) {
    string_of(out, &[s]);
}

/// One JSON string of the parts joined, without joining them first.
fn string_of(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.push(b'"');
    for s in parts {
        escaped(out, s);
    }
    out.push(b'"');
}

fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

pub(super) fn digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while n > 0 || buf.len() - i < width.max(1) {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[i..]);
}

fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b',');
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// UTC time with milliseconds (RFC 3339), the one writer of that form. The events of one
/// capture share their time: the last one written is kept per thread.
pub(super) fn rfc3339_ms_into(out: &mut Vec<u8>, ms: u64) {
    thread_local! {
        static LAST: std::cell::Cell<Option<(u64, [u8; 24])>> = const { std::cell::Cell::new(None) };
    }
    if let Some((at, text)) = LAST.get() {
        if at == ms {
            out.extend_from_slice(&text);
            return;
        }
    }
    let from = out.len();
    rfc3339_ms_fresh(out, ms);
    if let Ok(text) = <[u8; 24]>::try_from(&out[from..]) {
        LAST.set(Some((ms, text)));
    }
}

fn rfc3339_ms_fresh(out: &mut Vec<u8>, ms: u64) {
    let t = crate::utc(ms);
    digits(out, t.year().max(0) as u64, 4);
    for (sep, v) in [
        (b'-', u8::from(t.month())),
        (b'-', t.day()),
        (b'T', t.hour()),
        (b':', t.minute()),
        (b':', t.second()),
    ] {
        out.push(sep);
        digits(out, u64::from(v), 2);
    }
    out.push(b'.');
    digits(out, u64::from(t.millisecond()), 3);
    out.push(b'Z');
}

/// The event's CloudEvent, structured JSON mode.
pub fn cloud_event_bytes(gateway_id: &str, lsn: u64, e: &EventRecord) -> Vec<u8> {
    let data_len = e.data.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(400 + data_len + e.doc_id.len() * 3);
    out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    let mut n = Vec::with_capacity(20);
    digits(&mut n, lsn, 1);
    string_of(&mut out, &[gateway_id.as_bytes(), b":", &n]);
    key(&mut out, "source");
    string_of(
        &mut out,
        &[b"peat://", e.org_id.as_bytes(), b"/", e.app_id.as_bytes()],
    );
    key(&mut out, "type");
    let op = Op::from_byte(e.op);
    string(&mut out, op.event_type().as_bytes());
    key(&mut out, "subject");
    string_of(
        &mut out,
        &[e.collection.as_bytes(), b"/", e.doc_id.as_bytes()],
    );
    key(&mut out, "time");
    out.push(b'"');
    rfc3339_ms_into(&mut out, e.observed_ms);
    out.push(b'"');
    key(&mut out, "datacontenttype");
    out.extend_from_slice(br#""application/json""#);
    key(&mut out, "peatcollection");
    string(&mut out, e.collection.as_bytes());
    key(&mut out, "peatdocid");
    string(&mut out, e.doc_id.as_bytes());
    key(&mut out, "peatcontenthash");
    let mut hex = [b'"'; 66];
    for (i, b) in e.content_hash.iter().enumerate() {
        hex[1 + 2 * i] = HEX[usize::from(b >> 4)];
        hex[2 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    out.extend_from_slice(&hex);
    key(&mut out, "peatlsn");
    out.push(b'"');
    out.extend_from_slice(&n);
    out.push(b'"');
    key(&mut out, "peatencrypted");
    out.extend_from_slice(if e.encrypted { b"true" } else { b"false" });
    match (&e.data, e.encrypted, op) {
        (_, _, Op::Delete) | (None, _, _) => {}
        // Canonical JSON (checked at capture), embedded as it is.
        (Some(d), false, _) if std::str::from_utf8(d).is_ok() => {
            key(&mut out, "data");
            out.extend_from_slice(d);
        }
        // An opaque ENC:v1 payload travels as a JSON string.
        (Some(d), true, _) => {
            key(&mut out, "data");
            string(&mut out, String::from_utf8_lossy(d).as_bytes());
        }
        // Never expected (capture stores canonical JSON): the serde path decides.
        (Some(_), false, _) => {
            return serde_json::to_vec(&super::event::cloud_event(gateway_id, lsn, e))
                .unwrap_or_default();
        }
    }
    out.push(b'}');
    out
}

/// An event of org `acme` with the given id, data and op.
#[cfg(test)]
pub(super) fn test_record(
    doc_id: &str,
    data: Option<&str>,
    encrypted: bool,
    op: u8,
) -> EventRecord {
    EventRecord {
        org_id: "acme".into(),
        app_id: "mesh".into(),
        collection: "tracks.v2".into(),
        doc_id: doc_id.into(),
        op,
        data: data.map(|d| d.as_bytes().to_vec()),
        encrypted,
        content_hash: [0xa7; 32],
        observed_ms: 1_733_356_800_123,
        org_uid: [1; 16],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_time_is_reused_only_for_the_same_millisecond() {
        for ms in [
            0,
            1_700_000_000_123,
            1_700_000_000_123,
            1_700_000_000_124,
            0,
        ] {
            let (mut kept, mut fresh) = (b"x".to_vec(), b"x".to_vec());
            rfc3339_ms_into(&mut kept, ms);
            rfc3339_ms_fresh(&mut fresh, ms);
            assert_eq!(kept, fresh, "{ms}");
        }
        assert_eq!(super::super::event::event_id("gw-1", 0), "gw-1:0");
        assert_eq!(
            super::super::event::event_id("g", u64::MAX),
            format!("g:{}", u64::MAX)
        );
    }

    #[test]
    fn the_bytes_are_serde_jsons_for_every_kind_of_event() {
        let odd = "q\"uo\\te \n\r\t\u{8}\u{c}\u{1}\u{1f} ü 🚀 \u{7f} </script>";
        let cases = [
            test_record("t-1", Some(r#"{"a":1,"b":[1.50,"x"]}"#), false, 1),
            test_record(odd, Some(r#"{"s":"\n\u0001é"}"#), false, 1),
            test_record("gone", None, false, 2),
            test_record("gone-with-data", Some(r#"{"a":1}"#), false, 2),
            test_record("sealed", Some("ENC:v1:AAAA\"b"), true, 1),
            test_record("", Some("{}"), false, 1),
        ];
        for (i, e) in cases.iter().enumerate() {
            for lsn in [0, 7, u64::MAX] {
                let want =
                    serde_json::to_vec(&super::super::event::cloud_event("gw:1", lsn, e)).unwrap();
                let got = cloud_event_bytes("gw:1", lsn, e);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "case {i}, lsn {lsn}"
                );
            }
        }
        let mut early = test_record("t", Some("{}"), false, 1);
        early.observed_ms = 0;
        assert_eq!(
            cloud_event_bytes("g", 1, &early),
            serde_json::to_vec(&super::super::event::cloud_event("g", 1, &early)).unwrap()
        );
    }
}
