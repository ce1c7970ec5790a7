//! P2 benchmark: drain after a partition. The downstream hub goes away, a backlog of events
//! builds at the edge, the hub comes back on the same port and store; measured are the time
//! from the hub accepting connections to the first event arriving, the rate once flowing,
//! and the rate counted from the link's return. Peers on the same backlog: a NATS leaf node
//! with JetStream whose stream the hub's stream sources (same hub binary), and a Mosquitto
//! bridge with QoS 1 queued at the edge. Prints figures; asserts nothing (`scripts/bench
//! drain` runs every scenario and writes BENCHMARKS.md).
//!
//!   cargo build --release && cargo run --release --example bench_drain -- [events] [partition_s]
//!
//! Defaults: 200000 events of 256 B, a 30 s partition; the backlog is sent as fast as each
//! edge takes it, and the systems run one after the other. With `RATE=<events/s>` the
//! backlog builds at that steady rate for the whole partition instead (an outage of
//! `partition_s`), on every edge at once, and the drains are timed one after the other.
//! `NATS_SERVER` picks the nats-server (default: the 2.15 one `scripts/setup` installs into
//! the project's venv); `CONTENT_MODE=binary` or `batched` drains in that CloudEvents content
//! mode (default: structured; batched sends a message per batch and counts events by the
//! gateway's acknowledged count); `RATE_LIMIT=<bytes/s>` caps the gateway's sink and reports
//! the rate it kept; `PEERS=leaf,mosquitto,mosquitto-default` picks the peers (default all:
//! `mosquitto-default` is the bridge at its default queue limit of 1,000 messages).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use reqwest::Method;
use serde_json::json;
use tokio::sync::Mutex;

const PAYLOAD: usize = 256;

#[derive(Clone, Copy)]
enum Load {
    /// This many events, as fast as the edge takes them.
    Burst(usize),
    /// `rate` events a second for `secs` seconds.
    Steady { rate: usize, secs: u64 },
}

impl Load {
    fn events(self) -> usize {
        match self {
            Load::Burst(n) => n,
            Load::Steady { rate, secs } => rate / 10 * 10 * secs as usize,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Load::Burst(_) => "burst",
            Load::Steady { .. } => "steady",
        }
    }
}

/// What every system's run shares: the nats-server, the load, the partition, and the turn
/// that keeps drains (or, in burst mode, whole runs) one at a time.
struct Run {
    bin: String,
    load: Load,
    partition: Duration,
    turn: Mutex<()>,
}

impl Run {
    /// A burst runs alone from start to end; a steady outage holds the turn for its drain only.
    async fn whole(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.load {
            Load::Burst(_) => Some(self.turn.lock().await),
            Load::Steady { .. } => None,
        }
    }
    async fn drain_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.load {
            Load::Burst(_) => None,
            Load::Steady { .. } => Some(self.turn.lock().await),
        }
    }
}

#[derive(Default)]
struct Drain {
    first_s: f64,
    all_s: f64,
    events: u64,
    /// Bytes at the hub per event (a batch message's bytes are shared by its events).
    bytes_per_event: f64,
    /// CPU seconds the edge and the hub spent while the backlog drained.
    cpu: (f64, f64),
    /// The edge's peak PSS and RSS (KiB) from start through the drain.
    peak: (u64, u64),
    /// Events the edge acknowledged that never reached the hub.
    lost: u64,
}

impl Drain {
    fn flowing(&self) -> f64 {
        self.events as f64 / (self.all_s - self.first_s).max(1e-6)
    }

