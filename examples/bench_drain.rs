//! P2 benchmark: drain after a partition. The downstream NATS hub goes away, a backlog of
//! events builds at the edge, the hub comes back on the same port and store; measured are the
//! time from the hub accepting connections to the first event arriving in its stream, the
//! rate once flowing, and the rate counted from the link's return. Peer, same backlog, same
//! hub binary: a NATS leaf node with JetStream whose stream the hub's stream sources.
//! Prints figures; asserts nothing.
//!
//!   cargo build --release && cargo run --release --example bench_drain -- [events] [partition_s]
//!
//! Defaults: 200000 events of 256 B, a 30 s partition. `NATS_SERVER` picks the nats-server
//! (default: the 2.15 one `scripts/setup` installs into the project's venv);
//! `CONTENT_MODE=binary` or `batched` drains in that CloudEvents content mode (default:
//! structured; batched sends a message per batch and counts events by the gateway's
//! acknowledged count).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use reqwest::Method;
use serde_json::json;

const PAYLOAD: usize = 256;

struct Drain {
    first_s: f64,
    all_s: f64,
    events: u64,
    bytes_per_msg: f64,
    /// CPU seconds the edge (gateway or leaf) and the hub spent while the backlog drained.
    cpu: (f64, f64),
    /// The edge's peak PSS and RSS (KiB) from start through the drain.
    peak: (u64, u64),
}

impl Drain {
    fn print(&self, name: &str) {
        let flowing = self.events as f64 / (self.all_s - self.first_s).max(1e-6);
        let overall = self.events as f64 / self.all_s.max(1e-6);
        println!(
            "{name:<24} first delivery {:>6.2} s after the hub accepts; {:>8.0} events/s once flowing, {:>8.0}/s from the link's return; {:>5.0} B per message at the hub; CPU edge {:.2} s, hub {:.2} s",
            self.first_s, flowing, overall, self.bytes_per_msg, self.cpu.0, self.cpu.1
        );
        println!(
            "{:<24} edge peak PSS {:.1} MiB, RSS {:.1} MiB holding and draining the backlog",
            "",
            mib(self.peak.0),
            mib(self.peak.1)
        );
    }
    fn flowing(&self) -> f64 {
        self.events as f64 / (self.all_s - self.first_s).max(1e-6)
    }
}

fn hub_conf(dir: &Path, port: u16, leaf_port: u16) -> String {
    format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\", domain: hub }}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n",
        dir.join("hub-store").display()
    )
}

async fn connect(port: u16) -> async_nats::Client {
    wait_port(port).await;
    async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to nats on {port}: {e}"))
}

/// (messages, bytes) in the hub's stream; (0, 0) while it cannot be asked.
async fn stream_state(js: &jetstream::Context, name: &str) -> (u64, u64) {
    match js.get_stream(name).await {
        Ok(mut s) => s
            .info()
            .await
            .map(|i| (i.state.messages, i.state.bytes))
            .unwrap_or((0, 0)),
        Err(_) => (0, 0),
    }
}

/// The gateway's count of events its sink has had acknowledged: in batched mode a message in
/// the hub's stream holds many events.
struct Acked {
    http: reqwest::Client,
    url: String,
}

impl Acked {
    async fn count(&self) -> u64 {
        let r = self.http.get(&self.url).bearer_auth(ADMIN).send().await;
        match r {
            Ok(r) => r.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        }
        .and_then(|v| v["delivered"].as_u64())
        .unwrap_or(0)
    }
}

