//! Enrollment as operators shape it: per-address and per-org limits, peer quotas, formation
//! settings, token expiry, publication of certificates to the node, and formations created
//! again under a name.

use peat_gateway::mesh::{EnrollmentStatus, MeshTier};
use reqwest::Method;
use serde_json::{json, Value};

use crate::enroll::*;
use crate::error_code;

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
    let b = new_formation(&g, "acme", "ctl", "Controlled").await;
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

/// A formation under `policy` bound to a node double, publishing its certificates there;
/// returns the node, the gateway, the mesh id and the authority key.
async fn publishing_formation(
    policy: &str,
) -> (
    peat_gateway::cdc::source::simulator::Simulator,
    crate::harness::Gateway,
    String,
    String,
) {
    use peat_gateway::cdc::source::simulator::Simulator;
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let (g, mesh_id, authority) = formation(policy, &[]).await;
    crate::source::bind_endpoint(&g, &sim.url()).await;
    let (s, _) = put_settings(&g, "mesh", json!({"publish_documents": true})).await;
    assert_eq!(s, 200);
    (sim, g, mesh_id, authority)
}

/// The certificate document the gateway wrote to the node for `subject`, once it is there.
async fn certificate_document(
    sim: &peat_gateway::cdc::source::simulator::Simulator,
    subject: &str,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(d) = sim.document("certificates", subject) {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certificate document never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A certificate an operator approves reaches the node as one enrolled directly does.
#[tokio::test]
async fn an_approved_certificate_is_published_to_the_node() {
    let (sim, g, mesh_id, _) = publishing_formation("Strict").await;
    let token = boot_token(&g, json!({"app_id": "mesh"})).await;
    let key = device(0xe5);
    let subject = hex::encode(key.verifying_key().to_bytes());
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&key, &mesh_id, "strict-1", MeshTier::Edge, &token),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    let id = body["enrollment_id"].as_str().unwrap();
    let (s, b) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/enrollments/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let entry: Value = serde_json::from_str(&certificate_document(&sim, &subject).await).unwrap();
    assert_eq!(entry["node_id"], "strict-1");
}

#[tokio::test]
async fn certificates_and_revocations_are_published_to_the_node_as_peat_documents() {
    let (sim, g, mesh_id, authority) = publishing_formation("Open").await;
    let key = device(0xe1);
    let subject = hex::encode(key.verifying_key().to_bytes());
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&key, &mesh_id, "tac-1", MeshTier::Edge, ""),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    let doc = certificate_document(&sim, &subject).await;
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
    // One peer per formation: the new formation's count starts again from none.
    set_quota(&g, "max_peers_per_formation", 1).await;
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
    let f = new_formation(&g, "acme", "mesh", "Open").await;
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

/// Enrollments keep what they read of their formation between requests; a change of an org's
/// settings, quota or formation applies to its very next enrollment, and to no other org's.
#[tokio::test]
async fn what_enrollment_read_gives_way_to_the_next_change_of_its_org() {
    let (g, acme_mesh, _) = formation("Open", &[]).await;
    g.create_org("bravo", "Bravo").await;
    let b = new_formation(&g, "bravo", "mesh", "Open").await;
    let bravo_mesh = b["mesh_id"].as_str().unwrap().to_owned();
    const BRAVO: &str = "/orgs/bravo/formations/mesh/enroll";
    let enroll = |path: &'static str, mesh: String, n: u8| {
        let g = &g;
        async move {
            let r = request(&device(n), &mesh, "n", MeshTier::Tactical, "");
            enroll_json(g, path, &r).await
        }
    };
    // Each formation read once, and kept.
    let (s, a1) = enroll(ENROLL, acme_mesh.clone(), 0xb0).await;
    assert_eq!(s, 200, "{a1}");
    let (s, b1) = enroll(BRAVO, bravo_mesh.clone(), 0xb1).await;
    assert_eq!(s, 200, "{b1}");
    let (acme_tier, bravo_tier) = (cert_of(&a1).fields.tier, cert_of(&b1).fields.tier);
    assert_ne!(acme_tier, MeshTier::Tactical);

    // acme's settings change: its next certificate follows them, bravo's does not.
    let (s, b) = put_settings(&g, "mesh", json!({"open_tier": "Tactical"})).await;
    assert_eq!(s, 200, "{b}");
    let (s, a2) = enroll(ENROLL, acme_mesh.clone(), 0xb2).await;
    assert_eq!(s, 200, "{a2}");
    assert_eq!(cert_of(&a2).fields.tier, MeshTier::Tactical, "{a2}");
    let (s, b2) = enroll(BRAVO, bravo_mesh.clone(), 0xb3).await;
    assert_eq!(s, 200, "{b2}");
    assert_eq!(cert_of(&b2).fields.tier, bravo_tier);

    // acme's enrollment quota lowered to one (a changed quota starts a fresh budget).
    set_quota(&g, "max_enrollments_per_hour", 1).await;
    let (s, b) = enroll(ENROLL, acme_mesh.clone(), 0xb4).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = enroll(ENROLL, acme_mesh.clone(), 0xb9).await;
    assert_eq!((s, error_code(&b)), (429, "rate_limited"), "{b}");
    let (s, b) = enroll(BRAVO, bravo_mesh.clone(), 0xb5).await;
    assert_eq!(s, 200, "{b}");

    // acme's formation made again under its name: the old mesh is refused, the new one's
    // authority signs.
    set_quota(&g, "max_enrollments_per_hour", 1000).await;
    let (s, b) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh", None)
        .await;
    assert!(s < 300, "{s} {b}");
    let (s, b) = enroll(ENROLL, acme_mesh.clone(), 0xb6).await;
    assert_eq!(s, 404, "{b}");
    let f = new_formation(&g, "acme", "mesh", "Open").await;
    let new_mesh = f["mesh_id"].as_str().unwrap().to_owned();
    assert_ne!(new_mesh, acme_mesh);
    let (s, b) = enroll(ENROLL, acme_mesh, 0xb7).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = enroll(ENROLL, new_mesh, 0xb8).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        hex::encode(cert_of(&b).issuer),
        f["authority_public_key"].as_str().unwrap()
    );
}
