//! `/orgs/{org_id}/sinks…`: CDC sink definitions, their live status, dead letters, and the
//! operator's retry / skip of a stalled sink.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiJson, Caller, Ids};
use super::{ApiError, AppState};
use crate::cdc::{cloud_event, rfc3339_ms, Command, SinkState};
use crate::secret::redact_url;
use crate::tenant::{
    ContentMode, Need, NewSink, SinkDef, SinkPatch, SinkSpec, SinkStart, TenantError,
};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    let doc = |summary, need, body: Option<fn() -> Value>, ok| Doc {
        summary,
        access: Access::Org(need),
        body,
        ok,
    };
    book.post(
        "/orgs/{org_id}/sinks",
        create,
        doc(
            "Create a CDC sink",
            Need::Manage,
            Some(create_schema),
            201,
        ),
    )
    .get(
        "/orgs/{org_id}/sinks",
        list,
        doc("List the org's sinks", Need::Read, None, 200),
    )
    .get(
        "/orgs/{org_id}/sinks/{sink_id}",
        get_one,
        doc("Sink definition", Need::Read, None, 200),
    )
    .patch(
        "/orgs/{org_id}/sinks/{sink_id}",
        patch,
        doc(
            "Pause or resume (`enabled`, operator) or change filters and rate cap (org-admin)",
            Need::Operate,
            Some(patch_schema),
            200,
        ),
    )
    .delete(
        "/orgs/{org_id}/sinks/{sink_id}",
        delete,
        doc(
            "Delete a sink, its cursor and dead letters",
            Need::Manage,
            None,
            204,
        ),
    )
    .get(
        "/orgs/{org_id}/sinks/{sink_id}/status",
        status,
        doc(
            "Delivery state, backlog, lag, rate, last error and drain estimate",
            Need::Read,
            None,
            200,
        ),
    )
    .get(
        "/orgs/{org_id}/sinks/{sink_id}/dead-letters",
        dead_letters,
        doc(
            "Events parked after a permanent refusal, oldest first",
            Need::Read,
            None,
            200,
        ),
    )
    .post(
        "/orgs/{org_id}/sinks/{sink_id}/dead-letters",
        act_on_dead_letters,
        doc(
            "Dead letters: `{\"action\":\"retry\"}` delivers them again (oldest first), `discard` drops them",
            Need::Operate,
            Some(|| json!({"type": "object", "additionalProperties": false, "required": ["action"],
                "properties": {"action": {"type": "string", "enum": ["retry", "discard"]}}})),
            200,
        ),
    )
    .post(
        "/orgs/{org_id}/sinks/{sink_id}/test",
        test,
        doc(
            "Send one synthetic event (type io.peat.gateway.test) straight to the sink and report the outcome",
            Need::Operate,
            None,
            200,
        ),
    )
    .post(
        "/orgs/{org_id}/sinks/{sink_id}/retry",
        retry,
        doc(
            "A stalled sink tries its refused event again",
            Need::Operate,
            None,
            202,
        ),
    )
    .post(
        "/orgs/{org_id}/sinks/{sink_id}/skip",
        skip,
        doc(
            "A stalled sink parks its refused event as a dead letter and goes on",
            Need::Operate,
            None,
            202,
        ),
    )
}

fn filter_schema() -> Value {
    json!({"type": "array", "maxItems": 64, "items": {"type": "string"}})
}

fn create_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["sink_type"], "properties": {
        "sink_type": {"type": "object", "description": "{\"File\":{\"name\"}}, {\"Nats\":{\"subject_prefix\",\"url\"?,\"stream\"?}} {\"Mqtt\":{\"url\",\"topic_prefix\"}} or {\"Webhook\":{\"url\"}}"},
        "enabled": {"type": "boolean"},
        "formations": filter_schema(),
        "collections": filter_schema(),
        "rate_limit_bytes_per_sec": {"type": "integer", "minimum": 0},
        "start": {"type": "string", "enum": ["earliest", "latest"]},
        "content_mode": content_mode_schema()}})
}

fn patch_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": {
        "enabled": {"type": "boolean"},
        "formations": filter_schema(),
        "collections": filter_schema(),
        "rate_limit_bytes_per_sec": {"type": "integer", "minimum": 0},
        "content_mode": content_mode_schema()}})
}

