//! The overview's figures: each org's ingest and delivery rates and its alerts, never another
//! org's; the admin sees every org's and the gateway's own.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Gateway, GatewayOpts};

async fn ingest(g: &Gateway, org: &str, n: usize) {
    let docs = (0..n)
        .map(|i| (format!("{org}-{i}"), json!({"i": i})))
        .collect();
    g.upsert(org, "mesh", "tracks", docs).await;
}

/// Total events per second over the rates the answer lists (each interval's rate × 5 s).
fn events(rates: &Value, key: &str) -> f64 {
    rates
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_f64().unwrap() * 5.0)
        .sum()
}

#[tokio::test]
async fn each_org_sees_its_own_rates_and_alerts_and_the_admin_sees_all() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    for org in ["alpha", "bravo"] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
    }
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/alpha/sinks",
            Some(json!({"sink_type": {"File": {"name": "alpha-out"}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // bravo's webhook points at a closed port: it cannot deliver.
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/bravo/sinks",
            Some(json!({"sink_type": {"Webhook": {"url": "http://127.0.0.1:9/hook"}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let bravo_sink = b["sink_id"].as_str().unwrap().to_owned();

    // Samples are 5 s apart: wait for a sample, ingest, wait for the next two.
    tokio::time::sleep(Duration::from_secs(6)).await;
    ingest(&g, "alpha", 40).await;
    ingest(&g, "bravo", 7).await;
    let alpha_token = g.org_token("alpha", "viewer").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (alpha, all) = loop {
        let (s, alpha) = g
            .call(
                Method::GET,
                "/orgs/alpha/activity",
                Some(&alpha_token),
                None,
            )
            .await;
        assert_eq!(s, 200, "{alpha}");
        let (_, all) = g.admin(Method::GET, "/activity", None).await;
        let done = events(&alpha["rates"], "ingested_per_sec").round() as i64 == 40
            && events(&alpha["rates"], "delivered_per_sec").round() as i64 == 40
            && events(&all["rates"], "ingested_per_sec").round() as i64 == 47;
        if done {
            break (alpha, all);
        }
        assert!(
            Instant::now() < deadline,
            "rates never showed the ingest: {alpha} {all}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // bravo's sink is down: its alert is bravo's, not alpha's.
    let texts = |v: &Value| -> Vec<String> {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        !texts(&alpha).iter().any(|t| t.contains(&bravo_sink)),
        "{alpha}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, all) = g.admin(Method::GET, "/activity", None).await;
        if texts(&all).iter().any(|t| t.contains(&bravo_sink)) {
            let a = all["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["text"].as_str().unwrap().contains(&bravo_sink))
                .unwrap()
                .clone();
            assert_eq!(a["org_id"], "bravo", "{a}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert for the unreachable sink: {all}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(all["tls"].is_null(), "plain HTTP: no certificate: {all}");
    let (s, _) = g
        .call(
            Method::GET,
            "/orgs/bravo/activity",
            Some(&alpha_token),
            None,
        )
        .await;
    assert_eq!(s, 404, "another org's activity is not found");
    let (s, _) = g
        .call(Method::GET, "/activity", Some(&alpha_token), None)
        .await;
    assert_eq!(s, 403, "the gateway's activity is the admin's");
}
