//! Capture from the node as a real 0.1.0 peat-node behaves (reference/peat-wire.md §2.11),
//! against the simulated formation (a test double of the sidecar): documents the gateway cannot
//! capture are refused on their own, deletes are announced only for captured documents, and
//! the link is visible (source status, metrics, `/ready`) and watched (a stopped node is seen
//! in seconds).

use std::time::Duration;

use peat_gateway::cdc::source::simulator::Simulator;
use reqwest::Method;
use serde_json::json;

use crate::cdc::{file_sink, setup, sink_events, sink_events_of, wait_for};
use crate::harness::{Gateway, GatewayOpts};
use crate::source::{source_when, subjects};

async fn bind(g: &Gateway, sim: &Simulator, collections: &[&str], reconcile_secs: u64) {
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/mesh/source",
            Some(json!({"endpoint": sim.url(), "collections": collections,
                "reconcile_secs": reconcile_secs})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn start() -> (Gateway, Simulator) {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    sim.behave_as_0_1(true);
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    (g, sim)
}

#[tokio::test]
async fn a_document_the_gateway_cannot_capture_holds_back_no_other() {
    let (g, sim) = start().await;
    // Both exist before the binding: only reconciliation can capture them (0.1.0 sends no
    // snapshot).
    sim.silent_put("misc", "arr", "[1,2]");
    sim.silent_put("misc", "rc-4", r#"{"r":4}"#);
    sim.silent_put("misc", "", r#"{"x":1}"#);
    file_sink(&g, "all", json!({})).await;
    bind(&g, &sim, &["misc"], 86_400).await;
    let ev = wait_for(&g, "all", 1).await;
    assert_eq!(subjects(&ev), ["upserted misc/rc-4"]);
    let st = source_when(&g, |b| b["health"]["refused"]["not a JSON object"] == 1).await;
    let h = &st["health"];
    assert_eq!(h["refused"]["not a JSON object"], 1, "{st}");
    assert_eq!(h["refused"]["empty document id"], 1, "{st}");
    let listed: Vec<(String, String)> = h["refused_documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["doc_id"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        listed.contains(&("arr".into(), "not a JSON object".into())),
        "{listed:?}"
    );
    assert_eq!(h["last_reconciliation"]["appended"], 1, "{st}");

    // Live: a burst of good documents with bad ones among them, all good ones captured at
    // once (the reconciliation is a day away).
    for i in 0..40 {
        sim.put("misc", &format!("good-{i}"), &format!(r#"{{"i":{i}}}"#));
        if i % 5 == 0 {
            sim.put("misc", &format!("bad-{i}"), "[1,2]");
        }
    }
    let ev = wait_for(&g, "all", 41).await;
    assert_eq!(
        ev.len(),
        41,
        "every good document, live: {:?}",
        subjects(&ev)
    );

    // Each refused document is audited once, however often it is seen.
    sim.put("misc", "arr", "[1,2,3]");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, audit) = g
        .admin(Method::GET, "/orgs/acme/audit?limit=1000", None)
        .await;
    let arr = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"] == "source.refused" && e["target"].as_str().unwrap().ends_with("/misc/arr")
        })
        .count();
    assert_eq!(arr, 1, "{audit}");
}

#[tokio::test]
async fn deletes_are_announced_only_for_documents_the_gateway_captured() {
    let (g, sim) = start().await;
    file_sink(&g, "all", json!({})).await;
    bind(&g, &sim, &["tracks"], 86_400).await;
    source_when(&g, |b| b["health"]["connected"] == true).await;
    sim.put("tracks", "t-1", r#"{"v":1}"#);
    sim.put("tracks", "arr", "[1]");
    wait_for(&g, "all", 1).await;
    // 0.1.0: one DELETE frame for an id that never existed, and for a refused document.
    sim.local_delete("tracks", "never-existed");
    sim.local_delete("tracks", "arr");
    sim.local_delete("tracks", "t-1");
    let ev = wait_for(&g, "all", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ev = if ev.len() < 3 {
        sink_events(&g, "all")
    } else {
        ev
    };
    assert_eq!(
        subjects(&ev),
        ["upserted tracks/t-1", "deleted tracks/t-1"],
        "no delete invented for documents never captured"
    );
}

#[tokio::test]
async fn the_node_link_is_counted_watched_and_explained() {
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    sim.behave_as_0_1(true);
    let g = Gateway::start(GatewayOpts::standard().with("PEAT_READY_REQUIRES_NODES", "1")).await;
    setup(&g).await;
    file_sink(&g, "all", json!({})).await;
    bind(&g, &sim, &["tracks"], 86_400).await;
    source_when(&g, |b| b["health"]["connected"] == true).await;
    for i in 0..5 {
        sim.put("tracks", &format!("t-{i}"), r#"{"v":1}"#);
    }
    wait_for(&g, "all", 5).await;
    // Node changes count in the CDC counters, and the link has figures of its own.
    let m = g.metrics().await;
    let value = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(
        value("peat_gateway_cdc_appended_events_total") >= 5.0,
        "{m}"
    );
    assert_eq!(value("peat_gateway_source_connected{"), 1.0, "{m}");
    assert!(value("peat_gateway_source_frames{") >= 5.0, "{m}");
    assert!(value("peat_gateway_source_reconciliations{") >= 1.0, "{m}");

    // A restart of an unpinned node is said to be one, not a foreign node.
    sim.restart();
    source_when(&g, |b| {
        b["health"]["connects"] == 2 && b["health"]["connected"] == true
    })
    .await;
    let log = g.all_output();
    assert!(log.contains("restarted or was replaced"), "{log}");
    assert!(!log.contains("a different node answers"));

    // A stopped node (SIGSTOP) is seen in seconds; /ready says so when it must.
    sim.hang(true);
    let st = source_when(&g, |b| b["health"]["connected"] == false).await;
    assert_eq!(st["health"]["connected"], false, "{st}");
    // The liveness probe saw it (its words), not a request's own timeout.
    assert!(st["health"]["last_error"]
        .as_str()
        .unwrap()
        .contains("stopped answering"));
    let (s, r) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["checks"]["sources"]["down"], 1, "{r}");
    sim.hang(false);
    source_when(&g, |b| b["health"]["connected"] == true).await;
    let (s, _) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(s, 200);

    // Rebinding keeps the counts.
    let (_, before) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/source", None)
        .await;
    bind(&g, &sim, &["tracks"], 3600).await;
    let (_, after) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/source", None)
        .await;
    assert!(
        after["health"]["frames"].as_u64() >= before["health"]["frames"].as_u64(),
        "{before} {after}"
    );
    assert_eq!(after["reconcile_secs"], 3600);
}

#[tokio::test]
async fn errors_name_their_root_cause() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let port = crate::harness::free_port();
    crate::source::bind_endpoint(&g, &format!("http://127.0.0.1:{port}")).await;
    let e = crate::source::source_error(&g).await;
    assert!(
        e.contains("Connection refused"),
        "the root cause over TCP too: {e}"
    );
}

#[tokio::test]
async fn numbers_reach_the_sinks_exactly_as_the_node_keeps_them() {
    let (g, sim) = start().await;
    file_sink(&g, "all", json!({})).await;
    bind(&g, &sim, &["tracks"], 86_400).await;
    source_when(&g, |b| b["health"]["connected"] == true).await;
    sim.put("tracks", "big", r#"{"big":98765432109876543210}"#);
    sim.put("tracks", "big", r#"{ "big": 98765432109876543211 }"#);
    sim.put("tracks", "neg", r#"{"n":-12345678901234567890,"f":1.50}"#);
    // The reconciliation at connect may read a state before its frame arrives: the sink is
    // waited on for its contents, not for a count of events.
    let exact = [
        r#""data":{"big":98765432109876543210}"#,
        r#""data":{"big":98765432109876543211}"#,
        r#""data":{"f":1.50,"n":-12345678901234567890}"#,
    ];
    let raw = sink_text_when(&g, |raw| exact.iter().all(|e| raw.contains(e))).await;
    for e in exact {
        assert!(raw.contains(e), "{e} in {raw}");
    }
    // HTTP ingest keeps them too.
    let (s, b) = crate::cdc::ingest(
        &g,
        json!([{"collection": "tracks", "doc_id": "h", "op": "upsert",
            "data": serde_json::from_str::<serde_json::Value>(r#"{"h":1}"#).unwrap()}]),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let r = reqwest::Client::new()
        .post(format!("{}/orgs/acme/formations/mesh/changes", g.base()))
        .bearer_auth(crate::harness::ADMIN)
        .header("content-type", "application/json")
        .body(r#"[{"collection":"tracks","doc_id":"h2","op":"upsert","data":{"x":123456789012345678901234567890}}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let exact = r#""data":{"x":123456789012345678901234567890}"#;
    let raw = sink_text_when(&g, |raw| raw.contains(exact)).await;
    assert!(raw.contains(exact), "{raw}");
}

/// The text of acme's file sink `all` once `ok` holds, or the last seen after a deadline.
async fn sink_text_when(g: &Gateway, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let raw =
            std::fs::read_to_string(g.data_dir().join("sinks/acme/all.jsonl")).unwrap_or_default();
        if ok(&raw) || std::time::Instant::now() > deadline {
            return raw;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The data of the last event of `doc_id` in `org`'s file sink `all`.
fn last_state(g: &Gateway, org: &str, doc_id: &str) -> Option<serde_json::Value> {
    sink_events_of(g, org, "all")
        .into_iter()
        .rev()
        .find(|e| {
            e["subject"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!("/{doc_id}")))
        })
        .map(|e| e["data"].clone())
}

#[tokio::test]
async fn frames_of_concurrent_writers_out_of_order_settle_on_each_nodes_state() {
    let (g, sim) = start().await;
    let other = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    other.behave_as_0_1(true);
    for (s, b) in [
        g.admin(Method::POST, "/orgs", Some(json!({"org_id": "bravo", "display_name": "Bravo"})))
            .await,
        g.admin(Method::POST, "/orgs/bravo/formations", Some(json!({"app_id": "mesh"})))
            .await,
        g.admin(Method::POST, "/orgs/bravo/sinks",
            Some(json!({"sink_type": {"File": {"name": "all"}}})))
            .await,
        g.admin(Method::PUT, "/orgs/bravo/formations/mesh/source",
            Some(json!({"endpoint": other.url(), "collections": ["tracks"], "reconcile_secs": 86_400})))
            .await,
    ] {
        assert!(s == 200 || s == 201, "{b}");
    }
    file_sink(&g, "all", json!({})).await;
    // No reconciliation for a day: only the stream and what follows a burst can set the state.
    bind(&g, &sim, &["tracks"], 86_400).await;
    source_when(&g, |b| b["health"]["connected"] == true).await;
    let bravo_connected = || async {
        let (_, b) = g
            .admin(Method::GET, "/orgs/bravo/formations/mesh/source", None)
            .await;
        b["health"]["connected"] == true
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !bravo_connected().await && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two writers on each node: the frames arrive last write first.
    sim.concurrent_puts("tracks", "t-1", &[r#"{"v":1}"#, r#"{"v":2}"#]);
    other.concurrent_puts("tracks", "t-1", &[r#"{"w":1}"#, r#"{"w":2}"#]);
    let settled = || {
        last_state(&g, "acme", "t-1") == Some(json!({"v": 2}))
            && last_state(&g, "bravo", "t-1") == Some(json!({"w": 2}))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !settled() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last_state(&g, "acme", "t-1"),
        Some(json!({"v": 2})),
        "acme ends on its node's state"
    );
    assert_eq!(
        last_state(&g, "bravo", "t-1"),
        Some(json!({"w": 2})),
        "bravo ends on its node's state"
    );
    // Each org's sink holds its own node's states only.
    let states = |org| -> Vec<serde_json::Value> {
        sink_events_of(&g, org, "all")
            .into_iter()
            .map(|e| e["data"].clone())
            .collect()
    };
    assert!(
        states("acme").iter().all(|d| d.get("v").is_some()),
        "{:?}",
        states("acme")
    );
    assert!(
        states("bravo").iter().all(|d| d.get("w").is_some()),
        "{:?}",
        states("bravo")
    );
}

#[tokio::test]
async fn a_node_that_stops_answering_during_a_reconciliation_is_seen_by_the_liveness_probe() {
    let (g, sim) = start().await;
    sim.put("tracks", "t-1", r#"{"lat":1}"#);
    bind(&g, &sim, &["tracks"], 3600).await;
    source_when(&g, |b| b["health"]["connected"] == true).await;
    // The node freezes just as an operator asks for a reconciliation: the reconciliation's
    // first request never gets an answer.
    sim.hang(true);
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations/mesh/source/reconcile",
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let st = source_when(&g, |b| b["health"]["connected"] == false).await;
    assert_eq!(st["health"]["connected"], false, "{st}");
    let why = st["health"]["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("stopped answering"),
        "the probe keeps running during a reconciliation, not only between them: {st}"
    );
}
