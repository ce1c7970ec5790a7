//! `/orgs/{org_id}/formations…`: formations, their public facts and credential export.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiJson, ApiQuery, Caller, Ids};
use super::orgs::Page;
use super::{ApiError, AppState};
use crate::mesh::MembershipPolicy;
use crate::secret::Secret;
use crate::tenant::{Formation, Need, NewFormation, TenantError};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.post(
        "/orgs/{org_id}/formations",
        create,
        Doc {
            summary: "Create a formation (new genesis), or adopt one with `genesis`",
            access: Access::Org(Need::Manage),
            body: Some(create_schema),
            ok: 201,
        },
    )
    .get(
        "/orgs/{org_id}/formations",
        list,
        Doc {
            summary: "List the org's formations; ?after=<app_id>&limit=<n>",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}",
        get_one,
        Doc {
            summary: "Formation details: mesh id, policy, authority public key",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .delete(
        "/orgs/{org_id}/formations/{app_id}",
        remove,
        Doc {
            summary: "Delete a formation and its key material",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 204,
        },
    )
    .get(
        "/orgs/{org_id}/formations/{app_id}/credentials",
        credentials,
        Doc {
            summary: "Export MeshCredentials (holds the formation secret; audited)",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 200,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateFormation {
    app_id: String,
    enrollment_policy: Option<String>,
    /// Base64 of a peat-mesh genesis encoding to adopt.
    genesis: Option<Secret>,
}

fn create_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["app_id"], "properties": {
        "app_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"},
        "enrollment_policy": {"type": "string", "enum": ["Open", "Controlled", "Strict"]},
        "genesis": {"type": "string", "contentEncoding": "base64",
            "description": "peat-mesh genesis encoding of an existing formation to adopt; never exported"}}})
}

#[derive(Serialize)]
struct FormationOut {
    org_id: String,
    app_id: String,
    mesh_id: String,
    enrollment_policy: &'static str,
    authority_public_key: String,
    created_at: u64,
    adopted: bool,
}

impl From<Formation> for FormationOut {
    fn from(f: Formation) -> Self {
        Self {
            org_id: f.org_id,
            app_id: f.app_id,
            mesh_id: f.mesh_id,
            enrollment_policy: f.policy.name(),
            authority_public_key: hex::encode(f.authority_public_key),
            created_at: f.created_at_ms,
            adopted: f.adopted,
        }
    }
}

async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<CreateFormation>,
) -> Result<(StatusCode, Json<FormationOut>), ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "create formations").await?;
    let policy = body
        .enrollment_policy
        .as_deref()
        .map(|name| {
            MembershipPolicy::from_name(name).ok_or_else(|| TenantError::Invalid {
                field: "enrollment_policy",
                reason: "must be Open, Controlled or Strict".into(),
            })
        })
        .transpose()?;
    let genesis = body
        .genesis
        .map(|b64| {
            B64.decode(b64.expose().trim().as_bytes())
                .map(Zeroizing::new)
                .map_err(|_| TenantError::Invalid {
                    field: "genesis",
                    reason: "is not valid base64".into(),
                })
        })
        .transpose()?;
    let f = s
        .tenancy
        .create_formation(
            &scope,
            NewFormation {
                app_id: body.app_id,
                policy,
                genesis,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(f.into())))
}

async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Vec<FormationOut>>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "list formations").await?;
    let list = s
        .tenancy
        .list_formations(&scope, page.after, page.limit.unwrap_or(100))
        .await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

async fn get_one(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<FormationOut>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "read formations").await?;
    Ok(Json(
        s.tenancy.get_formation(&scope, ids.second()).await?.into(),
    ))
}

async fn remove(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "delete formations").await?;
    let uid = s.tenancy.delete_formation(&scope, ids.second()).await?;
    s.cdc.forget_formations(vec![uid]).await;
    if let Err(e) = s.sources.sync().await {
        tracing::warn!(error = %e, "source sync failed");
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn credentials(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "export credentials")
        .await?;
    let c = s.tenancy.export_credentials(&scope, ids.second()).await?;
    let body = json!({
        "mesh_id": c.mesh_id,
        "formation_secret": B64.encode(c.formation_secret.as_ref()),
        "authority_public_key": hex::encode(c.authority_public_key),
        "credentials": B64.encode(c.credentials.as_slice()),
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)))
}