fn content_mode_schema() -> Value {
    json!({"type": "string", "enum": ["structured", "binary", "batched"],
        "description": "CloudEvents content mode: structured (the event as JSON, the default), binary (the document as the body, attributes in ce- headers or MQTT 5 user properties; NATS, Kafka and MQTT sinks) or batched (a message per delivery batch on <prefix>.<org>.batch, a JSON array of structured events; NATS sinks)"})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSink {
    sink_type: Value,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    formations: Vec<String>,
    #[serde(default)]
    collections: Vec<String>,
    #[serde(default)]
    rate_limit_bytes_per_sec: u64,
    start: Option<String>,
    content_mode: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchSink {
    enabled: Option<bool>,
    formations: Option<Vec<String>>,
    collections: Option<Vec<String>>,
    rate_limit_bytes_per_sec: Option<u64>,
    content_mode: Option<String>,
}

#[derive(Serialize)]
struct SinkOut {
    sink_id: String,
    org_id: String,
    sink_type: Value,
    enabled: bool,
    formations: Vec<String>,
    collections: Vec<String>,
    rate_limit_bytes_per_sec: u64,
    start: &'static str,
    content_mode: &'static str,
    created_at: u64,
}

impl From<SinkDef> for SinkOut {
    fn from(d: SinkDef) -> Self {
        let sink_type = match d.spec {
            SinkSpec::File { name } => json!({"File": {"name": name}}),
            SinkSpec::Nats {
                subject_prefix,
                url,
                stream,
                tls_ca_pem,
            } => {
                json!({"Nats": {"subject_prefix": subject_prefix, "url": url.as_deref().map(redact_url),
                    "stream": stream, "tls_ca_pem": tls_ca_pem}})
            }
            SinkSpec::Mqtt {
                url,
                topic_prefix,
                tls_ca_pem,
            } => {
                json!({"Mqtt": {"url": redact_url(&url), "topic_prefix": topic_prefix, "tls_ca_pem": tls_ca_pem}})
            }
            SinkSpec::Webhook {
                url,
                allow_private,
                tls_ca_pem,
            } => {
                json!({"Webhook": {"url": url, "allow_private": allow_private, "tls_ca_pem": tls_ca_pem}})
            }
            SinkSpec::RedisStreams {
                url,
                stream,
                maxlen,
                tls_ca_pem,
            } => {
                json!({"RedisStreams": {"url": redact_url(&url), "stream": stream, "maxlen": maxlen,
                    "tls_ca_pem": tls_ca_pem}})
            }
            SinkSpec::Kafka {
                topic,
                brokers,
                tls,
                tls_ca_pem,
                sasl_mechanism,
                sasl_username,
                compression,
                batch_size,
            } => {
                json!({"Kafka": {"topic": topic, "brokers": brokers, "tls": tls, "tls_ca_pem": tls_ca_pem,
                    "sasl_mechanism": sasl_mechanism, "sasl_username": sasl_username,
                    "sasl_password": sasl_mechanism.as_ref().map(|_| "[redacted]"),
                    "compression": compression, "batch_size": batch_size}})
            }
        };
        Self {
            sink_id: d.sink_id,
            org_id: d.org_id,
            sink_type,
            enabled: d.enabled,
            formations: d.formations,
            collections: d.collections,
            rate_limit_bytes_per_sec: d.rate_limit_bytes_per_sec,
            start: match d.start {
                SinkStart::Earliest => "earliest",
                SinkStart::Latest => "latest",
            },
            content_mode: d.content_mode.name(),
            created_at: d.created_at_ms,
        }
    }
}

/// The caller's scope on the path's org and the path's sink, or why not.
async fn sink_of(
    s: &AppState,
    p: &crate::tenant::Principal,
    ids: &Ids,
    need: Need,
    action: &'static str,
) -> Result<(crate::tenant::OrgScope, SinkDef), ApiError> {
    let scope = s.tenancy.authorize(p, ids.org(), need, action).await?;
    let def = s.tenancy.get_sink(&scope, ids.second()).await?;
    Ok((scope, def))
}

/// Starts or stops delivery loops after a definition changed; the change itself stands.
async fn resync(s: &AppState) {
    if let Err(e) = s.cdc.sync().await {
        tracing::warn!(error = %e, "sink change saved; delivery loops will pick it up shortly");
    }
}

async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<CreateSink>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "create sinks").await?;
    let start = match body.start.as_deref() {
        None | Some("earliest") => SinkStart::Earliest,
        Some("latest") => SinkStart::Latest,
        Some(_) => {
            return Err(TenantError::Invalid {
                field: "start",
                reason: "must be earliest or latest".into(),
            }
            .into())
        }
    };
    let content_mode = body
        .content_mode
        .as_deref()
        .map_or(Ok(ContentMode::Structured), ContentMode::parse)?;
    let egress = s.tenancy.egress(scope.org_id());
    let (spec, secrets) =
        super::sink_body::spec_of(body.sink_type, &egress, s.cdc.default_kafka_brokers())?;
    let def = s
        .tenancy
        .create_sink(
            &scope,
            NewSink {
                spec,
                secrets,
                enabled: body.enabled,
                formations: body.formations,
                collections: body.collections,
                rate_limit_bytes_per_sec: body.rate_limit_bytes_per_sec,
                start,
                content_mode,
            },
        )
        .await?;
    resync(&s).await;
    let (def, secret) = def;
    let mut out = serde_json::to_value(SinkOut::from(def)).unwrap_or_default();
    if let Some(secret) = secret {
        // Shown once; only the sealed key is kept.
        out["signing_secret"] = Value::String(secret.to_string());
    }
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(out),
    ))
}

