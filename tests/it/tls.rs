//! The API listener over TLS: handshakes with and without client certificates, a client CA
//! that refuses strangers, every incoherent TLS setting refused at start-up with its message,
//! and enrollment admitted by a client certificate (CAC / device certificate) through the
//! claim rules.

use peat_gateway::mesh::MeshTier;
use reqwest::Method;
use serde_json::{json, Value};

use crate::enroll::{as_json, device, request};
use crate::harness::pki::{file, Ca};
use crate::harness::{Gateway, GatewayOpts};

/// A started gateway serving TLS with `ca`'s server certificate and `client_ca` checking
/// client certificates (optional unless `required`).
async fn tls_gateway(ca: &Ca, client_ca: Option<&Ca>, required: bool) -> Gateway {
    let dir = tempfile::tempdir().unwrap().keep();
    let (cert, key) = ca.server();
    let mut opts = GatewayOpts::standard()
        .with("PEAT_ENROLL_RATE_PER_MIN", "10000")
        .tls(
            &file(&dir, "srv.pem", &cert),
            &file(&dir, "srv.key", &key),
            &ca.pem,
        );
    if let Some(c) = client_ca {
        opts = opts.with(
            "PEAT_GATEWAY_TLS_CLIENT_CA",
            &file(&dir, "clients.pem", &c.pem),
        );
    }
    if required {
        opts = opts.with("PEAT_GATEWAY_TLS_CLIENT_AUTH", "required");
        if let Some(c) = client_ca {
            opts = opts.tls_identity(c.client("harness", "ops", "harness@kit.example"));
        }
    }
    Gateway::start(opts).await
}

#[tokio::test]
async fn tls_serves_the_api_and_a_client_ca_refuses_strangers() {
    let ca = Ca::new("Kit CA");
    let cards = Ca::new("Card CA");
    let g = tls_gateway(&ca, Some(&cards), false).await;
    let (s, _) = g.call(Method::GET, "/health", None, None).await;
    assert_eq!(s, 200, "https with no client certificate (optional)");

    // A certificate from the configured client CA is accepted; one from another CA is not.
    let good = cards.client("truck-7", "field-ops", "truck7@kit.example");
    let r = g
        .client_with(Some(&good))
        .get(format!("{}/health", g.base()))
        .send()
        .await;
    assert!(r.is_ok_and(|r| r.status() == 200));
    let stranger = Ca::new("Other CA").client("mallory", "x", "m@x.example");
    let r = g
        .client_with(Some(&stranger))
        .get(format!("{}/health", g.base()))
        .send()
        .await;
    assert!(
        r.is_err(),
        "a certificate from an unknown CA fails the handshake"
    );

    // Plain HTTP on the TLS port gets nothing useful.
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", g.port))
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await;
    assert!(r.is_err() || r.is_ok_and(|r| !r.status().is_success()));

    // Required client certificates: without one the handshake fails.
    let strict = tls_gateway(&ca, Some(&cards), true).await;
    let r = strict
        .client_with(None)
        .get(format!("{}/health", strict.base()))
        .send()
        .await;
    assert!(r.is_err(), "no client certificate, no connection");
    let r = strict
        .client_with(Some(&good))
        .get(format!("{}/health", strict.base()))
        .send()
        .await;
    assert!(r.is_ok_and(|r| r.status() == 200));
}

