//! `peat-gateway demo`, the README's main-job command: simulated formation → outbox → file
//! sink, plus NATS and MQTT sinks when their URLs are given.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::harness::gateway::BIN;
use crate::harness::{free_port, service};

#[tokio::test]
async fn demo_captures_the_simulated_formation_into_file_and_broker_sinks() {
    let nats = service::nats().await;
    let broker = service::mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args([
            "demo",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--rate",
            "50",
        ])
        .args([
            "--nats-url",
            &nats.url("nats"),
            "--mqtt-url",
            &broker.url("mqtt"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events = dir.path().join("demo-data/sinks/demo/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = 0;
    let mut in_stream = 0;
    while Instant::now() < deadline && (lines < 20 || in_stream < 20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lines = std::fs::read_to_string(&events).map_or(0, |s| s.lines().count());
        if let Ok(c) = async_nats::connect(nats.url("nats")).await {
            if let Ok(mut s) = jetstream::new(c).get_stream("peat-demo-peat").await {
                in_stream = s.info().await.map_or(0, |i| i.state.messages);
            }
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(lines >= 20, "file sink got {lines} events");
    assert!(in_stream >= 20, "NATS got {in_stream} events");
    assert!(stdout.contains("events land in"), "{stdout}");
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["source"], "peat://demo/demo-mesh");
}
