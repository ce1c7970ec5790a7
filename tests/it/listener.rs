//! The listener under clients that hold connections without playing along: pipelining
//! without reading the answers, many connections from one address, many live streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{Gateway, GatewayOpts, ADMIN};

/// A connection from `from` (another loopback address than the test's client) with a tiny
/// receive buffer, that pipelines requests for a large answer and never reads.
async fn hog(g: &Gateway, from: &str) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(1024).unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let addr: SocketAddr = g.base().trim_start_matches("http://").parse().unwrap();
    let mut c = s.connect(addr).await.unwrap();
    let reqs = "GET /openapi.json HTTP/1.1\r\nhost: gw\r\n\r\n".repeat(40);
    let _ = tokio::time::timeout(Duration::from_secs(2), c.write_all(reqs.as_bytes())).await;
    c
}

/// Whether `/health` answers on a fresh connection within `within`.
async fn health_answers(g: &Gateway, within: Duration) -> bool {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(within)
        .build()
        .unwrap();
    matches!(c.get(format!("{}/health", g.base())).send().await, Ok(r) if r.status() == 200)
}

#[tokio::test]
async fn clients_that_never_read_lose_their_connections_and_health_answers() {
    let g = Gateway::start(
        GatewayOpts::standard()
            .with("PEAT_GATEWAY_MAX_CONNECTIONS", "4")
            .with("PEAT_GATEWAY_HEADER_TIMEOUT_SECS", "2"),
    )
    .await;
    let mut hogs = Vec::new();
    for _ in 0..4 {
        hogs.push(hog(&g, "127.0.0.2").await);
    }
    // Every slot is taken by a client that does not read; a stalled write ends it.
    let started = Instant::now();
    let mut answered = false;
    while !answered && started.elapsed() < Duration::from_secs(20) {
        answered = health_answers(&g, Duration::from_secs(5)).await;
    }
    assert!(
        answered,
        "/health never answered while non-reading clients held every connection"
    );
    drop(hogs);
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let g = Gateway::start(
        GatewayOpts::standard()
            .with("PEAT_GATEWAY_MAX_CONNECTIONS", "8")
            .with("PEAT_GATEWAY_MAX_CONNECTIONS_PER_SOURCE", "3")
            .with("PEAT_GATEWAY_HEADER_TIMEOUT_SECS", "60"),
    )
    .await;
    let mut hogs = Vec::new();
    for _ in 0..6 {
        hogs.push(hog(&g, "127.0.0.3").await);
    }
    // Three of the six were refused at once; the rest of the budget serves everyone else
    // (the harness's own pooled connection from 127.0.0.1 counts against that address).
    for _ in 0..3 {
        assert!(
            health_answers(&g, Duration::from_secs(5)).await,
            "another address is served"
        );
    }
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = g.base().trim_start_matches("http://").parse().unwrap();
    let mut c = s.connect(addr).await.unwrap();
    let mut buf = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_string(&mut c, &mut buf),
    )
    .await;
    assert!(buf.starts_with("HTTP/1.1 503"), "{buf}");
    assert!(buf.contains("too_many_connections"), "{buf}");
    drop(hogs);
}

#[tokio::test]
async fn live_streams_have_their_own_budget_per_caller() {
    let g = Gateway::start(
        GatewayOpts::standard()
            .with("PEAT_GATEWAY_MAX_CONNECTIONS", "2")
            .with("PEAT_GATEWAY_STREAMS_PER_CALLER", "2"),
    )
    .await;
    g.create_org("acme", "Acme").await;
    let open = || async {
        reqwest::Client::new()
            .get(format!("{}/orgs/acme/events/stream", g.base()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    };
    let a = open().await;
    let b = open().await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    // Both streams gave their connection slots back: ordinary requests are served.
    for _ in 0..3 {
        assert!(health_answers(&g, Duration::from_secs(5)).await);
    }
    let c = open().await;
    assert_eq!(c.status(), 429);
    let v: serde_json::Value = c.json().await.unwrap();
    assert_eq!(crate::error_code(&v), "too_many_streams");
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = g.admin(Method::GET, "/orgs/acme", None).await;
    assert_eq!(s, 200);
    drop(b);
}
