//! The NATS JetStream sink against a real nats-server on a loopback port of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cdc::{ingest, setup, status_when, upsert};
use crate::error_code;
use crate::harness::service::{self, Service};
use crate::harness::{Gateway, GatewayOpts};

const STREAM: &str = "peat-acme-peat";

async fn nats_sink(g: &Gateway, nats: &Service) -> String {
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(
                json!({"sink_type": {"Nats": {"subject_prefix": "peat", "url": nats.url("nats")}}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["sink_id"].as_str().unwrap().to_owned()
}

/// Every message of the stream as (subject, Nats-Msg-Id, CloudEvent).
async fn stream_messages(nats: &Service) -> Vec<(String, String, Value)> {
    let Ok(client) = async_nats::connect(nats.url("nats")).await else {
        return vec![];
    };
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream(STREAM).await else {
        return vec![];
    };
    let Ok(info) = stream.info().await else {
        return vec![];
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first.max(1)..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            let id = m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((
                m.subject.to_string(),
                id,
                serde_json::from_slice(&m.payload).unwrap(),
            ));
        }
    }
    out
}

async fn wait_messages(nats: &Service, n: usize) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = stream_messages(nats).await;
        // At-least-once: redelivered duplicates must not count towards `n`.
        let distinct = m.iter().map(|(_, id, _)| id).collect::<BTreeSet<_>>().len();
        if distinct >= n || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Messages in the sink's stream once `want` arrived or a deadline passed.
async fn stream_count(js: &jetstream::Context, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while n < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut s) = js.get_stream(STREAM).await {
            n = s.info().await.map_or(0, |i| i.state.messages);
        }
    }
    n
}

fn batch(round: u64) -> Value {
    // Ten documents, each updated once per round: per-document order is checkable.
    Value::Array((0..10).map(|d| upsert(&format!("k.{d}"), round)).collect())
}

#[tokio::test]
async fn every_event_reaches_jetstream_through_a_broker_kill_in_per_document_order() {
    let mut nats = service::nats().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let sink = nats_sink(&g, &nats).await;
    for round in 0..5 {
        let (s, _) = ingest(&g, batch(round)).await;
        assert_eq!(s, 202);
    }
    assert_eq!(wait_messages(&nats, 50).await.len(), 50);

    nats.kill();
    for round in 5..10 {
        let (s, b) = ingest(&g, batch(round)).await;
        assert_eq!(
            s, 202,
            "ingest keeps acknowledging while the broker is down: {b}"
        );
    }
    let st = status_when(&g, &sink, |st| st["state"] == "disconnected").await;
    assert_eq!(st["state"], "disconnected", "{st}");
    assert!(st["last_error"].is_string(), "{st}");
    assert_eq!(st["backlog_events"], 50, "{st}");

    let down = Instant::now();
    nats.restart().await;
    let msgs = wait_messages(&nats, 100).await;
    eprintln!("broker restart to full drain: {:?}", down.elapsed());
    assert_eq!(msgs.len(), 100, "every acknowledged event arrived");

    let ids: BTreeSet<&str> = msgs.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        ids.len(),
        100,
        "JetStream dedupe by Nats-Msg-Id leaves no duplicate"
    );
    let mut per_doc: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (subject, id, ev) in &msgs {
        assert_eq!(
            ev["id"].as_str(),
            Some(id.as_str()),
            "Nats-Msg-Id is the event id"
        );
        let doc = ev["peatdocid"].as_str().unwrap();
        assert_eq!(
            subject,
            &format!("peat.acme.mesh.tracks.{}", doc.replace('.', "~2E"))
        );
        per_doc
            .entry(doc.to_owned())
            .or_default()
            .push(ev["data"]["v"].as_u64().unwrap());
    }
    for (doc, vs) in per_doc {
        assert_eq!(vs, (0..10).collect::<Vec<_>>(), "{doc} in order");
    }
    let st = status_when(&g, &sink, |st| {
        st["backlog_events"] == 0 && st["state"] == "idle"
    })
    .await;
    assert_eq!(st["state"], "idle", "caught up: {st}");
}

