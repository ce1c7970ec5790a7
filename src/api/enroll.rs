//! Device-facing enrollment: `POST …/enroll`, `POST …/renew` and the pending-poll route.
//!
//! The body is peat-mesh's binary EnrollmentRequest (`application/octet-stream`) or the same
//! fields as JSON; the signature covers the binary encoding either way. The answer is the
//! binary EnrollmentResponse when the client sends `Accept: application/octet-stream`, else
//! JSON. Malformed input is a 4xx JSON error; every decision (including refusals) is audited.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiBytes, Ids};
use super::peer::Peer;
use super::{ApiError, AppState};
use crate::identity::{Decision, EnrollInput, EnrollOutcome};
use crate::mesh::{EnrollmentRequest, EnrollmentResponse, EnrollmentStatus, MeshTier};
use crate::metrics::EnrollLabels;
use crate::tenant::TenantError;

/// peat-mesh caps enrollment messages at 64 KiB.
const MAX_BODY: usize = 64 * 1024;
const OCTET: &str = "application/octet-stream";

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    let public = |summary| Doc {
        summary,
        access: Access::Public,
        body: Some(request_schema),
        ok: 200,
    };
    book.post(
        "/orgs/{org_id}/formations/{app_id}/enroll",
        enroll,
        public("Enroll a device: a request signed by its own key (binary EnrollmentRequest or JSON); 200 approved, 202 pending, 403 denied or revoked"),
    )
    .post(
        "/orgs/{org_id}/formations/{app_id}/renew",
        renew,
        public("Renew a current certificate: a freshly signed request by the same key and node id"),
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}/enroll/{enrollment_id}",
        poll,
        Doc {
            summary: "A pending enrollment's state, and its certificate once approved",
            access: Access::Public,
            body: None,
            ok: 200,
        },
    )
}

fn request_schema() -> Value {
    json!({"type": "object", "additionalProperties": false,
        "required": ["public_key", "mesh_id", "node_id", "tier", "timestamp_ms", "signature"],
        "properties": {
            "public_key": {"type": "string", "description": "Ed25519 public key, 64 hex"},
            "mesh_id": {"type": "string", "maxLength": 255},
            "node_id": {"type": "string", "maxLength": 255},
            "tier": {"type": "string", "enum": ["Enterprise", "Regional", "Tactical", "Edge"]},
            "token": {"type": "string", "description": "bootstrap token (or empty)"},
            "timestamp_ms": {"type": "integer"},
            "signature": {"type": "string", "description": "Ed25519 by public_key over the binary request up to the signature, 128 hex"}}})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    public_key: String,
    mesh_id: String,
    node_id: String,
    tier: String,
    token: Option<crate::secret::Secret>,
    timestamp_ms: u64,
    signature: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn hex_array<const N: usize>(field: &str, s: &str) -> Result<[u8; N], ApiError> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or_else(|| bad(format!("{field} must be {} hex characters", N * 2)))
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<EnrollmentRequest, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case(OCTET) {
        return EnrollmentRequest::decode(body).map_err(|e| bad(e.to_string()));
    }
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the binary EnrollmentRequest as application/octet-stream, or its fields as application/json",
        ));
    }
    let j: JsonRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    let tier = MeshTier::from_name(&j.tier)
        .ok_or_else(|| bad("tier must be Enterprise, Regional, Tactical or Edge"))?;
    let req = EnrollmentRequest {
        subject: hex_array("public_key", &j.public_key)?,
        mesh_id: j.mesh_id,
        node_id: j.node_id,
        requested_tier: tier,
        token: Zeroizing::new(
            j.token
                .as_ref()
                .map_or(Vec::new(), |t| t.expose().as_bytes().to_vec()),
        ),
        timestamp_ms: j.timestamp_ms,
        signature: hex_array("signature", &j.signature)?,
    };
    // Refuses over-long strings now rather than at signing time.
    req.encode().map_err(|e| bad(e.to_string()))?;
    Ok(req)
}

fn wants_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|p| p.trim().starts_with(OCTET)))
}

async fn enroll(
    State(s): State<AppState>,
    ids: Ids,
    peer: Peer,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes<MAX_BODY>,
) -> Result<Response, ApiError> {
    decide(s, ids, peer, headers, &body, false).await
}

async fn renew(
    State(s): State<AppState>,
    ids: Ids,
    peer: Peer,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes<MAX_BODY>,
) -> Result<Response, ApiError> {
    decide(s, ids, peer, headers, &body, true).await
}

fn count(s: &AppState, decision: &str) {
    s.metrics
        .enroll_decisions
        .get_or_create(&EnrollLabels {
            decision: decision.to_owned(),
        })
        .inc();
}