async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Vec<SinkOut>>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "list sinks").await?;
    let defs = s.tenancy.list_sinks(&scope).await?;
    Ok(Json(defs.into_iter().map(SinkOut::from).collect()))
}

async fn get_one(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<SinkOut>, ApiError> {
    let (_, def) = sink_of(&s, &p, &ids, Need::Read, "read sinks").await?;
    Ok(Json(def.into()))
}

async fn patch(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<PatchSink>,
) -> Result<Json<SinkOut>, ApiError> {
    // Pausing is day-to-day operation; changing what a sink receives is configuration.
    let config_change = body.formations.is_some()
        || body.collections.is_some()
        || body.rate_limit_bytes_per_sec.is_some()
        || body.content_mode.is_some();
    let content_mode = body
        .content_mode
        .as_deref()
        .map(ContentMode::parse)
        .transpose()?;
    let (need, action) = if config_change {
        (Need::Manage, "sink.update")
    } else {
        (Need::Operate, "sink.pause-resume")
    };
    let scope = s
        .tenancy
        .authorize(&p, ids.org(), need, "change sinks")
        .await?;
    let def = s
        .tenancy
        .patch_sink(
            &scope,
            ids.second(),
            SinkPatch {
                enabled: body.enabled,
                formations: body.formations,
                collections: body.collections,
                rate_limit_bytes_per_sec: body.rate_limit_bytes_per_sec,
                content_mode,
            },
            action,
        )
        .await?;
    resync(&s).await;
    Ok(Json(def.into()))
}

async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "delete sinks").await?;
    s.tenancy.delete_sink(&scope, ids.second()).await?;
    resync(&s).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let (_, def) = sink_of(&s, &p, &ids, Need::Read, "read sink status").await?;
    let outbox = s.cdc.outbox();
    let st = s.cdc.status(&def.sink_uid);
    let (cursor, cursor_seq) = match &st {
        Some(st) if st.cursor_loaded => (st.cursor, st.cursor_seq),
        // Not running, or still reading its cursor: the stored cursor says where it is.
        _ => {
            let c = outbox.cursor(def.sink_uid).await?.unwrap_or(0);
            (c, outbox.org_seq_at(def.org_uid, c).await?)
        }
    };
    // Only the sink's own org's events count, so nothing of another org shows here.
    let next = outbox.read_org_after(def.org_uid, cursor, 1).await?;
    let lag_seconds = next
        .first()
        .map(|(_, e, _, _)| crate::tenant::now_ms().saturating_sub(e.observed_ms) as f64 / 1000.0)
        .unwrap_or(0.0);
    let fill = outbox.org_fill(&def.org_uid);
    let backlog = fill.seq.saturating_sub(cursor_seq);
    // The org's events are of similar size; exact per-sink byte counts would cost a scan.
    let backlog_bytes = if fill.events == 0 {
        0
    } else {
        let held = fill.bytes as f64;
        ((held / fill.events as f64) * backlog as f64).min(held) as u64
    };
    let delivered_bytes = st.as_ref().map_or(0, |st| st.delivered_bytes);
    let (state, target, last_error, stalled_lsn, delivered, retried, dead, last, rate) = match st {
        Some(st) => (
            st.state,
            st.target,
            st.last_error,
            st.stalled_lsn,
            st.delivered,
            st.retried,
            st.dead_lettered,
            st.last_delivery_ms,
            st.rate.per_sec(std::time::Instant::now(), st.delivered),
        ),
        None => (
            SinkState::Starting,
            String::new(),
            None,
            None,
            0,
            0,
            0,
            None,
            0.0,
        ),
    };
    // Only while events flow: a disconnected or stalled sink drains at no known rate.
    let flowing = matches!(state, SinkState::Delivering | SinkState::Idle);
    let eta = (flowing && rate > 0.0 && backlog > 0).then(|| backlog as f64 / rate);
    Ok(Json(json!({
        "sink_id": def.sink_id,
        "state": state.name(),
        "target": target,
        "cursor_lsn": cursor,
        "head_lsn": fill.last_lsn,
        "backlog_events": backlog,
        "backlog_bytes": backlog_bytes,
        "lag_seconds": lag_seconds,
        "rate_events_per_sec": rate,
        "drain_eta_seconds": eta,
        "delivered": delivered,
        "delivered_bytes": delivered_bytes,
        "retried": retried,
        "dead_lettered": dead,
        "last_delivery": last.map(rfc3339_ms),
        "last_error": last_error,
        "stalled_lsn": stalled_lsn,
    })))
}

