//! Enrollment end to end: proof of possession, bootstrap tokens, approvals, revocation,
//! renewal and abuse limits, over HTTP against the real binary.

use ed25519_dalek::SigningKey;
use peat_gateway::mesh::{
    EnrollmentRequest, EnrollmentResponse, EnrollmentStatus, MeshCertificate, MeshTier,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::{Gateway, GatewayOpts};

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn device(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// A gateway with org `acme` and formation `mesh` under `policy`; returns it and the mesh id.
pub async fn formation(policy: &str, extra: &[(&str, &str)]) -> (Gateway, String, String) {
    let mut opts = GatewayOpts::standard().with("PEAT_ENROLL_RATE_PER_MIN", "10000");
    for (k, v) in extra {
        opts = opts.with(k, v);
    }
    let g = Gateway::start(opts).await;
    g.create_org("acme", "Acme").await;
    let (s, f) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh", "enrollment_policy": policy})),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    let mesh_id = f["mesh_id"].as_str().unwrap().to_owned();
    let authority = f["authority_public_key"].as_str().unwrap().to_owned();
    (g, mesh_id, authority)
}

pub async fn boot_token(g: &Gateway, body: Value) -> String {
    let (s, t) = g.admin(Method::POST, "/orgs/acme/tokens", Some(body)).await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().unwrap().to_owned()
}

pub fn request(
    key: &SigningKey,
    mesh_id: &str,
    node: &str,
    tier: MeshTier,
    token: &str,
) -> EnrollmentRequest {
    EnrollmentRequest::signed(key, mesh_id, node, tier, token.as_bytes(), now_ms()).unwrap()
}

pub fn as_json(r: &EnrollmentRequest) -> Value {
    json!({
        "public_key": hex::encode(r.subject), "mesh_id": r.mesh_id, "node_id": r.node_id,
        "tier": r.requested_tier.name(), "token": String::from_utf8_lossy(&r.token),
        "timestamp_ms": r.timestamp_ms, "signature": hex::encode(r.signature),
    })
}

pub async fn enroll_json(g: &Gateway, path: &str, r: &EnrollmentRequest) -> (u16, Value) {
    g.call(Method::POST, path, None, Some(as_json(r))).await
}

pub const ENROLL: &str = "/orgs/acme/formations/mesh/enroll";

/// An Open-formation enrollment of device `n` (no token).
async fn enroll_open(g: &Gateway, mesh_id: &str, n: u8) -> (u16, Value) {
    enroll_json(
        g,
        ENROLL,
        &request(&device(n), mesh_id, "n", MeshTier::Edge, ""),
    )
    .await
}

/// Replaces a formation's enrollment settings (as the admin).
async fn put_settings(g: &Gateway, app: &str, body: Value) -> (u16, Value) {
    g.admin(
        Method::PUT,
        &format!("/orgs/acme/formations/{app}/enrollment-settings"),
        Some(body),
    )
    .await
}

/// Sets one of org acme's quotas (as the admin).
pub async fn set_quota(g: &Gateway, quota: &str, value: u64) {
    let (s, b) = g
        .admin(
            Method::PATCH,
            "/orgs/acme",
            Some(json!({"quotas": {quota: value}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn enroll_binary(g: &Gateway, r: &EnrollmentRequest) -> (u16, EnrollmentResponse) {
    let resp = g
        .req(Method::POST, ENROLL, None)
        .header("content-type", "application/octet-stream")
        .header("accept", "application/octet-stream")
        .body(r.encode().unwrap())
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let bytes = resp.bytes().await.unwrap();
    (s, EnrollmentResponse::decode(&bytes).unwrap())
}

fn cert_of(body: &Value) -> MeshCertificate {
    MeshCertificate::decode(&hex::decode(body["certificate"].as_str().unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn a_bootstrap_token_yields_a_certificate_that_verifies_with_the_authority_key() {
    let (g, mesh_id, authority) = formation("Controlled", &[]).await;
    let token = boot_token(
        &g,
        json!({"app_id": "mesh", "label": "truck 7", "max_uses": 2, "tier": "Tactical"}),
    )
    .await;
    assert!(token.starts_with("peb_"));
    let key = device(0x21);

    // JSON request, JSON answer.
    let req = request(&key, &mesh_id, "tac-west-2", MeshTier::Tactical, &token);
    let (s, body) = enroll_json(&g, ENROLL, &req).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["authority_public_key"], authority);
    assert!(
        body.get("formation_secret").is_none(),
        "not delivered by default: {body}"
    );
    let cert = cert_of(&body);
    cert.verify_signature().unwrap();
    assert_eq!(hex::encode(cert.issuer), authority);
    assert_eq!(cert.fields.subject, key.verifying_key().to_bytes());
    assert_eq!(
        (cert.fields.mesh_id.as_str(), cert.fields.node_id.as_str()),
        (mesh_id.as_str(), "tac-west-2")
    );
    assert_eq!(cert.fields.tier, MeshTier::Tactical);
    assert_eq!(cert.fields.permissions.bits(), 0x03);
    assert_eq!(
        cert.fields.expires_at_ms - cert.fields.issued_at_ms,
        86_400_000
    );
    assert!(cert.is_valid_at(now_ms()));

    // Binary request, binary answer; asking for Edge caps the tier at Edge.
    let other = device(0x22);
    let req = request(&other, &mesh_id, "edge-9", MeshTier::Edge, &token);
    let (s, resp) = enroll_binary(&g, &req).await;
    assert_eq!(s, 200);
    assert_eq!(resp.status, EnrollmentStatus::Approved);
    let c = resp.certificate.unwrap();
    c.verify_signature().unwrap();
    assert_eq!(c.fields.tier, MeshTier::Edge);
    assert_eq!(c.fields.subject, other.verifying_key().to_bytes());

    // Two uses: the third is refused with the reason, in both formats.
    let req = request(&device(0x23), &mesh_id, "n3", MeshTier::Tactical, &token);
    let (s, resp) = enroll_binary(&g, &req).await;
    assert_eq!(s, 403);
    assert_eq!(
        resp.status,
        EnrollmentStatus::Denied {
            reason: "bootstrap token has no uses left".into()
        }
    );
    // A made-up token of the right shape.
    let fake = format!("{}_{}", &token[..20], "x".repeat(43));
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x24), &mesh_id, "n4", MeshTier::Edge, &fake),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (403, Some("invalid bootstrap token"))
    );

    // The inventory lists both certificates; the token shows its uses; no secret leaks.
    let (_, inv) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/certificates", None)
        .await;
    let rows = inv["certificates"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{inv}");
    assert!(
        rows.iter()
            .all(|r| r["state"] == "valid"
                && r["granted_via"].as_str().unwrap().starts_with("token:"))
    );
    let (_, list) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/tokens", None)
        .await;
    assert_eq!(list["tokens"][0]["uses"], 2);
    assert_eq!(list["tokens"][0]["state"], "used-up");
    assert!(!list.to_string().contains(&token));
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    let text = audit.to_string();
    assert!(text.contains("approved: tier Tactical"), "{text}");
    assert!(
        text.contains("denied: bootstrap token has no uses left"),
        "{text}"
    );
    assert!(!text.contains(&token));
    assert!(!g.all_output().contains(&token[20..]));
    g.assert_data_dir_lacks(&token.as_bytes()[21..], "bootstrap token secret");
}

#[tokio::test]
async fn a_one_use_token_admits_exactly_one_of_many_concurrent_devices() {
    let (g, mesh_id, _) = formation("Controlled", &[]).await;
    let token = boot_token(&g, json!({"app_id": "mesh", "max_uses": 1})).await;
    let g = std::sync::Arc::new(g);
    let mut tasks = Vec::new();
    for n in 0..24u8 {
        let (g, mesh_id, token) = (g.clone(), mesh_id.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let req = request(
                &device(0x40 + n),
                &mesh_id,
                &format!("node-{n}"),
                MeshTier::Edge,
                &token,
            );
            enroll_json(&g, ENROLL, &req).await
        }));
    }
    let mut approved = 0;
    for t in tasks {
        let (s, body) = t.await.unwrap();
        match s {
            200 => approved += 1,
            403 => assert_eq!(body["reason"], "bootstrap token has no uses left"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(approved, 1, "exactly one device is admitted");
}

#[tokio::test]
async fn forged_stale_replayed_foreign_and_malformed_requests_are_refused() {
    let (g, mesh_id, _) = formation("Open", &[]).await;
    let key = device(0x31);

    let good = request(&key, &mesh_id, "open-1", MeshTier::Tactical, "");
    let (s, body) = enroll_json(&g, ENROLL, &good).await;
    assert_eq!(s, 200, "{body}");
    // Open grants Edge by default; asking for Tactical does not raise it.
    assert_eq!(cert_of(&body).fields.tier, MeshTier::Edge);

    let (s, body) = enroll_json(&g, ENROLL, &good).await;
    assert_eq!(s, 403);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("replayed request"),
        "{body}"
    );
    // Narrowing (or widening) the window does not make a used request new.
    for window in [60, 1200, 300] {
        let (s, b) = put_settings(&g, "mesh", json!({"window_secs": window})).await;
        assert_eq!(s, 200, "{b}");
        let (s, body) = enroll_json(&g, ENROLL, &good).await;
        assert_eq!(s, 403, "window {window}: {body}");
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .starts_with("replayed request"),
            "{body}"
        );
    }

    let stale = EnrollmentRequest::signed(
        &key,
        &mesh_id,
        "open-1",
        MeshTier::Edge,
        b"",
        now_ms() - 600_000,
    )
    .unwrap();
    let (s, body) = enroll_json(&g, ENROLL, &stale).await;
    assert_eq!(s, 403);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("check the device clock"),
        "{body}"
    );

    let foreign = request(&key, "E8851543", "open-1", MeshTier::Edge, "");
    let (s, body) = enroll_json(&g, ENROLL, &foreign).await;
    assert_eq!(s, 403);
    assert_eq!(
        body["reason"],
        format!("mesh ID mismatch: expected {mesh_id}, got E8851543")
    );

    // Signed by one key, claiming another: no proof of possession.
    let mut forged = request(&device(0x32), &mesh_id, "open-2", MeshTier::Edge, "");
    forged.subject = device(0x33).verifying_key().to_bytes();
    let (s, body) = enroll_json(&g, ENROLL, &forged).await;
    assert_eq!(s, 403);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("proof of possession"),
        "{body}"
    );

    // Malformed input: 4xx JSON errors, nothing issued.
    let mut trailing = request(&device(0x34), &mesh_id, "open-3", MeshTier::Edge, "")
        .encode()
        .unwrap();
    trailing.push(0);
    for (ctype, body) in [
        ("application/octet-stream", trailing),
        ("application/octet-stream", vec![1, 2, 3]),
        ("application/json", b"{\"public_key\": \"zz\"}".to_vec()),
        ("text/plain", b"hello".to_vec()),
    ] {
        let r = g
            .req(Method::POST, ENROLL, None)
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        assert!(s == 400 || s == 415, "{ctype}: {s} {b}");
        error_code(&b);
    }
    let long = json!({"public_key": hex::encode([7u8; 32]), "mesh_id": mesh_id, "node_id": "n".repeat(256),
        "tier": "Edge", "timestamp_ms": now_ms(), "signature": hex::encode([0u8; 64])});
    let (s, b) = g.call(Method::POST, ENROLL, None, Some(long)).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 255"),
        "{b}"
    );
    let (s, _) = enroll_json(
        &g,
        "/orgs/acme/formations/nope/enroll",
        &request(&key, &mesh_id, "x", MeshTier::Edge, ""),
    )
    .await;
    assert_eq!(s, 404);

    let (_, inv) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/certificates", None)
        .await;
    assert_eq!(
        inv["certificates"].as_array().unwrap().len(),
        1,
        "only the good request got one"
    );
    let m = g.metrics().await;
    assert!(
        m.contains("enroll_decisions_total{decision=\"denied\"} 7"),
        "{m}"
    );
    assert!(
        m.contains("enroll_decisions_total{decision=\"invalid\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn strict_enrollments_wait_for_an_operator_who_approves_or_denies() {
    let (g, mesh_id, authority) = formation("Strict", &[]).await;
    let token = boot_token(&g, json!({"app_id": "mesh", "tier": "Regional"})).await;
    let (alice, bob) = (device(0x51), device(0x52));

    let mut stream = crate::events::open(&g, None).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&alice, &mesh_id, "alice", MeshTier::Regional, &token),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let seen = crate::events::read_events(&mut stream, 1).await;
    let (name, _, data) = seen
        .first()
        .expect("an enrollment event on the live stream");
    assert_eq!(name, "enrollment");
    assert_eq!(
        (
            data["kind"].as_str(),
            data["status"].as_str(),
            data["node_id"].as_str()
        ),
        (Some("decision"), Some("pending"), Some("alice"))
    );
    let poll = body["poll_url"].as_str().unwrap().to_owned();
    let id = body["enrollment_id"].as_str().unwrap().to_owned();
    let (s, _) = enroll_json(
        &g,
        ENROLL,
        &request(&bob, &mesh_id, "bob", MeshTier::Regional, &token),
    )
    .await;
    assert_eq!(s, 202);

    let (_, list) = g
        .admin(Method::GET, "/orgs/acme/enrollments?status=pending", None)
        .await;
    let pending = list["enrollments"].as_array().unwrap();
    assert_eq!(pending.len(), 2, "{list}");
    let bob_id = pending.iter().find(|p| p["node_id"] == "bob").unwrap()["enrollment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, st) = g.call(Method::GET, &poll, None, None).await;
    assert_eq!((s, st["status"].as_str()), (200, Some("pending")));
    // Asking again while pending neither duplicates nor issues.
    let (s, again) = enroll_json(
        &g,
        ENROLL,
        &request(&alice, &mesh_id, "alice", MeshTier::Regional, &token),
    )
    .await;
    assert_eq!(
        (s, again["enrollment_id"].as_str()),
        (202, Some(id.as_str()))
    );

    // A viewer cannot decide; an operator can.
    let (_, viewer) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "v", "role": "viewer"})),
        )
        .await;
    let (s, _) = g
        .call(
            Method::POST,
            &format!("/orgs/acme/enrollments/{id}/approve"),
            viewer["token"].as_str(),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, ok) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/enrollments/{id}/approve"),
            Some(json!({"reason": "known truck"})),
        )
        .await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["status"], "approved");
    let seen = crate::events::read_events(&mut stream, 3).await;
    assert!(
        seen.iter().any(|(n, _, d)| n == "enrollment"
            && d["kind"] == "approval"
            && d["status"] == "approved"),
        "{seen:?}"
    );
    let (s, _) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/enrollments/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(s, 409, "a decision is final");

    let (s, st) = g.call(Method::GET, &poll, None, None).await;
    assert_eq!((s, st["status"].as_str()), (200, Some("approved")));
    let cert = cert_of(&st);
    cert.verify_signature().unwrap();
    assert_eq!(hex::encode(cert.issuer), authority);
    assert_eq!(cert.fields.tier, MeshTier::Regional);
    // The device asking again gets the same certificate.
    let (s, again) = enroll_json(
        &g,
        ENROLL,
        &request(&alice, &mesh_id, "alice", MeshTier::Regional, &token),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["certificate"], st["certificate"]);

    let (s, _) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/enrollments/{bob_id}/deny"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 422, "a denial needs a reason");
    let (s, d) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/enrollments/{bob_id}/deny"),
            Some(json!({"reason": "unknown unit"})),
        )
        .await;
    assert_eq!((s, d["status"].as_str()), (200, Some("denied")));
    let (s, b) = enroll_json(
        &g,
        ENROLL,
        &request(&bob, &mesh_id, "bob", MeshTier::Regional, &token),
    )
    .await;
    assert_eq!(s, 403);
    assert!(
        b["reason"].as_str().unwrap().contains("unknown unit"),
        "{b}"
    );

    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    let text = audit.to_string();
    for needle in [
        "enrollment.approve",
        "enrollment.deny",
        "approved: known truck",
        "denied: unknown unit",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
}

