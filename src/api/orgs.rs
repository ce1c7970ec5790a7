//! `/orgs` and `/orgs/{org_id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiJson, ApiQuery, Caller, Ids};
use super::{ApiError, AppState};
use crate::tenant::{Need, NewOrg, Org, OrgPatch, Quotas, QuotasPatch};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.post(
        "/orgs",
        create,
        Doc {
            summary: "Create an organization",
            access: Access::GatewayAdmin,
            body: Some(create_schema),
            ok: 201,
        },
    )
    .get(
        "/orgs",
        list,
        Doc {
            summary:
                "List organizations (an org token sees only its own); ?after=<org_id>&limit=<n>",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .get(
        "/orgs/{org_id}",
        get_one,
        Doc {
            summary: "Organization details",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .patch(
        "/orgs/{org_id}",
        update,
        Doc {
            summary: "Change display name (org-admin) or quotas (admin token)",
            access: Access::Org(Need::Manage),
            body: Some(patch_schema),
            ok: 200,
        },
    )
    .delete(
        "/orgs/{org_id}",
        remove,
        Doc {
            summary: "Delete an organization and everything it owns",
            access: Access::GatewayAdmin,
            body: None,
            ok: 204,
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotasDto {
    max_formations: Option<u32>,
    max_peers_per_formation: Option<u32>,
    max_documents_per_formation: Option<u32>,
    max_cdc_sinks: Option<u32>,
    max_enrollments_per_hour: Option<u32>,
    max_api_tokens: Option<u32>,
}

impl From<QuotasDto> for QuotasPatch {
    fn from(q: QuotasDto) -> Self {
        Self {
            max_formations: q.max_formations,
            max_peers_per_formation: q.max_peers_per_formation,
            max_documents_per_formation: q.max_documents_per_formation,
            max_cdc_sinks: q.max_cdc_sinks,
            max_enrollments_per_hour: q.max_enrollments_per_hour,
            max_api_tokens: q.max_api_tokens,
        }
    }
}

fn quotas_schema() -> Value {
    let n = json!({"type": "integer", "minimum": 0, "maximum": 1_000_000});
    json!({"type": "object", "additionalProperties": false, "properties": {
        "max_formations": n, "max_peers_per_formation": n, "max_documents_per_formation": n,
        "max_cdc_sinks": n, "max_enrollments_per_hour": n, "max_api_tokens": n}})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrg {
    org_id: String,
    display_name: String,
    #[serde(default)]
    quotas: Option<QuotasDto>,
}

fn create_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["org_id", "display_name"],
        "properties": {
            "org_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"},
            "display_name": {"type": "string", "minLength": 1, "maxLength": 256},
            "quotas": quotas_schema()}})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchOrg {
    display_name: Option<String>,
    quotas: Option<QuotasDto>,
}

fn patch_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": {
        "display_name": {"type": "string", "minLength": 1, "maxLength": 256},
        "quotas": quotas_schema()}})
}

#[derive(Serialize)]
pub(crate) struct QuotasOut {
    max_formations: u32,
    max_peers_per_formation: u32,
    max_documents_per_formation: u32,
    max_cdc_sinks: u32,
    max_enrollments_per_hour: u32,
    max_api_tokens: u32,
}

impl From<Quotas> for QuotasOut {
    fn from(q: Quotas) -> Self {
        Self {
            max_formations: q.max_formations,
            max_peers_per_formation: q.max_peers_per_formation,
            max_documents_per_formation: q.max_documents_per_formation,
            max_cdc_sinks: q.max_cdc_sinks,
            max_enrollments_per_hour: q.max_enrollments_per_hour,
            max_api_tokens: q.max_api_tokens,
        }
    }
}

#[derive(Serialize)]
struct OrgOut {
    org_id: String,
    display_name: String,
    quotas: QuotasOut,
    /// Unix milliseconds.
    created_at: u64,
}

impl From<Org> for OrgOut {
    fn from(o: Org) -> Self {
        Self {
            org_id: o.org_id,
            display_name: o.display_name,
            quotas: o.quotas.into(),
            created_at: o.created_at_ms,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<CreateOrg>,
) -> Result<(StatusCode, Json<OrgOut>), ApiError> {
    let actor = s.tenancy.authorize_admin(&p, "create orgs").await?;
    let org = s
        .tenancy
        .create_org(
            &actor,
            NewOrg {
                org_id: body.org_id,
                display_name: body.display_name,
                quotas: body.quotas.map(Into::into).unwrap_or_default(),
            },
        )
        .await?;
    // A new org takes its share of the outbox from now on.
    resync(&s).await;
    Ok((StatusCode::CREATED, Json(org.into())))
}

async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Vec<OrgOut>>, ApiError> {
    if let Some(own) = p.own_org() {
        s.tenancy
            .authorize(&p, own, Need::Read, "list orgs")
            .await?;
    }
    let orgs = s
        .tenancy
        .list_orgs(&p, page.after, page.limit.unwrap_or(100))
        .await?;
    Ok(Json(orgs.into_iter().map(Into::into).collect()))
}

async fn get_one(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<OrgOut>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "read the org").await?;
    Ok(Json(s.tenancy.get_org(&scope).await?.into()))
}

async fn update(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(body): ApiJson<PatchOrg>,
) -> Result<Json<OrgOut>, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "change the org").await?;
    if body.quotas.is_some() {
        s.tenancy.authorize_admin(&p, "change quotas").await?;
    }
    let patch = OrgPatch {
        display_name: body.display_name,
        quotas: body.quotas.map(Into::into),
    };
    Ok(Json(s.tenancy.patch_org(&scope, patch).await?.into()))
}

