//! Real third-party servers (nats-server, mosquitto, …) on an ephemeral loopback port, with
//! their state in a temp dir, killed and restarted by the test that owns them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Service {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The full path of a server binary, so a venv or another PATH entry never shadows it.
fn find(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed; run scripts/setup (it installs the test servers)");
}

impl Service {
    /// Starts `program` with `args`, where `{port}` and `{dir}` are substituted, and waits
    /// until the port accepts connections.
    pub async fn start(name: &'static str, program: &str, args: &[&str]) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let args = args
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir.path().display().to_string())
            })
            .collect();
        let mut s = Service {
            name,
            program: find(program),
            args,
            port,
            dir,
            child: None,
        };
        s.spawn().await;
        s
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", self.name)))
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {}",
                self.name,
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no goodbye to clients, nothing flushed beyond what the server already synced.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and state directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nats-server with JetStream, state under the service's dir.
pub async fn nats() -> Service {
    Service::start(
        "nats",
        "nats-server",
        &["-js", "-a", "127.0.0.1", "-p", "{port}", "-sd", "{dir}/js"],
    )
    .await
}