#[tokio::test]
async fn the_gateway_serves_with_the_broker_down_and_delivers_when_it_comes_up() {
    let mut nats = service::nats().await;
    nats.kill();
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let sink = nats_sink(&g, &nats).await;
    let (s, _) = ingest(&g, batch(0)).await;
    assert_eq!(s, 202);
    let st = status_when(&g, &sink, |st| st["state"] == "disconnected").await;
    assert!(
        st["last_error"].as_str().unwrap().contains("connecting"),
        "{st}"
    );
    let (s, ready) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(
        s, 200,
        "a down sink does not make the gateway unready: {ready}"
    );
    nats.restart().await;
    assert_eq!(wait_messages(&nats, 10).await.len(), 10);
}

#[tokio::test]
async fn a_foreign_stream_is_never_overwritten_and_the_sink_says_why() {
    let nats = service::nats().await;
    let client = async_nats::connect(nats.url("nats")).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let sink = nats_sink(&g, &nats).await;
    ingest(&g, batch(0)).await;
    let st = status_when(&g, &sink, |st| {
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("do not take"))
    })
    .await;
    assert!(
        st["last_error"].as_str().unwrap().contains("other.>"),
        "{st}"
    );
    let mut s = js.get_stream(STREAM).await.unwrap();
    assert_eq!(
        s.info().await.unwrap().config.subjects,
        vec!["other.>".to_string()]
    );
}

#[tokio::test]
async fn broker_passwords_are_sealed_never_shown_and_used_to_connect() {
    let nats = Service::start(
        "nats",
        "nats-server",
        &[
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            "{port}",
            "-sd",
            "{dir}/js",
            "--user",
            "gw",
            "--pass",
            "pw-7f3a91c2",
        ],
    )
    .await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let url = format!("nats://gw:pw-7f3a91c2@127.0.0.1:{}", nats.port);
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Nats": {"subject_prefix": "peat", "url": url}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(!b.to_string().contains("pw-7f3a91c2"), "{b}");
    assert_eq!(
        b["sink_type"]["Nats"]["url"],
        format!("nats://[redacted]@127.0.0.1:{}", nats.port)
    );
    ingest(&g, batch(0)).await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("gw".into(), "pw-7f3a91c2".into())
            .connect(nats.url("nats"))
            .await
            .unwrap();
    let js = jetstream::new(client);
    let n = stream_count(&js, 10).await;
    let sid = b["sink_id"].as_str().unwrap();
    let (_, st) = g
        .admin(Method::GET, &format!("/orgs/acme/sinks/{sid}/status"), None)
        .await;
    assert_eq!(n, 10, "delivered with the sealed password: {st}");
    g.assert_data_dir_lacks(b"pw-7f3a91c2", "password");
    assert!(!g.all_output().contains("pw-7f3a91c2"));

    // A wrong password is reported without the password.
    let wrong = format!("nats://gw:wrong-9d1e@127.0.0.1:{}", nats.port);
    let (_, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Nats": {"subject_prefix": "other", "url": wrong}}})),
        )
        .await;
    let sid = b["sink_id"].as_str().unwrap();
    let st = status_when(&g, sid, |st| st["last_error"].is_string()).await;
    let e = st["last_error"].as_str().unwrap();
    assert!(
        e.contains("authorization") && !e.contains("wrong-9d1e"),
        "{e}"
    );
}

