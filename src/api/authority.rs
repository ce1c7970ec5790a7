//! Formation-authority administration: bootstrap tokens (`/orgs/{org}/tokens…`), enrollment
//! settings, approvals (`/orgs/{org}/enrollments…`), the certificate inventory, revocation and
//! the revocation list.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::book::{doc, Access, RouteBook};
use super::extract::{ApiBytes, ApiJson, ApiQuery, Caller, Ids};
use super::orgs::Page;
use super::{ApiError, AppState};
use crate::identity::{
    bootstrap, certs, settings, BootTokenInfo, CertInfo, EnrollSettings, NewBootToken, PendingInfo,
    Revocation,
};
use crate::mesh::documents::{doc_id, RevocationEntry, REVOCATIONS};
use crate::mesh::{MeshTier, Permissions};
use crate::tenant::{now_ms, Need, TenantError};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    let manage = Access::Org(Need::Manage);
    let read = Access::Org(Need::Read);
    let operate = Access::Org(Need::Operate);
    book.post(
        "/orgs/{org_id}/tokens",
        create_token,
        doc("Create a bootstrap token for a formation; the secret is in this answer only", manage, Some(token_schema), 201),
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}/tokens",
        list_tokens,
        doc("A formation's bootstrap tokens (never their secrets)", manage, None, 200),
    )
    .get(
        "/orgs/{org_id}/tokens/{token_id}",
        get_token,
        doc("One bootstrap token", manage, None, 200),
    )
    .post(
        "/orgs/{org_id}/tokens/{token_id}/revoke",
        revoke_token,
        doc("Revoke a bootstrap token (kept for the record)", manage, None, 200),
    )
    .delete(
        "/orgs/{org_id}/tokens/{token_id}",
        delete_token,
        doc("Delete a bootstrap token", manage, None, 204),
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}/enrollment-settings",
        get_settings,
        doc("Certificate validity, freshness window, Open grant, approval expiry", read, None, 200),
    )
    .put(
        "/orgs/{org_id}/formations/{app_id}/enrollment-settings",
        put_settings,
        doc("Replace the enrollment settings", manage, Some(settings_schema), 200),
    )
    .get(
        "/orgs/{org_id}/enrollments",
        list_enrollments,
        doc("Enrollments awaiting or past an operator's decision; ?status=pending|approved|denied|expired", read, None, 200),
    )
    .post(
        "/orgs/{org_id}/enrollments/{enrollment_id}/approve",
        approve,
        doc("Approve a pending enrollment (signs its certificate)", operate, Some(|| reason_schema(false)), 200),
    )
    .post(
        "/orgs/{org_id}/enrollments/{enrollment_id}/deny",
        deny,
        doc("Deny a pending enrollment with a reason", operate, Some(|| reason_schema(true)), 200),
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}/certificates",
        list_certs,
        doc("Issued certificates; ?after=<fingerprint>&limit=<n>", read, None, 200),
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}/certificates/{fingerprint}",
        get_cert,
        doc("One issued certificate with its wire bytes", read, None, 200),
    )
    .post(
        "/orgs/{org_id}/formations/{app_id}/certificates/{fingerprint}/revoke",
        revoke_cert,
        doc("Revoke the certificate's key: every certificate of that key stops being valid", operate, Some(|| reason_schema(true)), 200),
    )
    .post(
        "/orgs/{org_id}/formations/{app_id}/certificates/publish",
        publish_all,
        doc("Write every current certificate and every revocation to the node through the formation's sidecar", operate, None, 200),
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}/revocations",
        list_revocations,
        doc("The revocation list, also as peat-mesh revocation documents", read, None, 200),
    )
}

fn token_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["app_id"], "properties": {
        "app_id": {"type": "string"},
        "label": {"type": "string", "maxLength": 128},
        "max_uses": {"type": "integer", "minimum": 1, "description": "absent: unlimited until expiry"},
        "expires_at": {"type": "integer", "description": "Unix milliseconds"},
        "tier": {"type": "string", "enum": ["Enterprise", "Regional", "Tactical", "Edge"], "default": "Tactical"},
        "permissions": {"type": "array", "items": {"type": "string", "enum": ["RELAY", "EMERGENCY", "ENROLL", "ADMIN", "STANDARD", "AUTHORITY"]}, "default": ["STANDARD"]}}})
}

