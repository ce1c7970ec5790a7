//! Who the caller is (lets the operator UI show each role only the controls it may use), and
//! sign-in sessions: listed and revoked by the org's admins, ended by their holder.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::book::{doc, Access, RouteBook};
use super::extract::{Caller, Ids};
use super::{ApiError, AppState};
use crate::tenant::{session_of, Need, Principal, Role};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.get(
        "/whoami",
        whoami,
        doc(
            "The caller's identity: admin, or an org token's org, role and token id (`session` when signed in by single sign-on)",
            Access::AnyToken,
            None,
            200,
        ),
    )
    .delete(
        "/session",
        sign_out,
        doc(
            "Ends the caller's own sign-in session (single sign-on); API tokens are revoked on their own route",
            Access::AnyToken,
            None,
            204,
        ),
    )
    .get(
        "/orgs/{org_id}/sessions",
        list,
        doc(
            "The org's live sign-in sessions: who, which role, by which claim rule, until when",
            Access::Org(Need::Manage),
            None,
            200,
        ),
    )
    .delete(
        "/orgs/{org_id}/sessions/{session_id}",
        revoke,
        doc(
            "Ends a sign-in session at once",
            Access::Org(Need::Manage),
            None,
            204,
        ),
    )
}

async fn whoami(Caller(p): Caller) -> Json<Value> {
    Json(match p {
        Principal::Admin { dev_open } => {
            json!({"kind": "admin", "role": "admin", "org_id": null, "dev_open": dev_open, "ui": true})
        }
        Principal::Org {
            org_id,
            token_id,
            role,
            ..
        } => json!({
            "kind": "org",
            "org_id": org_id,
            "role": role.name(),
            "session": session_of(&token_id),
            "token_id": token_id,
            // Ingest tokens only append changes; the UI tells their holder so.
            "ui": role != Role::Ingest,
        }),
    })
}

async fn sign_out(State(s): State<AppState>, Caller(p): Caller) -> Result<StatusCode, ApiError> {
    let (org, sid) = match &p {
        Principal::Org {
            org_id, token_id, ..
        } => match session_of(token_id) {
            Some(sid) => (org_id.clone(), sid.to_owned()),
            None => return Err(not_a_session()),
        },
        Principal::Admin { .. } => return Err(not_a_session()),
    };
    let scope = s
        .tenancy
        .authorize(&p, &org, Need::Read, "sign out")
        .await?;
    s.tenancy
        .revoke_session(&scope, &sid, "session.sign-out")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn not_a_session() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_a_session",
        "this token is not a sign-in session; API tokens are revoked with DELETE /orgs/{org_id}/api-tokens/{token_id}",
    )
}

async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "list sessions").await?;
    let out: Vec<Value> = s
        .tenancy
        .list_sessions(&scope)
        .into_iter()
        .map(|i| {
            json!({"session_id": i.session_id, "role": i.role.name(), "subject": i.subject,
                "issuer": i.issuer, "rule_id": i.rule_id, "created_at": i.created_at_ms,
                "expires_at": i.expires_at_ms})
        })
        .collect();
    Ok(Json(json!({"sessions": out})))
}

async fn revoke(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "revoke sessions").await?;
    s.tenancy
        .revoke_session(&scope, ids.second(), "session.revoke")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