#[tokio::test]
async fn a_revoked_key_is_listed_and_refused_and_renewal_needs_a_current_certificate() {
    let (g, mesh_id, _) = formation("Open", &[]).await;
    let (a, b) = (device(0x61), device(0x62));
    let (_, first) = enroll_json(&g, ENROLL, &request(&a, &mesh_id, "a", MeshTier::Edge, "")).await;
    let (_, _) = enroll_json(&g, ENROLL, &request(&b, &mesh_id, "b", MeshTier::Edge, "")).await;

    // Renewal: same key and node id, a new certificate that lasts longer.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let renew = "/orgs/acme/formations/mesh/renew";
    let (s, renewed) =
        enroll_json(&g, renew, &request(&a, &mesh_id, "a", MeshTier::Edge, "")).await;
    assert_eq!(s, 200, "{renewed}");
    assert!(cert_of(&renewed).fields.expires_at_ms > cert_of(&first).fields.expires_at_ms);
    let (s, body) = enroll_json(
        &g,
        renew,
        &request(&a, &mesh_id, "other-name", MeshTier::Edge, ""),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = enroll_json(
        &g,
        renew,
        &request(&device(0x63), &mesh_id, "c", MeshTier::Edge, ""),
    )
    .await;
    assert_eq!(s, 403);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("no current certificate"),
        "{body}"
    );

    // Revoke b's certificate: its key is refused from now on and listed.
    let fp = b_fingerprint(&g, "b").await;
    let (s, _) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/formations/mesh/certificates/{fp}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 422, "a revocation needs a reason");
    let (s, r) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/formations/mesh/certificates/{fp}/revoke"),
            Some(json!({"reason": "key compromised"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, _) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/formations/mesh/certificates/{fp}/revoke"),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(s, 409);
    let (_, crl) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/revocations", None)
        .await;
    assert_eq!(
        crl["revocations"][0]["public_key"],
        hex::encode(b.verifying_key().to_bytes())
    );
    assert_eq!(crl["documents"][0]["collection"], "revocations");
    assert_eq!(crl["documents"][0]["json"]["reason"], "key compromised");
    let (s, body) = enroll_json(&g, ENROLL, &request(&b, &mesh_id, "b", MeshTier::Edge, "")).await;
    assert_eq!(
        (s, body["status"].as_str(), body["reason"].as_str()),
        (403, Some("revoked"), Some("key compromised"))
    );
    let (s, body) = enroll_json(&g, renew, &request(&b, &mesh_id, "b", MeshTier::Edge, "")).await;
    assert_eq!((s, body["status"].as_str()), (403, Some("revoked")));
    let (_, one) = g
        .admin(
            Method::GET,
            &format!("/orgs/acme/formations/mesh/certificates/{fp}"),
            None,
        )
        .await;
    assert_eq!(one["state"], "revoked");
    assert!(one["certificate_b64"].is_string());

    // Everything of the formation goes with it.
    let token = boot_token(&g, json!({"app_id": "mesh"})).await;
    let token_id = &token[4..20];
    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = g
        .admin(Method::GET, &format!("/orgs/acme/tokens/{token_id}"), None)
        .await;
    assert_eq!(s, 404, "tokens die with their formation");
}

async fn b_fingerprint(g: &Gateway, node: &str) -> String {
    let (_, inv) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/certificates", None)
        .await;
    inv["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node_id"] == node)
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn too_many_attempts_from_one_address_get_429_with_retry_after() {
    let (g, mesh_id, _) = formation("Open", &[("PEAT_ENROLL_RATE_PER_MIN", "3")]).await;
    for n in 0..3u8 {
        let (s, b) = enroll_json(
            &g,
            ENROLL,
            &request(&device(0x70 + n), &mesh_id, "n", MeshTier::Edge, ""),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let r = g
        .req(Method::POST, ENROLL, None)
        .json(&as_json(&request(
            &device(0x7f),
            &mesh_id,
            "n",
            MeshTier::Edge,
            "",
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    let b: Value = r.json().await.unwrap();
    assert_eq!(error_code(&b), "rate_limited");
}

#[tokio::test]
async fn settings_change_validity_and_deliver_the_formation_secret() {
    let (g, mesh_id, _) = formation("Open", &[]).await;
    let (s, b) = put_settings(&g, "mesh", json!({"validity_secs": 5})).await;
    assert_eq!(s, 422, "{b}");
    // An Open formation admits any key: it never hands out the formation secret.
    let (s, b) = put_settings(&g, "mesh", json!({"deliver_formation_secret": true})).await;
    assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("Open"));
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "ctl", "enrollment_policy": "Controlled"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let ctl_mesh = b["mesh_id"].as_str().unwrap().to_owned();
    let (s, b) = put_settings(&g, "ctl", json!({"deliver_formation_secret": true})).await;
    assert_eq!(s, 200, "{b}");
    let tok = boot_token(&g, json!({"app_id": "ctl"})).await;
    let (s, body) = enroll_json(
        &g,
        "/orgs/acme/formations/ctl/enroll",
        &request(&device(0x82), &ctl_mesh, "n", MeshTier::Edge, &tok),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // Plain HTTP: the secret is withheld, and the answer and the audit log say why.
    assert!(body.get("formation_secret").is_none(), "{body}");
    assert!(body["formation_secret_withheld"]
        .as_str()
        .unwrap()
        .contains("not TLS"));
    let (s, b) = put_settings(
        &g,
        "mesh",
        json!({"validity_secs": 3600, "open_tier": "Tactical", "open_permissions": ["RELAY"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, creds) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x81), &mesh_id, "n", MeshTier::Tactical, ""),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let c = cert_of(&body);
    assert_eq!(c.fields.expires_at_ms - c.fields.issued_at_ms, 3_600_000);
    assert_eq!(
        (c.fields.tier, c.fields.permissions.bits()),
        (MeshTier::Tactical, 0x01)
    );
    assert!(body.get("formation_secret").is_none(), "{body}");
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    let text = audit.to_string();
    assert!(
        text.contains("enroll.formation-secret") && text.contains("withheld"),
        "{text}"
    );
    assert!(!text.contains(creds["formation_secret"].as_str().unwrap()));
}

#[tokio::test]
async fn expired_and_revoked_bootstrap_tokens_admit_nobody() {
    let (g, mesh_id, _) = formation("Controlled", &[]).await;
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/tokens",
            Some(json!({"app_id": "mesh", "expires_at": now_ms() - 1})),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, _) = g
        .admin(
            Method::POST,
            "/orgs/acme/tokens",
            Some(json!({"app_id": "nope"})),
        )
        .await;
    assert_eq!(s, 404);
    let short = boot_token(&g, json!({"app_id": "mesh", "expires_at": now_ms() + 1500})).await;
    let revoked = boot_token(&g, json!({"app_id": "mesh"})).await;
    let id = &revoked[4..20];
    let (s, t) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/tokens/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!((s, t["state"].as_str()), (200, Some("revoked")));
    let (s, _) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/tokens/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(s, 409);
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x91), &mesh_id, "r", MeshTier::Edge, &revoked),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (403, Some("bootstrap token revoked"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x92), &mesh_id, "e", MeshTier::Edge, &short),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (403, Some("bootstrap token expired"))
    );
    // A token of this org does not open another formation.
    g.create_formation("acme", "other").await;
    let other = boot_token(&g, json!({"app_id": "other"})).await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x93), &mesh_id, "o", MeshTier::Edge, &other),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (403, Some("invalid bootstrap token"))
    );
}