fn settings_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": {
        "validity_secs": {"type": "integer", "minimum": 60, "default": 86400},
        "window_secs": {"type": "integer", "minimum": 10, "maximum": 3600, "default": 300},
        "backdate_secs": {"type": "integer", "minimum": 0, "maximum": 3600, "default": 0},
        "deliver_formation_secret": {"type": "boolean", "default": false},
        "open_tier": {"type": "string", "default": "Edge"},
        "open_permissions": {"type": "array", "items": {"type": "string"}, "default": ["STANDARD"]},
        "approval_ttl_secs": {"type": "integer", "minimum": 60, "default": 86400},
        "publish_documents": {"type": "boolean", "default": false, "description": "write certificate and revocation documents to the node through the formation's sidecar binding"}}})
}

fn reason_schema(required: bool) -> Value {
    let req: Vec<&str> = if required { vec!["reason"] } else { vec![] };
    json!({"type": "object", "additionalProperties": false, "required": req,
        "properties": {"reason": {"type": "string", "maxLength": 256}}})
}

pub(crate) fn tier(
    field: &'static str,
    s: Option<&str>,
    default: MeshTier,
) -> Result<MeshTier, TenantError> {
    match s {
        None => Ok(default),
        Some(s) => MeshTier::from_name(s).ok_or_else(|| TenantError::Invalid {
            field,
            reason: "must be Enterprise, Regional, Tactical or Edge".into(),
        }),
    }
}

pub(crate) fn permissions(
    field: &'static str,
    names: Option<&[String]>,
    default: Permissions,
) -> Result<Permissions, TenantError> {
    let Some(names) = names else {
        return Ok(default);
    };
    names.iter().try_fold(Permissions::default(), |acc, n| {
        Permissions::from_name(n)
            .map(|p| acc.union(p))
            .ok_or_else(|| TenantError::Invalid {
                field,
                reason: format!("unknown permission '{n}' (RELAY, EMERGENCY, ENROLL, ADMIN, STANDARD, AUTHORITY)"),
            })
    })
}

fn token_json(t: &BootTokenInfo) -> Value {
    json!({
        "token_id": t.token_id, "app_id": t.app_id, "label": t.label,
        "tier": t.tier.name(), "permissions": t.permissions.names(),
        "max_uses": t.max_uses, "uses": t.uses, "state": t.state,
        "created_at": t.created_at_ms, "expires_at": t.expires_at_ms,
        "revoked_at": t.revoked_at_ms, "created_by": t.created_by,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    app_id: String,
    #[serde(default)]
    label: String,
    max_uses: Option<u32>,
    expires_at: Option<u64>,
    tier: Option<String>,
    permissions: Option<Vec<String>>,
}

async fn create_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "create bootstrap tokens")
        .await?;
    let new = NewBootToken {
        app_id: body.app_id,
        label: body.label,
        max_uses: body.max_uses,
        expires_at_ms: body.expires_at,
        tier: tier("tier", body.tier.as_deref(), MeshTier::Tactical)?,
        permissions: permissions(
            "permissions",
            body.permissions.as_deref(),
            Permissions::STANDARD,
        )?,
    };
    let (info, secret) = bootstrap::create(&s.tenancy, &scope, new).await?;
    let mut out = token_json(&info);
    out["token"] = Value::String(secret.to_string());
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(out),
    ))
}

async fn list_tokens(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "list bootstrap tokens")
        .await?;
    let list = bootstrap::list(&s.tenancy, &scope, ids.second()).await?;
    Ok(Json(
        json!({"tokens": list.iter().map(token_json).collect::<Vec<_>>()}),
    ))
}

async fn get_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "read bootstrap tokens")
        .await?;
    Ok(Json(token_json(
        &bootstrap::get(&s.tenancy, &scope, ids.second()).await?,
    )))
}

async fn revoke_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "revoke bootstrap tokens")
        .await?;
    let info = bootstrap::revoke(&s.tenancy, &scope, ids.second(), false).await?;
    Ok(Json(info.as_ref().map(token_json).unwrap_or(Value::Null)))
}

