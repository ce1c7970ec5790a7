//! The shipped Grafana dashboard and Prometheus rules (monitoring/) name only series a real
//! gateway exports: every `peat_gateway_*` name in their queries appears in a `/metrics` scrape
//! of a gateway with a bound node, sinks, an enrollment decision and a refused document.
//! (`scripts/check-monitoring` runs promtool on the rules and their tests.)

use std::collections::BTreeSet;

use peat_gateway::cdc::source::simulator::Simulator;
use peat_gateway::mesh::MeshTier;
use reqwest::Method;
use serde_json::json;

use crate::enroll::{boot_token, device, enroll_json, formation, request, ENROLL};
use crate::source::source_when;

/// Every `peat_gateway_…` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("peat_gateway_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn the_dashboard_and_alert_rules_name_only_series_the_gateway_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    let dashboard = std::fs::read_to_string(root.join("peat-gateway.dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let rules = std::fs::read_to_string(root.join("peat-gateway.rules.yml")).unwrap();
    let mut wanted = names(&exprs.join("\n"));
    wanted.extend(names(
        &rules
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:"))
            .collect::<Vec<_>>()
            .join("\n"),
    ));

    // A gateway with every family populated: a bound node with a refused document, a sink,
    // an enrollment decision.
    let sim = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    sim.behave_as_0_1(true);
    sim.put("tracks", "", r#"{"lat":1}"#);
    sim.put("tracks", "t-1", r#"{"lat":2}"#);
    let (g, mesh_id, _) = formation("Open", &[]).await;
    crate::source::bind_endpoint(&g, &sim.url()).await;
    source_when(&g, |b| {
        b["health"]["refused_documents"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    // A second formation on a current node, whose live changes give the link a last frame.
    let live = Simulator::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    g.create_formation("acme", "live").await;
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/formations/live/source",
            Some(json!({"endpoint": live.url(), "collections": ["tracks"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for n in 0.. {
        live.put("tracks", "l-1", &format!(r#"{{"n":{n}}}"#));
        let (_, b) = g
            .admin(Method::GET, "/orgs/acme/formations/live/source", None)
            .await;
        if b["health"]["last_event"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no live change captured: {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"File": {"name": "all"}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // The backlog gauge appears once the sink's loop has read its cursor.
    let sink = b["sink_id"].as_str().unwrap().to_owned();
    let st = crate::cdc::status_when(&g, &sink, |st| st["state"] != "starting").await;
    assert_ne!(st["state"], "starting", "{st}");
    let token = boot_token(&g, json!({"app_id": "mesh"})).await;
    let (s, b) = enroll_json(
        &g,
        ENROLL,
        &request(&device(9), &mesh_id, "n-9", MeshTier::Edge, &token),
    )
    .await;
    assert!(s < 300, "{s} {b}");
    let scrape = g.metrics().await;
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queries name series the gateway does not export: {missing:?}\nexported: {exported:?}"
    );
}