    fn report(&self, system: &str, durability: &str, run: &Run, extra: serde_json::Value) {
        let overall = self.events as f64 / self.all_s.max(1e-6);
        println!(
            "{system:<34} first delivery {:>6.2} s after the hub accepts; {:>8.0} events/s once flowing, {:>8.0}/s from the link's return; {:>5.0} B per event at the hub; CPU edge {:.2} s, hub {:.2} s; lost {}",
            self.first_s, self.flowing(), overall, self.bytes_per_event, self.cpu.0, self.cpu.1, self.lost
        );
        println!(
            "{:<34} edge peak PSS {:.1} MiB, RSS {:.1} MiB holding and draining the backlog",
            "",
            mib(self.peak.0),
            mib(self.peak.1)
        );
        let mut v = json!({
            "bench": "drain", "system": system, "durability": durability,
            "scenario": run.load.name(), "events": run.load.events(),
            "partition_s": run.partition.as_secs_f64(),
            "rate": match run.load { Load::Steady { rate, .. } => rate, Load::Burst(_) => 0 },
            "delivered": self.events, "lost": self.lost,
            "first_s": self.first_s, "all_s": self.all_s,
            "flowing_per_s": self.flowing(), "overall_per_s": overall,
            "bytes_per_event": self.bytes_per_event,
            "cpu_edge_s": self.cpu.0, "cpu_hub_s": self.cpu.1,
            "peak_pss_kib": self.peak.0, "peak_rss_kib": self.peak.1,
        });
        if let (Some(v), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(e.clone());
        }
        record(v);
    }
}

/// An edge the backlog is written to.
trait Edge {
    /// Sends events `from..from + k` and returns once the edge acknowledged them all.
    async fn send(&mut self, from: usize, k: usize);
}

/// Writes the run's load to `edge`; returns the events sent.
async fn feed<E: Edge>(edge: &mut E, load: Load) -> usize {
    match load {
        Load::Burst(n) => {
            let mut i = 1;
            while i < n + 1 {
                let k = 2000.min(n + 1 - i);
                edge.send(i, k).await;
                i += k;
            }
            n
        }
        Load::Steady { rate, secs } => {
            let per_tick = rate / 10;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut next = 1;
            for _ in 0..secs * 10 {
                tick.tick().await;
                edge.send(next, per_tick).await;
                next += per_tick;
            }
            next - 1
        }
    }
}

