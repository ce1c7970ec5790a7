//! `POST /orgs/{org_id}/formations/{app_id}/changes`: HTTP ingest into the outbox.
//!
//! Answers 202 only after the append is durable; any invalid item refuses the whole request
//! and appends nothing.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiBytes, Caller, Ids};
use super::{ApiError, AppState};
use crate::cdc::{Appended, Change, DocState, FormationRef};
use crate::tenant::{Actor, Need};

/// Largest ingest body; larger batches are split by the client.
pub(crate) const MAX_INGEST_BYTES: usize = 4 * 1024 * 1024;
const MAX_ITEMS: usize = 10_000;

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.post_large(
        "/orgs/{org_id}/formations/{app_id}/changes",
        ingest,
        Doc {
            summary: "Append document changes (JSON array or NDJSON); 202 after the durable commit",
            access: Access::Org(Need::Ingest),
            body: Some(schema),
            ok: 202,
        },
        MAX_INGEST_BYTES,
    )
    .get(
        "/orgs/{org_id}/outbox",
        outbox_status,
        Doc {
            summary: "The org's share of the outbox: events and bytes held, its quota share, the full policy",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
}

async fn outbox_status(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "read the outbox").await?;
    let org = s.tenancy.get_org(&scope).await?;
    let outbox = s.cdc.outbox();
    let fill = outbox.org_fill(&org.org_uid);
    let share = outbox.org_share();
    Ok(Json(json!({
        "events": fill.events,
        "bytes": fill.bytes,
        "share_bytes": share,
        "used_ratio": if share == 0 { 0.0 } else { fill.bytes as f64 / share as f64 },
        "newest_lsn": fill.last_lsn,
        "full_policy": outbox.policy().name(),
    })))
}

fn schema() -> Value {
    json!({"type": "array", "maxItems": MAX_ITEMS, "items": {"type": "object", "additionalProperties": false,
        "required": ["collection", "doc_id", "op"], "properties": {
            "collection": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,1023}$"},
            "doc_id": {"type": "string", "minLength": 1, "maxLength": 1024},
            "op": {"type": "string", "enum": ["upsert", "delete"]},
            "data": {"type": "object", "description": "the whole document (upsert only)"}}}})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    collection: String,
    doc_id: String,
    op: ItemOp,
    /// Kept as text, borrowed from the body: numbers reach the outbox exactly as sent.
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ItemOp {
    Upsert,
    Delete,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Change>, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let items: Vec<Item<'_>> = match mime.as_str() {
        "application/json" => serde_json::from_slice(body)
            .map_err(|e| bad(format!("body is not a JSON array of changes: {e}")))?,
        "application/x-ndjson" | "application/jsonl" => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(i, l)| {
                serde_json::from_slice(l).map_err(|e| bad(format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json (an array) or application/x-ndjson",
            ))
        }
    };
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("send 1 to {MAX_ITEMS} changes per request"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, it)| {
            let state = match (it.op, it.data) {
                (ItemOp::Upsert, Some(v)) => DocState::json(v.get())
                    .map_err(|e| invalid_item(i, &format!("data is not JSON: {e}")))?,
                (ItemOp::Upsert, None) => {
                    return Err(invalid_item(
                        i,
                        "an upsert needs `data`, the whole document",
                    ))
                }
                (ItemOp::Delete, None) => DocState::Deleted,
                (ItemOp::Delete, Some(_)) => {
                    return Err(invalid_item(i, "a delete carries no `data`"))
                }
            };
            let c = Change {
                collection: it.collection,
                doc_id: it.doc_id,
                state,
            };
            c.validate().map_err(|e| invalid_item(i, &e.to_string()))?;
            Ok(c)
        })
        .collect()
}

fn invalid_item(i: usize, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("change {i}: {why}"),
    )
}

async fn ingest(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes<MAX_INGEST_BYTES>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Ingest, "append changes").await?;
    let (f, org_uid, max_documents) = s
        .tenancy
        .formation_with_org_uid(&scope, ids.second())
        .await?;
    let changes = parse(&headers, &body)?;
    let src = FormationRef {
        org_id: f.org_id.clone(),
        org_uid,
        app_id: f.app_id.clone(),
        formation_uid: f.formation_uid,
        max_documents: u64::from(max_documents),
    };
    let report = s.cdc.outbox().append(src, changes).await?;
    s.metrics.ingested(&report);
    if report.dropped > 0 {
        let target = format!("org/{}/formation/{}/outbox", f.org_id, f.app_id);
        s.tenancy
            .audit_event(
                &Actor::system(),
                &f.org_id,
                "cdc.outbox.drop-oldest",
                target,
                "dropped",
            )
            .await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        receipt(&report.outcomes, report.dropped),
    ))
}

/// The 202 body, `{"appended":…,"dropped_oldest":…,"results":[{"lsn":…},…],"unchanged":…}`,
/// written straight out rather than built as a `json!` map per change and serialized.
fn receipt(outcomes: &[Appended], dropped: u64) -> Vec<u8> {
    use std::io::Write;
    let appended = outcomes
        .iter()
        .filter(|o| matches!(o, Appended::Event(_)))
        .count();
    let mut out = Vec::with_capacity(80 + outcomes.len() * 20);
    // Writes into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"appended":{appended},"dropped_oldest":{dropped},"results":["#
    );
    for (i, o) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = match o {
            Appended::Event(lsn) => write!(out, r#"{{"lsn":{lsn}}}"#),
            Appended::Unchanged => out.write_all(br#"{"lsn":null,"unchanged":true}"#),
        };
    }
    let _ = write!(out, r#"],"unchanged":{}}}"#, outcomes.len() - appended);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receipt_is_the_json_it_always_was() {
        let outcomes = [
            Appended::Event(7),
            Appended::Unchanged,
            Appended::Event(u64::MAX),
        ];
        let want = json!({"appended": 2, "unchanged": 1, "dropped_oldest": 3, "results": [
            {"lsn": 7}, {"lsn": null, "unchanged": true}, {"lsn": u64::MAX}]});
        assert_eq!(
            String::from_utf8(receipt(&outcomes, 3)).unwrap(),
            want.to_string()
        );
        assert_eq!(
            String::from_utf8(receipt(&[], 0)).unwrap(),
            r#"{"appended":0,"dropped_oldest":0,"results":[],"unchanged":0}"#
        );
    }

    #[test]
    fn fuzz_ingest_payloads() {
        let seeds = vec![
            br#"[{"collection":"tracks","doc_id":"t-1","op":"upsert","data":{"z":1.50,"a":[true,null,"\u00e9"]}},{"collection":"tracks","doc_id":"t-1","op":"delete"}]"#.to_vec(),
            b"{\"collection\":\"c\",\"doc_id\":\"d\",\"op\":\"upsert\",\"data\":{\"n\":-0e+10}}\n\n{\"collection\":\"c\",\"doc_id\":\"e\",\"op\":\"delete\"}\n".to_vec(),
            br#"[{"collection":"c","doc_id":"d","op":"upsert","data":"ENC:v1:AAAA"}]"#.to_vec(),
        ];
        let mut json = HeaderMap::new();
        json.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let mut ndjson = HeaderMap::new();
        ndjson.insert(
            header::CONTENT_TYPE,
            "application/x-ndjson".parse().unwrap(),
        );
        crate::fuzz::run("ingest", seeds, |b| {
            for h in [&json, &ndjson] {
                if let Ok(changes) = parse(h, b) {
                    // What capture does next with an accepted change: its canonical form.
                    for c in changes {
                        let _ = crate::cdc::canonical(c.state);
                    }
                }
            }
            Ok(())
        });
    }
}
