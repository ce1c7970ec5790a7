//! P1 benchmark: durable ingest into the gateway against NATS JetStream publish-with-ack and
//! Mosquitto QoS 1, run side by side on this machine with clients in the same language.
//! Prints figures and the ratios; asserts nothing (`scripts/bench ingest` runs it in every
//! shape and writes BENCHMARKS.md).
//!
//!   cargo build --release && cargo run --release --example bench_ingest -- [events] [batch] [clients] [bytes]
//!
//! Defaults: 200000 events of 256 bytes, batches of 500, 4 concurrent clients; a batch of 1
//! is a client sending single events, awaiting each acknowledgement. Durability differs and
//! is printed beside each figure: the gateway acknowledges only after its outbox commit is
//! fsynced; JetStream's file store at its default acknowledges before fsync (it syncs every
//! 2 minutes), and with `sync_interval: always` (nats-server 2.10+) after; Mosquitto
//! acknowledges a QoS 1 message once queued in memory for a persistent subscriber and writes
//! its database every `autosave_interval` (30 min by default) and at exit.
//! `NATS_SERVER` picks the nats-server (default: the 2.15 one `scripts/setup` installs into
//! the project's venv, else the one on the PATH). `PEERS=sync-always,mosquitto` picks the peers
//! run besides JetStream's default, which every run has for the ratio (default: both; an empty
//! list runs the gateway and JetStream's default alone, for A/B runs of two builds).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// One run's shape.
#[derive(Clone, Copy)]
struct Shape {
    events: usize,
    batch: usize,
    clients: usize,
    payload: usize,
}

impl Shape {
    /// (events, batch, clients, payload bytes)
    fn parts(self) -> (usize, usize, usize, usize) {
        (self.events, self.batch, self.clients, self.payload)
    }
}

struct Figures {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// One client's run: its events in batches of up to `batch`, each timed from its first send
/// to its last acknowledgement (`prepare` builds what `send` sends, before the clock starts).
async fn timed_batches<P>(
    per_client: usize,
    batch: usize,
    mut prepare: impl FnMut(usize, usize) -> P,
    mut send: impl AsyncFnMut(P),
) -> Vec<f64> {
    let mut lat = Vec::new();
    let mut sent = 0;
    while sent < per_client {
        let n = batch.min(per_client - sent);
        let p = prepare(sent, n);
        let t = Instant::now();
        send(p).await;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        sent += n;
    }
    lat
}

/// Every client's latencies, its run polled beside the others' on this thread.
async fn gather_all(tasks: Vec<impl std::future::Future<Output = Vec<f64>>>) -> Vec<f64> {
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Prints and records one system's figures.
fn report(
    system: &str,
    durability: &str,
    shape: Shape,
    elapsed: Duration,
    mut lat: Vec<f64>,
    peak: (u64, u64),
    written: Option<u64>,
) -> Figures {
    let n = shape.events / shape.clients * shape.clients;
    lat.sort_by(f64::total_cmp);
    let f = Figures {
        events_per_s: n as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
    };
    println!(
        "{:<56} {n:>8} events in {:>7.2} s = {:>9.0} events/s; ack latency per batch p50 {:>6.2} ms, p99 {:>6.2} ms",
        format!("{system} ({durability})"),
        elapsed.as_secs_f64(),
        f.events_per_s,
        f.p50_ms,
        f.p99_ms
    );
    println!(
        "{:<56} peak PSS {:.1} MiB, RSS {:.1} MiB",
        "",
        mib(peak.0),
        mib(peak.1)
    );
    record(json!({
        "bench": "ingest", "system": system, "durability": durability,
        "payload": shape.payload, "batch": shape.batch, "clients": shape.clients,
        "events": n, "seconds": elapsed.as_secs_f64(), "events_per_s": f.events_per_s,
        "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
        "peak_pss_kib": peak.0, "peak_rss_kib": peak.1,
        "disk_write_bytes": written,
    }));
    f
}

async fn gateway(shape: Shape) -> Figures {
    let (events, batch, clients, payload) = shape.parts();
    let g = start_gateway(
        "ingest",
        &[
            ("PEAT_CDC_OUTBOX_MAX_MB", "4096"),
            ("PEAT_GATEWAY_MAX_BODY_BYTES", "8388608"),
        ],
    )
    .await;
    let mem = MemWatch::start(g.pid);
    let http = reqwest::Client::new();
    let base = g.base.clone();
    bench_org(&http, &g).await;
    let filler = "x".repeat(payload.saturating_sub(60));
    let per_client = events / clients;
    let written_before = write_bytes(g.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, filler) = (http.clone(), base.clone(), filler.clone());
        tasks.push(async move {
            let prepare = |sent: usize, n: usize| {
                let mut body = String::with_capacity(n * (payload + 40));
                for i in 0..n {
                    let line = json!({"collection": "tracks", "doc_id": format!("c{c}-{}", sent + i),
                        "op": "upsert", "data": {"seq": sent + i, "pad": filler}});
                    body.push_str(&line.to_string());
                    body.push('\n');
                }
                body
            };
            let send = async |body: String| {
                let r = http
                    .post(format!("{base}/orgs/bench/formations/mesh/changes"))
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {}
                    Ok(r) => panic!("ingest answered {}", r.status()),
                    Err(e) => panic!("ingest failed: {e}"),
                }
            };
            timed_batches(per_client, batch, prepare, send).await
        });
    }
    let lat = gather_all(tasks).await;
    let elapsed = started.elapsed();
    let written = write_bytes(g.pid).saturating_sub(written_before);
    let peak = mem.peak();
    drop(g);
    report(
        "peat-gateway",
        "ack after fsync",
        shape,
        elapsed,
        lat,
        peak,
        Some(written),
    )
}

