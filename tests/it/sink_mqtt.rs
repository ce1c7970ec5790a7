//! The MQTT sink against a real mosquitto on a loopback port of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::cdc::{ingest, setup, status_when, upsert};
use crate::error_code;
use crate::harness::service::{self, Service};
use crate::harness::{Gateway, GatewayOpts};

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A persistent-session QoS 1 subscriber that keeps reconnecting and resubscribing.
fn subscriber(broker: &Service) -> (Received, tokio::task::JoinHandle<()>) {
    let mut o = MqttOptions::new("test-subscriber", "127.0.0.1", broker.port);
    o.set_clean_session(false);
    o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut events) = AsyncClient::new(o, 64);
    let got: Received = Arc::default();
    let sink = got.clone();
    let task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("peat/#", QoS::AtLeastOnce).await;
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
    (got, task)
}

async fn wait_ids(got: &Received, n: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: BTreeSet<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, v)| v["id"].as_str().map(str::to_owned))
            .collect();
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn batch(round: u64) -> Value {
    Value::Array((0..10).map(|d| upsert(&format!("k/{d}"), round)).collect())
}

#[tokio::test]
async fn every_event_reaches_mqtt_through_a_broker_restart_in_per_document_order() {
    let mut broker = service::mosquitto().await;
    let (got, sub) = subscriber(&broker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Mqtt": {"url": format!("mqtt://127.0.0.1:{}", broker.port), "topic_prefix": "peat"}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let sink = b["sink_id"].as_str().unwrap().to_owned();
    for round in 0..5 {
        assert_eq!(ingest(&g, batch(round)).await.0, 202);
    }
    assert_eq!(wait_ids(&got, 50).await.len(), 50);

    broker.stop();
    for round in 5..10 {
        assert_eq!(
            ingest(&g, batch(round)).await.0,
            202,
            "ingest goes on while the broker is down"
        );
    }
    let st = status_when(&g, &sink, |st| st["state"] == "disconnected").await;
    assert_eq!(st["state"], "disconnected", "{st}");
    broker.start_again().await;
    let ids = wait_ids(&got, 100).await;
    assert_eq!(ids.len(), 100, "every acknowledged event arrived");

    let all = got.lock().unwrap().clone();
    eprintln!(
        "mqtt: {} messages for {} events ({} duplicates)",
        all.len(),
        ids.len(),
        all.len() - ids.len()
    );
    let mut per_doc: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (topic, ev) in &all {
        let doc = ev["peatdocid"].as_str().unwrap();
        assert_eq!(
            topic,
            &format!("peat/acme/mesh/tracks/{}", doc.replace('/', "~2F"))
        );
        // Duplicates after a reconnect repeat an id already delivered; order holds for first deliveries.
        if seen.insert(ev["id"].as_str().unwrap().to_owned()) {
            per_doc
                .entry(doc.to_owned())
                .or_default()
                .push(ev["data"]["v"].as_u64().unwrap());
        }
    }
    for (doc, vs) in per_doc {
        assert_eq!(vs, (0..10).collect::<Vec<_>>(), "{doc} in order");
    }
    sub.abort();
}

#[tokio::test]
async fn mqtt_sink_settings_are_validated_and_credentials_never_shown() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    for bad in [
        json!({"url": "tcp://h", "topic_prefix": "p"}),
        json!({"url": "mqtts://h", "topic_prefix": "p", "tls_ca_pem": "not pem"}),
        json!({"url": "mqtt://h:notaport", "topic_prefix": "p"}),
        json!({"url": "mqtt://h", "topic_prefix": "p/+/x"}),
        json!({"url": "mqtt://h", "topic_prefix": "/p"}),
        json!({"url": "mqtt://h"}),
    ] {
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/acme/sinks",
                Some(json!({"sink_type": {"Mqtt": bad}})),
            )
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{bad}: {b}");
    }
    let (s, b) = g
        .admin(Method::POST, "/orgs/acme/sinks", Some(json!({"sink_type": {"Mqtt": {"url": "mqtt://user:hunter2@127.0.0.1:1", "topic_prefix": "p"}}})))
        .await;
    assert_eq!(s, 201);
    assert!(!b.to_string().contains("hunter2"), "{b}");
    let (_, list) = g.admin(Method::GET, "/orgs/acme/sinks", None).await;
    assert!(!list.to_string().contains("hunter2"));
}

fn ca_and_server() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let srv = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), srv.pem(), key.serialize_pem())
}

