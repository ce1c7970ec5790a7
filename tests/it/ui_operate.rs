//! The kit run from the UI in headless Chromium: a formation bound to its node (the simulated
//! formation, a test double of the peat-node sidecar) with its changes arriving live, and a
//! sink created, edited, stalled by its endpoint, skipped and its dead letter replayed. Two
//! orgs each, so nothing of one shows on the other's screens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use peat_gateway::cdc::source::simulator::Simulator;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::browser::{clean, quiet, shoot, sign_in, Browser};
use crate::harness::{Gateway, GatewayOpts};

#[tokio::test]
async fn a_formation_is_bound_to_its_node_from_the_ui_and_its_changes_arrive_live() {
    let alpha_node = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let bravo_node = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    alpha_node.put("tracks", "a-1", r#"{"lat":1}"#);
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    for (org, node) in [("alpha", &alpha_node), ("bravo", &bravo_node)] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
        let (s, b) = g
            .admin(
                Method::PUT,
                &format!("/orgs/{org}/source-grants"),
                Some(json!({"endpoints": [node.url()]})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // bravo captures from its own node the whole time.
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/bravo/formations/mesh/source",
            Some(json!({"endpoint": bravo_node.url(), "collections": ["tracks"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let org_admin = g.org_token("alpha", "org-admin").await;
    let b = Browser::start().await;
    sign_in(&b, &g, &org_admin, "alpha · org-admin").await;
    b.goto(&format!("{}/_/#/orgs/alpha", g.base())).await;
    let row = "tr[data-source='mesh']";
    b.wait_text(row, "not bound", 10).await;
    b.wait_text("main .livebadge", "live", 10).await;

    // Bind: the granted endpoint is offered; only the collections are typed.
    b.click(&format!("{row} button.bind")).await;
    let offered = b.value("#src-endpoint").await;
    assert_eq!(
        offered,
        alpha_node.url(),
        "the granted endpoint is proposed"
    );
    b.type_into("#src-collections", "tracks").await;
    shoot(&b, "source-bind").await;
    b.click("form.bind button[type=submit]").await;
    b.wait_text("#live", "mesh bound to", 10).await;
    b.wait_text(&format!("{row} .source-state"), "connected", 20)
        .await;
    let (_, src) = g
        .admin(Method::GET, "/orgs/alpha/formations/mesh/source", None)
        .await;
    assert_eq!(src["collections"], json!(["tracks"]), "{src}");
    assert_eq!(src["health"]["node_id"], alpha_node.node_id());

    // Changes on the node arrive on the screen as they happen; bravo's never do.
    alpha_node.put("tracks", "a-2", r#"{"lat":2}"#);
    bravo_node.put("tracks", "b-1", r#"{"lat":9}"#);
    alpha_node.put("tracks", "a-3", r#"{"lat":3}"#);
    b.wait_text("#changes", "tracks/a-3", 20).await;
    let seen = b.wait_text("#changes", "tracks/a-2", 5).await;
    assert!(!seen.contains("b-1"), "another org's change: {seen}");
    b.wait_text(&format!("{row} .source-counts"), "appended", 10)
        .await;
    b.scroll_to("#changes").await;
    shoot(&b, "source-live-changes").await;

    // Reconcile on demand: the gateway lists the node's documents again.
    let before = src["health"]["reconciliations"].clone();
    b.click(&format!("{row} button.reconcile")).await;
    b.wait_text("#live", "Reconcile mesh: done", 10).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, now) = g
            .admin(Method::GET, "/orgs/alpha/formations/mesh/source", None)
            .await;
        if now["health"]["reconciliations"] != before {
            assert_eq!(now["health"]["last_reconciliation"]["listed"], 3, "{now}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reconciliation: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The stream drops (the gateway restarts): the screen says so, then resumes. The browser
    // logs the refused requests of the restart's window; nothing else may show there.
    quiet(&b).await;
    g.restart().await;
    b.wait_text("main .livebadge", "reconnecting", 20).await;
    b.wait_text("main .livebadge", "live", 30).await;
    let restart_window = b.console_errors().await;
    assert!(
        restart_window
            .iter()
            .all(|e| e.contains("ERR_CONNECTION_REFUSED")
                || e.contains("ERR_INCOMPLETE_CHUNKED_ENCODING")
                || e.contains("ERR_EMPTY_RESPONSE")),
        "{restart_window:?}"
    );
    alpha_node.put("tracks", "a-4", r#"{"lat":4}"#);
    b.wait_text("#changes", "tracks/a-4", 30).await;

    // Unbind with a confirmation; the binding is gone on the gateway.
    b.click(&format!("{row} button.unbind")).await;
    b.accept_dialog().await;
    b.wait_text(row, "not bound", 10).await;
    let (s, _) = g
        .admin(Method::GET, "/orgs/alpha/formations/mesh/source", None)
        .await;
    assert_eq!(s, 404);
    let (_, bravo) = g
        .admin(Method::GET, "/orgs/bravo/formations/mesh/source", None)
        .await;
    assert_eq!(
        bravo["health"]["state"], "connected",
        "bravo untouched: {bravo}"
    );
    quiet(&b).await;
}

/// A webhook endpoint that refuses (400) until told to accept; counts what it accepted.
#[derive(Clone, Default)]
struct Endpoint {
    accept: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(e): State<Endpoint>, body: Bytes) -> StatusCode {
    if !e.accept.load(Ordering::SeqCst) {
        return StatusCode::BAD_REQUEST;
    }
    if let Ok(Value::Array(evs)) = serde_json::from_slice::<Value>(&body) {
        e.got.lock().unwrap().extend(evs);
    }
    StatusCode::OK
}

async fn endpoint() -> (String, Endpoint) {
    let e = Endpoint::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(e.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, e)
}

#[tokio::test]
async fn a_sink_is_created_and_edited_in_the_ui_and_its_dead_letter_replayed() {
    let (url, hook) = endpoint().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    for org in ["alpha", "bravo"] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
    }
    let (s, bravo_sink) = g
        .admin(
            Method::POST,
            "/orgs/bravo/sinks",
            Some(json!({"sink_type": {"File": {"name": "bravo-events"}}})),
        )
        .await;
    assert_eq!(s, 201, "{bravo_sink}");
    let org_admin = g.org_token("alpha", "org-admin").await;
    let b = Browser::start().await;
    sign_in(&b, &g, &org_admin, "alpha · org-admin").await;
    b.goto(&format!("{}/_/#/orgs/alpha/sinks", g.base())).await;
    b.wait_text("#sinks", "No sinks yet", 10).await;

    // Every type this build has is offered.
    let (_, about) = g.call(Method::GET, "/about", None, None).await;
    let offered = b
        .exec(
            "return [...document.querySelectorAll('#sink-kind option')].map(o => o.value)",
            json!([]),
        )
        .await;
    assert_eq!(offered, about["sink_types"], "{offered}");

    // A Webhook sink from the form: the signing secret shows once.
    b.exec(
        "const k = document.getElementById('sink-kind'); k.value = 'Webhook'; k.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    b.type_into("#sink-url", &url).await;
    b.type_into("#sink-collections", "tracks").await;
    shoot(&b, "sink-create").await;
    b.click("form.create-sink button[type=submit]").await;
    b.wait(".once #secret").await;
    let (_, list) = g.admin(Method::GET, "/orgs/alpha/sinks", None).await;
    let sink = list[0].clone();
    let id = sink["sink_id"].as_str().unwrap().to_owned();
    assert_eq!(sink["sink_type"]["Webhook"]["url"], url.as_str(), "{sink}");
    assert_eq!(sink["collections"], json!(["tracks"]));
    let row = format!("tr[data-sink='{id}']");
    b.wait(&row).await;
    assert_eq!(
        b.count(&format!(
            "tr[data-sink='{}']",
            bravo_sink["sink_id"].as_str().unwrap()
        ))
        .await,
        0,
        "bravo's sink is not listed"
    );

    // The endpoint refuses: the sink stalls on the first event and says why.
    let ingest = |org: &'static str, ids: &'static [&'static str]| {
        let docs = ids
            .iter()
            .map(|d| (d.to_string(), json!({"org": org})))
            .collect();
        g.upsert(org, "mesh", "tracks", docs)
    };
    ingest("alpha", &["a-1", "a-2"]).await;
    ingest("bravo", &["b-1"]).await;
    b.wait_text(&format!("{row} .sink-state"), "stalled", 30)
        .await;
    shoot(&b, "sink-stalled").await;

    // Skip parks the refused event as a dead letter; the sink goes on and stalls on the next.
    let status = || {
        let g = &g;
        let id = id.clone();
        async move {
            g.admin(Method::GET, &format!("/orgs/alpha/sinks/{id}/status"), None)
                .await
                .1
        }
    };
    let first = status().await["stalled_lsn"].clone();
    assert!(first.is_u64(), "stalled on an event");
    b.click(&format!("{row} button.skip-event")).await;
    b.accept_dialog().await;
    b.wait_text("#live", "Skip on", 10).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let st = status().await;
        if st["state"] == "stalled" && st["stalled_lsn"].is_u64() && st["stalled_lsn"] != first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never went on to the next event: {st}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.wait_text(&format!("{row} .sink-delivered"), "2 dead-lettered", 20)
        .await;

    // Details: edit the filters and rate cap; the gateway's definition follows.
    b.click(&format!("{row} button.details")).await;
    b.wait("#dead-letters").await;
    let letters = b.text("#dead-letters").await;
    assert!(letters.contains("tracks/a-1"), "{letters}");
    assert!(!letters.contains("b-1"), "{letters}");
    b.type_into("#edit-collections", "tracks, alerts").await;
    b.type_into("#edit-rate", "65536").await;
    b.click("form.edit button[type=submit]").await;
    b.wait_text("#live", "updated", 10).await;
    let (_, def) = g
        .admin(Method::GET, &format!("/orgs/alpha/sinks/{id}"), None)
        .await;
    assert_eq!(def["collections"], json!(["tracks", "alerts"]), "{def}");
    assert_eq!(def["rate_limit_bytes_per_sec"], 65536);
    b.scroll_to("#sink-detail").await;
    shoot(&b, "sink-details").await;

    // The endpoint accepts again: retry the stalled event, replay the dead letter.
    hook.accept.store(true, Ordering::SeqCst);
    b.wait_text(&format!("{row} .sink-state"), "stalled", 30)
        .await;
    b.click(&format!("{row} button.retry")).await;
    b.wait_text(&format!("{row} .sink-state"), "idle", 30).await;
    b.click(&format!("{row} button.details")).await;
    b.click("button.replay").await;
    b.wait_text("#live", "1 delivered, 0 still parked", 15)
        .await;
    let subjects: Vec<String> = hook
        .got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str().map(str::to_owned))
        .collect();
    let mut sorted = subjects.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ["tracks/a-1", "tracks/a-2"], "{subjects:?}");

    // A test event goes straight through.
    b.click(&format!("{row} button.test")).await;
    b.wait_text("#live", "Test event to", 10).await;
    clean(&b).await;
}
