//! Tenancy CRUD over a real listener, and persistence across restarts.

use reqwest::Method;
use serde_json::json;

use crate::error_code;
use crate::harness::{Gateway, GatewayOpts};

#[tokio::test]
async fn org_formation_and_token_lifecycle_over_http() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    let (s, org) = g
        .admin(
            Method::POST,
            "/orgs",
            Some(json!({"org_id": "acme", "display_name": "Acme Corp"})),
        )
        .await;
    assert_eq!(s, 201, "{org}");
    assert_eq!(org["org_id"], "acme");
    assert_eq!(org["quotas"]["max_formations"], 10);

    let (s, body) = g
        .admin(
            Method::POST,
            "/orgs",
            Some(json!({"org_id": "acme", "display_name": "Again"})),
        )
        .await;
    assert_eq!((s, error_code(&body)), (409, "conflict"));

    let (s, list) = g.admin(Method::GET, "/orgs", None).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);

    let (s, patched) = g
        .admin(
            Method::PATCH,
            "/orgs/acme",
            Some(json!({"display_name": "Acme", "quotas": {"max_formations": 2}})),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["display_name"], "Acme");
    assert_eq!(patched["quotas"]["max_formations"], 2);
    assert_eq!(
        patched["quotas"]["max_cdc_sinks"], 5,
        "untouched quota kept"
    );

    let (s, f) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh-1", "enrollment_policy": "strict"})),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    assert_eq!(f["enrollment_policy"], "Strict");
    assert_eq!(f["mesh_id"].as_str().unwrap().len(), 8);
    assert_eq!(f["authority_public_key"].as_str().unwrap().len(), 64);
    let (s, f2) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh-2"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(f2["enrollment_policy"], "Controlled", "default policy");
    assert_ne!(f["mesh_id"], f2["mesh_id"]);

    let (s, body) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh-3"})),
        )
        .await;
    assert_eq!((s, error_code(&body)), (409, "quota_exceeded"));
    let (_, list) = g.admin(Method::GET, "/orgs/acme/formations", None).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["mesh-1", "mesh-2"],
        "refused formation left nothing behind"
    );

    let (s, page) = g
        .admin(
            Method::GET,
            "/orgs/acme/formations?after=mesh-1&limit=5",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(page.as_array().unwrap().len(), 1);

    let (s, one) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh-1", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(one["mesh_id"], f["mesh_id"]);

    let (s, tok) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, 201, "{tok}");
    let secret = tok["token"].as_str().unwrap().to_owned();
    let (s, _) = g
        .call(Method::GET, "/orgs/acme/formations", Some(&secret), None)
        .await;
    assert_eq!(s, 200, "viewer token reads formations");
    let (_, toks) = g.admin(Method::GET, "/orgs/acme/api-tokens", None).await;
    assert_eq!(toks.as_array().unwrap().len(), 1);
    assert!(
        !toks.to_string().contains(&secret),
        "listing never shows the secret"
    );

    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh-1", None)
        .await;
    assert_eq!(s, 204);
    let (s, body) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh-1", None)
        .await;
    assert_eq!((s, error_code(&body)), (404, "not_found"));
    let (s, _) = g
        .admin(
            Method::GET,
            "/orgs/acme/formations/mesh-1/credentials",
            None,
        )
        .await;
    assert_eq!(s, 404, "deleted formation's key material is gone");

    let token_id = tok["token_id"].as_str().unwrap();
    let (s, _) = g
        .admin(
            Method::DELETE,
            &format!("/orgs/acme/api-tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = g
        .call(Method::GET, "/orgs/acme/formations", Some(&secret), None)
        .await;
    assert_eq!(s, 401, "revoked token stops working at once");
}

#[tokio::test]
async fn deleting_an_org_removes_everything_it_owns_and_a_recreated_org_inherits_nothing() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh-1").await;
    let (_, tok) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "ops", "role": "org-admin"})),
        )
        .await;
    let secret = tok["token"].as_str().unwrap().to_owned();

    let (s, _) = g.admin(Method::DELETE, "/orgs/acme", None).await;
    assert_eq!(s, 204);
    let (s, _) = g.admin(Method::GET, "/orgs/acme", None).await;
    assert_eq!(s, 404);
    let (s, _) = g.call(Method::GET, "/orgs/acme", Some(&secret), None).await;
    assert_eq!(s, 401, "the org's tokens died with it");

    let (s, _) = g
        .admin(
            Method::POST,
            "/orgs",
            Some(json!({"org_id": "acme", "display_name": "New Acme"})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, list) = g.admin(Method::GET, "/orgs/acme/formations", None).await;
    assert_eq!(list, json!([]), "no orphaned formation resurfaces");
    let (_, toks) = g.admin(Method::GET, "/orgs/acme/api-tokens", None).await;
    assert_eq!(toks, json!([]));
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["org.create"],
        "the old org's history stays with the old org"
    );
}

#[tokio::test]
async fn state_survives_a_restart_and_tokens_keep_working() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    let (_, f) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh-1"})),
        )
        .await;
    let (_, creds) = g
        .admin(
            Method::GET,
            "/orgs/acme/formations/mesh-1/credentials",
            None,
        )
        .await;
    let (_, tok) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "ops", "role": "operator"})),
        )
        .await;
    let secret = tok["token"].as_str().unwrap().to_owned();

    g.restart().await;

    let (s, f_after) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh-1", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(f_after, f);
    let (_, creds_after) = g
        .admin(
            Method::GET,
            "/orgs/acme/formations/mesh-1/credentials",
            None,
        )
        .await;
    assert_eq!(
        creds_after, creds,
        "the sealed genesis reopens to the same credentials"
    );
    let (s, _) = g
        .call(Method::GET, "/orgs/acme/formations", Some(&secret), None)
        .await;
    assert_eq!(s, 200);
    let (_, ready) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["keys"]["records_checked"], 1);
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit?limit=2", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
    assert!(audit["next_before"].is_u64());
}