#[tokio::test]
async fn tls_with_a_private_ca_and_nkey_authentication() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let srv_key = rcgen::KeyPair::generate().unwrap();
    let srv_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&srv_key, &issuer)
        .unwrap();
    let user = nkeys::KeyPair::new_user();
    let conf = format!(
        "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}/js\" }}\n\
         tls {{ cert_file: \"{{dir}}/srv.pem\", key_file: \"{{dir}}/srv.key\" }}\n\
         authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    );
    let (srv_pem, srv_key_pem) = (srv_cert.pem(), srv_key.serialize_pem());
    let nats = Service::start_with_files(
        "nats",
        "nats-server",
        &["-c", "{dir}/nats.conf"],
        &[
            ("nats.conf", &conf),
            ("srv.pem", &srv_pem),
            ("srv.key", &srv_key_pem),
        ],
    )
    .await;
    let seed = user.seed().unwrap();
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let sink = json!({"Nats": {"subject_prefix": "peat", "url": format!("tls://127.0.0.1:{}", nats.port),
        "tls_ca_pem": ca_cert.pem(), "nkey_seed": seed}});
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": sink})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        !b.to_string().contains(&seed),
        "the nkey seed is never shown"
    );
    ingest(&g, batch(0)).await;

    let ca_path = nats.dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let client = async_nats::ConnectOptions::with_nkey(seed.clone())
        .add_root_certificates(ca_path)
        .require_tls(true)
        .connect(format!("tls://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let js = jetstream::new(client);
    let n = stream_count(&js, 10).await;
    let sid = b["sink_id"].as_str().unwrap();
    let (_, st) = g
        .admin(Method::GET, &format!("/orgs/acme/sinks/{sid}/status"), None)
        .await;
    assert_eq!(n, 10, "delivered over TLS with the nkey: {st}");
    g.assert_data_dir_lacks(seed.as_bytes(), "seed");

    // A CA that did not sign the server's certificate: refused, and said so.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = other.self_signed(&other_key).unwrap();
    let bad = json!({"Nats": {"subject_prefix": "other", "url": format!("tls://127.0.0.1:{}", nats.port),
        "tls_ca_pem": other.pem(), "nkey_seed": user.seed().unwrap()}});
    let (_, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": bad})),
        )
        .await;
    let st = status_when(&g, b["sink_id"].as_str().unwrap(), |st| {
        st["last_error"].is_string()
    })
    .await;
    assert_eq!(st["state"], "disconnected", "{st}");
}

#[tokio::test]
async fn a_nats_server_verifying_client_certificates_admits_the_sink_that_presents_one() {
    use crate::harness::pki::Ca;
    let ca = Ca::new("NATS CA");
    let (srv, key) = ca.server();
    let clients = Ca::new("Client CA");
    let conf = "listen: 127.0.0.1:{port}\njetstream { store_dir: \"{dir}/js\" }\n\
         tls { cert_file: \"{dir}/srv.pem\", key_file: \"{dir}/srv.key\", ca_file: \"{dir}/clients.pem\", verify: true }\n";
    let nats = Service::start_with_files(
        "nats",
        "nats-server",
        &["-c", "{dir}/nats.conf"],
        &[
            ("nats.conf", conf),
            ("srv.pem", &srv),
            ("srv.key", &key),
            ("clients.pem", &clients.pem),
        ],
    )
    .await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let (cert, ckey) = clients.client("gateway-7", "sinks", "gw7@kit.example");
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Nats": {"subject_prefix": "peat", "url": url, "tls_ca_pem": ca.pem,
                "client_cert_pem": cert, "client_key_pem": ckey}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let with = b["sink_id"].as_str().unwrap().to_owned();
    let (_, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"Nats": {"subject_prefix": "other", "url": url, "tls_ca_pem": ca.pem}}})),
        )
        .await;
    let without = b["sink_id"].as_str().unwrap().to_owned();
    assert_eq!(ingest(&g, batch(0)).await.0, 202);
    let st = status_when(&g, &with, |st| st["delivered"] == 10).await;
    assert_eq!(st["delivered"], 10, "{st}");
    let st = status_when(&g, &without, |st| st["last_error"].is_string()).await;
    assert_eq!(
        st["delivered"], 0,
        "no client certificate, no connection: {st}"
    );
}

/// An org's sink, delivering into its own stream.
async fn org_nats_sink(g: &Gateway, org: &str, nats: &Service) -> String {
    org_nats_sink_in(g, org, nats, "structured").await
}

