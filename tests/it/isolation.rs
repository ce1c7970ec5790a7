//! Tenant isolation in the data plane: two orgs, each with sinks of every type created by its
//! own org-admin token, and nothing of one org reaches, or shows in the figures of, the other.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use reqwest::Method;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::events::read_events;
use crate::harness::service::{mosquitto, nats};
use crate::harness::{Gateway, GatewayOpts};

const ORGS: [&str; 2] = ["alpha", "bravo"];

/// Bodies the webhook receiver got, by path; `/reject-*` paths refuse every event with 400.
type Hooks = Arc<Mutex<Vec<(String, Value)>>>;

async fn hook(State(h): State<Hooks>, Path(p): Path<String>, body: Bytes) -> StatusCode {
    if p.starts_with("reject") {
        return StatusCode::BAD_REQUEST;
    }
    if let Ok(Value::Array(evs)) = serde_json::from_slice::<Value>(&body) {
        let mut h = h.lock().unwrap();
        for e in evs {
            h.push((p.clone(), e));
        }
    }
    StatusCode::OK
}

async fn receiver() -> (u16, Hooks) {
    let hooks: Hooks = Arc::default();
    let app = axum::Router::new()
        .route("/{p}", axum::routing::post(hook))
        .with_state(hooks.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, hooks)
}

type Mqtt = Arc<Mutex<Vec<(String, Value)>>>;

fn mqtt_subscriber(port: u16) -> Mqtt {
    let mut o = MqttOptions::new("isolation-subscriber", "127.0.0.1", port);
    o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut events) = AsyncClient::new(o, 64);
    let got: Mqtt = Arc::default();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("iso/#", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    sink.lock().unwrap().push((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    got
}

/// Every message of the org's stream (the sink names it `peat-<org>-<prefix>`).
async fn nats_messages(url: &str, org: &str) -> Vec<Value> {
    let Ok(client) = async_nats::connect(url).await else {
        return vec![];
    };
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream(format!("peat-{org}-iso_{org}")).await else {
        return vec![];
    };
    let Ok(info) = stream.info().await else {
        return vec![];
    };
    let mut out = Vec::new();
    for seq in info.state.first_sequence.max(1)..=info.state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&m.payload).unwrap());
        }
    }
    out
}

fn sources(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["source"].as_str().unwrap_or("?").to_owned())
        .collect()
}

async fn as_org(
    g: &Gateway,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    g.call(method, path, Some(token), body).await
}

async fn sink(g: &Gateway, org: &str, token: &str, spec: Value) -> String {
    let (s, b) = as_org(
        g,
        token,
        Method::POST,
        &format!("/orgs/{org}/sinks"),
        Some(json!({"sink_type": spec})),
    )
    .await;
    assert_eq!(s, 201, "{org}: {b}");
    b["sink_id"].as_str().unwrap().to_owned()
}

async fn ingest(g: &Gateway, org: &str, token: &str, from: u64, n: u64) {
    let changes: Vec<Value> = (from..from + n)
        .map(|i| json!({"collection": "tracks", "doc_id": format!("{org}-{i}"), "op": "upsert", "data": {"org": org, "i": i}}))
        .collect();
    let (s, b) = as_org(
        g,
        token,
        Method::POST,
        &format!("/orgs/{org}/formations/mesh/changes"),
        Some(Value::Array(changes)),
    )
    .await;
    assert_eq!(s, 202, "{b}");
}