#[tokio::test]
async fn a_client_certificate_enrolls_through_the_claim_rules() {
    let ca = Ca::new("Kit CA");
    let cards = Ca::new("Card CA");
    let g = tls_gateway(&ca, Some(&cards), false).await;
    g.create_org("acme", "Acme").await;
    let f = g.create_formation("acme", "mesh").await;
    let mesh_id = f["mesh_id"].as_str().unwrap();
    let (s, r) = g
        .admin(
            Method::POST,
            "/orgs/acme/policy-rules",
            Some(
                json!({"conditions": [{"claim": "x509.ou", "op": "contains", "value": "field-ops"},
                {"claim": "x509.san.email", "op": "contains", "value": "truck7@kit.example"}],
                "tier": "Tactical", "permissions": ["STANDARD"]}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let path = format!("{}/orgs/acme/formations/mesh/enroll", g.base());

    let card = cards.client("truck-7", "field-ops", "truck7@kit.example");
    let req = request(&device(0x71), mesh_id, "truck-7", MeshTier::Tactical, "");
    let r = g
        .client_with(Some(&card))
        .post(&path)
        .json(&as_json(&req))
        .send()
        .await
        .unwrap();
    let (s, body): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["tier"], "Tactical");

    // Another card of the same CA that no rule allows, and no card at all.
    let other = cards.client("visitor", "guests", "v@kit.example");
    let req = request(&device(0x72), mesh_id, "visitor", MeshTier::Tactical, "");
    let r = g
        .client_with(Some(&other))
        .post(&path)
        .json(&as_json(&req))
        .send()
        .await
        .unwrap();
    let (s, body): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert_eq!(s, 403, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("x509:visitor"),
        "{body}"
    );
    let req = request(&device(0x73), mesh_id, "anon", MeshTier::Tactical, "");
    let r = g
        .client_with(None)
        .post(&path)
        .json(&as_json(&req))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    let (_, inv) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/certificates", None)
        .await;
    assert!(
        inv["certificates"][0]["granted_via"]
            .as_str()
            .unwrap()
            .starts_with("x509:truck-7"),
        "{inv}"
    );
}

/// Runs `check-config` with the given TLS settings; returns (exit code, stderr).
fn check(g: &Gateway, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = g.command();
    c.arg("check-config");
    for k in [
        "PEAT_GATEWAY_TLS_CERT",
        "PEAT_GATEWAY_TLS_KEY",
        "PEAT_GATEWAY_TLS_CLIENT_CA",
        "PEAT_GATEWAY_TLS_CLIENT_AUTH",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_partial_or_broken_tls_setting_stops_start_up_naming_the_piece() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Kit CA");
    let (cert, key) = ca.server();
    let (_, other_key) = ca.server();
    let (old_cert, old_key) = ca.expired_server();
    let d = dir.path();
    let cert_f = file(d, "c.pem", &cert);
    let key_f = file(d, "k.pem", &key);
    let ca_f = file(d, "ca.pem", &ca.pem);
    let junk = file(d, "junk.pem", "not a pem file");
    // (settings, the setting the message must name, what it must say)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("PEAT_GATEWAY_TLS_CERT", cert_f.clone())],
            "PEAT_GATEWAY_TLS_KEY",
            "unset while PEAT_GATEWAY_TLS_CERT is set",
        ),
        (
            vec![("PEAT_GATEWAY_TLS_KEY", key_f.clone())],
            "PEAT_GATEWAY_TLS_CERT",
            "unset while PEAT_GATEWAY_TLS_KEY is set",
        ),
        (
            vec![("PEAT_GATEWAY_TLS_CLIENT_CA", ca_f.clone())],
            "PEAT_GATEWAY_TLS_CLIENT_CA",
            "client certificates need TLS",
        ),
        (
            vec![
                (
                    "PEAT_GATEWAY_TLS_CERT",
                    format!("{}/missing.pem", d.display()),
                ),
                ("PEAT_GATEWAY_TLS_KEY", key_f.clone()),
            ],
            "PEAT_GATEWAY_TLS_CERT",
            "cannot read",
        ),
        (
            vec![
                ("PEAT_GATEWAY_TLS_CERT", junk.clone()),
                ("PEAT_GATEWAY_TLS_KEY", key_f.clone()),
            ],
            "PEAT_GATEWAY_TLS_CERT",
            "no PEM certificate",
        ),
        (
            vec![
                ("PEAT_GATEWAY_TLS_CERT", file(d, "old.pem", &old_cert)),
                ("PEAT_GATEWAY_TLS_KEY", file(d, "old.key", &old_key)),
            ],
            "PEAT_GATEWAY_TLS_CERT",
            "expired",
        ),
        (
            vec![
                ("PEAT_GATEWAY_TLS_CERT", cert_f.clone()),
                ("PEAT_GATEWAY_TLS_KEY", file(d, "other.key", &other_key)),
            ],
            "PEAT_GATEWAY_TLS_KEY",
            "does not match",
        ),
        (
            vec![
                ("PEAT_GATEWAY_TLS_CERT", cert_f.clone()),
                ("PEAT_GATEWAY_TLS_KEY", junk.clone()),
            ],
            "PEAT_GATEWAY_TLS_KEY",
            "private key",
        ),
        (
            vec![
                ("PEAT_GATEWAY_TLS_CERT", cert_f.clone()),
                ("PEAT_GATEWAY_TLS_KEY", key_f.clone()),
                ("PEAT_GATEWAY_TLS_CLIENT_AUTH", "required".into()),
            ],
            "PEAT_GATEWAY_TLS_CLIENT_AUTH",
            "need PEAT_GATEWAY_TLS_CLIENT_CA",
        ),
        (
            vec![
                ("PEAT_GATEWAY_TLS_CERT", cert_f.clone()),
                ("PEAT_GATEWAY_TLS_KEY", key_f.clone()),
                ("PEAT_GATEWAY_TLS_CLIENT_CA", junk.clone()),
            ],
            "PEAT_GATEWAY_TLS_CLIENT_CA",
            "client CA",
        ),
    ];
    let mut messages = Vec::new();
    for (env, setting, want) in &cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, err) = check(&g, &env);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains(setting))
            .unwrap_or_else(|| panic!("{setting} not named for {env:?}: {err}"));
        assert!(line.contains(want), "{env:?}: wanted '{want}' in: {err}");
        messages.push(line.trim().to_owned());
    }
    // The complete setting passes.
    let (code, err) = check(
        &g,
        &[
            ("PEAT_GATEWAY_TLS_CERT", &cert_f),
            ("PEAT_GATEWAY_TLS_KEY", &key_f),
            ("PEAT_GATEWAY_TLS_CLIENT_CA", &ca_f),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    println!("{}", messages.join("\n"));
}
