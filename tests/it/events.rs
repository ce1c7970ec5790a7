//! The live event stream (server-sent events), resumable with Last-Event-ID.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::cdc::{file_sink, ingest, setup, status_when, upsert};
use crate::harness::{Gateway, GatewayOpts, ADMIN};

/// Reads SSE events (event name, id, data) until `n` arrived or a deadline passed.
pub async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await
        else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut ev, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    ev = v.trim().into();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().into();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !ev.is_empty() {
                out.push((ev, id, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
    out
}

pub async fn open(g: &Gateway, last: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .get(format!("{}/orgs/acme/events/stream", g.base()))
        .bearer_auth(ADMIN);
    if let Some(l) = last {
        r = r.header("last-event-id", l);
    }
    let resp = r.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    resp
}

#[tokio::test]
async fn the_stream_carries_the_orgs_events_only_and_resumes_after_last_event_id() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    g.create_org("other", "Other").await;
    g.create_formation("other", "m2").await;

    let mut live = open(&g, None).await;
    ingest(&g, json!([upsert("a", 1)])).await;
    g.admin(
        Method::POST,
        "/orgs/other/formations/m2/changes",
        Some(json!([upsert("secret-doc", 1)])),
    )
    .await;
    ingest(&g, json!([upsert("b", 1), upsert("c", 1)])).await;
    let ev: Vec<_> = read_events(&mut live, 3)
        .await
        .into_iter()
        .filter(|e| e.0 == "cdc")
        .collect();
    let subjects: Vec<&str> = ev
        .iter()
        .map(|e| e.2["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["tracks/a", "tracks/b", "tracks/c"],
        "another org's events never appear"
    );
    assert_eq!(
        ev[0].1,
        ev[0].2["id"].as_str().unwrap(),
        "the SSE id is the event id"
    );

    let mut resumed = open(&g, Some(&ev[1].1)).await;
    let again = read_events(&mut resumed, 1).await;
    assert_eq!(
        again[0].2["subject"], "tracks/c",
        "resumes right after Last-Event-ID"
    );

    // Once every sink has the events they leave the outbox; a resume behind that says so.
    let sink = file_sink(&g, "all", json!({})).await;
    status_when(&g, &sink, |st| st["backlog_events"] == 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut late = open(&g, Some(&ev[0].1)).await;
    ingest(&g, json!([upsert("d", 1)])).await;
    let got = read_events(&mut late, 2).await;
    let names: Vec<&str> = got
        .iter()
        .map(|e| e.0.as_str())
        .filter(|n| *n != "sink")
        .collect();
    assert_eq!(names.first(), Some(&"gap"), "{got:?}");
    let gap = &got.iter().find(|e| e.0 == "gap").unwrap().2;
    assert_eq!(gap["from_lsn"], 2);
}

#[tokio::test]
async fn sink_state_changes_are_announced() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let mut s = open(&g, None).await;
    let sink = file_sink(&g, "x", json!({"enabled": false})).await;
    // A new loop may be seen "starting" first; the announced states end at "paused".
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while states.last().map(String::as_str) != Some("paused") && Instant::now() < deadline {
        for (name, _, data) in read_events(&mut s, 1).await {
            assert_eq!(name, "sink");
            assert_eq!(data["sink_id"].as_str(), Some(sink.as_str()));
            states.push(data["state"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("paused"),
        "{states:?}"
    );
}
