//! Capture from a peat-node sidecar, against the simulated formation (a test double of the
//! sidecar, reference/peat-wire.md §2.10) served in this test process on a loopback port.

use std::time::{Duration, Instant};

use peat_gateway::cdc::source::simulator::Simulator;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cdc::{file_sink, setup, sink_events, wait_for};
use crate::error_code;
use crate::harness::{Gateway, GatewayOpts};

async fn bind(g: &Gateway, sim: &Simulator) {
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/source",
            Some(json!({"endpoint": sim.url(), "collections": ["tracks", "nodes"], "token": "node-token-123"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["token"], "[redacted]");
}

pub async fn source_when(g: &Gateway, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, b) = g
            .admin(Method::GET, "/orgs/acme/formations/mesh/source", None)
            .await;
        if ok(&b) || Instant::now() > deadline {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Binds acme/mesh (as the admin) to `endpoint` for `tracks`.
pub async fn bind_endpoint(g: &Gateway, endpoint: &str) {
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/source",
            Some(json!({"endpoint": endpoint, "collections": ["tracks"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// The source's first reported error, once there is one.
pub async fn source_error(g: &Gateway) -> String {
    let st = source_when(g, |b| b["health"]["last_error"].is_string()).await;
    st["health"]["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error reported: {st}"))
        .to_owned()
}

pub fn subjects(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap().rsplit('.').next().unwrap(),
                e["subject"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn capture_reconciles_deduplicates_and_turns_vanished_documents_into_deletes() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    sim.put("tracks", "t-1", r#"{"lat":1}"#);
    sim.put("tracks", "t-2", r#"{"lat":2}"#);
    sim.put("other", "x", r#"{"ignored":true}"#);
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    file_sink(&g, "out", json!({})).await;
    bind(&g, &sim).await;

    // Snapshot and reconciliation overlap; each state becomes one event.
    let ev = wait_for(&g, "out", 2).await;
    let st = source_when(&g, |b| b["health"]["last_reconciliation"]["listed"] == 2).await;
    assert_eq!(st["health"]["connected"], true, "{st}");
    assert_eq!(st["health"]["node_id"], sim.node_id());
    let mut first = subjects(&ev);
    first.sort();
    assert_eq!(first, ["upserted tracks/t-1", "upserted tracks/t-2"]);

    // Duplicates and no-ops are absorbed.
    sim.set_duplicates(true);
    sim.put("tracks", "t-1", r#"{"lat":1}"#);
    sim.put("tracks", "t-1", r#"{"lat":10}"#);
    // A remote delete arrives as UPSERT without data; a local one as DELETE + that.
    sim.remote_delete("tracks", "t-2");
    sim.put("nodes", "n-1", r#"{"status":1}"#);
    sim.local_delete("nodes", "n-1");
    let ev = wait_for(&g, "out", 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev2 = sink_events(&g, "out");
    assert_eq!(ev2.len(), 6, "{:?}", subjects(&ev2));
    assert_eq!(
        subjects(&ev[2..]),
        [
            "upserted tracks/t-1",
            "deleted tracks/t-2",
            "upserted nodes/n-1",
            "deleted nodes/n-1"
        ]
    );
    assert_eq!(ev[2]["data"], json!({"lat": 10}));
    sim.set_duplicates(false);

    // Gone while the stream was down, announced by nobody: found on reconnect.
    sim.silent_delete("tracks", "t-1");
    sim.silent_put("tracks", "t-3", r#"{"lat":3}"#);
    sim.cut_streams();
    let ev = wait_for(&g, "out", 8).await;
    let mut tail = subjects(&ev[6..]);
    tail.sort();
    assert_eq!(tail, ["deleted tracks/t-1", "upserted tracks/t-3"]);
    let st = source_when(&g, |b| b["health"]["connects"] == 2).await;
    assert_eq!(st["health"]["last_reconciliation"]["deleted"], 1, "{st}");
    assert!(sim.subscribes() >= 2);

    // A node without its at-rest key: opaque payload, counted, never parsed.
    sim.put("tracks", "t-4", "ENC:v1:AAECAwQ=");
    let ev = wait_for(&g, "out", 9).await;
    assert_eq!(ev[8]["peatencrypted"], true);
    assert_eq!(ev[8]["data"], "ENC:v1:AAECAwQ=");
    let st = source_when(&g, |b| b["health"]["encrypted_payloads"] == 1).await;
    assert_eq!(st["health"]["encrypted_payloads"], 1);

    // A different node answers: full reconciliation against it.
    sim.restart_as_new_node();
    let st = source_when(&g, |b| {
        b["health"]["node_id"] == sim.node_id().as_str() && b["health"]["connects"] == 3
    })
    .await;
    assert_eq!(st["health"]["connected"], true, "{st}");
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_a_wrong_one_is_reported() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    sim.require_token("node-token-123");
    sim.put("tracks", "t-1", r#"{"v":1}"#);
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    file_sink(&g, "out", json!({})).await;
    let (s, _) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/source",
            Some(json!({"endpoint": sim.url(), "collections": ["tracks"], "token": "wrong-token"})),
        )
        .await;
    assert_eq!(s, 200);
    let st = source_when(&g, |b| {
        b["health"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unauthenticated"))
    })
    .await;
    assert_eq!(st["health"]["connected"], false, "{st}");
    assert!(!st.to_string().contains("wrong-token"));
    bind(&g, &sim).await;
    let st = source_when(&g, |b| b["health"]["connected"] == true).await;
    assert_eq!(st["health"]["connected"], true, "{st}");
    assert_eq!(wait_for(&g, "out", 1).await.len(), 1);
}

#[tokio::test]
async fn bindings_are_validated_survive_restarts_and_unbind() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    for bad in [
        json!({"endpoint": "ftp://x", "collections": ["a"]}),
        json!({"endpoint": sim.url(), "collections": []}),
        json!({"endpoint": sim.url(), "collections": ["a:b"]}),
        json!({"endpoint": sim.url(), "collections": ["a"], "reconcile_secs": 1}),
    ] {
        let (s, b) = g
            .admin(
                Method::PUT,
                "/orgs/acme/formations/mesh/source",
                Some(bad.clone()),
            )
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{bad}: {b}");
    }
    let (s, _) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/nope/source",
            Some(json!({"endpoint": sim.url(), "collections": ["a"]})),
        )
        .await;
    assert_eq!(s, 404);
    bind(&g, &sim).await;
    let out = file_sink(&g, "out", json!({})).await;
    sim.put("tracks", "t-1", r#"{"v":1}"#);
    wait_for(&g, "out", 1).await;
    // Delivered and acknowledged (cursor committed): a restart re-delivers nothing.
    crate::cdc::status_when(&g, &out, |st| st["backlog_events"] == 0).await;

    g.restart_with(GatewayOpts::standard()).await;
    assert!(
        !g.all_output().contains("node-token-123"),
        "the sidecar token never reaches a log"
    );
    sim.put("tracks", "t-1", r#"{"v":2}"#);
    let ev = wait_for(&g, "out", 2).await;
    assert_eq!(
        ev.len(),
        2,
        "the binding and the content hashes survive a restart: no re-delivery of v1; got {:?}",
        ev.iter()
            .map(|e| (e["id"].to_string(), e["data"].to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(ev[1]["data"], json!({"v": 2}));

    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh/source", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/source", None)
        .await;
    assert_eq!(s, 404);
    sim.put("tracks", "t-1", r#"{"v":3}"#);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink_events(&g, "out").len(),
        2,
        "unbound: nothing more is captured"
    );
}

#[tokio::test]
async fn capture_works_over_the_nodes_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start_unix(&dir.path().join("sidecar.sock"))
        .await
        .unwrap();
    sim.put("tracks", "t-1", r#"{"v":1}"#);
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    file_sink(&g, "out", json!({})).await;
    assert!(sim.url().starts_with("unix:///"));
    bind(&g, &sim).await;
    sim.put("tracks", "t-2", r#"{"v":1}"#);
    let ev = wait_for(&g, "out", 2).await;
    let mut s = subjects(&ev);
    s.sort();
    assert_eq!(s, ["upserted tracks/t-1", "upserted tracks/t-2"]);
    let st = source_when(&g, |b| b["health"]["connected"] == true).await;
    assert_eq!(st["endpoint"], sim.url());
    sim.silent_delete("tracks", "t-1");
    sim.cut_streams();
    let ev = wait_for(&g, "out", 3).await;
    assert_eq!(subjects(&ev[2..]), ["deleted tracks/t-1"]);
}

#[tokio::test]
async fn bindings_from_the_config_file_are_applied_at_start_and_fail_closed() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    file_sink(&g, "out", json!({})).await;
    assert!(g.stop());

    let cfg_dir = tempfile::tempdir().unwrap();
    let bad = cfg_dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[[sources]]\norg = \"acme\"\napp = \"nope\"\nendpoint = \"{}\"\ncollections = [\"tracks\"]\n", sim.url()),
    )
    .unwrap();
    let out = g
        .command()
        .env("PEAT_GATEWAY_CONFIG", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[[sources]] acme/nope: the formation does not exist"),
        "{err}"
    );

    let good = cfg_dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[[sources]]\norg = \"acme\"\napp = \"mesh\"\nendpoint = \"{}\"\ncollections = [\"tracks\"]\nfull_policy = \"drop-oldest\"\n",
            sim.url()
        ),
    )
    .unwrap();
    g.restart_with(GatewayOpts::standard().with("PEAT_GATEWAY_CONFIG", good.to_str().unwrap()))
        .await;
    let st = source_when(&g, |b| b["health"]["connected"] == true).await;
    assert_eq!(
        (st["endpoint"].as_str(), st["full_policy"].as_str()),
        (Some(sim.url().as_str()), Some("drop-oldest")),
        "{st}"
    );
    sim.put("tracks", "t-1", r#"{"v":1}"#);
    assert_eq!(wait_for(&g, "out", 1).await.len(), 1);

    // Applied once: a restart with the same file writes no new audit entry.
    let count = |a: &Value| {
        a["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "source.put" && e["outcome"] == "ok")
            .count()
    };
    let (_, before) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    g.restart_with(GatewayOpts::standard().with("PEAT_GATEWAY_CONFIG", good.to_str().unwrap()))
        .await;
    let (_, after) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    assert_eq!((count(&before), count(&after)), (1, 1));
}

/// A CA and two certificates it signs: the server's (for 127.0.0.1) and a client's.
fn pki() -> (String, (String, String), (String, String)) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf("127.0.0.1");
    let client = leaf("gateway");
    (ca.pem(), server, client)
}

#[tokio::test]
async fn an_mtls_sidecar_front_admits_the_gateway_with_its_client_certificate_only() {
    let (ca, (srv_cert, srv_key), (cli_cert, cli_key)) = pki();
    let sim = Simulator::start_tls(([127, 0, 0, 1], 0).into(), &srv_cert, &srv_key, Some(&ca))
        .await
        .unwrap();
    sim.put("tracks", "t-1", r#"{"v":1}"#);
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    file_sink(&g, "out", json!({})).await;

    // Without a client certificate the front refuses the connection.
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/source",
            Some(json!({"endpoint": sim.url(), "collections": ["tracks"], "tls_ca_pem": ca})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let st = source_when(&g, |b| b["health"]["last_error"].is_string()).await;
    assert_eq!(st["health"]["connected"], false, "{st}");

    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/source",
            Some(
                json!({"endpoint": sim.url(), "collections": ["tracks"], "tls_ca_pem": ca,
                "client_cert_pem": cli_cert, "client_key_pem": cli_key}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        !b.to_string().contains("PRIVATE KEY"),
        "the client key is never shown: {b}"
    );
    let st = source_when(&g, |b| b["health"]["connected"] == true).await;
    assert_eq!(st["health"]["connected"], true, "{st}");
    assert_eq!(wait_for(&g, "out", 1).await.len(), 1);

    let key_body: String = cli_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for f in crate::harness::gateway::files_under(&g.data_dir()) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).replace(['\n', '\r'], "");
        assert!(!text.contains(&key_body), "client key in {}", f.display());
    }

    // Incoherent TLS settings are refused.
    for bad in [
        json!({"endpoint": "http://127.0.0.1:1", "collections": ["a"], "tls_ca_pem": ca}),
        json!({"endpoint": sim.url(), "collections": ["a"], "client_cert_pem": cli_cert}),
        json!({"endpoint": sim.url(), "collections": ["a"], "client_cert_pem": "x", "client_key_pem": "y"}),
    ] {
        let (s, b) = g
            .admin(Method::PUT, "/orgs/acme/formations/mesh/source", Some(bad))
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
    }
}

#[tokio::test]
async fn an_org_binds_only_endpoints_the_admin_granted_and_a_pinned_node_is_checked() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let other = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let (_, t) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "oa", "role": "org-admin"})),
        )
        .await;
    let org_admin = t["token"].as_str().unwrap().to_owned();
    let bind_as = |token: String, endpoint: String, node: Option<String>| {
        let g = &g;
        async move {
            let mut body = json!({"endpoint": endpoint, "collections": ["tracks"]});
            if let Some(n) = node {
                body["node_id"] = json!(n);
            }
            g.call(
                Method::PUT,
                "/orgs/acme/formations/mesh/source",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    // Another tenant's node (or any host) is refused to an org-admin until granted.
    let (s, b) = bind_as(org_admin.clone(), other.url(), None).await;
    assert_eq!((s, error_code(&b)), (403, "not_granted"), "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("source-grants"));
    let (s, b) = g
        .call(
            Method::PUT,
            "/orgs/acme/source-grants",
            Some(&org_admin),
            Some(json!({"endpoints": [sim.url()]})),
        )
        .await;
    assert_eq!(s, 403, "only the gateway admin grants: {b}");
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/source-grants",
            Some(json!({"endpoints": [sim.url()]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = bind_as(org_admin.clone(), other.url(), None).await;
    assert_eq!(s, 403, "{b}");
    // Granted, and pinned to the node's id.
    let (s, b) = bind_as(org_admin.clone(), sim.url(), Some(sim.node_id())).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["node_id"], json!(sim.node_id()));
    let st = source_when(&g, |b| b["health"]["state"] == "connected").await;
    assert_eq!(st["health"]["state"], "connected", "{st}");
    let (s, r) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(s, 200, "{r}");

    // Another node takes the endpoint: capture is refused and /ready says why.
    sim.restart_as_new_node();
    let st = source_when(&g, |b| b["health"]["state"] == "wrong_node").await;
    sim.put("tracks", "after-swap", r#"{"v":1}"#);
    assert_eq!(st["health"]["state"], "wrong_node", "{st}");
    assert!(st["health"]["last_error"]
        .as_str()
        .unwrap()
        .contains("not the pinned node"));
    let (s, r) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["checks"]["sources"]["wrong_node"], 1, "{r}");
    let sink = file_sink(&g, "all", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !sink_events(&g, "all")
            .iter()
            .any(|e| e["subject"] == "tracks/after-swap"),
        "nothing is captured from a node that is not the pinned one"
    );
    let _ = sink;

    // Withdrawing the grant stops the binding.
    let (s, _) = g
        .admin(
            Method::PUT,
            "/orgs/acme/source-grants",
            Some(json!({"endpoints": []})),
        )
        .await;
    assert_eq!(s, 200);
    let st = source_when(&g, |b| b["health"]["state"] == "not_granted").await;
    assert_eq!(st["granted"], false, "{st}");
    // The gateway admin's own binding grants its endpoint.
    let (s, b) = bind_as(crate::harness::ADMIN.to_owned(), other.url(), None).await;
    assert_eq!(s, 200, "{b}");
    let (_, gr) = g.admin(Method::GET, "/orgs/acme/source-grants", None).await;
    assert_eq!(gr["endpoints"], json!([other.url()]));
}

#[tokio::test]
async fn credentials_in_a_source_url_are_shown_to_no_role() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let port = crate::harness::free_port();
    let endpoint = format!("http://gw:pw-s3cret@127.0.0.1:{port}");
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/source",
            Some(json!({"endpoint": endpoint, "collections": ["tracks"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let st = source_when(&g, |b| b["health"]["last_error"].is_string()).await;
    assert!(st["health"]["last_error"].is_string(), "{st}");
    let (_, v) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "v", "role": "viewer"})),
        )
        .await;
    let viewer = v["token"].as_str().unwrap().to_owned();
    let (_, seen) = g
        .call(
            Method::GET,
            "/orgs/acme/formations/mesh/source",
            Some(&viewer),
            None,
        )
        .await;
    let (_, grants) = g.admin(Method::GET, "/orgs/acme/source-grants", None).await;
    for text in [st.to_string(), seen.to_string(), grants.to_string()] {
        assert!(!text.contains("pw-s3cret"), "{text}");
    }
    assert!(seen["endpoint"].as_str().unwrap().contains("[redacted]@"));
    assert!(!g.all_output().contains("pw-s3cret"), "nor in the log");
}