async fn remove(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<StatusCode, ApiError> {
    // An org token of another org must learn nothing: scope first (404), then require admin (403).
    s.scope(&p, &ids, Need::Manage, "delete the org").await?;
    let actor = s.tenancy.authorize_admin(&p, "delete orgs").await?;
    let uids = s.tenancy.delete_org(&actor, ids.org()).await?;
    // Syncing the pipeline also drops the org's outbox events and returns its share.
    s.cdc.forget_formations(uids).await;
    if let Err(e) = s.sources.sync().await {
        tracing::warn!(error = %e, "source sync failed");
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn network_routes(book: RouteBook) -> RouteBook {
    book.get(
        "/orgs/{org_id}/network",
        get_network,
        Doc {
            summary: "Networks the org's tokens and devices may come from (empty: any)",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .put(
        "/orgs/{org_id}/network",
        put_network,
        Doc {
            summary:
                "Replace the org's network allow-list `{allow: [\"10.1.0.0/16\", …]}` (empty: any)",
            access: Access::Org(Need::Manage),
            body: Some(|| serde_json::json!({"type": "object", "required": ["allow"], "properties": {
                "allow": {"type": "array", "items": {"type": "string"}}}}),
            ),
            ok: 200,
        },
    )
    .get(
        "/orgs/{org_id}/egress",
        get_egress,
        Doc {
            summary: "Internal networks and hosts the org's sinks and identity providers may reach (the public internet needs no grant)",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
    .put(
        "/orgs/{org_id}/egress",
        put_egress,
        Doc {
            summary: "Grant the org internal networks and hosts for its outbound connections `{networks: [\"10.20.0.0/16\"], hosts: [\"broker.kit\"]}` (gateway admin only)",
            access: Access::GatewayAdmin,
            body: Some(|| serde_json::json!({"type": "object", "additionalProperties": false,
                "properties": {
                    "networks": {"type": "array", "maxItems": 64, "items": {"type": "string"}},
                    "hosts": {"type": "array", "maxItems": 64, "items": {"type": "string"}}}})),
            ok: 200,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressIn {
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
}

fn egress_view(r: &crate::store::EgressRecord) -> serde_json::Value {
    serde_json::json!({"networks": r.networks, "hosts": r.hosts})
}

async fn get_egress(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "read the org's egress")
        .await?;
    Ok(Json(egress_view(&s.tenancy.egress_grant(&scope).await?)))
}

async fn put_egress(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<EgressIn>,
) -> Result<impl IntoResponse, ApiError> {
    // Another org's token learns nothing: scope first (404), then require the admin (403).
    s.scope(&p, &ids, Need::Read, "grant egress").await?;
    let actor = s.tenancy.authorize_admin(&p, "grant egress").await?;
    let nets = if b.networks.is_empty() {
        Vec::new()
    } else {
        crate::config::parse_networks(&b.networks.join(",")).map_err(|e| {
            crate::tenant::TenantError::Invalid {
                field: "networks",
                reason: e,
            }
        })?
    };
    let rec = s
        .tenancy
        .set_egress(&actor, ids.org(), nets, b.hosts)
        .await?;
    Ok(Json(egress_view(&rec)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkIn {
    allow: Vec<String>,
}

async fn get_network(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "read the org's networks")
        .await?;
    s.tenancy.get_org(&scope).await?;
    let nets = s.tenancy.org_networks(scope.org_id()).await?;
    Ok(Json(
        serde_json::json!({"allow": nets.iter().map(ToString::to_string).collect::<Vec<_>>()}),
    ))
}

async fn put_network(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<NetworkIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "change the org's networks")
        .await?;
    let nets = if b.allow.is_empty() {
        Vec::new()
    } else {
        crate::config::parse_networks(&b.allow.join(",")).map_err(|e| {
            crate::tenant::TenantError::Invalid {
                field: "allow",
                reason: e,
            }
        })?
    };
    s.tenancy.set_org_networks(&scope, nets.clone()).await?;
    Ok(Json(
        serde_json::json!({"allow": nets.iter().map(ToString::to_string).collect::<Vec<_>>()}),
    ))
}

async fn resync(s: &AppState) {
    if let Err(e) = s.cdc.sync().await {
        tracing::warn!(error = %e, "sink sync failed");
    }
}
