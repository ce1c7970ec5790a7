//! OIDC enrollment against a real OpenID provider (panva/oidc-provider, started by the
//! harness): tokens verified locally, claim rules, cached keys while the provider is down,
//! fail-closed past the staleness limit, key rotation, opaque-token introspection.

use peat_gateway::mesh::{MeshCertificate, MeshTier};
use reqwest::Method;
use serde_json::{json, Value};

use crate::enroll::{device, enroll_json, formation, now_ms, request, ENROLL};
use crate::harness::service::{self, Service};
use crate::harness::Gateway;

const AUD: &str = "urn:peat:gateway";

async fn token_for(idp: &Service, client: &str, resource: &str) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("{}/token", idp.url("http")))
        .basic_auth(client, Some(format!("secret-{client}")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", "enroll"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token for {client}: {r}"))
        .to_owned()
}

/// The provider registered with the org, plus the two claim rules every test uses.
async fn register(g: &Gateway, idp: &Service, extra: Value) -> Value {
    let mut body = json!({"issuer": idp.url("http"), "audience": AUD, "clock_skew_secs": 0,
        "min_refresh_secs": 1});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, created) = g.admin(Method::POST, "/orgs/acme/idps", Some(body)).await;
    assert_eq!(s, 201, "{created}");
    for rule in [
        json!({"priority": 10, "effect": "deny", "conditions": [{"claim": "groups", "op": "contains", "value": "banned"}]}),
        json!({"priority": 20, "conditions": [{"claim": "groups", "op": "contains", "value": "field-ops"},
            {"claim": "unit.clearance", "op": "in", "value": [1, 2, 3]}],
            "tier": "Tactical", "permissions": ["RELAY", "EMERGENCY"], "description": "field units"}),
    ] {
        let (s, r) = g
            .admin(Method::POST, "/orgs/acme/policy-rules", Some(rule))
            .await;
        assert_eq!(s, 201, "{r}");
    }
    created
}

fn reason(body: &Value) -> &str {
    body["reason"].as_str().unwrap_or("")
}

