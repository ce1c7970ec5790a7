//! `/orgs/{org_id}/formations/{app_id}/source`: which peat-node sidecar a formation's changes
//! are captured from, and how that capture is doing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiJson, Caller, Ids};
use super::{ApiError, AppState};
use crate::cdc::rfc3339_ms;
use crate::secret::Secret;
use crate::tenant::{redact_endpoint, Need, NewSource, SourceDef};

const PATH: &str = "/orgs/{org_id}/formations/{app_id}/source";
const GRANTS: &str = "/orgs/{org_id}/source-grants";

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.put(
        PATH,
        put_source,
        Doc {
            summary: "Bind the formation to a peat-node sidecar and the collections to capture",
            access: Access::Org(Need::Manage),
            body: Some(|| json!({"type": "object", "additionalProperties": false,
                "required": ["endpoint", "collections"], "properties": {
                    "endpoint": {"type": "string", "description": "http://host:port of the sidecar"},
                    "collections": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string"}},
                    "token": {"type": "string", "description": "bearer token for the sidecar; stored sealed, never shown"},
                    "reconcile_secs": {"type": "integer", "minimum": 10, "maximum": 86400},
                    "tls_ca_pem": {"type": "string", "description": "https:// endpoints: PEM of the CA to trust"},
                    "client_cert_pem": {"type": "string", "description": "https:// endpoints: PEM client certificate (mTLS)"},
                    "client_key_pem": {"type": "string", "description": "its PEM private key; stored sealed, never shown"},
                    "full_policy": {"type": "string", "enum": ["block", "drop-oldest"],
                        "description": "what this source does when the outbox is full; default PEAT_CDC_FULL_POLICY"},
                    "node_id": {"type": "string", "description": "the id the node was started with (--node-id): pinned, checked on every connect; a node answering with another id is refused"}}})),
            ok: 200,
        },
    )
    .get(
        PATH,
        get_source,
        Doc {
            summary: "The binding and the capture's health: connection, node, last event, reconciliation",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .post(
        "/orgs/{org_id}/formations/{app_id}/source/reconcile",
        reconcile,
        Doc {
            summary: "Reconcile with the node now (list every document, append what differs); 409 while the link is down",
            access: Access::Org(Need::Operate),
            body: None,
            ok: 202,
        },
    )
    .put(
        GRANTS,
        put_grants,
        Doc {
            summary: "Grant the org the sidecar endpoints it may bind formations to (gateway admin only); a binding whose endpoint is no longer granted stops capturing",
            access: Access::GatewayAdmin,
            body: Some(|| json!({"type": "object", "additionalProperties": false,
                "required": ["endpoints"], "properties": {
                    "endpoints": {"type": "array", "maxItems": 64, "items": {"type": "string",
                        "description": "unix:///path.sock, http://host:port or https://host:port, exactly as bindings name it"}}}})),
            ok: 200,
        },
    )
    .get(
        GRANTS,
        get_grants,
        Doc {
            summary: "The sidecar endpoints the org may bind formations to",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .delete(
        PATH,
        delete_source,
        Doc {
            summary: "Stop capturing from the sidecar (captured events stay in the outbox)",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 204,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSource {
    endpoint: String,
    collections: Vec<String>,
    token: Option<Secret>,
    #[serde(default = "default_reconcile")]
    reconcile_secs: u64,
    full_policy: Option<String>,
    tls_ca_pem: Option<String>,
    client_cert_pem: Option<String>,
    client_key_pem: Option<Secret>,
    node_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grants {
    endpoints: Vec<String>,
}

fn default_reconcile() -> u64 {
    300
}

fn view(s: &AppState, d: &SourceDef) -> Value {
    let h = s.sources.health(&d.org_id, &d.app_id).unwrap_or_default();
    json!({
        "endpoint": redact_endpoint(&d.endpoint),
        "granted": d.granted,
        "node_id": d.node_id,
        "collections": d.collections,
        "token": d.has_token.then_some("[redacted]"),
        "reconcile_secs": d.reconcile_secs,
        "full_policy": d.full_policy.unwrap_or(s.cdc.outbox().policy().name()),
        "tls_ca_pem": d.tls_ca_pem,
        "client_cert_pem": d.client_cert_pem,
        "health": {
            "connected": h.connected,
            "state": h.state(d),
            "node_id": h.node_id,
            "endpoint_addr": h.endpoint_addr,
            "last_event": h.last_event_ms.map(rfc3339_ms),
            "last_error": h.last_error,
            "frames": h.frames,
            "appended": h.appended,
            "unchanged": h.unchanged,
            "encrypted_payloads": h.encrypted_payloads,
            "skipped_frames": h.skipped_frames,
            "refused": h.refused,
            "refused_documents": h.refused_docs.iter().map(|r| json!({
                "collection": r.collection, "doc_id": r.doc_id, "reason": r.reason,
                "at": rfc3339_ms(r.at_ms)})).collect::<Vec<_>>(),
            "reconciliations": h.reconciliations,
            "connects": h.connects,
            "last_reconciliation": h.last_reconciliation.map(|r| json!({
                "at": rfc3339_ms(r.at_ms), "listed": r.listed, "appended": r.appended, "deleted": r.deleted})),
        }
    })
}

async fn resync(s: &AppState) {
    if let Err(e) = s.sources.sync().await {
        tracing::warn!(error = %e, "source change saved; capture loops will pick it up shortly");
    }
}

async fn put_source(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<PutSource>,
) -> Result<Json<Value>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "bind sources").await?;
    let d = s
        .tenancy
        .put_source(
            &scope,
            ids.second(),
            NewSource {
                endpoint: body.endpoint,
                collections: body.collections,
                token: body.token,
                reconcile_secs: body.reconcile_secs,
                full_policy: body.full_policy,
                tls_ca_pem: body.tls_ca_pem,
                client_cert_pem: body.client_cert_pem,
                client_key_pem: body.client_key_pem,
                node_id: body.node_id,
            },
        )
        .await?;
    resync(&s).await;
    Ok(Json(view(&s, &d)))
}

async fn get_source(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "read sources").await?;
    let d = s.tenancy.get_source(&scope, ids.second()).await?;
    Ok(Json(view(&s, &d)))
}

async fn reconcile(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Operate, "reconcile sources")
        .await?;
    // The binding must exist in this org: another org's formation answers 404.
    s.tenancy.get_source(&scope, ids.second()).await?;
    if s.sources.reconcile_now(ids.org(), ids.second()) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_connected",
            "the node link is not up; the gateway reconciles as soon as it connects",
        ))
    }
}

async fn delete_source(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "unbind sources").await?;
    s.tenancy.delete_source(&scope, ids.second()).await?;
    resync(&s).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_grants(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<Grants>,
) -> Result<Json<Value>, ApiError> {
    // Another org's token learns nothing: scope first (404), then require the admin (403).
    s.scope(&p, &ids, Need::Read, "grant sidecar endpoints")
        .await?;
    let actor = s
        .tenancy
        .authorize_admin(&p, "grant sidecar endpoints")
        .await?;
    let endpoints = s
        .tenancy
        .put_source_grants(&actor, ids.org(), body.endpoints)
        .await?;
    resync(&s).await;
    Ok(Json(
        json!({"endpoints": endpoints.iter().map(|e| redact_endpoint(e)).collect::<Vec<_>>()}),
    ))
}

async fn get_grants(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "read sidecar grants").await?;
    let endpoints = s.tenancy.source_grants(&scope).await?;
    Ok(Json(
        json!({"endpoints": endpoints.iter().map(|e| redact_endpoint(e)).collect::<Vec<_>>()}),
    ))
}
