//! Who the caller is: lets the operator UI show each role only the controls it may use.

use axum::Json;
use serde_json::{json, Value};

use super::book::{Access, Doc, RouteBook};
use super::extract::Caller;
use crate::tenant::{Principal, Role};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.get(
        "/whoami",
        whoami,
        Doc {
            summary: "The caller's identity: admin, or an org token's org, role and token id",
            access: Access::AnyToken,
            body: None,
            ok: 200,
        },
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
            "token_id": token_id,
            // Ingest tokens only append changes; the UI tells their holder so.
            "ui": role != Role::Ingest,
        }),
    })
}