/// Replaces a character in the middle of the signature (the last one can be padding bits).
fn tamper(token: &str) -> String {
    let sig_start = token.rfind('.').unwrap() + 1;
    let mid = sig_start + (token.len() - sig_start) / 2;
    let mut b = token.as_bytes().to_vec();
    b[mid] = if b[mid] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

fn with_alg_none(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{payload}.")
}

#[tokio::test]
async fn provider_tokens_enroll_through_claim_rules_and_bad_tokens_are_refused() {
    let idp = service::oidc().await;
    let (g, mesh_id, authority) = formation("Controlled", &[]).await;
    let created = register(&g, &idp, json!({})).await;
    assert!(
        created["keys_fetched_at"].is_u64(),
        "keys cached at registration: {created}"
    );

    let alpha = token_for(&idp, "device-alpha", AUD).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(
            &device(0x91),
            &mesh_id,
            "alpha-1",
            MeshTier::Tactical,
            &alpha,
        ),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let cert =
        MeshCertificate::decode(&hex::decode(body["certificate"].as_str().unwrap()).unwrap())
            .unwrap();
    cert.verify_signature().unwrap();
    assert_eq!(hex::encode(cert.issuer), authority);
    assert_eq!(
        (cert.fields.tier, cert.fields.permissions.bits()),
        (MeshTier::Tactical, 0x03)
    );

    // ES256 from the same provider.
    let ec = token_for(&idp, "device-ec", AUD).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x92), &mesh_id, "echo-1", MeshTier::Edge, &ec),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    let cases = [
        (
            token_for(&idp, "device-alpha", "urn:someone:else").await,
            "token audience is not urn:peat:gateway",
        ),
        (
            token_for(&idp, "device-banned", AUD).await,
            "denies this identity",
        ),
        (
            token_for(&idp, "device-nobody", AUD).await,
            "no claim rule matches",
        ),
        (tamper(&alpha), "token signature does not verify"),
        (with_alg_none(&alpha), "alg none"),
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_owned(), "issuer"),
    ];
    for (n, (token, want)) in cases.iter().enumerate() {
        let req = request(
            &device(0xa0 + n as u8),
            &mesh_id,
            &format!("bad-{n}"),
            MeshTier::Edge,
            token,
        );
        let (s, body) = enroll_json(&g, ENROLL, &req).await;
        assert_eq!(s, 403, "case {n}: {body}");
        assert!(
            reason(&body).contains(want),
            "case {n}: wanted '{want}' in {body}"
        );
    }

    // Expired: a two-second token, used after it lapsed (no skew allowed here).
    let short = token_for(&idp, "device-short", AUD).await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0xb1), &mesh_id, "late", MeshTier::Edge, &short),
    )
    .await;
    assert_eq!((s, reason(&body)), (403, "token expired"), "{body}");

    // The dry-run evaluator agrees with what enrollment did.
    let (s, v) = g
        .admin(
            Method::POST,
            "/orgs/acme/policy-rules/evaluate",
            Some(json!({"claims": {"groups": ["field-ops"], "unit": {"clearance": 2}}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["decision"].as_str(), v["tier"].as_str()),
        (Some("allow"), Some("Tactical"))
    );
    let (_, v) = g
        .admin(
            Method::POST,
            "/orgs/acme/policy-rules/evaluate",
            Some(json!({"claims": {"groups": ["x"]}})),
        )
        .await;
    assert_eq!(v["decision"], "deny");

    let (_, inv) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/certificates", None)
        .await;
    let via: Vec<&str> = inv["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["granted_via"].as_str().unwrap())
        .collect();
    assert!(
        via.iter()
            .any(|v| v.starts_with(&format!("oidc:{}#device-alpha", idp.url("http")))),
        "{via:?}"
    );
    let (_, audit) = g
        .admin(Method::GET, "/orgs/acme/audit?limit=1000", None)
        .await;
    let text = audit.to_string();
    assert!(
        text.contains("token expired") && text.contains("denies this identity"),
        "{text}"
    );
    assert!(!text.contains(&alpha) && !g.all_output().contains(&alpha));
}

#[tokio::test]
async fn cached_keys_serve_while_the_provider_is_down_then_enrollment_fails_closed() {
    let mut idp = service::oidc().await;
    let (g, mesh_id, _) = formation("Controlled", &[]).await;
    register(&g, &idp, json!({"max_staleness_secs": 4})).await;
    let alpha = token_for(&idp, "device-alpha", AUD).await;
    let fetched = now_ms();

    idp.kill();
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(
            &device(0xc1),
            &mesh_id,
            "offline-1",
            MeshTier::Tactical,
            &alpha,
        ),
    )
    .await;
    assert_eq!(s, 200, "provider down, keys cached: {body}");

    // Past the staleness limit the gateway asks again, cannot reach it, and refuses.
    let wait = (fetched + 4_500).saturating_sub(now_ms());
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(
            &device(0xc2),
            &mesh_id,
            "offline-2",
            MeshTier::Tactical,
            &alpha,
        ),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        reason(&body).contains("allowed 4 s") && reason(&body).contains("cannot be reached"),
        "{body}"
    );
    let (_, idps) = g.admin(Method::GET, "/orgs/acme/idps", None).await;
    assert!(
        idps["idps"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{idps}"
    );

    // Back with new signing keys (a rotation): the unknown key id triggers a refresh.
    idp.start_again().await;
    // Refreshes are rate-limited (min_refresh_secs = 1): wait out the last failed attempt.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let rotated = token_for(&idp, "device-alpha", AUD).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(
            &device(0xc3),
            &mesh_id,
            "online-again",
            MeshTier::Tactical,
            &rotated,
        ),
    )
    .await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn opaque_tokens_are_introspected_with_the_sealed_client_secret() {
    let idp = service::oidc().await;
    let (g, mesh_id, _) = formation("Controlled", &[]).await;
    let created = register(
        &g,
        &idp,
        json!({"introspection": true, "client_id": "gateway", "client_secret": "secret-gateway"}),
    )
    .await;
    assert_eq!(created["client_secret"], "[sealed]");
    let opaque = token_for(&idp, "device-alpha", "urn:peat:opaque").await;
    assert!(!opaque.contains('.'), "an opaque token: {opaque}");
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(
            &device(0xd1),
            &mesh_id,
            "opaque-1",
            MeshTier::Tactical,
            &opaque,
        ),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(
            &device(0xd2),
            &mesh_id,
            "opaque-2",
            MeshTier::Tactical,
            "not-a-real-token",
        ),
    )
    .await;
    assert_eq!(s, 403);
    assert!(reason(&body).contains("not active"), "{body}");
    g.assert_data_dir_lacks(b"secret-gateway", "IdP client secret");
    let check = g.command().arg("check-config").output().unwrap();
    assert!(!String::from_utf8_lossy(&check.stdout).contains("secret-gateway"));
}
