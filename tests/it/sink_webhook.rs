//! The webhook sink against a receiver served by the test on a loopback port of its own:
//! signatures checked, outages with `Retry-After`, a refused event stalled then skipped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cdc::{ingest, setup, status_when, upsert};
use crate::error_code;
use crate::harness::{Gateway, GatewayOpts};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Accept,
    Busy,
}

#[derive(Default)]
struct Receiver {
    mode: Option<Mode>,
    accept_poison: bool,
    key: Vec<u8>,
    attempts: usize,
    bad_signatures: usize,
    events: Vec<Value>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn hook(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let mut r = r.lock().unwrap();
    r.attempts += 1;
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&r.key).unwrap();
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(&body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    if h("webhook-signature") != want || h("content-type") != "application/cloudevents-batch+json" {
        r.bad_signatures += 1;
        return (StatusCode::UNAUTHORIZED, HeaderMap::new());
    }
    if r.mode == Some(Mode::Busy) {
        let mut hm = HeaderMap::new();
        hm.insert("retry-after", "1".parse().unwrap());
        return (StatusCode::SERVICE_UNAVAILABLE, hm);
    }
    let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
    if !r.accept_poison && batch.iter().any(|e| e["peatdocid"] == "poison") {
        return (StatusCode::UNPROCESSABLE_ENTITY, HeaderMap::new());
    }
    r.events.extend(batch);
    (StatusCode::NO_CONTENT, HeaderMap::new())
}

async fn receiver() -> (Shared, u16) {
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (shared, port)
}

async fn wait_events(r: &Shared, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ev = r.lock().unwrap().events.clone();
        if ev.len() >= n || Instant::now() > deadline {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn webhook_sink(g: &Gateway, port: u16, r: &Shared) -> String {
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(
                json!({"sink_type": {"Webhook": {"url": format!("http://127.0.0.1:{port}/hook")}}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let secret = b["signing_secret"]
        .as_str()
        .expect("the secret is shown once");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    r.lock().unwrap().key = key;
    let id = b["sink_id"].as_str().unwrap().to_owned();
    let (_, again) = g
        .admin(Method::GET, &format!("/orgs/acme/sinks/{id}"), None)
        .await;
    assert!(again.get("signing_secret").is_none() && !again.to_string().contains(secret));
    id
}

#[tokio::test]
async fn signed_batches_survive_a_busy_receiver_and_honour_retry_after() {
    let (r, port) = receiver().await;
    r.lock().unwrap().mode = Some(Mode::Busy);
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let sink = webhook_sink(&g, port, &r).await;
    let batch: Vec<Value> = (0..20).map(|i| upsert(&format!("d{i}"), i)).collect();
    assert_eq!(ingest(&g, Value::Array(batch)).await.0, 202);

    let st = status_when(&g, &sink, |st| {
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("retrying after 1s"))
    })
    .await;
    assert_eq!(st["state"], "disconnected", "{st}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let attempts = r.lock().unwrap().attempts;
    assert!(
        (2..=4).contains(&attempts),
        "Retry-After: 1 paces retries to about one a second: {attempts}"
    );

    r.lock().unwrap().mode = Some(Mode::Accept);
    let ev = wait_events(&r, 20).await;
    assert_eq!(ev.len(), 20);
    assert_eq!(
        r.lock().unwrap().bad_signatures,
        0,
        "every request was signed with the shown secret"
    );
    assert_eq!(ev[0]["data"], json!({"v": 0}));
    status_when(&g, &sink, |st| st["backlog_events"] == 0).await;
}

#[tokio::test]
async fn a_refused_event_stalls_the_sink_until_skipped_into_the_dead_letters() {
    let (r, port) = receiver().await;
    r.lock().unwrap().mode = Some(Mode::Accept);
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let sink = webhook_sink(&g, port, &r).await;
    let changes = json!([
        upsert("a", 1),
        upsert("b", 1),
        upsert("poison", 1),
        upsert("c", 1)
    ]);
    assert_eq!(ingest(&g, changes).await.0, 202);

    let st = status_when(&g, &sink, |st| st["state"] == "stalled").await;
    assert_eq!(
        (st["state"].as_str(), st["stalled_lsn"].as_u64()),
        (Some("stalled"), Some(3)),
        "{st}"
    );
    assert!(st["last_error"].as_str().unwrap().contains("422"), "{st}");
    let delivered: Vec<Value> = wait_events(&r, 2)
        .await
        .iter()
        .map(|e| e["peatdocid"].clone())
        .collect();
    assert_eq!(
        delivered,
        [json!("a"), json!("b")],
        "events before the refused one went through"
    );

    let (s, _) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/sinks/{sink}/retry"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    let st = status_when(&g, &sink, |st| st["state"] == "stalled").await;
    assert_eq!(
        st["stalled_lsn"], 3,
        "a retry of a refused event stalls again"
    );

    let (s, _) = g
        .admin(Method::POST, &format!("/orgs/acme/sinks/{sink}/skip"), None)
        .await;
    assert_eq!(s, 202);
    let ev = wait_events(&r, 3).await;
    assert_eq!(ev[2]["peatdocid"], "c");
    let (_, dl) = g
        .admin(
            Method::GET,
            &format!("/orgs/acme/sinks/{sink}/dead-letters"),
            None,
        )
        .await;
    let items = dl["dead_letters"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dl}");
    assert_eq!(items[0]["lsn"], 3);
    assert_eq!(items[0]["event"]["subject"], "tracks/poison");
    assert!(items[0]["reason"].as_str().unwrap().contains("422"));
    // Not stalled now: refused, and that too is recorded.
    let (s, _) = g
        .admin(Method::POST, &format!("/orgs/acme/sinks/{sink}/skip"), None)
        .await;
    assert_eq!(s, 409);
    g.admin(Method::POST, &format!("/orgs/acme/sinks/{sink}/test"), None)
        .await;
    g.admin(
        Method::POST,
        &format!("/orgs/acme/sinks/{sink}/dead-letters"),
        Some(json!({"action": "discard"})),
    )
    .await;
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    let entries: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (action, outcome) in [
        ("sink.retry", "requested"),
        ("sink.skip", "requested"),
        ("sink.skip", "refused: not stalled"),
        ("sink.test", "requested"),
        ("sink.dead-letters.discard", "requested"),
    ] {
        assert!(
            entries.iter().any(|(a, o)| a == action && o == outcome),
            "{action} {outcome}: {entries:?}"
        );
    }
}

#[tokio::test]
async fn metadata_addresses_are_refused_at_configuration() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    for (url, want) in [
        ("http://169.254.169.254/latest", (403, "not_granted")),
        ("http://[fe80::1]/", (403, "not_granted")),
        ("ftp://x/", (422, "invalid_field")),
        ("http://u:p@example.com/", (422, "invalid_field")),
    ] {
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/acme/sinks",
                Some(json!({"sink_type": {"Webhook": {"url": url}}})),
            )
            .await;
        assert_eq!((s, error_code(&b)), want, "{url}: {b}");
    }
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Webhook": {"url": "http://169.254.169.254/x", "allow_private": true}}})),
        )
        .await;
    assert_eq!(
        (s, error_code(&b)),
        (403, "not_granted"),
        "allow_private no longer opens anything: only the admin's egress grant does"
    );
}

/// A receiver over TLS that admits only clients with a certificate from `clients`.
async fn mtls_receiver(
    ca: &crate::harness::pki::Ca,
    clients: &crate::harness::pki::Ca,
) -> (Shared, u16) {
    use peat_gateway::listen::{serve, Bound, Limits, TlsState};
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (cert, key) = ca.server();
    let cfg = peat_gateway::tls::server_config_for_listener(&cert, &key, Some(&clients.pem), true)
        .unwrap();
    let tls = TlsState::new(Arc::new(cfg));
    tokio::spawn(serve(
        vec![Bound::Tcp {
            listener: l,
            tls: Some(tls),
        }],
        app,
        Limits::default(),
        std::future::pending(),
    ));
    (shared, port)
}

#[tokio::test]
async fn a_receiver_requiring_client_certificates_gets_batches_from_the_sink_that_presents_one() {
    use crate::harness::pki::Ca;
    let ca = Ca::new("Receiver CA");
    let clients = Ca::new("Client CA");
    let (r, port) = mtls_receiver(&ca, &clients).await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let url = format!("https://127.0.0.1:{port}/hook");
    let (cert, ckey) = clients.client("gateway-7", "sinks", "gw7@kit.example");
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(
                json!({"sink_type": {"Webhook": {"url": url, "tls_ca_pem": ca.pem,
                "client_cert_pem": cert, "client_key_pem": ckey}}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let secret = b["signing_secret"].as_str().unwrap();
    r.lock().unwrap().key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let with = b["sink_id"].as_str().unwrap().to_owned();
    let (_, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Webhook": {"url": url, "tls_ca_pem": ca.pem}}})),
        )
        .await;
    let without = b["sink_id"].as_str().unwrap().to_owned();
    assert_eq!(ingest(&g, json!([upsert("t-1", 1)])).await.0, 202);
    let events = wait_events(&r, 1).await;
    assert_eq!(events.len(), 1, "delivered over mTLS");
    let st = status_when(&g, &with, |st| st["delivered"] == 1).await;
    assert_eq!(st["delivered"], 1, "{st}");
    let st = status_when(&g, &without, |st| st["last_error"].is_string()).await;
    assert_eq!(
        st["delivered"], 0,
        "no client certificate, no delivery: {st}"
    );
}