/// The partition: the edge takes the load while its hub is away, then the drain waits for
/// its turn. Returns the events sent and the turn.
async fn partition<'a, E: Edge>(
    run: &'a Run,
    edge: &mut E,
    who: &str,
) -> (usize, Option<tokio::sync::MutexGuard<'a, ()>>) {
    let cut = Instant::now();
    let n = feed(edge, run.load).await;
    println!(
        "  {who}: {n} events held after {:.1} s of partition",
        cut.elapsed().as_secs_f64()
    );
    tokio::time::sleep(run.partition.saturating_sub(cut.elapsed())).await;
    (n, run.drain_turn().await)
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

/// When the hub on `port` first accepts a connection (polled every 2 ms).
async fn accepting(port: u16) -> Instant {
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits for the hub to accept, then times the first message and the last of `n` new events
/// (counted as messages, or by `acked` when one message holds many). Gives up after 10 min.
async fn time_drain(port: u16, stream: &str, before: u64, n: u64, acked: Option<&Acked>) -> Drain {
    let up = accepting(port).await;
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
            let events = events.saturating_sub(before);
            return Drain {
                first_s: first.unwrap_or(all).as_secs_f64(),
                all_s: all.as_secs_f64(),
                events,
                bytes_per_event: bytes as f64 / (events + before).max(1) as f64,
                lost: n.saturating_sub(events),
                ..Drain::default()
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct GatewayEdge {
    http: reqwest::Client,
    changes: String,
    filler: String,
}

impl GatewayEdge {
    fn body(&self, from: usize, k: usize) -> String {
        let mut b = String::with_capacity(k * (PAYLOAD + 40));
        for i in from..from + k {
            b.push_str(
                // A formation holds at most 1 M documents: a larger backlog updates them again.
                &json!({"collection": "tracks", "doc_id": format!("d{}", i % 500_000), "op": "upsert",
                "data": {"seq": i, "pad": self.filler}})
                .to_string(),
            );
            b.push('\n');
        }
        b
    }
}

impl Edge for GatewayEdge {
    async fn send(&mut self, from: usize, k: usize) {
        send_ok(
            self.http
                .post(&self.changes)
                .bearer_auth(ADMIN)
                .header("content-type", "application/x-ndjson")
                .body(self.body(from, k)),
            "ingest",
        )
        .await;
    }
}

/// The size of the gateway's outbox file, from its metrics.
async fn outbox_file_bytes(http: &reqwest::Client, g: &Gateway) -> Option<f64> {
    let text = http
        .get(format!("{}/metrics", g.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("peat_gateway_outbox_file_bytes "))
        .and_then(|v| v.trim().parse().ok())
}

/// Seconds until the outbox file is under half of `grown` (the compaction after a drained
/// backlog; zero when it ran before the drain ended), `None` after 30 s.
async fn outbox_compacted(http: &reqwest::Client, g: &Gateway, grown: f64) -> Option<f64> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if outbox_file_bytes(http, g)
            .await
            .is_some_and(|b| b < grown / 2.0)
        {
            return Some(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn gateway(run: &Run, content_mode: &str, rate_limit: Option<u64>) -> Drain {
    let _whole = run.whole().await;
    let tag = format!("{content_mode}-{}", run.load.name());
    let dir =
        std::env::temp_dir().join(format!("peat-bench-drain-gw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (port, leaf_port) = (free_port(), free_port());
    let conf = hub_conf(&dir, port, leaf_port);
    let hub = nats_with_config(&run.bin, &dir, "hub", &conf);
    wait_port(port).await;
    let g = start_gateway(
        &format!("drain-{tag}"),
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
    let mut sink = json!({"sink_type": {"Nats": {"subject_prefix": "peat", "url": format!("nats://127.0.0.1:{port}")}},
        "content_mode": content_mode});
    if let Some(r) = rate_limit {
        sink["rate_limit_bytes_per_sec"] = json!(r);
    }
    let sink = setup(&http, &g, Method::POST, "/orgs/bench/sinks", sink).await;
    let acked = (content_mode == "batched").then(|| Acked {
        http: http.clone(),
        url: format!(
            "{}/orgs/bench/sinks/{}/status",
            g.base,
            sink["sink_id"].as_str().unwrap_or_default()
        ),
    });
    let stream = "peat-bench-peat";
    let mut edge = GatewayEdge {
        http: http.clone(),
        changes: format!("{}/orgs/bench/formations/mesh/changes", g.base),
        filler: "x".repeat(PAYLOAD - 60),
    };
    // The link works: a first event reaches the hub.
    edge.send(0, 1).await;
    let js = jetstream::new(connect(port).await);
    while stream_state(&js, stream).await.0 < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(hub);
    let (n, _turn) = partition(run, &mut edge, &format!("gateway ({content_mode})")).await;
    let grown = outbox_file_bytes(&http, &g).await.unwrap_or(0.0);
    let hub = nats_with_config(&run.bin, &dir, "hub", &conf);
    let (e0, h0) = (cpu_seconds(g.pid), cpu_seconds(hub.0.id()));
    let mut d = time_drain(port, stream, 1, n as u64, acked.as_ref()).await;
    d.cpu = (cpu_seconds(g.pid) - e0, cpu_seconds(hub.0.id()) - h0);
    // The window goes on through the outbox compaction that follows a drained backlog.
    let compacted = outbox_compacted(&http, &g, grown).await;
    d.peak = mem.peak();
    match compacted {
        Some(s) => {
            println!("  outbox compacted {s:.1} s after the drain (inside the memory window)")
        }
        None => println!("  outbox not compacted within 30 s of the drain"),
    }
    if acked.is_some() {
        // Timed by the gateway's acknowledged count; checked here against what the hub holds.
        let (msgs, events) = hub_events(&jetstream::new(connect(port).await), stream).await;
        println!(
            "  hub: {events} events in {msgs} batch messages (want {})",
            n + 1
        );
        d.lost = (n as u64 + 1).saturating_sub(events as u64);
    }
    let mut extra = json!({"content_mode": content_mode});
    if let Some(cap) = rate_limit {
        // The cap counts the message bodies the sink sends (the hub stores subjects and
        // headers besides): the bodies delivered over the time the hub saw them arrive.
        let status = setup(
            &http,
            &g,
            Method::GET,
            &format!(
                "/orgs/bench/sinks/{}/status",
                sink["sink_id"].as_str().unwrap_or_default()
            ),
            json!(null),
        )
        .await;
        let bodies = status["delivered_bytes"].as_f64().unwrap_or(0.0);
        let kept = bodies / (d.all_s - d.first_s).max(1e-6);
        println!(
            "  rate limit {cap} B/s: kept {kept:.0} B/s once flowing ({:+.1} %)",
            (kept / cap as f64 - 1.0) * 100.0
        );
        extra["rate_limit_bytes_per_s"] = json!(cap);
        extra["kept_bytes_per_s"] = json!(kept);
    }
    d.report(
        &format!("peat-gateway → NATS ({content_mode})"),
        "acked after fsync, sent until the hub acks",
        run,
        extra,
    );
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

struct LeafEdge {
    js: jetstream::Context,
    payload: bytes::Bytes,
}

impl Edge for LeafEdge {
    async fn send(&mut self, from: usize, k: usize) {
        let mut acks = Vec::with_capacity(k);
        for j in from..from + k {
            acks.push(
                self.js
                    .publish(format!("bench.d{j}"), self.payload.clone())
                    .await
                    .unwrap_or_else(|e| panic!("publish: {e}")),
            );
        }
        for a in acks {
            a.await.unwrap_or_else(|e| panic!("ack: {e}"));
        }
    }
}

async fn leaf(run: &Run) -> Drain {
    let _whole = run.whole().await;
    let dir = std::env::temp_dir().join(format!(
        "peat-bench-drain-leaf-{}-{}",
        run.load.name(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (port, leaf_port, edge_port) = (free_port(), free_port(), free_port());
    let conf = hub_conf(&dir, port, leaf_port);
    let hub = nats_with_config(&run.bin, &dir, "hub", &conf);
    let edge_conf = format!(
        "listen: 127.0.0.1:{edge_port}\njetstream {{ store_dir: \"{}\", domain: leaf }}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ] }}\n",
        dir.join("leaf-store").display()
    );
    let edge_server = nats_with_config(&run.bin, &dir, "leaf", &edge_conf);
    let mem = MemWatch::start(edge_server.0.id());
    let js = jetstream::new(connect(edge_port).await);
    js.create_stream(jetstream::stream::Config {
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
    let mut edge = LeafEdge {
        js,
        payload: bytes::Bytes::from(vec![b'x'; PAYLOAD]),
    };
    edge.send(0, 1).await;
    while stream_state(&hub_js, "HUB").await.0 < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(hub);
    let (n, _turn) = partition(run, &mut edge, "leaf").await;
    let hub = nats_with_config(&run.bin, &dir, "hub", &conf);
    let edge_pid = edge_server.0.id();
    let (e0, h0) = (cpu_seconds(edge_pid), cpu_seconds(hub.0.id()));
    let mut d = time_drain(port, "HUB", 1, n as u64, None).await;
    d.cpu = (cpu_seconds(edge_pid) - e0, cpu_seconds(hub.0.id()) - h0);
    d.peak = mem.peak();
    d.report(
        "NATS leaf → hub source",
        "acked before fsync",
        run,
        json!({}),
    );
    let _ = std::fs::remove_dir_all(&dir);
    d
}

struct MqttEdge {
    client: rumqttc::AsyncClient,
    events: rumqttc::EventLoop,
    payload: bytes::Bytes,
}

impl Edge for MqttEdge {
    async fn send(&mut self, from: usize, k: usize) {
        use rumqttc::{Event, Packet, QoS};
        for j in from..from + k {
            self.client
                .try_publish(
                    format!("bench/d{j}"),
                    QoS::AtLeastOnce,
                    false,
                    self.payload.clone(),
                )
                .unwrap_or_else(|e| panic!("publish: {e}"));
        }
        let mut acked = 0;
        while acked < k {
            match self.events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("mosquitto edge: {e}"),
            }
        }
    }
}

fn mqtt_options(id: &str, port: u16, inflight: u16) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(inflight);
    o
}

/// Counts the distinct events a persistent QoS 1 subscriber on the hub receives, and when
/// the first after the partition came.
struct HubCounter {
    seen: std::sync::Arc<std::sync::Mutex<(HashSet<u32>, Option<Instant>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl HubCounter {
    async fn start(port: u16) -> Self {
        use rumqttc::{AsyncClient, Event, Packet, QoS};
        let (client, mut events) = AsyncClient::new(mqtt_options("hub-archive", port, 100), 10);
        client
            .subscribe("bench/#", QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new((HashSet::new(), None)));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let seq = p
                            .topic
                            .strip_prefix("bench/d")
                            .and_then(|n| n.parse::<u32>().ok());
                        if let (Some(seq), Ok(mut s)) = (seq, s.lock()) {
                            if seq > 0 && s.1.is_none() {
                                s.1 = Some(Instant::now());
                            }
                            s.0.insert(seq);
                        }
                    }
                    Ok(_) => {}
                    // The hub is away: the session brings the rest when it returns.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        Self { seen, task }
    }

    fn count(&self) -> (usize, Option<Instant>) {
        self.seen
            .lock()
            .map(|s| (s.0.len(), s.1))
            .unwrap_or((0, None))
    }
}

impl Drop for HubCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stops mosquitto as an operator would (SIGTERM: it writes its database) and waits.
fn stop_gracefully(mut b: Killed) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(b.0.id().to_string())
        .status();
    let _ = b.0.wait();
}

/// A Mosquitto bridge: the edge broker queues QoS 1 messages for the bridge while the hub
/// broker is away; the queue limit lifted, or mosquitto's default (1,000 messages).
async fn mosquitto(run: &Run, default_limit: bool) -> Drain {
    let _whole = run.whole().await;
    let tag = if default_limit {
        "default"
    } else {
        "unlimited"
    };
    let dir = std::env::temp_dir().join(format!(
        "peat-bench-drain-mq-{tag}-{}-{}",
        run.load.name(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (hub_port, edge_port) = (free_port(), free_port());
    let limits = if default_limit {
        ""
    } else {
        "max_queued_messages 0\nmax_queued_bytes 0\n"
    };
    let _ = std::fs::create_dir_all(dir.join("hub"));
    let _ = std::fs::create_dir_all(dir.join("edge"));
    let hub_conf = format!(
        "listener {hub_port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/hub/\n{limits}log_dest none\n",
        dir.display()
    );
    let edge_conf = format!(
        "listener {edge_port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/edge/\n{limits}log_dest none\nconnection hub\naddress 127.0.0.1:{hub_port}\ntopic bench/# out 1\ncleansession false\nrestart_timeout 1 2\n",
        dir.display()
    );
    let hub = mosquitto_with_config(&dir, "hub", &hub_conf);
    wait_port(hub_port).await;
    let counter = HubCounter::start(hub_port).await;
    let edge_broker = mosquitto_with_config(&dir, "edge", &edge_conf);
    let mem = MemWatch::start(edge_broker.0.id());
    wait_port(edge_port).await;
    let (client, events) =
        rumqttc::AsyncClient::new(mqtt_options("edge-pub", edge_port, 2000), 2100);
    let mut edge = MqttEdge {
        client,
        events,
        payload: bytes::Bytes::from(vec![b'x'; PAYLOAD]),
    };
    // The link works: a first event crosses the bridge.
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.count().0 < 1 && Instant::now() < deadline {
        edge.send(0, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_gracefully(hub);
    let (n, _turn) = partition(run, &mut edge, &format!("mosquitto bridge ({tag} queue)")).await;
    let before = counter.count().0;
    let hub = mosquitto_with_config(&dir, "hub", &hub_conf);
    let (e0, h0) = (cpu_seconds(edge_broker.0.id()), cpu_seconds(hub.0.id()));
    let up = accepting(hub_port).await;
    // Done when every event arrived, or nothing more came for 10 s (the rest was dropped).
    let mut last = (before, Instant::now());
    let deadline = up + Duration::from_secs(600);
    let got = loop {
        let (got, _) = counter.count();
        if got != last.0 {
            last = (got, Instant::now());
        }
        if got > n || last.1.elapsed() > Duration::from_secs(10) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let all = last.1.duration_since(up);
    let first = counter
        .count()
        .1
        .map_or(all, |f| f.saturating_duration_since(up));
    let events = got.saturating_sub(before) as u64;
    let mut d = Drain {
        first_s: first.as_secs_f64(),
        all_s: all.as_secs_f64(),
        events,
        bytes_per_event: PAYLOAD as f64,
        cpu: (
            cpu_seconds(edge_broker.0.id()) - e0,
            cpu_seconds(hub.0.id()) - h0,
        ),
        peak: mem.peak(),
        lost: (n as u64).saturating_sub(events),
    };
    if events == 0 {
        d.first_s = f64::NAN;
    }
    d.report(
        &format!("Mosquitto bridge ({tag} queue)"),
        "acked before any write",
        run,
        json!({"queue_limit": if default_limit { "1000 (default)" } else { "none" }}),
    );
    drop(counter);
    let _ = std::fs::remove_dir_all(&dir);
    d
}

fn main() {
    let args = numeric_args();
    let n = args.first().copied().unwrap_or(200_000).max(1);
    let partition = Duration::from_secs(args.get(1).copied().unwrap_or(30) as u64);
    let load = match std::env::var("RATE")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
    {
        Some(rate) if rate >= 10 => Load::Steady {
            rate,
            secs: partition.as_secs(),
        },
        _ => Load::Burst(n),
    };
    let content_mode = std::env::var("CONTENT_MODE").unwrap_or_else(|_| "structured".into());
    let rate_limit = std::env::var("RATE_LIMIT")
        .ok()
        .and_then(|r| r.parse::<u64>().ok());
    let peers =
        std::env::var("PEERS").unwrap_or_else(|_| "leaf,mosquitto,mosquitto-default".into());
    let peer = |p: &str| peers.split(',').any(|x| x.trim() == p);
    let run = Run {
        bin: nats_server_bin(),
        load,
        partition,
        turn: Mutex::new(()),
    };
    match load {
        Load::Burst(n) => println!(
            "P2 drain after a {} s partition: a backlog of {n} events of {PAYLOAD} B; hub {} ({}); {}",
            partition.as_secs(),
            nats_version(&run.bin),
            run.bin,
            mosquitto_version()
        ),
        Load::Steady { rate, secs } => println!(
            "P2 drain after a {secs} s outage at {rate} events/s of {PAYLOAD} B ({} events); hub {} ({}); {}",
            load.events(),
            nats_version(&run.bin),
            run.bin,
            mosquitto_version()
        ),
    }
    runtime().block_on(async {
        let (g, l, _, _) = tokio::join!(
            gateway(&run, &content_mode, rate_limit),
            async {
                if peer("leaf") {
                    Some(leaf(&run).await)
                } else {
                    None
                }
            },
            async {
                if peer("mosquitto") {
                    Some(mosquitto(&run, false).await)
                } else {
                    None
                }
            },
            async {
                // A bounded queue drops its events; not worth an outage of its own.
                if peer("mosquitto-default") && matches!(load, Load::Burst(_)) {
                    Some(mosquitto(&run, true).await)
                } else {
                    None
                }
            },
        );
        if let Some(l) = l {
            println!(
                "ratio gateway / leaf once flowing: {:.2}x (target: first delivery ≤ 2 s, ≥ 1.5x)",
                g.flowing() / l.flowing()
            );
        }
    });
}