async fn decide(
    s: AppState,
    ids: Ids,
    peer: Peer,
    headers: HeaderMap,
    body: &[u8],
    renewal: bool,
) -> Result<Response, ApiError> {
    if !s.tenancy.org_allows(ids.org(), peer.ip).await? {
        s.metrics.refused_sources.inc();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_source",
            "this address is not on the org's allow-list",
        ));
    }
    let request = parse(&headers, body).inspect_err(|_| count(&s, "invalid"))?;
    let outcome = s
        .authority
        .enroll(
            ids.org(),
            ids.second(),
            EnrollInput {
                request,
                source: peer.ip,
                renewal,
                client_cert: peer.client_cert,
                secure_channel: peer.secure,
            },
        )
        .await
        .inspect_err(|e| {
            if matches!(e, TenantError::RateLimited { .. }) {
                count(&s, "rate_limited");
            }
        })?;
    count(&s, outcome.decision.name());
    if let Decision::Approved { certificate, .. } = &outcome.decision {
        if outcome.publish_documents {
            publish_issued(&s, ids.org(), ids.second(), certificate);
        }
    }
    let status = match outcome.decision {
        Decision::Approved { .. } => StatusCode::OK,
        Decision::Pending { .. } => StatusCode::ACCEPTED,
        Decision::Denied { .. } | Decision::Revoked { .. } => StatusCode::FORBIDDEN,
    };
    if wants_binary(&headers) {
        return binary(status, outcome);
    }
    Ok((
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(to_json(ids.org(), ids.second(), outcome)?),
    )
        .into_response())
}

fn binary(status: StatusCode, o: EnrollOutcome) -> Result<Response, ApiError> {
    let now = crate::tenant::now_ms();
    let resp = match o.decision {
        Decision::Approved {
            certificate,
            formation_secret,
            ..
        } => EnrollmentResponse {
            status: EnrollmentStatus::Approved,
            timestamp_ms: certificate.fields.issued_at_ms,
            certificate: Some(*certificate),
            formation_secret: formation_secret.map(|s| Zeroizing::new(s.to_vec())),
        },
        Decision::Pending { .. } => EnrollmentResponse {
            status: EnrollmentStatus::Pending,
            certificate: None,
            formation_secret: None,
            timestamp_ms: now,
        },
        Decision::Denied { reason } => EnrollmentResponse {
            status: EnrollmentStatus::Denied { reason },
            certificate: None,
            formation_secret: None,
            timestamp_ms: now,
        },
        Decision::Revoked { reason } => EnrollmentResponse {
            status: EnrollmentStatus::Revoked { reason },
            certificate: None,
            formation_secret: None,
            timestamp_ms: now,
        },
    };
    let bytes = resp
        .encode()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        status,
        [
            (header::CONTENT_TYPE, OCTET),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes.to_vec(),
    )
        .into_response())
}

fn to_json(org: &str, app: &str, o: EnrollOutcome) -> Result<Value, ApiError> {
    let mut out = json!({
        "status": o.decision.name(),
        "mesh_id": o.mesh_id,
        "authority_public_key": hex::encode(o.authority_public_key),
    });
    match o.decision {
        Decision::Approved {
            certificate,
            fingerprint,
            formation_secret,
        } => {
            let bytes = certificate.encode().map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
            out["certificate"] = json!(hex::encode(&bytes));
            out["certificate_b64"] = json!(B64.encode(&bytes));
            out["fingerprint"] = json!(fingerprint);
            out["tier"] = json!(certificate.fields.tier.name());
            out["permissions"] = json!(certificate.fields.permissions.bits());
            out["expires_at_ms"] = json!(o.expires_at_ms);
            if let Some(secret) = formation_secret {
                out["formation_secret"] = json!(B64.encode(secret.as_ref()));
            }
            if let Some(why) = o.secret_withheld {
                out["formation_secret_withheld"] = json!(why);
            }
        }
        Decision::Pending { enrollment_id } => {
            out["poll_url"] = json!(format!(
                "/orgs/{org}/formations/{app}/enroll/{enrollment_id}"
            ));
            out["enrollment_id"] = json!(enrollment_id);
        }
        Decision::Denied { reason } | Decision::Revoked { reason } => {
            out["reason"] = json!(reason);
        }
    }
    Ok(out)
}

async fn poll(State(s): State<AppState>, ids: Ids) -> Result<impl IntoResponse, ApiError> {
    let id = ids.0.get(2).map_or("", String::as_str);
    let (p, cert) = s.authority.poll(ids.org(), ids.second(), id).await?;
    let mut out = json!({
        "status": p.state,
        "enrollment_id": p.enrollment_id,
        "node_id": p.node_id,
        "expires_at_ms": p.expires_at_ms,
        "reason": p.reason,
    });
    if let Some(c) = cert {
        out["certificate"] = json!(hex::encode(&c));
        out["certificate_b64"] = json!(B64.encode(&c));
        out["fingerprint"] = json!(p.fingerprint);
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(out)))
}

/// Writes a newly issued certificate to the node of a formation that publishes documents; in
/// the background, so the answer does not wait on the node.
pub(crate) fn publish_issued(
    s: &AppState,
    org: &str,
    app: &str,
    cert: &crate::mesh::MeshCertificate,
) {
    let Ok(bytes) = cert.encode() else {
        return;
    };
    let (s, org, app) = (s.clone(), org.to_owned(), app.to_owned());
    tokio::spawn(async move {
        match crate::identity::certs::certificate_document(&bytes, crate::tenant::now_ms()) {
            Ok(doc) => {
                let system = crate::tenant::Actor::system();
                super::authority::publish(&s, &system, &org, &app, vec![doc]).await;
            }
            Err(e) => tracing::warn!(error = %e, "certificate document not built"),
        }
    });
}
