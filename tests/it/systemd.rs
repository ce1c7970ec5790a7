//! The gateway under systemd's `Type=notify` protocol, with the notify socket played by this
//! test: READY=1 with a status line once it serves, WATCHDOG=1 at half the watchdog period
//! (only for the process the watchdog names), STOPPING=1 on SIGTERM.

use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;

use crate::harness::{Gateway, GatewayOpts};

/// Every datagram the gateway sent until `until` says stop (or `secs` pass).
async fn collect(sock: &UnixDatagram, secs: u64, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !until(&got) {
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
        {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

fn count(msgs: &[String], line: &str) -> usize {
    msgs.iter().filter(|m| m.lines().any(|l| l == line)).count()
}

#[tokio::test]
async fn the_service_manager_hears_ready_status_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut g = Gateway::start(
        GatewayOpts::standard()
            .with("NOTIFY_SOCKET", path.to_str().unwrap())
            // 400 ms: a ping every 200 ms.
            .with("WATCHDOG_USEC", "400000"),
    )
    .await;
    let msgs = collect(&sock, 10, |m| count(m, "WATCHDOG=1") >= 5).await;
    let ready = msgs
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {msgs:?}"));
    assert!(
        msgs[ready].contains("STATUS=serving; backlog 0 events"),
        "READY carries the status: {msgs:?}"
    );
    let first_ping = msgs.iter().position(|m| m == "WATCHDOG=1\n");
    assert!(
        first_ping.is_some_and(|p| p > ready),
        "pings follow readiness: {msgs:?}"
    );
    assert!(count(&msgs, "WATCHDOG=1") >= 5, "{msgs:?}");

    assert!(g.stop(), "a clean exit on SIGTERM");
    let rest = collect(&sock, 5, |m| count(m, "STOPPING=1") > 0).await;
    assert_eq!(count(&rest, "STOPPING=1"), 1, "{rest:?}");
}

#[tokio::test]
async fn a_watchdog_meant_for_another_process_gets_no_pings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let _g = Gateway::start(
        GatewayOpts::standard()
            .with("NOTIFY_SOCKET", path.to_str().unwrap())
            .with("WATCHDOG_USEC", "400000")
            .with("WATCHDOG_PID", "1"),
    )
    .await;
    let msgs = collect(&sock, 3, |_| false).await;
    assert_eq!(count(&msgs, "READY=1"), 1, "{msgs:?}");
    assert_eq!(count(&msgs, "WATCHDOG=1"), 0, "{msgs:?}");
}
