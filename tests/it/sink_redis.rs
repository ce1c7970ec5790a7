//! The Redis Streams sink against a real redis-server (every write fsync'd) started on a
//! loopback port of its own: two orgs each on its own stream, a broker killed and restarted
//! and one frozen (SIGSTOP) mid-stream, a gateway killed while draining, the broker down at
//! start-up, a sealed password, a refused entry stalled then skipped, bad definitions refused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use peat_gateway::cdc::sink::resp::{Conn, Reply};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cdc::status_when;
use crate::error_code;
use crate::harness::service::{redis, Service};
use crate::harness::{Gateway, GatewayOpts};

/// Every entry of `stream`: (entry id, the `id` field, the CloudEvent).
async fn entries(
    broker: &Service,
    password: Option<&str>,
    stream: &str,
) -> Vec<(String, String, Value)> {
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", broker.port)).await else {
        return vec![];
    };
    let mut c = Conn::new(tcp);
    if let Some(p) = password {
        let _ = c.command(&[b"AUTH", p.as_bytes()]).await;
    }
    let Ok(Reply::Array(Some(items))) =
        c.command(&[b"XRANGE", stream.as_bytes(), b"-", b"+"]).await
    else {
        return vec![];
    };
    let text = |r: &Reply| match r {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    items
        .iter()
        .filter_map(|e| match e {
            Reply::Array(Some(parts)) if parts.len() == 2 => {
                let Reply::Array(Some(fields)) = &parts[1] else {
                    return None;
                };
                let mut id = String::new();
                let mut event = Value::Null;
                for kv in fields.chunks(2) {
                    match text(&kv[0]).as_str() {
                        "id" => id = text(&kv[1]),
                        "event" => {
                            event = serde_json::from_str(&text(&kv[1])).unwrap_or(Value::Null)
                        }
                        _ => {}
                    }
                }
                Some((text(&parts[0]), id, event))
            }
            _ => None,
        })
        .collect()
}

