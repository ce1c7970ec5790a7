//! `/orgs/{org_id}/api-tokens…`: org-scoped API tokens, shown once.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiJson, Caller, Ids};
use super::{ApiError, AppState};
use crate::tenant::{Need, NewApiToken, Role, TenantError, TokenInfo};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.post(
        "/orgs/{org_id}/api-tokens",
        create,
        Doc {
            summary: "Issue an org-scoped API token; the secret is in this answer only",
            access: Access::Org(Need::Manage),
            body: Some(create_schema),
            ok: 201,
        },
    )
    .get(
        "/orgs/{org_id}/api-tokens",
        list,
        Doc {
            summary: "List the org's API tokens (never their secrets)",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 200,
        },
    )
    .delete(
        "/orgs/{org_id}/api-tokens/{token_id}",
        revoke,
        Doc {
            summary: "Revoke an API token",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 204,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    role: String,
    /// Unix milliseconds; absent means no expiry.
    expires_at: Option<u64>,
}

fn create_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["name", "role"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "role": {"type": "string", "enum": ["org-admin", "operator", "viewer", "ingest"]},
        "expires_at": {"type": "integer", "description": "Unix milliseconds"}}})
}

#[derive(Serialize)]
struct TokenOut {
    token_id: String,
    name: String,
    role: &'static str,
    created_at: u64,
    expires_at: Option<u64>,
    created_by: String,
}

impl From<TokenInfo> for TokenOut {
    fn from(t: TokenInfo) -> Self {
        Self {
            token_id: t.token_id,
            name: t.name,
            role: t.role.name(),
            created_at: t.created_at_ms,
            expires_at: t.expires_at_ms,
            created_by: t.created_by,
        }
    }
}

async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "issue API tokens").await?;
    let role = Role::from_name(&body.role).ok_or_else(|| TenantError::Invalid {
        field: "role",
        reason: "must be org-admin, operator, viewer or ingest".into(),
    })?;
    let issued = s
        .tenancy
        .create_api_token(
            &scope,
            NewApiToken {
                name: body.name,
                role,
                expires_at_ms: body.expires_at,
            },
        )
        .await?;
    let mut out = serde_json::to_value(TokenOut::from(issued.info)).unwrap_or_default();
    out["token"] = Value::String(issued.secret.to_string());
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(out),
    ))
}

async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Vec<TokenOut>>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "list API tokens").await?;
    let list = s.tenancy.list_api_tokens(&scope).await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

async fn revoke(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "revoke API tokens").await?;
    s.tenancy.revoke_api_token(&scope, ids.second()).await?;
    Ok(StatusCode::NO_CONTENT)
}