/// One parked event as listed; the event is the CloudEvent as delivered (exact numbers).
#[derive(serde::Serialize)]
struct DeadLetterOut {
    lsn: u64,
    reason: String,
    parked_at: String,
    event: crate::cdc::CloudEvent,
}

#[derive(serde::Serialize)]
struct DeadLettersOut {
    dead_letters: Vec<DeadLetterOut>,
}

async fn dead_letters(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<DeadLettersOut>, ApiError> {
    let (_, def) = sink_of(&s, &p, &ids, Need::Read, "read dead letters").await?;
    let gw = s.cdc.outbox().gateway_id().to_owned();
    let dead_letters = s
        .cdc
        .outbox()
        .dead_letters(def.sink_uid, 1000)
        .await?
        .into_iter()
        .map(|(lsn, d)| DeadLetterOut {
            lsn,
            reason: d.reason,
            parked_at: rfc3339_ms(d.parked_at_ms),
            event: cloud_event(&gw, lsn, &d.event),
        })
        .collect();
    Ok(Json(DeadLettersOut { dead_letters }))
}

async fn command(
    s: AppState,
    p: crate::tenant::Principal,
    ids: Ids,
    cmd: Command,
) -> Result<StatusCode, ApiError> {
    let (scope, def) = sink_of(&s, &p, &ids, Need::Operate, "retry or skip sink events").await?;
    let action = match cmd {
        Command::Retry => "sink.retry",
        Command::Skip => "sink.skip",
    };
    let target = format!("org/{}/sink/{}", def.org_id, def.sink_id);
    if s.cdc.status(&def.sink_uid).map(|st| st.state) != Some(SinkState::Stalled) {
        s.tenancy
            .audit_event(
                scope.actor(),
                &def.org_id,
                action,
                target,
                "refused: not stalled",
            )
            .await?;
        return Err(not_stalled());
    }
    // Recorded before it acts: a skip loses an event for this sink for good.
    s.tenancy
        .audit_event(scope.actor(), &def.org_id, action, target, "requested")
        .await?;
    if !s.cdc.command(&def.sink_uid, cmd) {
        return Err(not_stalled());
    }
    Ok(StatusCode::ACCEPTED)
}

fn not_stalled() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_stalled",
        "the sink is not stalled; retry and skip apply to a sink stuck on a refused event",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterAction {
    action: String,
}

async fn act_on_dead_letters(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<DeadLetterAction>,
) -> Result<Json<Value>, ApiError> {
    let (scope, def) = sink_of(&s, &p, &ids, Need::Operate, "act on dead letters").await?;
    let target = format!("org/{}/sink/{}/dead-letters", def.org_id, def.sink_id);
    // Each action is recorded before it acts.
    let out = match body.action.as_str() {
        "retry" => {
            s.tenancy
                .audit_event(
                    scope.actor(),
                    &def.org_id,
                    "sink.dead-letters.retry",
                    target,
                    "requested",
                )
                .await?;
            let (delivered, left) = s
                .cdc
                .replay_dead_letters(&def)
                .await
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "sink_unavailable", e))?;
            json!({"delivered": delivered, "still_parked": left})
        }
        "discard" => {
            s.tenancy
                .audit_event(
                    scope.actor(),
                    &def.org_id,
                    "sink.dead-letters.discard",
                    target,
                    "requested",
                )
                .await?;
            let n = s.cdc.discard_dead_letters(&def).await?;
            json!({"discarded": n})
        }
        _ => {
            return Err(TenantError::Invalid {
                field: "action",
                reason: "must be retry or discard".into(),
            }
            .into())
        }
    };
    Ok(Json(out))
}

async fn test(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let (scope, def) = sink_of(&s, &p, &ids, Need::Operate, "test sinks").await?;
    let target = format!("org/{}/sink/{}", def.org_id, def.sink_id);
    s.tenancy
        .audit_event(scope.actor(), &def.org_id, "sink.test", target, "requested")
        .await?;
    Ok(Json(match s.cdc.test_sink(&def).await {
        Ok(id) => json!({"ok": true, "event_id": id}),
        Err(e) => json!({"ok": false, "error": e}),
    }))
}

async fn retry(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    command(s, p, ids, Command::Retry).await
}

async fn skip(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    command(s, p, ids, Command::Skip).await
}