#[tokio::test]
async fn mqtt_over_tls_trusts_the_given_ca_only() {
    let (ca, srv, key) = ca_and_server();
    let broker = Service::start_with_files(
        "mosquitto",
        "mosquitto",
        &["-c", "{dir}/m.conf"],
        &[
            (
                "m.conf",
                "listener {port} 127.0.0.1\nallow_anonymous true\ncertfile {dir}/srv.pem\nkeyfile {dir}/srv.key\nlog_dest stderr\n",
            ),
            ("srv.pem", &srv),
            ("srv.key", &key),
        ],
    )
    .await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let create = |ca: String| json!({"sink_type": {"Mqtt": {"url": url, "topic_prefix": "peat", "tls_ca_pem": ca}}});
    let (s, b) = g
        .admin(Method::POST, "/orgs/acme/sinks", Some(create(ca)))
        .await;
    assert_eq!(s, 201, "{b}");
    let good = b["sink_id"].as_str().unwrap().to_owned();
    let (other_ca, _, _) = ca_and_server();
    let (_, b) = g
        .admin(Method::POST, "/orgs/acme/sinks", Some(create(other_ca)))
        .await;
    let bad = b["sink_id"].as_str().unwrap().to_owned();
    assert_eq!(ingest(&g, batch(0)).await.0, 202);
    let st = status_when(&g, &good, |st| {
        st["delivered"] == 10 && st["state"] == "idle"
    })
    .await;
    assert_eq!(
        (st["delivered"].as_u64(), st["state"].as_str()),
        (Some(10), Some("idle")),
        "{st}"
    );
    let st = status_when(&g, &bad, |st| st["last_error"].is_string()).await;
    assert_eq!(
        (st["state"].as_str(), st["delivered"].as_u64()),
        (Some("disconnected"), Some(0)),
        "{st}"
    );
}

#[tokio::test]
async fn a_broker_requiring_client_certificates_admits_the_sink_that_presents_one() {
    use crate::harness::pki::Ca;
    let ca = Ca::new("Broker CA");
    let (srv, key) = ca.server();
    let clients = Ca::new("Client CA");
    let broker = Service::start_with_files(
        "mosquitto",
        "mosquitto",
        &["-c", "{dir}/m.conf"],
        &[
            (
                "m.conf",
                "listener {port} 127.0.0.1\nallow_anonymous true\ncertfile {dir}/srv.pem\nkeyfile {dir}/srv.key\ncafile {dir}/clients.pem\nrequire_certificate true\nlog_dest stderr\n",
            ),
            ("srv.pem", &srv),
            ("srv.key", &key),
            ("clients.pem", &clients.pem),
        ],
    )
    .await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let (cert, ckey) = clients.client("gateway-7", "sinks", "gw7@kit.example");
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Mqtt": {"url": url, "topic_prefix": "peat", "tls_ca_pem": ca.pem,
                "client_cert_pem": cert, "client_key_pem": ckey}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        !b.to_string().contains("PRIVATE KEY"),
        "the key is never shown: {b}"
    );
    let with = b["sink_id"].as_str().unwrap().to_owned();
    let (_, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Mqtt": {"url": url, "topic_prefix": "peat", "tls_ca_pem": ca.pem}}})),
        )
        .await;
    let without = b["sink_id"].as_str().unwrap().to_owned();
    assert_eq!(ingest(&g, batch(0)).await.0, 202);
    let st = status_when(&g, &with, |st| st["delivered"] == 10).await;
    assert_eq!(st["delivered"], 10, "{st}");
    let st = status_when(&g, &without, |st| st["last_error"].is_string()).await;
    assert_eq!(
        (st["delivered"].as_u64(), st["state"].as_str()),
        (Some(0), Some("disconnected")),
        "{st}"
    );
    // Half a client identity, or a key that is not the certificate's, is refused.
    let (other_cert, _) = clients.client("x", "y", "z@kit.example");
    for body in [
        json!({"url": url, "topic_prefix": "p", "client_cert_pem": other_cert}),
        json!({"url": url, "topic_prefix": "p", "client_cert_pem": other_cert, "client_key_pem": ckey}),
    ] {
        let (s, e) = g
            .admin(
                Method::POST,
                "/orgs/acme/sinks",
                Some(json!({"sink_type": {"Mqtt": body}})),
            )
            .await;
        assert_eq!(s, 422, "{e}");
    }
    g.assert_data_dir_lacks(
        ckey.lines().nth(1).unwrap().as_bytes(),
        "the sink's client key",
    );
}