/// An org's sink in the given CloudEvents content mode.
async fn org_nats_sink_in(g: &Gateway, org: &str, nats: &Service, mode: &str) -> String {
    for (path, body) in [
        (
            "/orgs".to_owned(),
            json!({"org_id": org, "display_name": org}),
        ),
        (format!("/orgs/{org}/formations"), json!({"app_id": "mesh"})),
        (
            format!("/orgs/{org}/sinks"),
            json!({"sink_type": {"Nats": {"subject_prefix": "peat", "url": nats.url("nats")}},
                "content_mode": mode}),
        ),
    ] {
        let (s, b) = g.admin(Method::POST, &path, Some(body)).await;
        assert_eq!(s, 201, "{path}: {b}");
        if path.ends_with("/sinks") {
            return b["sink_id"].as_str().unwrap().to_owned();
        }
    }
    unreachable!()
}

async fn org_status(g: &Gateway, org: &str, sink: &str) -> Value {
    g.admin(
        Method::GET,
        &format!("/orgs/{org}/sinks/{sink}/status"),
        None,
    )
    .await
    .1
}

#[tokio::test]
async fn sink_rates_are_measured_over_wall_time_and_a_disconnected_sink_gives_no_eta() {
    let mut nats = service::nats().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    let sinks = [
        ("alpha", org_nats_sink(&g, "alpha", &nats).await, 50u64),
        ("bravo", org_nats_sink(&g, "bravo", &nats).await, 20),
    ];
    // Each sink's loop runs (idle) before the first event is ingested.
    for (org, sink, _) in &sinks {
        let deadline = Instant::now() + Duration::from_secs(20);
        while org_status(&g, org, sink).await["state"] != "idle" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let started = Instant::now();
    for (org, _, n) in &sinks {
        for round in 0..n / 10 {
            let (s, b) = ingest_org(&g, org, round).await;
            assert_eq!(s, 202, "{b}");
        }
    }
    for (org, sink, n) in &sinks {
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            let asked = Instant::now();
            let st = org_status(&g, org, sink).await;
            if st["delivered"] == *n || Instant::now() > deadline {
                break (st, asked);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (st, asked) = st;
        assert_eq!(st["delivered"], *n, "{org}: its own events only: {st}");
        // Every one of the org's events was delivered after `started`: a rate measured over
        // wall time cannot exceed them over the time since (one that times only the
        // publish calls does, by far).
        let rate = st["rate_events_per_sec"].as_f64().unwrap();
        let bound = *n as f64 / asked.duration_since(started).as_secs_f64();
        assert!(rate > 0.0, "{org}: {st}");
        assert!(rate <= bound, "{org}: {rate}/s > {bound}/s: {st}");
    }

    nats.kill();
    for round in 5..10 {
        let (s, _) = ingest_org(&g, "alpha", round).await;
        assert_eq!(s, 202);
    }
    let (org, sink, _) = &sinks[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = org_status(&g, org, sink).await;
        if (st["state"] == "disconnected" && st["backlog_events"] == 50)
            || Instant::now() > deadline
        {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st["state"], "disconnected", "{st}");
    assert_eq!(st["backlog_events"], 50, "{st}");
    assert!(
        st["drain_eta_seconds"].is_null(),
        "no ETA while nothing can be delivered: {st}"
    );
    let bravo = org_status(&g, sinks[1].0, &sinks[1].1).await;
    assert_eq!(
        bravo["backlog_events"], 0,
        "bravo's backlog is its own: {bravo}"
    );
    assert!(bravo["drain_eta_seconds"].is_null(), "{bravo}");
}

async fn ingest_org(g: &Gateway, org: &str, round: u64) -> (u16, Value) {
    g.admin(
        Method::POST,
        &format!("/orgs/{org}/formations/mesh/changes"),
        Some(batch(round)),
    )
    .await
}

/// A NATS JWT (`ed25519-nkey`) of the given claims, signed by `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, nats: Value) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"jti": format!("J{subject}"), "iat": now, "iss": issuer.public_key(),
        "name": subject, "sub": subject, "nats": nats});
    let signed = format!(
        "{}.{}",
        b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64(claims.to_string().as_bytes())
    );
    format!("{signed}.{}", b64(&issuer.sign(signed.as_bytes()).unwrap()))
}

fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

