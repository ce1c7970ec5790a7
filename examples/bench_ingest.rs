//! P1 benchmark: durable ingest into the gateway against NATS JetStream publish-with-ack, run
//! side by side on this machine with clients in the same language. Prints figures and the
//! ratio; asserts nothing.
//!
//!   cargo build --release && cargo run --release --example bench_ingest -- [events] [batch] [clients]
//!
//! Defaults: 200000 events of 256 bytes, batches of 500, 4 concurrent clients. Both sides
//! acknowledge only after the write is durable (the gateway's outbox fsync; JetStream file
//! storage's ack). Needs `nats-server` (scripts/setup installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const PAYLOAD: usize = 256;
const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const KEK: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("nothing listens on {port}");
    std::process::exit(1);
}

/// Every client's per-batch latencies, once all have finished.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Vec<f64>>>) -> Vec<f64> {
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    lat
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
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
    let dir = std::env::temp_dir().join(format!("peat-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let bin =
        std::env::var("PEAT_GATEWAY_BIN").unwrap_or_else(|_| "target/release/peat-gateway".into());
    let child = Command::new(&bin)
        .env("PEAT_KEK", KEK)
        .env("PEAT_ADMIN_TOKEN", ADMIN)
        .env("PEAT_GATEWAY_DATA_DIR", &dir)
        .env("PEAT_GATEWAY_BIND", format!("127.0.0.1:{port}"))
        .env("PEAT_LOG", "warn")
        .env("PEAT_CDC_OUTBOX_MAX_MB", "4096")
        .env("PEAT_GATEWAY_MAX_BODY_BYTES", "8388608")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (build with cargo build --release, or set PEAT_GATEWAY_BIN)"));
    let _g = Killed(child);
    wait_port(port).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for (path, body) in [
        ("/orgs", json!({"org_id": "bench", "display_name": "Bench"})),
        ("/orgs/bench/formations", json!({"app_id": "mesh"})),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await;
        assert!(
            r.is_ok_and(|r| r.status().is_success()),
            "setting up {path}"
        );
    }
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
    let _ = std::fs::remove_dir_all(&dir);
    report(
        "peat-gateway HTTP ingest",
        per_client * clients,
        elapsed,
        lat,
    )
}

async fn jetstream(events: usize, batch: usize, clients: usize) -> Figures {
    let dir = std::env::temp_dir().join(format!("peat-bench-js-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start nats-server: {e} (scripts/setup installs it)"));
    let _n = Killed(child);
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
    report(
        "NATS JetStream publish+ack",
        per_client * clients,
        elapsed,
        lat,
    )
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(200_000);
    let batch = args.get(1).copied().unwrap_or(500).max(1);
    let clients = args.get(2).copied().unwrap_or(4).max(1);
    println!(
        "P1 durable ingest: {events} events of {PAYLOAD} B, batches of {batch}, {clients} clients"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let g = gateway(events, batch, clients).await;
        let j = jetstream(events, batch, clients).await;
        println!(
            "ratio gateway / JetStream: {:.2}x throughput (target ≥ 1.5x and ≥ 100000 events/s; p99 ≤ 20 ms)",
            g.events_per_s / j.events_per_s
        );
    });
}
