//! P1 benchmark: durable ingest into the gateway against NATS JetStream publish-with-ack, run
//! side by side on this machine with clients in the same language. Prints figures and the
//! ratio; asserts nothing.
//!
//!   cargo build --release && cargo run --release --example bench_ingest -- [events] [batch] [clients]
//!
//! Defaults: 200000 events of 256 bytes, batches of 500, 4 concurrent clients. Durability
//! differs and is printed beside each figure: the gateway acknowledges only after its outbox
//! commit is fsynced; JetStream's file store at its default acknowledges before fsync (it
//! syncs every 2 minutes), and with `sync_interval: always` (nats-server 2.10+) after.
//! `NATS_SERVER` picks the nats-server (default: the 2.15 one `scripts/setup` installs into
//! the project's venv, else the one on the PATH).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const PAYLOAD: usize = 256;

/// Every client's per-batch latencies, once all have finished.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Vec<f64>>>) -> Vec<f64> {
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    lat
}

struct Figures {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn report(name: &str, n: usize, elapsed: Duration, mut lat: Vec<f64>) -> Figures {
    lat.sort_by(f64::total_cmp);
    let f = Figures {
        events_per_s: n as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
    };
    println!(
        "{name:<28} {n:>8} events in {:>7.2} s = {:>9.0} events/s; ack latency per batch p50 {:>6.2} ms, p99 {:>6.2} ms",
        elapsed.as_secs_f64(),
        f.events_per_s,
        f.p50_ms,
        f.p99_ms
    );
    f
}

async fn gateway(events: usize, batch: usize, clients: usize) -> Figures {
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
    let filler = "x".repeat(PAYLOAD - 60);
    let per_client = events / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, filler) = (http.clone(), base.clone(), filler.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut sent = 0;
            while sent < per_client {
                let n = batch.min(per_client - sent);
                let mut body = String::with_capacity(n * (PAYLOAD + 40));
                for i in 0..n {
                    let line = json!({"collection": "tracks", "doc_id": format!("c{c}-{}", sent + i),
                        "op": "upsert", "data": {"seq": sent + i, "pad": filler}});
                    body.push_str(&line.to_string());
                    body.push('\n');
                }
                let t = Instant::now();
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
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                sent += n;
            }
            lat
        }));
    }
    let lat = gather(tasks).await;
    let elapsed = started.elapsed();
    let (pss, rss) = mem.peak();
    drop(g);
    let f = report(
        "peat-gateway (ack after fsync)",
        per_client * clients,
        elapsed,
        lat,
    );
    println!(
        "{:<28} peak PSS {:.1} MiB, RSS {:.1} MiB",
        "",
        mib(pss),
        mib(rss)
    );
    f
}

async fn jetstream(
    bin: &str,
    sync_always: bool,
    events: usize,
    batch: usize,
    clients: usize,
) -> Figures {
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
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let per_client = events / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (js, payload) = (js.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut sent = 0;
            while sent < per_client {
                let n = batch.min(per_client - sent);
                let t = Instant::now();
                // Publish the batch pipelined, then wait for every acknowledgement.
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
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                sent += n;
            }
            lat
        }));
    }
    let lat = gather(tasks).await;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let (pss, rss) = mem.peak();
    let f = report(
        if sync_always {
            "JetStream sync always (ack after fsync)"
        } else {
            "JetStream default (ack before fsync)"
        },
        per_client * clients,
        elapsed,
        lat,
    );
    println!(
        "{:<28} peak PSS {:.1} MiB, RSS {:.1} MiB",
        "",
        mib(pss),
        mib(rss)
    );
    drop(n_server);
    f
}

fn main() {
    let args = numeric_args();
    let events = args.first().copied().unwrap_or(200_000);
    let batch = args.get(1).copied().unwrap_or(500).max(1);
    let clients = args.get(2).copied().unwrap_or(4).max(1);
    println!(
        "P1 durable ingest: {events} events of {PAYLOAD} B, batches of {batch}, {clients} clients"
    );
    let bin = nats_server_bin();
    let version = nats_version(&bin);
    println!("peer: {version} ({bin})");
    runtime().block_on(async {
        let g = gateway(events, batch, clients).await;
        let j = jetstream(&bin, false, events, batch, clients).await;
        // `sync_interval` arrived in nats-server 2.10.
        let always = if version.contains("v2.9.") {
            println!(
                "JetStream sync always: skipped ({version} has no sync_interval; set NATS_SERVER)"
            );
            None
        } else {
            Some(jetstream(&bin, true, events, batch, clients).await)
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
    });
}