#[tokio::test]
async fn each_org_delivers_with_its_own_creds_file_and_malformed_credentials_are_refused() {
    // A server in operator mode: only users the account signed get in.
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let op_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        json!({"type": "operator", "version": 2}),
    );
    let acct_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        json!({"type": "account", "version": 2, "limits": {"subs": -1, "data": -1,
            "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1,
            "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}}),
    );
    // JetStream needs the server's system account.
    let system = nkeys::KeyPair::new_account();
    let sys_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        json!({"type": "account", "version": 2}),
    );
    let conf = format!(
        "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}/js\" }}\n\
         operator: \"{op_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{ {acct}: \"{acct_jwt}\", {sys}: \"{sys_jwt}\" }}\n",
        acct = account.public_key(),
        sys = system.public_key(),
    );
    let nats = Service::start_with_files(
        "nats",
        "nats-server",
        &["-c", "{dir}/nats.conf"],
        &[("nats.conf", &conf)],
    )
    .await;
    let user_creds = || {
        let user = nkeys::KeyPair::new_user();
        let jwt = nats_jwt(
            &account,
            &user.public_key(),
            json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1,
                "data": -1, "payload": -1}),
        );
        let seed = user.seed().unwrap();
        (creds_file(&jwt, &seed), seed)
    };

    let g = Gateway::start(GatewayOpts::standard()).await;
    let mut seeds = vec![];
    let mut sinks = vec![];
    for org in ["alpha", "bravo"] {
        for (path, body) in [
            (
                "/orgs".to_owned(),
                json!({"org_id": org, "display_name": org}),
            ),
            (format!("/orgs/{org}/formations"), json!({"app_id": "mesh"})),
        ] {
            let (s, b) = g.admin(Method::POST, &path, Some(body)).await;
            assert_eq!(s, 201, "{path}: {b}");
        }
        let sinks_path = format!("/orgs/{org}/sinks");
        // Malformed credentials: 400 naming the field, and no sink.
        let (creds, seed) = user_creds();
        let mut no_seed = creds.clone();
        no_seed.truncate(creds.find("-----BEGIN USER NKEY SEED").unwrap());
        let account_seed = account.seed().unwrap();
        for (field, value, says) in [
            ("creds", no_seed.as_str(), "NKEY SEED"),
            ("creds", seed.as_str(), "BEGIN NATS USER JWT"),
            ("nkey_seed", account_seed.as_str(), "not a user nkey seed"),
            ("nkey_seed", "SUAXXXX", "does not decode"),
        ] {
            let body = json!({"sink_type": {"Nats": {"subject_prefix": "peat",
                "url": nats.url("nats"), field: value}}});
            let (s, b) = g.admin(Method::POST, &sinks_path, Some(body)).await;
            assert_eq!(s, 422, "{field}: {b}");
            assert_eq!(b["error"]["code"], "invalid_field", "{b}");
            let message = b["error"]["message"].as_str().unwrap();
            assert!(message.contains(field) && message.contains(says), "{b}");
            assert!(
                !b.to_string().contains(&account_seed) && !b.to_string().contains(&seed),
                "{b}"
            );
        }
        let (_, b) = g.admin(Method::GET, &sinks_path, None).await;
        assert_eq!(
            b.as_array().map(Vec::len),
            Some(0),
            "nothing was created: {b}"
        );

        let body = json!({"sink_type": {"Nats": {"subject_prefix": "peat",
            "url": nats.url("nats"), "creds": creds}}});
        let (s, b) = g.admin(Method::POST, &sinks_path, Some(body)).await;
        assert_eq!(s, 201, "{b}");
        assert!(!b.to_string().contains(&seed), "the seed is never shown");
        sinks.push((org, b["sink_id"].as_str().unwrap().to_owned()));
        seeds.push(seed);
    }
    for (org, round) in [("alpha", 0), ("bravo", 1), ("bravo", 2)] {
        assert_eq!(ingest_org(&g, org, round).await.0, 202);
    }

    // Each org's events, and only those, in its own stream, read back as one of its users.
    let (reader, _) = user_creds();
    let client = async_nats::ConnectOptions::with_credentials(&reader)
        .unwrap()
        .connect(nats.url("nats"))
        .await
        .unwrap();
    let js = jetstream::new(client);
    for ((org, sink), want) in sinks.iter().zip([10u64, 20]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            let st = org_status(&g, org, sink).await;
            if st["delivered"] == want || Instant::now() > deadline {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(st["delivered"], want, "{org}: {st}");
        let mut stream = js.get_stream(format!("peat-{org}-peat")).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.state.messages, want, "{org}'s stream");
        assert_eq!(
            info.config.subjects,
            vec![format!("peat.{org}.>")],
            "{org}'s stream takes its org's subjects only"
        );
    }
    for seed in &seeds {
        g.assert_data_dir_lacks(seed.as_bytes(), "seed");
    }
}