/// An org with formation `mesh` and an MQTT sink in content mode `mode`; returns the sink id.
async fn org_mqtt_sink(g: &Gateway, org: &str, url: &str, mode: &str) -> String {
    g.create_org(org, org).await;
    g.create_formation(org, "mesh").await;
    let (s, b) = g
        .admin(
            Method::POST,
            &format!("/orgs/{org}/sinks"),
            Some(
                json!({"sink_type": {"Mqtt": {"url": url, "topic_prefix": "peat"}},
                "content_mode": mode}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["content_mode"], mode);
    b["sink_id"].as_str().unwrap().to_owned()
}

/// (topic, content type, user properties, payload) of every message an MQTT 5 subscriber
/// receives under `peat/#`.
type Received5 = Arc<Mutex<Vec<(String, Option<String>, BTreeMap<String, String>, Vec<u8>)>>>;

fn subscriber5(broker: &Service) -> (Received5, tokio::task::JoinHandle<()>) {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    let o = rumqttc::v5::MqttOptions::new("test-subscriber-5", "127.0.0.1", broker.port);
    let (client, mut events) = rumqttc::v5::AsyncClient::new(o, 64);
    let got: Received5 = Arc::default();
    let sink = got.clone();
    let task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::v5::Event::Incoming(P5::ConnAck(_))) => {
                    let _ = client
                        .subscribe("peat/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                        .await;
                }
                Ok(rumqttc::v5::Event::Incoming(P5::Publish(p))) => {
                    let props = p.properties.clone().unwrap_or_default();
                    sink.lock().unwrap().push((
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        props.content_type,
                        props.user_properties.into_iter().collect(),
                        p.payload.to_vec(),
                    ));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (got, task)
}

#[tokio::test]
async fn binary_content_mode_goes_over_mqtt_5_with_the_attributes_as_user_properties() {
    let broker = service::mosquitto().await;
    let (got, sub) = subscriber5(&broker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    for (org, mode) in [("alpha", "binary"), ("bravo", "structured")] {
        org_mqtt_sink(&g, org, &url, mode).await;
        let docs = (0..3).map(|i| (format!("d{i}"), json!({"v": i}))).collect();
        g.upsert(org, "mesh", "tracks", docs).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let msgs = got.lock().unwrap().clone();
    sub.abort();
    assert_eq!(msgs.len(), 6, "{msgs:?}");
    let (alpha, bravo): (Vec<_>, Vec<_>) = msgs
        .iter()
        .partition(|(t, ..)| t.starts_with("peat/alpha/"));
    assert_eq!((alpha.len(), bravo.len()), (3, 3));
    for (topic, content_type, props, payload) in alpha {
        let doc = &props["peatdocid"];
        assert_eq!(topic, &format!("peat/alpha/mesh/tracks/{doc}"));
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let v = doc.trim_start_matches('d');
        assert_eq!(String::from_utf8_lossy(payload), format!(r#"{{"v":{v}}}"#));
        assert_eq!(props["specversion"], "1.0");
        assert_eq!(props["source"], "peat://alpha/mesh");
        assert_eq!(props["type"], "io.peat.document.upserted");
        assert_eq!(props["subject"], format!("tracks/{doc}"));
        assert!(
            props["id"].ends_with(&format!(":{}", props["peatlsn"])),
            "{props:?}"
        );
        assert!(!props.contains_key("datacontenttype"), "{props:?}");
    }
    // The other org's sink stays structured over MQTT 3.1.1: no properties, the whole event.
    for (_, content_type, props, payload) in bravo {
        assert!(content_type.is_none() && props.is_empty(), "{props:?}");
        let ce: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(ce["source"], "peat://bravo/mesh");
    }
}

#[tokio::test]
async fn an_mqtt_5_refusal_parks_that_event_and_stalls_only_its_own_sink() {
    // The broker lets alpha publish to one document's topic only, bravo to all of its own.
    let broker = Service::start_with_files(
        "mosquitto",
        "mosquitto",
        &["-c", "{dir}/mosquitto.conf"],
        &[
            (
                "mosquitto.conf",
                "listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {dir}/acl\n\
                 user root\nlog_dest stderr\n",
            ),
            (
                "acl",
                "topic readwrite peat/alpha/mesh/tracks/ok\ntopic readwrite peat/bravo/#\n",
            ),
        ],
    )
    .await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut sinks = Vec::new();
    for org in ["alpha", "bravo"] {
        sinks.push(org_mqtt_sink(&g, org, &url, "binary").await);
        let docs = ["ok", "no"].map(|d| (d.to_owned(), json!({"v": 1})));
        g.upsert(org, "mesh", "tracks", docs.to_vec()).await;
    }
    let status = |org: &'static str, sink: String| {
        let g = &g;
        async move {
            let path = format!("/orgs/{org}/sinks/{sink}/status");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let st = g.admin(Method::GET, &path, None).await.1;
                let settled = st["state"] == "stalled" || st["delivered"] == 2;
                if settled || Instant::now() > deadline {
                    return st;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let alpha = status("alpha", sinks[0].clone()).await;
    assert_eq!(alpha["state"], "stalled", "{alpha}");
    assert_eq!(
        alpha["delivered"], 1,
        "the document before the refused one: {alpha}"
    );
    let (_, dl) = g
        .admin(
            Method::GET,
            &format!("/orgs/alpha/sinks/{}/dead-letters", sinks[0]),
            None,
        )
        .await;
    let items = dl["dead_letters"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dl}");
    assert_eq!(items[0]["event"]["subject"], "tracks/no");
    assert!(
        items[0]["reason"]
            .as_str()
            .unwrap()
            .contains("NotAuthorized"),
        "{dl}"
    );
    let bravo = status("bravo", sinks[1].clone()).await;
    assert_eq!(
        bravo["delivered"], 2,
        "bravo's sink is not held back: {bravo}"
    );
    assert_ne!(bravo["state"], "stalled", "{bravo}");
}
