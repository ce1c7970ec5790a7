//! `/orgs/{org_id}/audit`: the org's audit log, newest first, paged.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::book::{Access, Doc, RouteBook};
use super::extract::{ApiQuery, Caller, Ids};
use super::{ApiError, AppState};
use serde_json::{json, Value};

use crate::tenant::{AuditEntry, AuditFilter, ChainReport, Need};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.get(
        "/orgs/{org_id}/audit",
        list,
        Doc {
            summary: "Audit log, newest first; ?before=<seq>&limit=<n> (at most 1000)&actor=<part of the actor id>&action=<prefix>",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 200,
        },
    )
    .get(
        "/audit",
        list_all,
        Doc {
            summary: "The whole audit log, gateway-wide entries (key operations, admin token) included; newest first; same query as the org's",
            access: Access::GatewayAdmin,
            body: None,
            ok: 200,
        },
    )
    .get(
        "/orgs/{org_id}/audit/verify",
        verify_org,
        Doc {
            summary: "Walks the hash chain that links every audit entry (all orgs share it): intact, or the first broken link",
            access: Access::Org(Need::Manage),
            body: None,
            ok: 200,
        },
    )
    .get(
        "/audit/verify",
        verify_all,
        Doc {
            summary: "Walks the whole audit hash chain: intact, or the first broken link",
            access: Access::GatewayAdmin,
            body: None,
            ok: 200,
        },
    )
}

fn report(r: ChainReport) -> Json<Value> {
    Json(match r {
        ChainReport::Intact { records, from_seq } => {
            json!({"intact": true, "records": records, "from_seq": from_seq})
        }
        ChainReport::Broken {
            seq,
            reason,
            checked,
        } => json!({"intact": false, "broken_at_seq": seq, "reason": reason, "checked": checked}),
    })
}

async fn verify_org(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "verify the audit log")
        .await?;
    Ok(report(s.tenancy.verify_audit_chain(scope.actor()).await?))
}

async fn verify_all(State(s): State<AppState>, Caller(p): Caller) -> Result<Json<Value>, ApiError> {
    let actor = s
        .tenancy
        .authorize_admin(&p, "verify the audit log")
        .await?;
    Ok(report(s.tenancy.verify_audit_chain(&actor).await?))
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
        .audit_page_all(&actor, q.before, q.limit.unwrap_or(100), q.filter())
        .await?;
    Ok(Json(PageOut {
        entries: page.entries.into_iter().map(Into::into).collect(),
        next_before: page.next_before,
        scanned: page.scanned,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<u64>,
    limit: Option<usize>,
    actor: Option<String>,
    action: Option<String>,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        AuditFilter {
            actor: given(&self.actor),
            action: given(&self.action),
        }
    }
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
    scanned: usize,
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
        .audit_page(&scope, q.before, q.limit.unwrap_or(100), q.filter())
        .await?;
    Ok(Json(PageOut {
        entries: page.entries.into_iter().map(Into::into).collect(),
        next_before: page.next_before,
        scanned: page.scanned,
    }))
}
