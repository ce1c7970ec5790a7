//! The Vault provider against a real OpenBao dev server on a loopback port of its own.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::service::{self, Service};
use crate::harness::{Gateway, GatewayOpts};

async fn bao(svc: &Service, method: Method, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}/v1/{path}", svc.url("http")))
        .header("X-Vault-Token", "root")
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// OpenBao healthy, with Transit mounted and the key `peat-gateway` created.
async fn transit() -> Service {
    let svc = service::openbao().await;
    // The dev server answers TCP before its API is up.
    let mut ready = false;
    for _ in 0..100 {
        if bao(&svc, Method::GET, "sys/health", json!({})).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "openbao did not become healthy");
    let (s, _) = bao(
        &svc,
        Method::POST,
        "sys/mounts/transit",
        json!({"type": "transit"}),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = bao(
        &svc,
        Method::POST,
        "transit/keys/peat-gateway",
        json!({"type": "aes256-gcm96"}),
    )
    .await;
    assert!(s == 200 || s == 204);
    svc
}

#[tokio::test]
async fn formation_keys_wrapped_by_openbao_transit_survive_restarts_and_fail_closed() {
    let svc = transit().await;

    // PEAT_VAULT_ADDR alone selects the provider (the seed's precedence), no PEAT_KEK needed.
    let opts = GatewayOpts::standard()
        .without("PEAT_KEK")
        .with("PEAT_VAULT_ADDR", &svc.url("http"))
        .with("PEAT_VAULT_TOKEN", "root");
    let mut g = Gateway::start(opts.clone()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    let (s, creds) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(s, 200, "{creds}");
    let (_, ready) = g.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready["checks"]["keys"]["provider"], "vault", "{ready}");
    assert_eq!(
        ready["checks"]["keys"]["kek_id"],
        "vault:127.0.0.1/transit/peat-gateway"
    );

    g.restart_with(opts.clone()).await;
    let (_, again) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(again["formation_secret"], creds["formation_secret"]);
    assert!(!g.all_output().contains("token=root"));
    assert!(g.stop());

    // A wrong token, or a missing key, stops start-up with what to check.
    let out = g
        .command()
        .env("PEAT_VAULT_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Transit key") || err.contains("permission denied"),
        "{err}"
    );
    let out = g
        .command()
        .env("PEAT_VAULT_TRANSIT_KEY", "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PEAT_VAULT_TRANSIT_KEY"));
    // Without credentials the configuration itself is refused.
    let out = g.command().env_remove("PEAT_VAULT_TOKEN").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PEAT_VAULT_ROLE_ID"));
}

#[tokio::test]
async fn an_approle_login_is_enough_and_its_secret_never_shows() {
    let svc = transit().await;
    let policy = r#"path "transit/encrypt/peat-gateway" { capabilities = ["update"] }
path "transit/decrypt/peat-gateway" { capabilities = ["update"] }
path "transit/keys/peat-gateway" { capabilities = ["read"] }"#;
    assert_eq!(
        bao(
            &svc,
            Method::PUT,
            "sys/policies/acl/gateway",
            json!({"policy": policy})
        )
        .await
        .0,
        204
    );
    assert_eq!(
        bao(
            &svc,
            Method::POST,
            "sys/auth/approle",
            json!({"type": "approle"})
        )
        .await
        .0,
        204
    );
    let (s, _) = bao(
        &svc,
        Method::POST,
        "auth/approle/role/gateway",
        json!({"token_policies": ["gateway"]}),
    )
    .await;
    assert_eq!(s, 204);
    let (_, r) = bao(
        &svc,
        Method::GET,
        "auth/approle/role/gateway/role-id",
        json!({}),
    )
    .await;
    let role_id = r["data"]["role_id"].as_str().unwrap().to_owned();
    let (_, r) = bao(
        &svc,
        Method::POST,
        "auth/approle/role/gateway/secret-id",
        json!({}),
    )
    .await;
    let secret_id = r["data"]["secret_id"].as_str().unwrap().to_owned();

    let opts = GatewayOpts::standard()
        .without("PEAT_KEK")
        .with("PEAT_KEY_PROVIDER", "vault")
        .with("PEAT_VAULT_ADDR", &svc.url("http"))
        .with("PEAT_VAULT_ROLE_ID", &role_id)
        .with("PEAT_VAULT_SECRET_ID", &secret_id);
    let g = Gateway::start(opts).await;
    g.create_org("acme", "Acme").await;
    let (s, f) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh"})),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    let (s, _) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(s, 200);
    assert!(!g.all_output().contains(&secret_id));
    let check = g.command().arg("check-config").output().unwrap();
    assert!(!String::from_utf8_lossy(&check.stdout).contains(&secret_id));
}
