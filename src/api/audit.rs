//! `/orgs/{org_id}/audit`: the org's audit log, newest first, paged.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiQuery, Caller, Ids};
use super::{ApiError, AppState};
use crate::tenant::{AuditEntry, Need};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.get(
        "/orgs/{org_id}/audit",
        list,
        Doc {
            summary: "Audit log, newest first; ?before=<seq>&limit=<n> (at most 1000)",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 200,
        },
    )
    .get(
        "/audit",
        list_all,
        Doc {
            summary: "The whole audit log, gateway-wide entries (key operations, admin token) included; newest first",
            access: Access::GatewayAdmin,
            body: None,
            ok: 200,
        },
    )
}

async fn list_all(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<PageOut>, ApiError> {
    let actor = s
        .tenancy
        .authorize_admin(&p, "read the gateway audit log")
        .await?;
    let page = s
        .tenancy
        .audit_page_all(&actor, q.before, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(PageOut {
        entries: page.entries.into_iter().map(Into::into).collect(),
        next_before: page.next_before,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct EntryOut {
    seq: u64,
    time: u64,
    actor_id: String,
    actor_role: String,
    action: String,
    target: String,
    outcome: String,
    hash: String,
}

impl From<AuditEntry> for EntryOut {
    fn from(e: AuditEntry) -> Self {
        Self {
            seq: e.seq,
            time: e.time_ms,
            actor_id: e.actor_id,
            actor_role: e.actor_role,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            hash: hex::encode(e.hash),
        }
    }
}

#[derive(Serialize)]
struct PageOut {
    entries: Vec<EntryOut>,
    next_before: Option<u64>,
}

async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<PageOut>, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "read the audit log")
        .await?;
    let page = s
        .tenancy
        .audit_page(&scope, q.before, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(PageOut {
        entries: page.entries.into_iter().map(Into::into).collect(),
        next_before: page.next_before,
    }))
}
