//! The service manager's view of the gateway (systemd `Type=notify`): `READY=1` once the
//! listeners are bound and the key provider proven, a `STATUS=` line every few seconds
//! (backlog, sinks, node links), `WATCHDOG=1` only while the runtime turns and both stores'
//! writer threads answer, `STOPPING=1` on the way out. Without `NOTIFY_SOCKET` (not under
//! systemd) every call does nothing.

use std::time::Duration;

use peat_gateway::api::AppState;
use peat_gateway::cdc::SinkState;
use sd_notify::NotifyState;

const STATUS_EVERY: Duration = Duration::from_secs(10);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// One line for `systemctl status`: what an operator checks first.
fn status_line(s: &AppState) -> String {
    let sinks = s.cdc.all_status();
    let mut backlog = 0u64;
    let (mut delivering, mut idle, mut troubled) = (0, 0, 0);
    for (def, st) in &sinks {
        backlog += s.cdc.backlog(def, st).unwrap_or(0);
        match st.state {
            SinkState::Delivering => delivering += 1,
            SinkState::Idle | SinkState::Paused | SinkState::Starting => idle += 1,
            SinkState::Stalled | SinkState::Disconnected | SinkState::Failed => troubled += 1,
        }
    }
    let links = s.sources.all_health();
    let up = links.iter().filter(|(_, h)| h.connected).count();
    let mut line = format!(
        "serving; backlog {backlog} events; sinks {} ({delivering} delivering, {idle} idle, {troubled} need attention); node links {up}/{} up",
        sinks.len(),
        links.len()
    );
    for (what, problem) in [
        ("STATE STORE", s.tenancy.store().write_problem()),
        ("OUTBOX", s.cdc.outbox().write_problem()),
    ] {
        if let Some(p) = problem {
            line.push_str(&format!("; {what} REFUSES WRITES: {p}"));
        }
    }
    line
}

/// Tells the service manager the gateway serves.
pub(crate) fn ready(s: &AppState) {
    let status = status_line(s);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

pub(crate) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: flushing the stores"),
    ]);
}

/// Status lines and watchdog pings until `stop`.
pub(crate) async fn supervise(s: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let watchdog = sd_notify::watchdog_enabled();
    // Twice per period, as systemd advises; the health check must fit inside half of it.
    let ping_every = watchdog.map(|w| w / 2);
    let mut pings = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    let mut status = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = pings.tick(), if ping_every.is_some() => {
                let within = ping_every.unwrap_or(Duration::from_secs(1)) / 2;
                let healthy = s.tenancy.store().writer_healthy(within).await
                    && s.cdc.outbox().writer_healthy(within).await;
                if healthy {
                    send(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!("a store writer is stuck; withholding the watchdog ping so the service manager restarts the gateway");
                }
            }
            _ = status.tick() => {
                let line = status_line(&s);
                send(&[NotifyState::Status(&line)]);
            }
            _ = stop.changed() => return,
        }
    }
}