/// Waits for the hub to accept, then times the first message and the last of `n` new events
/// (counted as messages, or by `acked` when one message holds many).
async fn time_drain(port: u16, stream: &str, before: u64, n: u64, acked: Option<&Acked>) -> Drain {
    let up = loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let js = jetstream::new(connect(port).await);
    let mut first = None;
    let deadline = up + Duration::from_secs(600);
    loop {
        let (msgs, bytes) = stream_state(&js, stream).await;
        if msgs > before && first.is_none() {
            first = Some(up.elapsed());
        }
        let events = match acked {
            Some(a) if first.is_some() => a.count().await,
            Some(_) => before,
            None => msgs,
        };
        if events >= before + n || Instant::now() > deadline {
            let all = up.elapsed();
            return Drain {
                first_s: first.unwrap_or(all).as_secs_f64(),
                all_s: all.as_secs_f64(),
                events: events.saturating_sub(before),
                // Per event: a batch message's bytes are shared by its events.
                bytes_per_msg: bytes as f64 / events.max(1) as f64,
                cpu: (0.0, 0.0),
                peak: (0, 0),
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn gateway(bin: &str, n: usize, partition: Duration) -> Drain {
    let dir = std::env::temp_dir().join(format!("peat-bench-drain-gw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (port, leaf_port) = (free_port(), free_port());
    let conf = hub_conf(&dir, port, leaf_port);
    let hub = nats_with_config(bin, &dir, "hub", &conf);
    wait_port(port).await;
    let g = start_gateway(
        "drain",
        &[
            ("PEAT_CDC_OUTBOX_MAX_MB", "4096"),
            ("PEAT_GATEWAY_MAX_BODY_BYTES", "8388608"),
            // The hub is on loopback, which sinks may not reach unless granted.
            ("PEAT_EGRESS_ALLOW", "127.0.0.1/32"),
        ],
    )
    .await;
    let mem = MemWatch::start(g.pid);
    let http = reqwest::Client::new();
    bench_org(&http, &g).await;
    let sink = setup(&http, &g, Method::POST, "/orgs/bench/sinks",
        json!({"sink_type": {"Nats": {"subject_prefix": "peat", "url": format!("nats://127.0.0.1:{port}")}},
            "content_mode": content_mode()})).await;
    let acked = (content_mode() == "batched").then(|| Acked {
        http: http.clone(),
        url: format!(
            "{}/orgs/bench/sinks/{}/status",
            g.base,
            sink["sink_id"].as_str().unwrap_or_default()
        ),
    });
    let stream = "peat-bench-peat";
    let changes = format!("{}/orgs/bench/formations/mesh/changes", g.base);
    let filler = "x".repeat(PAYLOAD - 60);
    let body = |from: usize, k: usize| {
        let mut b = String::new();
        for i in from..from + k {
            b.push_str(
                &json!({"collection": "tracks", "doc_id": format!("d{i}"), "op": "upsert",
                "data": {"seq": i, "pad": filler}})
                .to_string(),
            );
            b.push('\n');
        }
        b
    };
    // The link works: a first event reaches the hub.
    send_ok(
        http.post(&changes)
            .bearer_auth(ADMIN)
            .header("content-type", "application/x-ndjson")
            .body(body(0, 1)),
        "ingest",
    )
    .await;
    let js = jetstream::new(connect(port).await);
    while stream_state(&js, stream).await.0 < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(hub);
    let cut = Instant::now();
    ingest_backlog(&http, &changes, n, &body).await;
    println!(
        "  gateway: {n} events held after {:.1} s of partition",
        cut.elapsed().as_secs_f64()
    );
    tokio::time::sleep(partition.saturating_sub(cut.elapsed())).await;
    let hub = nats_with_config(bin, &dir, "hub", &conf);
    let (e0, h0) = (cpu_seconds(g.pid), cpu_seconds(hub.0.id()));
    let mut d = time_drain(port, stream, 1, n as u64, acked.as_ref()).await;
    d.cpu = (cpu_seconds(g.pid) - e0, cpu_seconds(hub.0.id()) - h0);
    d.peak = mem.peak();
    if acked.is_some() {
        // Timed by the gateway's acknowledged count; checked here against what the hub holds.
        let (msgs, events) = hub_events(&jetstream::new(connect(port).await), stream).await;
        println!(
            "  hub: {events} events in {msgs} batch messages (want {})",
            n + 1
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    d
}

/// (messages, events) in a stream of batch messages (JSON arrays).
async fn hub_events(js: &jetstream::Context, name: &str) -> (u64, usize) {
    let Ok(mut st) = js.get_stream(name).await else {
        return (0, 0);
    };
    let last = st.info().await.map_or(0, |i| i.state.last_sequence);
    let mut events = 0;
    for seq in 1..=last {
        if let Ok(m) = st.get_raw_message(seq).await {
            events +=
                serde_json::from_slice::<Vec<serde_json::Value>>(&m.payload).map_or(0, |a| a.len());
        }
    }
    (last, events)
}

async fn ingest_backlog(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    body: &dyn Fn(usize, usize) -> String,
) {
    let mut sent = 1;
    while sent < n + 1 {
        let k = 2000.min(n + 1 - sent);
        send_ok(
            http.post(url)
                .bearer_auth(ADMIN)
                .header("content-type", "application/x-ndjson")
                .body(body(sent, k)),
            "ingest",
        )
        .await;
        sent += k;
    }
}

async fn leaf(bin: &str, n: usize, partition: Duration) -> Drain {
    let dir = std::env::temp_dir().join(format!("peat-bench-drain-leaf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (port, leaf_port, edge_port) = (free_port(), free_port(), free_port());
    let conf = hub_conf(&dir, port, leaf_port);
    let hub = nats_with_config(bin, &dir, "hub", &conf);
    let edge_conf = format!(
        "listen: 127.0.0.1:{edge_port}\njetstream {{ store_dir: \"{}\", domain: leaf }}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ] }}\n",
        dir.join("leaf-store").display()
    );
    let edge_server = nats_with_config(bin, &dir, "leaf", &edge_conf);
    let mem = MemWatch::start(edge_server.0.id());
    let edge = jetstream::new(connect(edge_port).await);
    edge.create_stream(jetstream::stream::Config {
        name: "LEAF".into(),
        subjects: vec!["bench.>".into()],
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("creating the leaf's stream: {e}"));
    let hub_js = jetstream::new(connect(port).await);
    hub_js
        .create_stream(jetstream::stream::Config {
            name: "HUB".into(),
            sources: Some(vec![jetstream::stream::Source {
                name: "LEAF".into(),
                // The leaf's JetStream API, reached through the leafnode connection.
                external: Some(jetstream::stream::External {
                    api_prefix: "$JS.leaf.API".into(),
                    delivery_prefix: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating the hub's sourcing stream: {e}"));
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let ack = |js: &jetstream::Context, i: usize| {
        let (js, p) = (js.clone(), payload.clone());
        async move {
            js.publish(format!("bench.d{i}"), p)
                .await
                .unwrap_or_else(|e| panic!("publish: {e}"))
                .await
                .unwrap_or_else(|e| panic!("ack: {e}"));
        }
    };
    ack(&edge, 0).await;
    while stream_state(&hub_js, "HUB").await.0 < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(hub);
    let cut = Instant::now();
    let mut i = 1;
    while i < n + 1 {
        let k = 2000.min(n + 1 - i);
        let mut acks = Vec::with_capacity(k);
        for j in i..i + k {
            acks.push(
                edge.publish(format!("bench.d{j}"), payload.clone())
                    .await
                    .unwrap_or_else(|e| panic!("publish: {e}")),
            );
        }
        for a in acks {
            a.await.unwrap_or_else(|e| panic!("ack: {e}"));
        }
        i += k;
    }
    println!(
        "  leaf: {n} events held after {:.1} s of partition",
        cut.elapsed().as_secs_f64()
    );
    tokio::time::sleep(partition.saturating_sub(cut.elapsed())).await;
    let hub = nats_with_config(bin, &dir, "hub", &conf);
    let edge_pid = edge_server.0.id();
    let (e0, h0) = (cpu_seconds(edge_pid), cpu_seconds(hub.0.id()));
    let mut d = time_drain(port, "HUB", 1, n as u64, None).await;
    d.cpu = (cpu_seconds(edge_pid) - e0, cpu_seconds(hub.0.id()) - h0);
    d.peak = mem.peak();
    let _ = std::fs::remove_dir_all(&dir);
    d
}

fn content_mode() -> String {
    std::env::var("CONTENT_MODE").unwrap_or_else(|_| "structured".into())
}

fn main() {
    let args = numeric_args();
    let n = args.first().copied().unwrap_or(200_000).max(1);
    let partition = Duration::from_secs(args.get(1).copied().unwrap_or(30) as u64);
    let bin = nats_server_bin();
    println!(
        "P2 drain after a {} s partition: {n} events of {PAYLOAD} B; hub {} ({bin})",
        partition.as_secs(),
        nats_version(&bin)
    );
    runtime().block_on(async {
        let g = gateway(&bin, n, partition).await;
        g.print(&format!("peat-gateway → NATS ({})", content_mode()));
        let l = leaf(&bin, n, partition).await;
        l.print("NATS leaf → hub source");
        println!(
            "ratio gateway / leaf once flowing: {:.2}x (target: first delivery ≤ 2 s, ≥ 1.5x)",
            g.flowing() / l.flowing()
        );
    });
}