#[tokio::test]
async fn certificates_and_revocations_are_published_to_the_node_as_peat_documents() {
    use peat_gateway::cdc::source::simulator::Simulator;
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let (g, mesh_id, authority) = formation("Open", &[]).await;
    crate::source::bind_endpoint(&g, &sim.url()).await;
    let (s, _) = put_settings(&g, "mesh", json!({"publish_documents": true})).await;
    assert_eq!(s, 200);
    let key = device(0xe1);
    let subject = hex::encode(key.verifying_key().to_bytes());
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&key, &mesh_id, "tac-1", MeshTier::Edge, ""),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let doc = loop {
        if let Some(d) = sim.document("certificates", &subject) {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certificate document never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let entry: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(entry["subject"], subject);
    assert_eq!(entry["issuer"], authority);
    assert_eq!(
        (entry["node_id"].as_str(), entry["tier"].as_str()),
        (Some("tac-1"), Some("Edge"))
    );
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(entry["cert_data"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        hex::encode(&bytes),
        body["certificate"].as_str().unwrap(),
        "cert_data is authoritative"
    );

    let fp = body["fingerprint"].as_str().unwrap();
    let (s, r) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/formations/mesh/certificates/{fp}/revoke"),
            Some(json!({"reason": "lost in the field"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["published"]["ok"], true, "{r}");
    let rev: Value = serde_json::from_str(&sim.document("revocations", &subject).unwrap()).unwrap();
    assert_eq!(
        (rev["subject"].as_str(), rev["reason"].as_str()),
        (Some(subject.as_str()), Some("lost in the field"))
    );

    // Republishing writes the revocation again and no revoked certificate.
    let (s, p) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations/mesh/certificates/publish",
            None,
        )
        .await;
    assert_eq!((s, p["written"].as_u64()), (200, Some(1)), "{p}");
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    let published: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "certificates.publish")
        .collect();
    assert!(
        published.iter().any(|e| e["actor_id"] == "system")
            && published.iter().any(|e| e["actor_id"] == "admin"),
        "automatic and manual publications are audited: {published:?}"
    );
}

#[tokio::test]
async fn junk_requests_do_not_spend_the_orgs_enrollment_quota() {
    let (g, mesh_id, _) = formation("Open", &[]).await;
    set_quota(&g, "max_enrollments_per_hour", 3).await;
    // Well-formed requests that do not verify: forged signatures, a foreign mesh, stale.
    for n in 0..6u8 {
        let mut j = as_json(&request(
            &device(0x90 + n),
            &mesh_id,
            "n",
            MeshTier::Edge,
            "",
        ));
        match n % 3 {
            0 => j["signature"] = json!(hex::encode([n; 64])),
            1 => j["mesh_id"] = json!("not-this-mesh"),
            _ => j["timestamp_ms"] = json!(now_ms() - 3_600_000),
        }
        let (s, b) = g.call(Method::POST, ENROLL, None, Some(j)).await;
        assert_eq!(s, 403, "junk is denied, not counted against the org: {b}");
    }
    for n in 0..3u8 {
        let (s, b) = enroll_open(&g, &mesh_id, 0xa0 + n).await;
        assert_eq!(s, 200, "valid request {n} within the quota of 3: {b}");
    }
    let (s, b) = enroll_open(&g, &mesh_id, 0xaf).await;
    assert_eq!((s, error_code(&b)), (429, "rate_limited"), "{b}");
}

#[tokio::test]
async fn a_formation_admits_at_most_its_quota_of_peers() {
    let (g, mesh_id, _) = formation("Open", &[]).await;
    set_quota(&g, "max_peers_per_formation", 2).await;
    for n in 0..2u8 {
        let (s, b) = enroll_open(&g, &mesh_id, 0xc0 + n).await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = enroll_open(&g, &mesh_id, 0xcf).await;
    assert_eq!((s, error_code(&b)), (409, "quota_exceeded"), "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_peers_per_formation"));
    // A known device enrolling again is no new peer.
    let (s, b) = enroll_open(&g, &mesh_id, 0xc0).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_formation_created_again_under_its_name_signs_with_its_new_authority() {
    let (g, mesh_id, authority) = formation("Open", &[]).await;
    let (s, r) = enroll_binary(
        &g,
        &request(&device(0x31), &mesh_id, "first", MeshTier::Edge, ""),
    )
    .await;
    assert_eq!((s, r.status), (200, EnrollmentStatus::Approved));
    let first = r.certificate.unwrap();
    assert_eq!(hex::encode(first.issuer), authority);

    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh", None)
        .await;
    assert_eq!(s, 204);
    let (s, f) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh", "enrollment_policy": "Open"})),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    let (new_mesh, new_authority) = (
        f["mesh_id"].as_str().unwrap(),
        f["authority_public_key"].as_str().unwrap(),
    );
    assert_ne!(new_authority, authority);

    // The old formation's authority (held since the first enrollment) signs nothing more.
    let (s, r) = enroll_binary(
        &g,
        &request(&device(0x32), new_mesh, "second", MeshTier::Edge, ""),
    )
    .await;
    assert_eq!((s, r.status), (200, EnrollmentStatus::Approved));
    let second = r.certificate.unwrap();
    assert_eq!(hex::encode(second.issuer), new_authority);
    assert!(second.verify_signature().is_ok());
}