async fn wait_entries(
    broker: &Service,
    pw: Option<&str>,
    stream: &str,
    n: usize,
) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = entries(broker, pw, stream).await;
        // At-least-once: redelivered duplicates must not count towards `n`.
        let distinct = e.iter().map(|(_, id, _)| id).collect::<BTreeSet<_>>().len();
        if distinct >= n || Instant::now() > deadline {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn redis_sink(g: &Gateway, org: &str, url: &str, stream: &str) -> String {
    let (s, b) = g
        .admin(
            Method::POST,
            &format!("/orgs/{org}/sinks"),
            Some(json!({"sink_type": {"RedisStreams": {"url": url, "stream": stream}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["sink_id"].as_str().unwrap().to_owned()
}

/// Ingests version `v` of documents `d0..d{n}` into `org`; returns how many were acknowledged.
async fn ingest(g: &Gateway, org: &str, n: u64, v: u64) -> usize {
    let docs = (0..n)
        .map(|i| (format!("d{i}"), json!({"v": v, "org": org})))
        .collect();
    let b = g.upsert(org, "mesh", "tracks", docs).await;
    b["appended"].as_u64().unwrap() as usize
}

/// Checks the stream against what was acknowledged: nothing lost, per-document order kept,
/// duplicates only as repeats of the same event id. Prints the figures.
fn check(
    what: &str,
    got: &[(String, String, Value)],
    acknowledged: &BTreeSet<(String, u64)>,
    org: &str,
) {
    let mut per_doc: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ids: BTreeMap<String, Value> = BTreeMap::new();
    let mut dup = 0;
    for (_, id, ev) in got {
        assert_eq!(
            ev["source"],
            format!("peat://{org}/mesh"),
            "{what}: another org's event"
        );
        assert_eq!(
            ev["id"].as_str(),
            Some(id.as_str()),
            "{what}: the id field is the event id"
        );
        if let Some(prev) = ids.insert(id.clone(), ev.clone()) {
            assert_eq!(
                prev["data"], ev["data"],
                "{what}: a duplicate carries the same event"
            );
            dup += 1;
            continue;
        }
        per_doc
            .entry(ev["peatdocid"].as_str().unwrap().to_owned())
            .or_default()
            .push(ev["data"]["v"].as_u64().unwrap());
    }
    let delivered: BTreeSet<(String, u64)> = per_doc
        .iter()
        .flat_map(|(d, vs)| vs.iter().map(move |v| (d.clone(), *v)))
        .collect();
    let lost = acknowledged.difference(&delivered).count();
    eprintln!(
        "{what}: acknowledged {}, delivered {}, lost {lost}, duplicated {dup}",
        acknowledged.len(),
        delivered.len()
    );
    assert_eq!(lost, 0, "{what}: acknowledged events lost");
    for (d, vs) in &per_doc {
        assert!(
            vs.windows(2).all(|w| w[0] < w[1]),
            "{what}: {d} out of order: {vs:?}"
        );
    }
}

/// Version `v` of ten alpha and four bravo documents, recorded as acknowledged.
async fn round(g: &Gateway, v: u64, acked: &mut BTreeMap<&'static str, BTreeSet<(String, u64)>>) {
    for (org, n) in [("alpha", 10u64), ("bravo", 4)] {
        ingest(g, org, n, v).await;
        for i in 0..n {
            acked.entry(org).or_default().insert((format!("d{i}"), v));
        }
    }
}

#[tokio::test]
async fn two_orgs_each_get_their_stream_through_a_broker_kill_and_a_freeze() {
    let mut broker = redis(&[]).await;
    let url = format!("redis://127.0.0.1:{}", broker.port);
    let g = Gateway::start(GatewayOpts::standard()).await;
    for org in ["alpha", "bravo"] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
        redis_sink(&g, org, &url, "peat-{org}-{app}").await;
    }
    let mut acked: BTreeMap<&str, BTreeSet<(String, u64)>> = BTreeMap::new();
    let mut v = 0;
    for _ in 0..3 {
        v += 1;
        round(&g, v, &mut acked).await;
    }
    wait_entries(&broker, None, "peat-alpha-mesh", 30).await;
    // The broker dies mid-stream and comes back (its append-only file kept what it acked).
    broker.kill();
    for _ in 0..3 {
        v += 1;
        round(&g, v, &mut acked).await;
    }
    broker.start_again().await;
    // Frozen: the link hangs without a word, then thaws.
    broker.signal("STOP");
    for _ in 0..3 {
        v += 1;
        round(&g, v, &mut acked).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.signal("CONT");
    for (org, n) in [("alpha", 90), ("bravo", 36)] {
        let got = wait_entries(&broker, None, &format!("peat-{org}-mesh"), n).await;
        check(&format!("redis {org}"), &got, &acked[org], org);
    }
}

#[tokio::test]
async fn a_password_is_sealed_a_down_broker_waits_and_refusals_stall() {
    let mut broker = redis(&["--requirepass", "rds-s3cret-pw"]).await;
    broker.kill();
    let g = Gateway::start(GatewayOpts::standard()).await;
    crate::cdc::setup(&g).await;
    // Bad definitions are refused at creation, saying what to fix.
    for (spec, field) in [
        (
            json!({"url": "http://127.0.0.1:1", "stream": "s"}),
            "RedisStreams url",
        ),
        (
            json!({"url": "redis://127.0.0.1:1", "stream": ""}),
            "stream",
        ),
        (
            json!({"url": "redis://127.0.0.1:1", "stream": "s", "maxlen": 0}),
            "maxlen",
        ),
        (
            json!({"url": "redis://127.0.0.1:1", "stream": "s", "nope": 1}),
            "unknown field",
        ),
    ] {
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/acme/sinks",
                Some(json!({"sink_type": {"RedisStreams": spec}})),
            )
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(field),
            "{b}"
        );
    }
    let url = format!("redis://:rds-s3cret-pw@127.0.0.1:{}", broker.port);
    let sink = redis_sink(&g, "acme", &url, "cdc").await;
    let (_, shown) = g
        .admin(Method::GET, &format!("/orgs/acme/sinks/{sink}"), None)
        .await;
    assert!(!shown.to_string().contains("rds-s3cret-pw"), "{shown}");
    g.assert_data_dir_lacks(b"rds-s3cret-pw", "the Redis password");
    // The broker is down: the sink says so and keeps the events.
    ingest(&g, "acme", 5, 1).await;
    let st = status_when(&g, &sink, |st| st["state"] == "disconnected").await;
    assert_eq!(st["state"], "disconnected", "{st}");
    broker.start_again().await;
    let got = wait_entries(&broker, Some("rds-s3cret-pw"), "cdc", 5).await;
    let acked = (0..5).map(|i| (format!("d{i}"), 1)).collect();
    check("redis auth", &got, &acked, "acme");
    // A key of another type refuses the entry for good: stalled, parked, then skipped.
    {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", broker.port))
            .await
            .unwrap();
        let mut c = Conn::new(tcp);
        c.command(&[b"AUTH", b"rds-s3cret-pw"]).await.unwrap();
        c.command(&[b"DEL", b"cdc"]).await.unwrap();
        c.command(&[b"SET", b"cdc", b"not a stream"]).await.unwrap();
    }
    ingest(&g, "acme", 1, 2).await;
    let st = status_when(&g, &sink, |st| st["state"] == "stalled").await;
    assert!(
        st["last_error"].as_str().unwrap().contains("WRONGTYPE"),
        "{st}"
    );
    let (s, _) = g
        .admin(Method::POST, &format!("/orgs/acme/sinks/{sink}/skip"), None)
        .await;
    assert_eq!(s, 202);
    let (_, dl) = g
        .admin(
            Method::GET,
            &format!("/orgs/acme/sinks/{sink}/dead-letters"),
            None,
        )
        .await;
    assert_eq!(dl["dead_letters"].as_array().unwrap().len(), 1, "{dl}");
}

#[tokio::test]
async fn a_gateway_killed_while_draining_loses_nothing() {
    let mut broker = redis(&[]).await;
    broker.kill();
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    crate::cdc::setup(&g).await;
    redis_sink(
        &g,
        "acme",
        &format!("redis://127.0.0.1:{}", broker.port),
        "cdc",
    )
    .await;
    let mut acked = BTreeSet::new();
    for v in 1..=20 {
        ingest(&g, "acme", 100, v).await;
        for i in 0..100 {
            acked.insert((format!("d{i}"), v));
        }
    }
    broker.start_again().await;
    // Mid-drain.
    wait_entries(&broker, None, "cdc", 300).await;
    g.kill();
    g.restart().await;
    let got = wait_entries(&broker, None, "cdc", 2000).await;
    check("redis drain with a gateway kill", &got, &acked, "acme");
}