async fn jetstream(bin: &str, sync_always: bool, shape: Shape) -> Figures {
    let (events, batch, clients, payload) = shape.parts();
    let dir = std::env::temp_dir().join(format!(
        "peat-bench-js-{}-{sync_always}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let sync = if sync_always {
        ", sync_interval: always"
    } else {
        ""
    };
    let conf = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\"{sync} }}\n",
        dir.join("store").display()
    );
    let n_server = nats_with_config(bin, &dir, "js", &conf);
    let mem = MemWatch::start(n_server.0.id());
    wait_port(port).await;
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to nats-server: {e}"));
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("creating the stream: {e}"));
    let payload = bytes::Bytes::from(vec![b'x'; payload]);
    let per_client = events / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (js, payload) = (js.clone(), payload.clone());
        tasks.push(async move {
            // Publish the batch pipelined, then wait for every acknowledgement.
            let send = async |(sent, n): (usize, usize)| {
                let mut acks = Vec::with_capacity(n);
                for i in 0..n {
                    acks.push(
                        js.publish(format!("bench.c{c}.{}", sent + i), payload.clone())
                            .await
                            .unwrap_or_else(|e| panic!("publish: {e}")),
                    );
                }
                for a in acks {
                    a.await.unwrap_or_else(|e| panic!("ack: {e}"));
                }
            };
            timed_batches(per_client, batch, |s, n| (s, n), send).await
        });
    }
    let lat = gather_all(tasks).await;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let peak = mem.peak();
    drop(n_server);
    report(
        if sync_always {
            "NATS JetStream, sync_interval always"
        } else {
            "NATS JetStream, default"
        },
        if sync_always {
            "ack after fsync"
        } else {
            "ack before fsync"
        },
        shape,
        elapsed,
        lat,
        peak,
        None,
    )
}

/// Mosquitto with persistence, the messages queued for a persistent QoS 1 subscriber that is
/// away (how a broker holds events for a consumer that will come back).
async fn mosquitto(shape: Shape) -> Figures {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let (events, batch, clients, payload) = shape.parts();
    let dir = std::env::temp_dir().join(format!("peat-bench-mq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_queued_bytes 0\nlog_dest none\n",
        dir.display()
    );
    let broker = mosquitto_with_config(&dir, "mq", &conf);
    let mem = MemWatch::start(broker.0.id());
    wait_port(port).await;
    let options = |id: String, inflight: u16| {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(inflight);
        o
    };
    // The subscriber subscribes, then goes away: its session keeps every message.
    {
        let (c, mut ev) = AsyncClient::new(options("archive".into(), 10), 10);
        c.subscribe("bench/#", QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("mosquitto subscriber: {e}"),
            }
        }
        let _ = c.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
    }
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let per_client = events / clients;
    let inflight = u16::try_from(batch).unwrap_or(u16::MAX);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let body = body.clone();
        let (client, mut ev) = AsyncClient::new(options(format!("pub-{c}"), inflight), batch + 16);
        tasks.push(async move {
            let send = async |(sent, n): (usize, usize)| {
                for i in 0..n {
                    client
                        .try_publish(
                            format!("bench/c{c}/{}", sent + i),
                            QoS::AtLeastOnce,
                            false,
                            body.clone(),
                        )
                        .unwrap_or_else(|e| panic!("publish: {e}"));
                }
                let mut acked = 0;
                while acked < n {
                    match ev.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                        Ok(_) => {}
                        Err(e) => panic!("mosquitto: {e}"),
                    }
                }
            };
            timed_batches(per_client, batch, |s, n| (s, n), send).await
        });
    }
    let lat = gather_all(tasks).await;
    let elapsed = started.elapsed();
    let peak = mem.peak();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    report(
        "Mosquitto QoS 1, persistence",
        "ack before any write",
        shape,
        elapsed,
        lat,
        peak,
        None,
    )
}

fn main() {
    let args = numeric_args();
    let shape = Shape {
        events: args.first().copied().unwrap_or(200_000),
        batch: args.get(1).copied().unwrap_or(500).max(1),
        clients: args.get(2).copied().unwrap_or(4).max(1),
        payload: args.get(3).copied().unwrap_or(256).max(64),
    };
    println!(
        "P1 durable ingest: {} events of {} B, batches of {}, {} clients",
        shape.events, shape.payload, shape.batch, shape.clients
    );
    let bin = nats_server_bin();
    let version = nats_version(&bin);
    println!("peers: {version} ({bin}); {}", mosquitto_version());
    let peers = std::env::var("PEERS").unwrap_or_else(|_| "sync-always,mosquitto".into());
    let peer = |p: &str| peers.split(',').any(|x| x.trim() == p);
    runtime().block_on(async {
        let g = gateway(shape).await;
        let j = jetstream(&bin, false, shape).await;
        // `sync_interval` arrived in nats-server 2.10.
        let always = if !peer("sync-always") {
            None
        } else if version.contains("v2.9.") {
            println!(
                "JetStream sync always: skipped ({version} has no sync_interval; set NATS_SERVER)"
            );
            None
        } else {
            Some(jetstream(&bin, true, shape).await)
        };
        let m = if peer("mosquitto") {
            Some(mosquitto(shape).await)
        } else {
            None
        };
        println!(
            "ratio gateway / JetStream default: {:.2}x throughput (target ≥ 1.0x with p99 ≤ 20 ms)",
            g.events_per_s / j.events_per_s
        );
        if let Some(a) = always {
            println!(
                "ratio gateway / JetStream sync always: {:.2}x throughput",
                g.events_per_s / a.events_per_s
            );
        }
        if let Some(m) = m {
            println!(
                "ratio gateway / Mosquitto QoS 1: {:.2}x throughput",
                g.events_per_s / m.events_per_s
            );
        }
    });
}