/// Every message of an org's stream: (Nats-Msg-Id, headers, payload).
async fn org_messages(
    nats: &Service,
    org: &str,
    n: usize,
) -> Vec<(String, BTreeMap<String, String>, Vec<u8>)> {
    let client = async_nats::connect(nats.url("nats")).await.unwrap();
    let js = jetstream::new(client);
    let stream = format!("peat-{org}-peat");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut out = Vec::new();
        if let Ok(mut st) = js.get_stream(&stream).await {
            let last = st.info().await.map_or(0, |i| i.state.last_sequence);
            for seq in 1..=last {
                if let Ok(m) = st.get_raw_message(seq).await {
                    let headers: BTreeMap<String, String> = m
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v[0].as_str().to_owned()))
                        .collect();
                    let id = headers.get("Nats-Msg-Id").cloned().unwrap_or_default();
                    out.push((id, headers, m.payload.to_vec()));
                }
            }
        }
        if out.len() >= n || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn binary_content_mode_sends_the_document_as_the_body_and_the_attributes_as_headers() {
    let nats = service::nats().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    org_nats_sink_in(&g, "alpha", &nats, "binary").await;
    org_nats_sink_in(&g, "bravo", &nats, "structured").await;
    for (org, doc) in [("alpha", "t 1%ü"), ("bravo", "b-1")] {
        let (s, b) = g
            .admin(
                Method::POST,
                &format!("/orgs/{org}/formations/mesh/changes"),
                Some(json!([
                    {"collection": "tracks", "doc_id": doc, "op": "upsert", "data": {"z": 1, "a": [true]}},
                    {"collection": "tracks", "doc_id": doc, "op": "delete"}
                ])),
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }

    let alpha = org_messages(&nats, "alpha", 2).await;
    assert_eq!(alpha.len(), 2, "{alpha:?}");
    let (id, h, body) = &alpha[0];
    // The document's canonical text, as captured, is the whole body.
    assert_eq!(String::from_utf8_lossy(body), r#"{"a":[true],"z":1}"#);
    assert_eq!(h.get("ce-id"), Some(id), "{h:?}");
    assert_eq!(h["ce-specversion"], "1.0");
    assert_eq!(h["ce-source"], "peat://alpha/mesh");
    assert_eq!(h["ce-type"], "io.peat.document.upserted");
    // Header values percent-encoded: no raw space, `%` or non-ASCII byte in a header.
    assert_eq!(h["ce-subject"], "tracks/t%201%25%C3%BC");
    assert_eq!(h["ce-peatdocid"], "t%201%25%C3%BC");
    assert_eq!(h["ce-peatencrypted"], "false");
    assert_eq!(h["ce-peatlsn"], id.rsplit(':').next().unwrap());
    assert_eq!(h["Content-Type"], "application/json");
    assert_eq!(h["ce-peatcontenthash"].len(), 64);
    assert!(h.contains_key("ce-time"), "{h:?}");
    let (_, h, body) = &alpha[1];
    assert!(body.is_empty(), "a delete carries no data");
    assert_eq!(h["ce-type"], "io.peat.document.deleted");
    assert!(!h.contains_key("Content-Type"), "{h:?}");

    // The other org's sink stays structured, and holds its own events only.
    let bravo = org_messages(&nats, "bravo", 2).await;
    assert_eq!(bravo.len(), 2, "{bravo:?}");
    for (id, h, body) in &bravo {
        assert_eq!(h["Content-Type"], "application/cloudevents+json");
        assert!(!h.keys().any(|k| k.starts_with("ce-")), "{h:?}");
        let ce: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(ce["source"], "peat://bravo/mesh");
        assert_eq!(ce["id"], id.as_str());
    }
    assert_eq!(bravo[0].2.windows(5).filter(|w| w == b"alpha").count(), 0);
}

#[tokio::test]
async fn a_content_mode_a_sink_cannot_carry_is_refused_and_changes_nothing() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(
                json!({"sink_type": {"RedisStreams": {"url": "redis://127.0.0.1:1", "stream": "s"}},
                "content_mode": "binary"}),
            ),
        )
        .await;
    assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
    assert!(b.to_string().contains("content_mode"), "{b}");
    assert!(b.to_string().contains("NATS, Kafka and MQTT (5)"), "{b}");
    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"File": {"name": "f"}}, "content_mode": "packed"})),
        )
        .await;
    assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
    let (_, list) = g.admin(Method::GET, "/orgs/acme/sinks", None).await;
    assert_eq!(list, json!([]), "nothing was created");

    let (s, b) = g
        .admin(
            Method::POST,
            "/orgs/acme/sinks",
            Some(json!({"sink_type": {"File": {"name": "f"}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["content_mode"], "structured");
    let path = format!("/orgs/acme/sinks/{}", b["sink_id"].as_str().unwrap());
    let (s, b) = g
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"content_mode": "binary"})),
        )
        .await;
    assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
    let (_, b) = g.admin(Method::GET, &path, None).await;
    assert_eq!(b["content_mode"], "structured", "{b}");
}

