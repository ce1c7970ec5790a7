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
    // The overview names the certificate's end.
    let (s, act) = g
        .call(Method::GET, "/activity", Some(crate::harness::ADMIN), None)
        .await;
    assert_eq!(s, 200, "{act}");
    assert!(
        act["tls"]["days_left"].as_i64().is_some_and(|d| d > 30),
        "{act}"
    );
    assert!(
        act["tls"]["not_after"]
            .as_str()
            .is_some_and(|t| t.len() > 10),
        "{act}"
    );

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
    let (s, _) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/enrollment-settings",
            Some(json!({"deliver_formation_secret": true})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, creds) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;

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
    assert_eq!(
        body["formation_secret"], creds["formation_secret"],
        "over TLS the secret travels"
    );

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

#[tokio::test]
async fn certificates_reload_on_sighup_and_a_broken_reload_keeps_the_old_one() {
    let old_ca = Ca::new("Old CA");
    let new_ca = Ca::new("New CA");
    let dir = tempfile::tempdir().unwrap().keep();
    let (cert, key) = old_ca.server();
    let cert_f = file(&dir, "srv.pem", &cert);
    let key_f = file(&dir, "srv.key", &key);
    let g = Gateway::start(GatewayOpts::standard().tls(&cert_f, &key_f, &old_ca.pem)).await;
    let trusting = |ca: &Ca| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let health = format!("{}/health", g.base());
    assert!(trusting(&old_ca).get(&health).send().await.is_ok());

    // A broken replacement (certificate without its key) is refused; the old one keeps serving.
    let (new_cert, new_key) = new_ca.server();
    std::fs::write(&cert_f, &new_cert).unwrap();
    g.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        trusting(&old_ca).get(&health).send().await.is_ok(),
        "old material still in use"
    );
    // Completing the pair and signalling again switches to the new certificate.
    std::fs::write(&key_f, &new_key).unwrap();
    g.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while trusting(&new_ca).get(&health).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(trusting(&old_ca).get(&health).send().await.is_err());
    let out = g.all_output();
    assert!(
        out.contains("TLS reload failed") && out.contains("previous certificate stays in use"),
        "{out}"
    );
    assert!(out.contains("listener TLS material reloaded"), "{out}");

    // Replacing the files is enough: the change is noticed without a signal.
    let third = Ca::new("Third CA");
    let (c3, k3) = third.server();
    let k3_path = std::path::Path::new(&key_f).with_extension("new");
    std::fs::write(&k3_path, &k3).unwrap();
    std::fs::write(&cert_f, &c3).unwrap();
    std::fs::rename(&k3_path, &key_f).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while trusting(&third).get(&health).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced files were never picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_silent_client_is_cut_off_after_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g =
        Gateway::start(GatewayOpts::standard().with("PEAT_GATEWAY_HEADER_TIMEOUT_SECS", "1")).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", g.port))
        .await
        .unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(8), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the gateway closed the half-sent request");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Other clients were served meanwhile.
    let (st, _) = g.call(Method::GET, "/health", None, None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn the_api_is_served_on_a_unix_socket_with_its_mode_beside_tcp() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // A stale socket file from a crash is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    let mut g = Gateway::start(
        GatewayOpts::standard()
            .with("PEAT_GATEWAY_UNIX_SOCKET", sock.to_str().unwrap())
            .with("PEAT_GATEWAY_UNIX_SOCKET_MODE", "600")
            .with("PEAT_GATEWAY_UNIX_SOCKET_OWNER", &format!("{uid}:{gid}")),
    )
    .await;
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(format!("GET /orgs HTTP/1.1\r\nHost: local\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", crate::harness::ADMIN).as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (st, _) = g.call(Method::GET, "/health", None, None).await;
    assert_eq!(st, 200, "TCP at the same time");
    // A socket in use by a running gateway is not taken over; a clean stop removes it.
    let other = tempfile::tempdir().unwrap();
    let out = g
        .command()
        .env("PEAT_GATEWAY_BIND", "127.0.0.1:0")
        .env("PEAT_GATEWAY_DATA_DIR", other.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(g.stop());
    assert!(!sock.exists(), "removed on a clean stop");
    // Giving others access is refused.
    let bad = g
        .command()
        .arg("check-config")
        .env("PEAT_GATEWAY_UNIX_SOCKET_MODE", "666")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn client_certificates_map_to_the_admin_or_an_org_role() {
    let ca = Ca::new("Kit CA");
    let cards = Ca::new("Card CA");
    let dir = tempfile::tempdir().unwrap().keep();
    let (cert, key) = ca.server();
    let g = Gateway::start(
        GatewayOpts::standard()
            .tls(
                &file(&dir, "s.pem", &cert),
                &file(&dir, "s.key", &key),
                &ca.pem,
            )
            .with(
                "PEAT_GATEWAY_TLS_CLIENT_CA",
                &file(&dir, "cards.pem", &cards.pem),
            )
            .with(
                "PEAT_GATEWAY_TLS_CLIENT_ROLES",
                "cn:console=admin; cn:ops-*=acme/operator; email:view@kit.example=acme/viewer",
            ),
    )
    .await;
    g.create_org("acme", "Acme").await;
    let console = cards.client("console", "hq", "c@kit.example");
    let ops = cards.client("ops-laptop-3", "field", "o@kit.example");
    let viewer = cards.client("someone", "field", "view@kit.example");
    let stranger = cards.client("visitor", "guests", "v@kit.example");
    let call = |leaf: &(String, String), m: Method, path: &str, body: Option<Value>| {
        let c = g.client_with(Some(leaf));
        let url = format!("{}{path}", g.base());
        async move {
            let mut r = c.request(m, url);
            if let Some(b) = body {
                r = r.json(&b);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        call(
            &console,
            Method::POST,
            "/orgs",
            Some(json!({"org_id": "beta", "display_name": "Beta"}))
        )
        .await,
        201
    );
    assert_eq!(call(&ops, Method::GET, "/orgs/acme", None).await, 200);
    assert_eq!(
        call(
            &ops,
            Method::POST,
            "/orgs",
            Some(json!({"org_id": "gamma", "display_name": "G"}))
        )
        .await,
        403
    );
    assert_eq!(
        call(&ops, Method::GET, "/orgs/beta", None).await,
        404,
        "another org is invisible"
    );
    assert_eq!(call(&viewer, Method::GET, "/orgs/acme", None).await, 200);
    // The UI's certificate sign-in asks /whoami with no token: the mapping answers.
    let me: Value = g
        .client_with(Some(&ops))
        .get(format!("{}/whoami", g.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            me["org_id"].as_str(),
            me["role"].as_str(),
            me["ui"].as_bool()
        ),
        (Some("acme"), Some("operator"), Some(true)),
        "{me}"
    );
    assert!(
        me["session"].is_null(),
        "a certificate is no sign-in session: {me}"
    );
    assert_eq!(
        call(
            &viewer,
            Method::PATCH,
            "/orgs/acme",
            Some(json!({"display_name": "x"}))
        )
        .await,
        403
    );
    assert_eq!(
        call(&stranger, Method::GET, "/orgs/acme", None).await,
        401,
        "no mapping, no access"
    );
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    assert!(audit.to_string().contains("x509:someone"), "{audit}");

    // A mapping without a client CA, or a malformed one, is refused at start-up.
    let out = g
        .command()
        .arg("check-config")
        .env_remove("PEAT_GATEWAY_TLS_CLIENT_CA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("PEAT_GATEWAY_TLS_CLIENT_ROLES: client certificates are only checked"));
    let out = g
        .command()
        .arg("check-config")
        .env("PEAT_GATEWAY_TLS_CLIENT_ROLES", "cn:x=acme/root")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
