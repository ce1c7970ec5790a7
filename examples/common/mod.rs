//! What the benchmarks share: free ports, child processes killed on drop, the gateway started
//! on loopback with a local KEK, percentiles. Benchmarks print figures; they assert nothing.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN: &str = "bench-admin-token-0123456789abcdef";
pub const KEK: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn wait_port(port: u16) {
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

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A release gateway on a fresh data directory; both are removed on drop.
pub struct Gateway {
    _child: Killed,
    pub dir: PathBuf,
    pub base: String,
    pub port: u16,
    pub pid: u32,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn gateway_bin() -> String {
    std::env::var("PEAT_GATEWAY_BIN").unwrap_or_else(|_| "target/release/peat-gateway".into())
}

/// Starts the gateway with `env` on top of the benchmark defaults.
pub async fn start_gateway(name: &str, env: &[(&str, &str)]) -> Gateway {
    let dir = std::env::temp_dir().join(format!("peat-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let bin = gateway_bin();
    let mut cmd = Command::new(&bin);
    cmd.env("PEAT_KEK", KEK)
        .env("PEAT_ADMIN_TOKEN", ADMIN)
        .env("PEAT_GATEWAY_DATA_DIR", &dir)
        .env("PEAT_GATEWAY_BIND", format!("127.0.0.1:{port}"))
        .env("PEAT_LOG", "warn")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {bin}: {e} (build with cargo build --release, or set PEAT_GATEWAY_BIN)"
        )
    });
    let pid = child.id();
    let g = Gateway {
        _child: Killed(child),
        dir,
        base: format!("http://127.0.0.1:{port}"),
        port,
        pid,
    };
    wait_port(port).await;
    g
}

/// Admin calls that must succeed while setting a benchmark up.
pub async fn setup(
    http: &reqwest::Client,
    g: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = http
        .request(method, format!("{}{path}", g.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("setting up {path}: {e}"));
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    assert!(status.is_success(), "setting up {path}: {status} {v}");
    v
}

/// Org `bench` with formation `mesh`, whose every event may be a document of its own.
pub async fn bench_org(http: &reqwest::Client, g: &Gateway) {
    use reqwest::Method;
    use serde_json::json;
    for (method, path, body) in [
        (
            Method::POST,
            "/orgs",
            json!({"org_id": "bench", "display_name": "Bench"}),
        ),
        (
            Method::POST,
            "/orgs/bench/formations",
            json!({"app_id": "mesh"}),
        ),
        (
            Method::PATCH,
            "/orgs/bench",
            json!({"quotas": {"max_documents_per_formation": 1_000_000u64}}),
        ),
    ] {
        setup(http, g, method, path, body).await;
    }
}

/// The numeric command-line arguments, in order.
pub fn numeric_args() -> Vec<usize> {
    std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// CPU time (user + system) a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime), counted from the state field at index 0 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// The nats-server to compare with: `$NATS_SERVER`, else the one `scripts/setup` puts in the
/// project's venv (2.15, which has `sync_interval`), else Debian's on the PATH.
pub fn nats_server_bin() -> String {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return p;
    }
    let venv = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("peat-gateway/venv/bin/nats-server"));
    match venv {
        Ok(p) if p.exists() => p.display().to_string(),
        _ => "nats-server".into(),
    }
}

pub fn nats_version(bin: &str) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// A nats-server from a config file written into `dir`.
pub fn nats_with_config(bin: &str, dir: &std::path::Path, name: &str, conf: &str) -> Killed {
    with_config(bin, dir, name, conf)
}

/// `program -c <dir>/<name>.conf`, the file written with `conf` first.
fn with_config(program: &str, dir: &std::path::Path, name: &str, conf: &str) -> Killed {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{name}.conf"));
    if let Err(e) = std::fs::write(&path, conf) {
        panic!("writing {}: {e}", path.display());
    }
    let child = Command::new(program)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e} (scripts/setup installs it)"));
    Killed(child)
}

pub async fn send_ok(r: reqwest::RequestBuilder, what: &str) {
    match r.send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => panic!("{what} answered {}", r.status()),
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// The peak memory of a process (PSS and RSS in KiB from `/proc/<pid>/smaps_rollup`), sampled
/// every 50 ms on a thread of its own until [`MemWatch::peak`].
pub struct MemWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl MemWatch {
    pub fn start(pid: u32) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = (0, 0);
            while !s.load(Ordering::Relaxed) {
                let (pss, rss) = memory_kib(pid);
                peak = (peak.0.max(pss), peak.1.max(rss));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        Self { stop, handle }
    }

    /// (peak PSS, peak RSS) in KiB.
    pub fn peak(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

/// (PSS, RSS) of a process in KiB; zeros once it is gone.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Appends one figure as a JSON line to `$BENCH_RESULTS` (how `scripts/bench` collects the
/// figures it writes into BENCHMARKS.md); nothing when unset.
pub fn record(v: serde_json::Value) {
    use std::io::Write;
    let Ok(path) = std::env::var("BENCH_RESULTS") else {
        return;
    };
    let line = format!("{v}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot record a figure in {path}: {e}");
    }
}

/// Bytes a process has caused to be written to storage so far (`/proc/<pid>/io`).
pub fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A mosquitto broker from a config file written into `dir` (listener and persistence
/// location are the caller's).
pub fn mosquitto_with_config(dir: &std::path::Path, name: &str, conf: &str) -> Killed {
    with_config("mosquitto", dir, name, conf)
}

pub fn mosquitto_version() -> String {
    Command::new("mosquitto")
        .arg("-h")
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("mosquitto").trim().to_owned()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// Every client's latencies, once all have finished.
pub async fn gather(tasks: Vec<tokio::task::JoinHandle<Vec<f64>>>) -> Vec<f64> {
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    lat
}