async fn delete_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "delete bootstrap tokens")
        .await?;
    bootstrap::revoke(&s.tenancy, &scope, ids.second(), true).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn settings_json(v: &EnrollSettings) -> Value {
    json!({
        "validity_secs": v.validity_secs,
        "window_secs": v.window_secs,
        "backdate_secs": v.backdate_secs,
        "deliver_formation_secret": v.deliver_formation_secret,
        "open_tier": v.open_tier.name(),
        "open_permissions": v.open_permissions.names(),
        "approval_ttl_secs": v.approval_ttl_secs,
        "publish_documents": v.publish_documents,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsIn {
    validity_secs: Option<u64>,
    window_secs: Option<u64>,
    backdate_secs: Option<u64>,
    deliver_formation_secret: Option<bool>,
    open_tier: Option<String>,
    open_permissions: Option<Vec<String>>,
    approval_ttl_secs: Option<u64>,
    publish_documents: Option<bool>,
}

async fn get_settings(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "read enrollment settings")
        .await?;
    Ok(Json(settings_json(
        &settings::get(&s.tenancy, &scope, ids.second()).await?,
    )))
}

/// Absent fields take their defaults: the body is the whole new setting.
async fn put_settings(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<SettingsIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "change enrollment settings")
        .await?;
    let d = EnrollSettings::default();
    let new = EnrollSettings {
        validity_secs: b.validity_secs.unwrap_or(d.validity_secs),
        window_secs: b.window_secs.unwrap_or(d.window_secs),
        backdate_secs: b.backdate_secs.unwrap_or(d.backdate_secs),
        deliver_formation_secret: b
            .deliver_formation_secret
            .unwrap_or(d.deliver_formation_secret),
        open_tier: tier("open_tier", b.open_tier.as_deref(), d.open_tier)?,
        open_permissions: permissions(
            "open_permissions",
            b.open_permissions.as_deref(),
            d.open_permissions,
        )?,
        approval_ttl_secs: b.approval_ttl_secs.unwrap_or(d.approval_ttl_secs),
        publish_documents: b.publish_documents.unwrap_or(d.publish_documents),
    };
    let saved = settings::put(&s.tenancy, &scope, ids.second(), new).await?;
    Ok(Json(settings_json(&saved)))
}

fn pending_json(p: &PendingInfo) -> Value {
    json!({
        "enrollment_id": p.enrollment_id, "app_id": p.app_id, "node_id": p.node_id,
        "public_key": hex::encode(p.subject), "requested_tier": p.requested_tier.name(),
        "tier": p.tier.name(), "permissions": p.permissions.names(), "identity": p.identity,
        "status": p.state, "created_at": p.created_at_ms, "expires_at": p.expires_at_ms,
        "decided_by": p.decided_by, "decided_at": p.decided_at_ms, "reason": p.reason,
        "fingerprint": p.fingerprint,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    status: Option<String>,
}

async fn list_enrollments(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "list enrollments").await?;
    let list = s.authority.list_enrollments(&scope, q.status).await?;
    Ok(Json(
        json!({"enrollments": list.iter().map(pending_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonIn {
    reason: Option<String>,
}

async fn approve(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiBytes(body): ApiBytes<4096>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Operate, "approve enrollments")
        .await?;
    // The body is optional here: an approval needs no reason.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<ReasonIn>(&body)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    format!("expected {{\"reason\": \"…\"}}: {e}"),
                )
            })?
            .reason
    };
    let out = s
        .authority
        .decide(&scope, ids.second(), true, reason)
        .await?;
    // The approval stands whatever this read finds; a formation that cannot be read
    // publishes nothing.
    let publishes = out.fingerprint.is_some()
        && s.authority
            .publishes_documents(ids.org(), &out.app_id)
            .await
            .unwrap_or(false);
    if let (Some(fp), true) = (&out.fingerprint, publishes) {
        let c = certs::get(&s.tenancy, &scope, &out.app_id, fp).await?;
        if let Ok(cert) = crate::mesh::MeshCertificate::decode(&c.certificate) {
            super::enroll::publish_issued(&s, ids.org(), &out.app_id, &cert);
        }
    }
    Ok(Json(pending_json(&out)))
}

async fn deny(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<ReasonIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Operate, "deny enrollments").await?;
    let reason = b
        .reason
        .filter(|r| !r.trim().is_empty())
        .ok_or(TenantError::Invalid {
            field: "reason",
            reason: "a denial needs a reason the requester can be told".into(),
        })?;
    let out = s
        .authority
        .decide(&scope, ids.second(), false, Some(reason))
        .await?;
    Ok(Json(pending_json(&out)))
}

fn cert_json(c: &CertInfo, with_bytes: bool) -> Value {
    let mut v = json!({
        "fingerprint": c.fingerprint, "public_key": hex::encode(c.subject), "node_id": c.node_id,
        "tier": c.tier.name(), "permissions": c.permissions.names(),
        "permission_bits": c.permissions.bits(), "issued_at": c.issued_at_ms,
        "expires_at": c.expires_at_ms, "granted_via": c.granted_via, "state": c.state(now_ms()),
        "revocation": c.revoked.as_ref().map(|r| json!({"reason": r.reason, "revoked_at": r.revoked_at_ms, "revoked_by": r.revoked_by})),
    });
    if with_bytes {
        v["certificate"] = json!(hex::encode(&c.certificate));
        v["certificate_b64"] = json!(B64.encode(&c.certificate));
    }
    v
}

async fn list_certs(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiQuery(q): ApiQuery<Page>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "list certificates").await?;
    let limit = q.limit.unwrap_or(100);
    let list = certs::list(&s.tenancy, &scope, ids.second(), q.after, limit).await?;
    let next = (list.len() >= limit.clamp(1, certs::MAX_PAGE))
        .then(|| list.last().map(|c| c.fingerprint.clone()))
        .flatten();
    Ok(Json(json!({
        "certificates": list.iter().map(|c| cert_json(c, false)).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

async fn get_cert(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "read certificates").await?;
    let fp = ids.0.get(2).map_or("", String::as_str);
    let c = certs::get(&s.tenancy, &scope, ids.second(), fp).await?;
    Ok(Json(cert_json(&c, true)))
}

fn revocation_json(r: &Revocation) -> Value {
    json!({"public_key": hex::encode(r.subject), "reason": r.reason,
        "revoked_at": r.revoked_at_ms, "revoked_by": r.revoked_by})
}

async fn revoke_cert(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<ReasonIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Operate, "revoke certificates")
        .await?;
    let fp = ids.0.get(2).map_or("", String::as_str);
    let r = certs::revoke(
        &s.tenancy,
        &scope,
        ids.second(),
        fp,
        b.reason.unwrap_or_default(),
    )
    .await?;
    let mut out = revocation_json(&r);
    let settings = settings::get(&s.tenancy, &scope, ids.second()).await?;
    if settings.publish_documents {
        let doc = certs::revocation_document(&r)?;
        out["published"] = publish(&s, scope.actor(), ids.org(), ids.second(), vec![doc]).await;
    }
    Ok(Json(out))
}

async fn list_revocations(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "read the revocation list")
        .await?;
    let list = certs::revocations(&s.tenancy, &scope, ids.second()).await?;
    let documents: Vec<Value> = list
        .iter()
        .map(|r| {
            let entry = RevocationEntry {
                subject: doc_id(&r.subject),
                reason: r.reason.clone(),
                timestamp_ms: r.revoked_at_ms,
            };
            json!({"collection": REVOCATIONS, "doc_id": doc_id(&r.subject), "json": entry})
        })
        .collect();
    Ok(Json(json!({
        "revocations": list.iter().map(revocation_json).collect::<Vec<_>>(),
        "documents": documents,
    })))
}

/// Writes documents to the formation's node; the outcome as JSON for the answer. Every
/// publication is audited with what was written.
pub(crate) async fn publish(
    s: &AppState,
    actor: &crate::tenant::Actor,
    org: &str,
    app: &str,
    docs: Vec<certs::Document>,
) -> Value {
    let target = format!("org/{org}/formation/{app}/certificates");
    let Some(client) = s.sources.client(org, app) else {
        let _ = s
            .tenancy
            .audit_event(
                actor,
                org,
                "certificates.publish",
                target,
                "no sidecar binding",
            )
            .await;
        return json!({"ok": false, "error": "the formation has no sidecar binding (PUT …/source)"});
    };
    let mut written = 0;
    let mut errors = Vec::new();
    for (collection, doc_id, json) in docs {
        match client.put(collection, &doc_id, &json).await {
            Ok(()) => written += 1,
            Err(e) => {
                tracing::warn!(org, app, collection, doc_id, error = %e, "publishing to the node failed");
                errors.push(
                    json!({"collection": collection, "doc_id": doc_id, "error": e.to_string()}),
                );
            }
        }
    }
    let outcome = if errors.is_empty() {
        "written"
    } else {
        "partly failed"
    };
    if let Err(e) = s
        .tenancy
        .audit_event(actor, org, "certificates.publish", target, outcome)
        .await
    {
        tracing::warn!(error = %e, "certificate publication not audited");
    }
    json!({"ok": errors.is_empty(), "written": written, "errors": errors})
}

async fn publish_all(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Operate, "publish certificates")
        .await?;
    let docs = certs::documents(&s.tenancy, &scope, ids.second()).await?;
    Ok(Json(
        publish(&s, scope.actor(), ids.org(), ids.second(), docs).await,
    ))
}
