//! P5 benchmark: device enrollments per second with a local KEK, an Open formation, binary
//! requests signed by each device's own key (proof of possession) and binary responses. The
//! requests are signed before the clock starts, so the figure is the gateway's. Prints
//! figures; asserts nothing.
//!
//!   cargo build --release && cargo run --release --example bench_enroll -- [enrollments] [clients]
//!
//! Defaults: 20000 enrollments, 8 concurrent clients (keep-alive connections). Then the admin
//! API under the same clients: 2,000 GETs of the org, formation, sink, health and metrics
//! resources, p50/p99.

mod common;

use std::time::Instant;

use common::*;
use ed25519_dalek::SigningKey;
use peat_gateway::mesh::{EnrollmentRequest, EnrollmentResponse, EnrollmentStatus, MeshTier};
use reqwest::Method;
use serde_json::json;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() {
    let args = numeric_args();
    let n = args.first().copied().unwrap_or(20_000).max(1);
    let clients = args.get(1).copied().unwrap_or(8).max(1);
    println!("P5 enrollment: {n} devices, {clients} clients, local KEK, Open formation, binary");
    runtime().block_on(async {
        // Every client comes from one loopback address: room for all of them on one source,
        // and for the extra connections a client pool opens when a request starts while
        // another's connection is still on its way back (beyond the cap they would wait in
        // the backlog for a slot, 10 s at worst).
        let conns = (clients * 2 + 16).to_string();
        let g = start_gateway(
            "enroll",
            &[
                ("PEAT_ENROLL_RATE_PER_MIN", "6000000"),
                ("PEAT_GATEWAY_MAX_CONNECTIONS_PER_SOURCE", &conns),
                ("PEAT_GATEWAY_MAX_CONNECTIONS", &conns),
            ],
        )
        .await;
        let http = reqwest::Client::new();
        setup(&http, &g, Method::POST, "/orgs", json!({"org_id": "bench", "display_name": "Bench"})).await;
        setup(&http, &g, Method::PATCH, "/orgs/bench",
            json!({"quotas": {"max_enrollments_per_hour": 1_000_000u64, "max_peers_per_formation": 1_000_000u64}})).await;
        let f = setup(&http, &g, Method::POST, "/orgs/bench/formations",
            json!({"app_id": "mesh", "enrollment_policy": "Open"})).await;
        let mesh_id = f["mesh_id"].as_str().unwrap_or_default().to_owned();

        let ts = now_ms();
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                seed[8] = 0xb5;
                let key = SigningKey::from_bytes(&seed);
                EnrollmentRequest::signed(&key, &mesh_id, &format!("node-{i}"), MeshTier::Edge, b"", ts)
                    .and_then(|r| r.encode())
                    .unwrap_or_else(|e| panic!("request {i}: {e}"))
            })
            .collect();
        let mut shares: Vec<Vec<Vec<u8>>> = vec![Vec::new(); clients];
        for (i, b) in bodies.into_iter().enumerate() {
            shares[i % clients].push(b);
        }
        let url = format!("{}/orgs/bench/formations/mesh/enroll", g.base);
        let cpu0 = cpu_seconds(g.pid);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for share in shares {
            let (http, url) = (http.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(share.len());
                for body in share {
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .header("content-type", "application/octet-stream")
                        .header("accept", "application/octet-stream")
                        .body(body)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("enroll: {e:?}"));
                    let status = r.status();
                    let bytes = r.bytes().await.unwrap_or_default();
                    let resp = EnrollmentResponse::decode(&bytes)
                        .unwrap_or_else(|e| panic!("enroll answered {status}: {e}"));
                    assert!(
                        resp.status == EnrollmentStatus::Approved,
                        "enroll answered {status}: {:?}",
                        resp.status
                    );
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            }));
        }
        let mut lat = gather(tasks).await;
        let elapsed = started.elapsed();
        let cpu = cpu_seconds(g.pid) - cpu0;
        lat.sort_by(f64::total_cmp);
        println!(
            "peat-gateway enrollment      {n:>8} in {:>6.2} s = {:>7.0}/s; latency p50 {:.2} ms, p99 {:.2} ms; gateway CPU {:.3} ms per enrollment",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            cpu * 1000.0 / n as f64,
        );
        println!("target: ≥ 5000/s with p99 ≤ 50 ms");
        record(json!({"bench": "enroll", "system": "peat-gateway", "enrollments": n,
            "clients": clients, "seconds": elapsed.as_secs_f64(),
            "per_s": n as f64 / elapsed.as_secs_f64(),
            "p50_ms": percentile(&lat, 0.50), "p99_ms": percentile(&lat, 0.99),
            "cpu_ms_each": cpu * 1000.0 / n as f64}));

        // The admin API an operator's tools poll, with the formation now holding n peers.
        let paths = [
            "/orgs",
            "/orgs/bench",
            "/orgs/bench/formations/mesh",
            "/orgs/bench/sinks",
            "/health",
            "/metrics",
        ];
        let per_client = 2000 / clients.max(1);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, base) = (http.clone(), g.base.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let path = paths[(c + i) % paths.len()];
                    let t = Instant::now();
                    let r = http
                        .get(format!("{base}{path}"))
                        .bearer_auth(ADMIN)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
                    let status = r.status();
                    let _ = r.bytes().await;
                    assert!(status.is_success(), "GET {path} answered {status}");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            }));
        }
        let mut lat = gather(tasks).await;
        let elapsed = started.elapsed();
        lat.sort_by(f64::total_cmp);
        println!(
            "peat-gateway admin API       {:>8} GETs in {:>6.2} s = {:>7.0}/s; latency p50 {:.2} ms, p99 {:.2} ms ({})",
            lat.len(),
            elapsed.as_secs_f64(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            paths.join(", ")
        );
        record(json!({"bench": "admin_api", "system": "peat-gateway", "requests": lat.len(),
            "clients": clients, "per_s": lat.len() as f64 / elapsed.as_secs_f64(),
            "p50_ms": percentile(&lat, 0.50), "p99_ms": percentile(&lat, 0.99),
            "paths": paths}));
    });
}