async fn status(g: &Gateway, org: &str, token: &str, sink: &str) -> Value {
    as_org(
        g,
        token,
        Method::GET,
        &format!("/orgs/{org}/sinks/{sink}/status"),
        None,
    )
    .await
    .1
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn file_events(g: &Gateway, org: &str, name: &str) -> Vec<Value> {
    std::fs::read_to_string(
        g.data_dir()
            .join("sinks")
            .join(org)
            .join(format!("{name}.jsonl")),
    )
    .unwrap_or_default()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[tokio::test]
async fn every_data_path_keeps_each_orgs_events_to_that_org() {
    let nats = nats().await;
    let broker = mosquitto().await;
    let mqtt = mqtt_subscriber(broker.port);
    let (hook_port, hooks) = receiver().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    let mut tokens = Vec::new();
    for org in ORGS {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
        let (s, t) = g
            .admin(
                Method::POST,
                &format!("/orgs/{org}/api-tokens"),
                Some(json!({"name": "admin", "role": "org-admin"})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        tokens.push(t["token"].as_str().unwrap().to_owned());
    }
    let mut sinks = Vec::new();
    for (org, tok) in ORGS.iter().zip(&tokens) {
        let file = sink(&g, org, tok, json!({"File": {"name": "all"}})).await;
        let nats = sink(
            &g,
            org,
            tok,
            json!({"Nats": {"subject_prefix": format!("iso.{org}"), "url": nats.url("nats")}}),
        )
        .await;
        let mqtt = sink(&g, org, tok, json!({"Mqtt": {"topic_prefix": format!("iso/{org}"), "url": format!("mqtt://127.0.0.1:{}", broker.port)}})).await;
        let hook = sink(
            &g,
            org,
            tok,
            json!({"Webhook": {"url": format!("http://127.0.0.1:{hook_port}/{org}")}}),
        )
        .await;
        let reject = sink(
            &g,
            org,
            tok,
            json!({"Webhook": {"url": format!("http://127.0.0.1:{hook_port}/reject-{org}")}}),
        )
        .await;
        sinks.push((file, nats, mqtt, hook, reject));
    }
    // Live streams opened before anything is ingested, one per org with its own token.
    let mut streams = Vec::new();
    for (org, tok) in ORGS.iter().zip(&tokens) {
        let r = g
            .req(
                Method::GET,
                &format!("/orgs/{org}/events/stream"),
                Some(tok),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    for (org, tok) in ORGS.iter().zip(&tokens) {
        ingest(&g, org, tok, 0, 20).await;
    }

    for (i, org) in ORGS.iter().enumerate() {
        let want: BTreeSet<String> = [format!("peat://{org}/mesh")].into();
        let f = eventually("file sink", async || {
            let e = file_events(&g, org, "all");
            (e.len() >= 20).then_some(e)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let f_all = file_events(&g, org, "all");
        assert_eq!(f_all.len(), 20, "{org}'s file sink got {} events", f.len());
        assert_eq!(sources(&f_all), want, "file sink of {org}");

        let n = eventually("nats", async || {
            let m = nats_messages(&nats.url("nats"), org).await;
            (m.len() >= 20).then_some(m)
        })
        .await;
        assert_eq!(n.len(), 20, "nats sink of {org}");
        assert_eq!(sources(&n), want, "nats sink of {org}");

        let m: Vec<Value> = eventually("mqtt", async || {
            let m: Vec<Value> = mqtt
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| t.starts_with(&format!("iso/{org}/")))
                .map(|(_, v)| v.clone())
                .collect();
            (m.len() >= 20).then_some(m)
        })
        .await;
        assert_eq!(sources(&m), want, "mqtt sink of {org}");
        let ids: BTreeSet<_> = m.iter().map(|e| e["id"].to_string()).collect();
        assert_eq!(ids.len(), 20, "mqtt sink of {org}");

        let h: Vec<Value> = eventually("webhook", async || {
            let h: Vec<Value> = hooks
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _)| p == org)
                .map(|(_, v)| v.clone())
                .collect();
            (h.len() >= 20).then_some(h)
        })
        .await;
        assert_eq!(h.len(), 20, "webhook sink of {org}");
        assert_eq!(sources(&h), want, "webhook sink of {org}");

        // The refusing sink stalls on its org's first event and parks only that org's.
        let tok = &tokens[i];
        let reject = &sinks[i].4;
        let st = eventually("a stall", async || {
            let st = status(&g, org, tok, reject).await;
            (st["state"] == "stalled").then_some(st)
        })
        .await;
        assert_eq!(st["backlog_events"], 20, "{org}: {st}");
        let (_, dl) = as_org(
            &g,
            tok,
            Method::GET,
            &format!("/orgs/{org}/sinks/{reject}/dead-letters"),
            None,
        )
        .await;
        let parked: Vec<Value> = dl["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event"].clone())
            .collect();
        assert_eq!(parked.len(), 1, "{dl}");
        assert_eq!(sources(&parked), want, "dead letters of {org}");

        // Figures: a caught-up sink has no backlog, whatever the other org holds.
        let st = status(&g, org, tok, &sinks[i].0).await;
        assert_eq!(st["backlog_events"], 0, "{org}: {st}");
        let (s, ob) = as_org(&g, tok, Method::GET, &format!("/orgs/{org}/outbox"), None).await;
        assert_eq!(s, 200, "{ob}");
        assert_eq!(
            ob["events"], 20,
            "{org}'s outbox share holds its events only: {ob}"
        );
    }

    // Skipping one org's stalled event moves only its own sink on, to its own next event.
    let (s, b) = as_org(
        &g,
        &tokens[0],
        Method::POST,
        &format!("/orgs/alpha/sinks/{}/skip", sinks[0].4),
        None,
    )
    .await;
    assert!(s < 300, "{b}");
    let st = eventually("the next stall", async || {
        let st = status(&g, "alpha", &tokens[0], &sinks[0].4).await;
        (st["state"] == "stalled" && st["backlog_events"] == 19).then_some(st)
    })
    .await;
    assert_eq!(st["backlog_events"], 19, "{st}");
    let st = status(&g, "bravo", &tokens[1], &sinks[1].4).await;
    assert_eq!(
        st["backlog_events"], 20,
        "bravo's stalled sink did not move: {st}"
    );

    // A paused sink's backlog counts its own org's new events only.
    let (s, b) = as_org(
        &g,
        &tokens[0],
        Method::PATCH,
        &format!("/orgs/alpha/sinks/{}", sinks[0].0),
        Some(json!({"enabled": false})),
    )
    .await;
    assert!(s < 300, "{b}");
    ingest(&g, "bravo", &tokens[1], 100, 7).await;
    ingest(&g, "alpha", &tokens[0], 100, 3).await;
    let st = eventually("alpha's paused backlog", async || {
        let st = status(&g, "alpha", &tokens[0], &sinks[0].0).await;
        (st["state"] == "paused" && st["backlog_events"] == 3).then_some(st)
    })
    .await;
    assert_eq!(st["backlog_events"], 3, "{st}");

    // Metrics: each sink's backlog is its own org's (bravo's sink first takes its 7).
    eventually("bravo's sink caught up", async || {
        let st = status(&g, "bravo", &tokens[1], &sinks[1].1).await;
        (st["backlog_events"] == 0).then_some(st)
    })
    .await;
    let m = g.metrics().await;
    let backlog_of = |sink: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("peat_gateway_sink_backlog_events{") && l.contains(sink))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    assert_eq!(backlog_of(&sinks[0].0), 3, "{m}");
    assert_eq!(backlog_of(&sinks[1].1), 0, "{m}");

    // The live streams carried each org's own events only.
    for (i, org) in ORGS.iter().enumerate() {
        let want = [23, 27][i];
        let mut cdc = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while cdc.len() < want && Instant::now() < deadline {
            for (e, _, d) in read_events(&mut streams[i], 1).await {
                if e == "cdc" {
                    cdc.push(d);
                }
            }
        }
        assert_eq!(cdc.len(), want, "{org}: its own events only: {cdc:?}");
        assert_eq!(sources(&cdc), [format!("peat://{org}/mesh")].into());
    }
    // Resuming from another org's event id shows nothing of that org.
    let bravo_id = nats_messages(&nats.url("nats"), "bravo").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut r = g
        .req(Method::GET, "/orgs/alpha/events/stream", Some(&tokens[0]))
        .header("last-event-id", bravo_id)
        .send()
        .await
        .unwrap();
    let got = read_events(&mut r, 5).await;
    assert!(
        got.iter()
            .filter(|(e, _, _)| e == "cdc")
            .all(|(_, _, d)| d["source"] == "peat://alpha/mesh"),
        "{got:?}"
    );

    // Replaying a dead letter after the receiver takes it delivers that org's event only.
    let (s, _) = as_org(
        &g,
        &tokens[1],
        Method::POST,
        &format!("/orgs/bravo/sinks/{}/dead-letters", sinks[1].4),
        Some(json!({"action": "retry"})),
    )
    .await;
    assert!(s < 500);
    assert!(hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "alpha")
        .all(|(_, e)| e["source"] == "peat://alpha/mesh"));
}

#[tokio::test]
async fn one_orgs_full_share_neither_blocks_nor_drops_another_orgs_events() {
    // 2 MiB for two orgs: 1 MiB each. Neither org has a sink, so nothing drains.
    let big = "x".repeat(60_000);
    let batch = |org: &str, from: u64| -> Value {
        Value::Array((from..from + 8).map(|i| json!({"collection": "tracks", "doc_id": format!("{org}{i}"), "op": "upsert", "data": {"pad": big}})).collect())
    };
    for policy in ["block", "drop-oldest"] {
        let g = Gateway::start(
            GatewayOpts::standard()
                .with("PEAT_CDC_OUTBOX_MAX_MB", "2")
                .with("PEAT_CDC_FULL_POLICY", policy),
        )
        .await;
        for org in ORGS {
            g.create_org(org, org).await;
            g.create_formation(org, "mesh").await;
        }
        // alpha fills its share and more.
        for round in 0..4 {
            let (s, b) = g
                .admin(
                    Method::POST,
                    "/orgs/alpha/formations/mesh/changes",
                    Some(batch("a", round * 100)),
                )
                .await;
            if policy == "block" && round >= 2 {
                assert_eq!(s, 503, "{policy}: alpha is over its share: {b}");
            } else {
                assert_eq!(s, 202, "{policy}: {b}");
            }
        }
        // bravo still appends, and loses nothing.
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/bravo/formations/mesh/changes",
                Some(batch("b", 0)),
            )
            .await;
        assert_eq!(s, 202, "{policy}: bravo is not held by alpha's share: {b}");
        assert_eq!(b["dropped_oldest"], 0, "{policy}: {b}");
        let (_, ob) = g.admin(Method::GET, "/orgs/bravo/outbox", None).await;
        assert_eq!(ob["events"], 8, "{policy}: {ob}");
        let m = g.metrics().await;
        assert!(
            m.contains("peat_gateway_outbox_org_events{org=\"bravo\"} 8"),
            "{policy}: per-org figures for the admin: {m}"
        );
        let public = g.public_metrics().await;
        assert!(
            !public.contains("org=\"bravo\""),
            "org names only for the admin"
        );
        let (_, oa) = g.admin(Method::GET, "/orgs/alpha/outbox", None).await;
        assert!(
            oa["bytes"].as_u64().unwrap() <= oa["share_bytes"].as_u64().unwrap(),
            "{policy}: {oa}"
        );
        // A sink of bravo created now receives all of bravo's events and none of alpha's.
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/bravo/sinks",
                Some(json!({"sink_type": {"File": {"name": "late"}}})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let ev = eventually("bravo's backlog", async || {
            let e = file_events(&g, "bravo", "late");
            (e.len() >= 8).then_some(e)
        })
        .await;
        assert_eq!(ev.len(), 8);
        assert_eq!(sources(&ev), ["peat://bravo/mesh".to_owned()].into());
    }
}
