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
    let f = new_formation(&g, "acme", "mesh", policy).await;
    let mesh_id = f["mesh_id"].as_str().unwrap().to_owned();
    let authority = f["authority_public_key"].as_str().unwrap().to_owned();
    (g, mesh_id, authority)
}

/// Creates `org`'s formation `app` under `policy`; returns its description.
pub async fn new_formation(g: &Gateway, org: &str, app: &str, policy: &str) -> Value {
    let (s, f) = g
        .admin(
            Method::POST,
            &format!("/orgs/{org}/formations"),
            Some(json!({"app_id": app, "enrollment_policy": policy})),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    f
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
pub async fn enroll_open(g: &Gateway, mesh_id: &str, n: u8) -> (u16, Value) {
    enroll_json(
        g,
        ENROLL,
        &request(&device(n), mesh_id, "n", MeshTier::Edge, ""),
    )
    .await
}

/// Replaces a formation's enrollment settings (as the admin).
pub async fn put_settings(g: &Gateway, app: &str, body: Value) -> (u16, Value) {
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

pub async fn enroll_binary(g: &Gateway, r: &EnrollmentRequest) -> (u16, EnrollmentResponse) {
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

pub fn cert_of(body: &Value) -> MeshCertificate {
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
    // A request signed in the same millisecond is the same request: refused as a replay.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
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

pub async fn b_fingerprint(g: &Gateway, node: &str) -> String {
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