#[tokio::test]
async fn a_sink_switched_to_binary_delivers_the_next_events_in_binary() {
    let nats = service::nats().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    let alpha = org_nats_sink_in(&g, "alpha", &nats, "structured").await;
    let bravo = org_nats_sink_in(&g, "bravo", &nats, "structured").await;
    let (s, _) = ingest_org(&g, "alpha", 0).await;
    assert_eq!(s, 202);
    assert_eq!(org_messages(&nats, "alpha", 10).await.len(), 10);
    let (s, b) = g
        .admin(
            Method::PATCH,
            &format!("/orgs/alpha/sinks/{alpha}"),
            Some(json!({"content_mode": "binary"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["content_mode"], "binary");
    for org in ["alpha", "bravo"] {
        let (s, _) = ingest_org(&g, org, 1).await;
        assert_eq!(s, 202);
    }
    let msgs = org_messages(&nats, "alpha", 20).await;
    assert_eq!(msgs.len(), 20);
    for (_, h, body) in &msgs[10..] {
        assert_eq!(h["ce-source"], "peat://alpha/mesh", "{h:?}");
        assert_eq!(String::from_utf8_lossy(body), r#"{"v":1}"#);
    }
    // The operator's test event goes in the sink's mode too, with its own id and type.
    let (s, b) = g
        .admin(
            Method::POST,
            &format!("/orgs/alpha/sinks/{alpha}/test"),
            None,
        )
        .await;
    assert_eq!((s, &b["ok"]), (200, &json!(true)), "{b}");
    let msgs = org_messages(&nats, "alpha", 21).await;
    let (id, h, body) = &msgs[20];
    assert_eq!(id, b["event_id"].as_str().unwrap());
    assert_eq!(h["ce-id"], *id);
    assert_eq!(h["ce-type"], "io.peat.gateway.test");
    assert_eq!(h["ce-source"], "peat://alpha/_test");
    assert_eq!(String::from_utf8_lossy(body), r#"{"test":true}"#);
    let bravo_msgs = org_messages(&nats, "bravo", 10).await;
    assert_eq!(bravo_msgs.len(), 10);
    assert!(bravo_msgs
        .iter()
        .all(|(_, h, _)| h["Content-Type"] == "application/cloudevents+json"));
    let (_, b) = g
        .admin(Method::GET, &format!("/orgs/bravo/sinks/{bravo}"), None)
        .await;
    assert_eq!(b["content_mode"], "structured");
}

/// nats-server with JetStream and a small `max_payload`, so a batch is cut into several
/// messages.
async fn nats_small_payload() -> Service {
    Service::start_with_files(
        "nats",
        "nats-server",
        &["-c", "{dir}/nats.conf", "-a", "127.0.0.1", "-p", "{port}"],
        &[(
            "nats.conf",
            "max_payload: 4096\njetstream { store_dir: \"{dir}/js\" }\n",
        )],
    )
    .await
}

/// Every message of `org`'s stream: subject, headers, payload.
async fn org_stream(nats: &Service, org: &str) -> Vec<(String, BTreeMap<String, String>, Value)> {
    let js = jetstream::new(async_nats::connect(nats.url("nats")).await.unwrap());
    let mut st = js.get_stream(format!("peat-{org}-peat")).await.unwrap();
    let last = st.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = st.get_raw_message(seq).await.unwrap();
        let h = m
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v[0].as_str().to_owned()))
            .collect();
        out.push((
            m.subject.to_string(),
            h,
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    out
}

#[tokio::test]
async fn batched_content_mode_sends_each_batch_as_one_array_cut_under_max_payload() {
    let nats = nats_small_payload().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    let alpha = org_nats_sink_in(&g, "alpha", &nats, "batched").await;
    let bravo = org_nats_sink_in(&g, "bravo", &nats, "structured").await;
    for round in 0..3 {
        for org in ["alpha", "bravo"] {
            let (s, b) = ingest_org(&g, org, round).await;
            assert_eq!(s, 202, "{b}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (org, sink) in [("alpha", &alpha), ("bravo", &bravo)] {
        while org_status(&g, org, sink).await["delivered"] != 30 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let msgs = org_stream(&nats, "alpha").await;
    assert!(
        msgs.len() > 1,
        "30 events over 4 KiB are cut into several messages"
    );
    assert!(
        msgs.len() < 30,
        "but not one message per event: {}",
        msgs.len()
    );
    let mut lsns = Vec::new();
    for (subject, h, body) in &msgs {
        assert_eq!(subject, "peat.alpha.batch");
        assert_eq!(h["Content-Type"], "application/cloudevents-batch+json");
        let events = body.as_array().unwrap();
        assert!(!events.is_empty());
        let first = events[0]["id"].as_str().unwrap();
        let last = events[events.len() - 1]["peatlsn"].as_str().unwrap();
        assert_eq!(h["Nats-Msg-Id"], format!("{first}-{last}"));
        for ce in events {
            assert_eq!(ce["source"], "peat://alpha/mesh", "{ce}");
            assert_eq!(ce["specversion"], "1.0");
            lsns.push(ce["peatlsn"].as_str().unwrap().parse::<u64>().unwrap());
        }
    }
    // Every event once, in LSN order (so each document's changes in order).
    assert_eq!(lsns.len(), 30, "{lsns:?}");
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");

    // The other org's structured sink: a message per event on its own subjects.
    let msgs = org_stream(&nats, "bravo").await;
    assert_eq!(msgs.len(), 30);
    for (subject, h, ce) in &msgs {
        assert!(subject.starts_with("peat.bravo.mesh.tracks."), "{subject}");
        assert_eq!(h["Content-Type"], "application/cloudevents+json");
        assert_eq!(ce["source"], "peat://bravo/mesh");
    }
}

#[tokio::test]
async fn batched_mode_is_for_nats_sinks_and_a_webhook_says_it_batches_already() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    setup(&g).await;
    for (spec, says) in [
        (
            json!({"RedisStreams": {"url": "redis://127.0.0.1:1", "stream": "s"}}),
            "batched is for NATS sinks",
        ),
        (
            json!({"Webhook": {"url": "http://127.0.0.1:1/hook", "allow_private": true}}),
            "posts each batch as one request",
        ),
    ] {
        let (s, b) = g
            .admin(
                Method::POST,
                "/orgs/acme/sinks",
                Some(json!({"sink_type": spec, "content_mode": "batched"})),
            )
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{b}");
        assert!(b.to_string().contains(says), "{b}");
    }
    let (_, list) = g.admin(Method::GET, "/orgs/acme/sinks", None).await;
    assert_eq!(list, json!([]), "nothing was created");
}
