//! CDC through the real binary: HTTP ingest → outbox → file sink, quotas, pause, filters
//! (SIGKILL during ingest and drain: `crash.rs`).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::{Gateway, GatewayOpts, ADMIN};

pub async fn setup(g: &Gateway) {
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs",
            Some(json!({"org_id": "acme", "display_name": "Acme"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

pub async fn file_sink(g: &Gateway, name: &str, extra: Value) -> String {
    file_sink_of(g, "acme", name, extra).await
}

/// [`file_sink`] of another org.
pub async fn file_sink_of(g: &Gateway, org: &str, name: &str, extra: Value) -> String {
    let mut body = json!({"sink_type": {"File": {"name": name}}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let path = format!("/orgs/{org}/sinks");
    let (s, b) = g.admin(Method::POST, &path, Some(body)).await;
    assert_eq!(s, 201, "{b}");
    b["sink_id"].as_str().unwrap().to_owned()
}

pub async fn ingest(g: &Gateway, changes: Value) -> (u16, Value) {
    ingest_to(g, "acme", changes).await
}

/// [`ingest`] into another org's formation `mesh`.
pub async fn ingest_to(g: &Gateway, org: &str, changes: Value) -> (u16, Value) {
    let path = format!("/orgs/{org}/formations/mesh/changes");
    g.admin(Method::POST, &path, Some(changes)).await
}

pub fn upsert(doc: &str, v: u64) -> Value {
    json!({"collection": "tracks", "doc_id": doc, "op": "upsert", "data": {"v": v}})
}

/// Every CloudEvent the file sink holds, rotated files first, in file order.
pub fn sink_events(g: &Gateway, name: &str) -> Vec<Value> {
    sink_events_of(g, "acme", name)
}

/// [`sink_events`] of another org's file sink.
pub fn sink_events_of(g: &Gateway, org: &str, name: &str) -> Vec<Value> {
    let dir = g.data_dir().join("sinks").join(org);
    let base = format!("{name}.jsonl");
    let files = ["3", "2", "1", ""].map(|n| {
        if n.is_empty() {
            base.clone()
        } else {
            format!("{base}.{n}")
        }
    });
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            // A line still being written (no newline yet) is not read.
            let done = text.rfind('\n').map_or("", |i| &text[..i]);
            done.lines()
                .map(|l| serde_json::from_str(l).expect("each line is one JSON CloudEvent"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

pub async fn wait_for(g: &Gateway, name: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ev = sink_events(g, name);
        if ev.len() >= n || Instant::now() > deadline {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sink's status once `ok` holds, or the last one seen after a deadline.
pub async fn status_when(g: &Gateway, sink: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = g
            .admin(
                Method::GET,
                &format!("/orgs/acme/sinks/{sink}/status"),
                None,
            )
            .await;
        if ok(&st) || Instant::now() > deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ingested_changes_reach_the_file_sink_as_cloudevents_once_per_state() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let sink = file_sink(&g, "all", json!({})).await;
    let (s, b) = ingest(
        &g,
        json!([upsert("t-1", 1), upsert("t-1", 1), upsert("t-2", 1), upsert("t-1", 2),
               {"collection": "tracks", "doc_id": "t-2", "op": "delete"},
               {"collection": "tracks", "doc_id": "t-2", "op": "delete"}]),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(
        (b["appended"].as_u64(), b["unchanged"].as_u64()),
        (Some(4), Some(2)),
        "{b}"
    );
    assert_eq!(b["results"][1]["unchanged"], true);

    let ev = wait_for(&g, "all", 4).await;
    assert_eq!(ev.len(), 4, "{ev:?}");
    let gw = ev[0]["id"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], format!("{gw}:{}", i + 1));
        assert_eq!(e["source"], "peat://acme/mesh");
    }
    assert_eq!(ev[0]["subject"], "tracks/t-1");
    assert_eq!(ev[0]["data"], json!({"v": 1}));
    assert_eq!(ev[2]["data"], json!({"v": 2}));
    assert_eq!(ev[3]["type"], "io.peat.document.deleted");
    assert!(ev[3].get("data").is_none());

    let st = status_when(&g, &sink, |st| st["cursor_lsn"] == 4).await;
    assert_eq!(st["backlog_events"], 0, "{st}");
    // The bodies delivered: the file's lines without their newlines.
    let file = std::fs::read(g.data_dir().join("sinks/acme/all.jsonl")).unwrap();
    assert_eq!(
        st["delivered_bytes"].as_u64(),
        Some((file.len() - 4) as u64),
        "{st}"
    );

    // The content-hash cursor survives a restart: a repeat is still suppressed, and the
    // sink's cursor means nothing is delivered twice after a clean stop.
    g.restart_with(GatewayOpts::standard()).await;
    let (s, b) = ingest(&g, json!([upsert("t-1", 2), upsert("t-3", 1)])).await;
    assert_eq!((s, b["appended"].as_u64()), (202, Some(1)), "{b}");
    let ev = wait_for(&g, "all", 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev2 = sink_events(&g, "all");
    assert_eq!(ev2.len(), 5, "{ev:?}");
    assert_eq!(
        ev2[4]["id"],
        format!("{gw}:5"),
        "the gateway id is stable across restarts"
    );
}

#[tokio::test]
async fn bad_ingest_answers_4xx_json_and_appends_nothing() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let url = format!("{}/orgs/acme/formations/mesh/changes", g.base());
    let client = reqwest::Client::new();
    let send = |ct: &'static str, body: String| {
        client
            .post(&url)
            .bearer_auth(ADMIN)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("application/json", "{not json".into(), 400),
        (
            "application/json",
            json!({"collection": "tracks"}).to_string(),
            400,
        ),
        ("text/plain", json!([upsert("a", 1)]).to_string(), 415),
        ("application/json", json!([]).to_string(), 422),
        (
            "application/json",
            json!([upsert("a", 1), {"collection": "bad:name", "doc_id": "x", "op": "delete"}])
                .to_string(),
            422,
        ),
        (
            "application/json",
            json!([upsert("a", 1), {"collection": "tracks", "doc_id": "x", "op": "upsert"}])
                .to_string(),
            422,
        ),
        (
            "application/json",
            json!([{"collection": "tracks", "doc_id": "x", "op": "upsert", "data": [1]}])
                .to_string(),
            422,
        ),
        (
            "application/json",
            json!([{"collection": "tracks", "doc_id": "x", "op": "move"}]).to_string(),
            400,
        ),
        (
            "application/json",
            json!([{"collection": "tracks", "doc_id": "x", "op": "delete", "extra": 1}])
                .to_string(),
            400,
        ),
        (
            "application/x-ndjson",
            format!("{}\n{{oops\n", upsert("a", 1)),
            400,
        ),
    ];
    for (ct, body, want) in cases {
        let r = send(ct, body.clone()).await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{ct} {}: {v}", &body[..body.len().min(80)]);
        error_code(&v);
    }
    // Oversize: the limit is checked from Content-Length before any body byte is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", g.port))
            .await
            .unwrap();
        let head = format!(
            "POST /orgs/acme/formations/mesh/changes HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            5 * 1024 * 1024
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp).await;
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
        assert!(resp.contains(r#""code":"payload_too_large""#), "{resp}");
    }
    let (_, missing) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations/nope/changes",
            Some(json!([upsert("a", 1)])),
        )
        .await;
    assert_eq!(error_code(&missing), "not_found");

    let (_, m) = g.admin(Method::GET, "/metrics", None).await;
    let text = m.as_str().unwrap();
    assert!(
        text.contains("peat_gateway_outbox_head_lsn 0"),
        "nothing was appended:\n{text}"
    );

    // NDJSON is accepted too.
    let r = send(
        "application/x-ndjson",
        format!("{}\n\n{}\n", upsert("a", 1), upsert("b", 1)),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn unknown_or_incomplete_sink_types_are_refused_and_filters_and_pause_hold() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    for t in [
        json!({"Kafka": {"topic": "x"}}),
        json!({"RedisStreams": {"stream": "x"}}),
        json!({"Nope": {}}),
        json!("File"),
    ] {
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/acme/sinks",
                Some(json!({"sink_type": t})),
            )
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{t}: {b}");
    }
    let nodes = file_sink(&g, "nodes", json!({"collections": ["nodes"]})).await;
    let paused = file_sink(&g, "paused", json!({"enabled": false})).await;
    let (s, _) = ingest(
        &g,
        json!([upsert("t-1", 1), {"collection": "nodes", "doc_id": "n-1", "op": "upsert", "data": {"up": true}}]),
    )
    .await;
    assert_eq!(s, 202);
    let ev = wait_for(&g, "nodes", 1).await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["subject"], "nodes/n-1");
    let st = status_when(&g, &nodes, |st| st["cursor_lsn"] == 2).await;
    assert_eq!(
        st["cursor_lsn"], 2,
        "filtered events still move the cursor: {st}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink_events(&g, "paused").is_empty());
    let (_, st) = g
        .admin(
            Method::GET,
            &format!("/orgs/acme/sinks/{paused}/status"),
            None,
        )
        .await;
    assert_eq!(
        (st["state"].as_str(), st["backlog_events"].as_u64()),
        (Some("paused"), Some(2)),
        "{st}"
    );
    let (s, _) = g
        .admin(
            Method::PATCH,
            &format!("/orgs/acme/sinks/{paused}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        wait_for(&g, "paused", 2).await.len(),
        2,
        "resumed sink drains its backlog"
    );

    let (s, b) = g
        .admin(
            Method::POST,
            &format!("/orgs/acme/sinks/{nodes}/retry"),
            None,
        )
        .await;
    assert_eq!((s, error_code(&b)), (409, "not_stalled"));
    let (s, _) = g
        .admin(Method::DELETE, &format!("/orgs/acme/sinks/{nodes}"), None)
        .await;
    assert_eq!(s, 204);
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["sink.create", "sink.pause-resume", "sink.delete"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
}

#[tokio::test]
async fn a_full_outbox_blocks_with_503_or_drops_oldest_with_an_audit_entry() {
    // No sink: nothing drains, so 1 MiB fills.
    let big = "x".repeat(60_000);
    let batch = |from: u64| -> Value {
        Value::Array((from..from + 10).map(|i| json!({"collection": "tracks", "doc_id": format!("d{i}"), "op": "upsert", "data": {"pad": big}})).collect())
    };

    let g = Gateway::start(GatewayOpts::standard().with("PEAT_CDC_OUTBOX_MAX_MB", "1")).await;
    setup(&g).await;
    let (s, _) = ingest(&g, batch(0)).await;
    assert_eq!(s, 202);
    let r = reqwest::Client::new()
        .post(format!("{}/orgs/acme/formations/mesh/changes", g.base()))
        .bearer_auth(ADMIN)
        .json(&batch(100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "outbox_full");
    let (_, m) = g.admin(Method::GET, "/metrics", None).await;
    assert!(
        m.as_str()
            .unwrap()
            .contains("peat_gateway_outbox_head_lsn 10"),
        "the refused batch appended nothing"
    );

    let g = Gateway::start(
        GatewayOpts::standard()
            .with("PEAT_CDC_OUTBOX_MAX_MB", "1")
            .with("PEAT_CDC_FULL_POLICY", "drop-oldest"),
    )
    .await;
    setup(&g).await;
    ingest(&g, batch(0)).await;
    let (s, b) = ingest(&g, batch(100)).await;
    assert_eq!(s, 202, "{b}");
    let dropped = b["dropped_oldest"].as_u64().unwrap();
    assert!((1..10).contains(&dropped), "{b}");
    let sink = file_sink(&g, "late", json!({})).await;
    let ev = wait_for(&g, "late", 20 - dropped as usize).await;
    assert_eq!(ev.len() as u64, 20 - dropped);
    assert_eq!(
        ev[0]["subject"],
        format!("tracks/d{dropped}"),
        "the oldest went first"
    );
    assert_eq!(
        ev.last().unwrap()["subject"],
        "tracks/d109",
        "the newest survive"
    );
    let st = status_when(&g, &sink, |st| st["backlog_events"] == 0).await;
    assert_eq!(st["backlog_events"], 0, "{st}");
    let (_, m) = g.admin(Method::GET, "/metrics", None).await;
    assert!(!m
        .as_str()
        .unwrap()
        .contains("peat_gateway_outbox_dropped_events 0"));
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "cdc.outbox.drop-oldest"));
}

#[tokio::test]
async fn a_recreated_formation_inherits_no_document_state() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let (_, b) = ingest(&g, json!([upsert("t-1", 1)])).await;
    assert_eq!(b["appended"], 1);
    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh", None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = ingest(&g, json!([upsert("t-1", 1)])).await;
    assert_eq!((s, error_code(&b)), (404, "not_found"));
    g.create_formation("acme", "mesh").await;
    let (_, b) = ingest(&g, json!([upsert("t-1", 1)])).await;
    assert_eq!(
        b["appended"], 1,
        "same content, new formation: a new event: {b}"
    );
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn the_outbox_file_is_compacted_after_a_drained_backlog() {
    let g = Gateway::start(GatewayOpts::standard().with("PEAT_CDC_COMPACT_MIN_MB", "1")).await;
    setup(&g).await;
    ingest_padded(&g, 70).await;
    let (_, m) = g.admin(Method::GET, "/metrics", None).await;
    let grown = metric(m.as_str().unwrap(), "peat_gateway_outbox_file_bytes ");
    assert!(grown > 40 << 20, "backlog on disk: {grown}");
    let sink = file_sink(&g, "drain", json!({})).await;
    status_when(&g, &sink, |st| st["backlog_events"] == 0).await;
    // A generous bound (compaction is checked every 10 s): on a loaded CI machine this can be slow.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut now = grown;
    // Compaction may run while the last trims are still landing (it starts once the file is
    // twice what it holds plus 16 MiB), so what remains is bounded by that rule, not by zero.
    while Instant::now() < deadline && now > grown / 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, m) = g.admin(Method::GET, "/metrics", None).await;
        now = metric(m.as_str().unwrap(), "peat_gateway_outbox_file_bytes ");
    }
    eprintln!(
        "outbox file: {} MiB with the backlog, {} MiB after drain and compaction",
        grown >> 20,
        now >> 20
    );
    assert!(now < grown / 2, "compacted: {grown} -> {now}");
    assert!(
        now < 32 << 20,
        "below the compaction trigger with nothing held: {now}"
    );
    // The size can drop before the compaction's closing log line is written.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !g.all_output().contains("outbox compacted") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(g.all_output().contains("outbox compacted"));
    // Still a working outbox.
    let (s, b) = ingest(&g, json!([upsert("after", 1)])).await;
    assert_eq!((s, b["appended"].as_u64()), (202, Some(1)));
}

/// `rounds` batches of 10 documents of 60 kB each: a backlog that grows the outbox file.
async fn ingest_padded(g: &Gateway, rounds: usize) {
    for r in 0..rounds {
        ingest_padded_round(g, r).await;
    }
}

/// Round `r` of [`ingest_padded`].
async fn ingest_padded_round(g: &Gateway, r: usize) {
    let pad = "x".repeat(60_000);
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"collection": "tracks", "doc_id": format!("d{r}-{i}"), "op": "upsert", "data": {"pad": pad}}))
        .collect();
    assert_eq!(ingest(g, Value::Array(batch)).await.0, 202);
}

/// The number after `name` in a log line (`name=42` or `"name":42`).
fn log_field(line: &str, name: &str) -> Option<u64> {
    let rest = &line[line.find(name)? + name.len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[tokio::test]
async fn the_outbox_is_not_compacted_in_the_middle_of_a_drain() {
    let g = Gateway::start(
        GatewayOpts::standard()
            .with("PEAT_CDC_COMPACT_MIN_MB", "1")
            .with("PEAT_CDC_OUTBOX_MAX_MB", "1024"),
    )
    .await;
    setup(&g).await;
    ingest_padded(&g, 230).await;
    // A drain of ~140 MiB held to 3 MiB/s: the compaction checks (every 10 s) come while
    // the file is past twice what it still holds.
    file_sink(&g, "slow", json!({"rate_limit_bytes_per_sec": 3 << 20})).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while !g.all_output().contains("outbox compacted") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = g.all_output();
    let line = out
        .lines()
        .find(|l| l.contains("compacting the outbox file"))
        .unwrap_or_else(|| panic!("compacted after the drain: {out}"));
    let (file, held) = (
        log_field(line, "file_mib").unwrap(),
        log_field(line, "held_mib").unwrap(),
    );
    // Mid-drain a compaction would copy what the sink is still reading out.
    assert!(
        held * 8 <= file + 8,
        "compacted while {held} MiB of {file} MiB were still being drained: {line}"
    );
}

#[tokio::test]
async fn compaction_keeps_every_event_an_org_still_holds() {
    const ROUNDS: usize = 80;
    const BRAVO: usize = 1000;
    let opts = |compact_mb: &str| {
        GatewayOpts::standard()
            .with("PEAT_CDC_COMPACT_MIN_MB", compact_mb)
            .with("PEAT_CDC_OUTBOX_MAX_MB", "1024")
    };
    let mut g = Gateway::start(opts("100000")).await;
    setup(&g).await;
    g.create_org("bravo", "Bravo").await;
    g.create_formation("bravo", "mesh").await;
    let held_sink = file_sink_of(&g, "bravo", "later", json!({"enabled": false})).await;
    // Small events, as a mesh sends them; bravo's held ones lie between acme's, all through
    // the file.
    let pad = "y".repeat(200);
    // The same documents each round with new contents: every upsert is an event.
    let docs = |org: &str, r: usize, n: usize| -> Vec<(String, Value)> {
        (0..n)
            .map(|i| (format!("{org}-{i}"), json!({"pad": pad, "round": r})))
            .collect()
    };
    for r in 0..ROUNDS {
        g.upsert("acme", "mesh", "tracks", docs("a", r, 2000)).await;
        g.upsert("bravo", "mesh", "tracks", docs("b", r, BRAVO))
            .await;
    }
    let drained = file_sink(&g, "drain", json!({})).await;
    status_when(&g, &drained, |st| st["backlog_events"] == 0).await;
    // What a crash in the middle of an earlier compaction leaves beside the file.
    let unfinished = g.data_dir().join("cdc.redb.compacting");
    assert!(g.stop(), "stopped cleanly");
    std::fs::write(&unfinished, vec![0u8; 1 << 20]).unwrap();
    g.restart_with(opts("1")).await;
    assert!(
        !unfinished.exists(),
        "the unfinished copy is removed at start"
    );
    assert!(g
        .stderr(2)
        .contains("removed an unfinished compaction copy"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !g.stderr(2).contains("outbox compacted") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = g.stderr(2);
    let line = out
        .lines()
        .find(|l| l.contains("outbox compacted"))
        .unwrap_or_else(|| panic!("compacted after the restart: {}", g.all_output()));
    let (before, after) = (
        log_field(line, "before_mib").unwrap(),
        log_field(line, "after_mib").unwrap(),
    );
    assert!(after * 2 < before, "the file shrank: {line}");
    assert!(!unfinished.exists(), "the copy became the file: {line}");
    // Bravo's held events survived whole and in order; acme's outbox still works.
    let (s, b) = g
        .admin(
            Method::PATCH,
            &format!("/orgs/bravo/sinks/{held_sink}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = vec![];
    while got.len() < ROUNDS * BRAVO && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = sink_events_of(&g, "bravo", "later");
    }
    let ids: Vec<(String, u64)> = got
        .iter()
        .map(|e| {
            (
                e["subject"].to_string(),
                e["data"]["round"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = (0..ROUNDS as u64)
        .flat_map(|r| (0..BRAVO).map(move |i| (format!("\"tracks/b-{i}\""), r)))
        .collect();
    assert_eq!(ids, want, "bravo's held events after compaction");
    let (s, b) = ingest(&g, json!([upsert("after", 1)])).await;
    assert_eq!((s, b["appended"].as_u64()), (202, Some(1)));
}

/// Ingest keeps each formation it looked up until the next write to what that lookup read: a
/// quota lowered or a formation deleted right after an ingest applies to the very next one,
/// in that org only.
#[tokio::test]
async fn what_ingest_looked_up_gives_way_to_the_next_change_of_the_org() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    g.create_org("bravo", "Bravo").await;
    g.create_formation("bravo", "mesh").await;
    for org in ["acme", "bravo"] {
        let (s, b) = ingest_to(&g, org, json!([upsert("a", 1), upsert("b", 1)])).await;
        assert_eq!(s, 202, "{org}: {b}");
    }
    let quota = json!({"quotas": {"max_documents_per_formation": 2}});
    let (s, _) = g.admin(Method::PATCH, "/orgs/bravo", Some(quota)).await;
    assert_eq!(s, 200);
    let (s, b) = ingest_to(&g, "bravo", json!([upsert("c", 1)])).await;
    assert_eq!((s, error_code(&b)), (409, "quota_exceeded"), "{b}");
    let (s, b) = ingest_to(&g, "acme", json!([upsert("c", 1)])).await;
    assert_eq!((s, b["appended"].as_u64()), (202, Some(1)), "{b}");
    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh", None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = ingest_to(&g, "acme", json!([upsert("d", 1)])).await;
    assert_eq!((s, error_code(&b)), (404, "not_found"), "{b}");
    let (s, b) = ingest_to(&g, "bravo", json!([upsert("a", 2)])).await;
    assert_eq!((s, b["appended"].as_u64()), (202, Some(1)), "{b}");
}

#[tokio::test]
async fn a_formation_holds_at_most_its_quota_of_documents() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    crate::enroll::set_quota(&g, "max_documents_per_formation", 3).await;
    let (s, b) = ingest(&g, json!([upsert("a", 1), upsert("b", 1), upsert("c", 1)])).await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = ingest(&g, json!([upsert("a", 2), upsert("d", 1)])).await;
    assert_eq!((s, error_code(&b)), (409, "quota_exceeded"), "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_documents_per_formation"));
    // Refused whole: the update in the same batch did not land either.
    let (s, b) = ingest(&g, json!([upsert("a", 2)])).await;
    assert_eq!((s, b["appended"].as_u64()), (202, Some(1)), "{b}");
    let (s, _) = ingest(
        &g,
        json!([{"collection": "tracks", "doc_id": "b", "op": "delete"}, upsert("d", 1)]),
    )
    .await;
    assert_eq!(s, 202, "a deleted document frees its place");
}
