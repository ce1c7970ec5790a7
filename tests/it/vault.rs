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
    transit_on(&svc).await;
    svc
}

/// Waits for the server's API, then mounts Transit and creates the key.
async fn transit_on(svc: &Service) {
    // The dev server answers TCP before its API is up.
    let mut ready = false;
    for _ in 0..100 {
        if bao(svc, Method::GET, "sys/health", json!({})).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "openbao did not become healthy");
    let (s, _) = bao(
        svc,
        Method::POST,
        "sys/mounts/transit",
        json!({"type": "transit"}),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = bao(
        svc,
        Method::POST,
        "transit/keys/peat-gateway",
        json!({"type": "aes256-gcm96"}),
    )
    .await;
    assert!(s == 200 || s == 204);
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
    let (_, ready) = g.admin(Method::GET, "/ready", None).await;
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

/// `/ready` until `ok(body)` holds or 20 s pass; returns the last status and body.
async fn ready_when(g: &Gateway, ok: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (s, body) = g.admin(Method::GET, "/ready", None).await;
        if ok(s, &body) || std::time::Instant::now() > deadline {
            return (s, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ready_reports_a_vault_that_went_away_after_start_up_and_its_return() {
    let mut svc = transit().await;
    let opts = GatewayOpts::standard()
        .without("PEAT_KEK")
        .with("PEAT_VAULT_ADDR", &svc.url("http"))
        .with("PEAT_VAULT_TOKEN", "root")
        .with("PEAT_KEY_PROBE_SECS", "1");
    let g = Gateway::start(opts).await;
    let (s, ready) = ready_when(&g, |_, b| b["checks"]["keys"]["probe"]["ok"] == true).await;
    assert_eq!(s, 200, "{ready}");
    assert!(ready["checks"]["keys"]["probe"]["round_trip_ms"].is_u64());

    svc.kill();
    let (s, ready) = ready_when(&g, |s, _| s == 503).await;
    assert_eq!(s, 503, "{ready}");
    let keys = &ready["checks"]["keys"];
    assert_eq!(keys["ok"], false);
    assert_eq!(keys["probe"]["ok"], false);
    let reason = keys["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("failed its last probe"), "{reason}");
    assert!(
        !reason.contains("root"),
        "the token must not show: {reason}"
    );
    let m = g.metrics().await;
    assert!(m.contains("key_provider_up 0"), "{m}");
    assert!(!m.contains("key_probe_failures_total 0\n"), "{m}");

    // Back (a fresh dev server with the same key name): the next probe turns ready again.
    svc.start_again().await;
    transit_on(&svc).await;
    let (s, ready) = ready_when(&g, |s, _| s == 200).await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["checks"]["keys"]["probe"]["consecutive_failures"], 0);
}
