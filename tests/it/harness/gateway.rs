//! The gateway binary under test: started with a given environment, stopped by signal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;

use super::{free_port, ADMIN, KEK_A};

pub const BIN: &str = env!("CARGO_BIN_EXE_peat-gateway");

#[derive(Clone)]
pub struct GatewayOpts {
    pub env: Vec<(String, String)>,
    /// The CA the harness trusts when the gateway serves TLS (then it speaks https).
    pub tls_ca: Option<String>,
    /// The client certificate (PEM, key PEM) the harness's own client presents.
    pub tls_identity: Option<(String, String)>,
}

impl GatewayOpts {
    /// Local KEK A and a configured admin token.
    pub fn standard() -> Self {
        Self {
            env: vec![
                ("PEAT_KEK".into(), KEK_A.into()),
                ("PEAT_ADMIN_TOKEN".into(), ADMIN.into()),
                // The suite's brokers, receivers and providers all run on loopback.
                ("PEAT_EGRESS_ALLOW".into(), "127.0.0.0/8,::1".into()),
            ],
            tls_ca: None,
            tls_identity: None,
        }
    }

    /// The harness's own client presents this certificate (for required client certificates).
    pub fn tls_identity(mut self, leaf: (String, String)) -> Self {
        self.tls_identity = Some(leaf);
        self
    }

    /// Serve TLS with these files; the harness trusts `ca_pem`.
    pub fn tls(self, cert_path: &str, key_path: &str, ca_pem: &str) -> Self {
        let mut o = self
            .with("PEAT_GATEWAY_TLS_CERT", cert_path)
            .with("PEAT_GATEWAY_TLS_KEY", key_path);
        o.tls_ca = Some(ca_pem.to_owned());
        o
    }

    pub fn with(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn without(mut self, k: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self
    }
}

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub opts: GatewayOpts,
    child: Option<Child>,
    runs: u32,
    client: Client,
}

impl Gateway {
    /// Starts a gateway and waits for `/health`; panics with its stderr if it does not come up.
    pub async fn start(opts: GatewayOpts) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut g = Gateway {
            dir,
            port: free_port(),
            opts,
            child: None,
            runs: 0,
            client: Client::new(),
        };
        g.client = g.client_with(g.opts.tls_identity.as_ref());
        g.spawn_and_wait().await;
        g
    }

    /// The running gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn base(&self) -> String {
        let scheme = if self.opts.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// An HTTP client for this gateway, presenting `identity` (cert PEM + key PEM) over TLS.
    pub fn client_with(&self, identity: Option<&(String, String)>) -> Client {
        // Redirects are answers the tests look at, not hops to follow.
        let mut b = Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.opts.tls_ca {
            b = b
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
                .tls_built_in_root_certs(false);
        }
        if let Some((cert, key)) = identity {
            b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
        }
        b.build().expect("http client")
    }

    fn log_path(&self, run: u32, stream: &str) -> PathBuf {
        self.dir.path().join(format!("run{run}.{stream}"))
    }

    /// Everything the gateway printed on stdout in the given run (1-based).
    pub fn stdout(&self, run: u32) -> String {
        std::fs::read_to_string(self.log_path(run, "stdout")).unwrap_or_default()
    }

    /// How many times the gateway was started.
    #[cfg(feature = "tpm")]
    pub fn runs(&self) -> u32 {
        self.runs
    }

    pub fn stderr(&self, run: u32) -> String {
        std::fs::read_to_string(self.log_path(run, "stderr")).unwrap_or_default()
    }

    /// All output of every run so far.
    pub fn all_output(&self) -> String {
        (1..=self.runs)
            .map(|r| self.stdout(r) + &self.stderr(r))
            .collect()
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PEAT_GATEWAY_DATA_DIR", self.data_dir())
            .env("PEAT_GATEWAY_BIND", format!("127.0.0.1:{}", self.port))
            .env("PEAT_LOG", "info")
            .current_dir(self.dir.path());
        for (k, v) in &self.opts.env {
            c.env(k, v);
        }
        c
    }

    async fn spawn_and_wait(&mut self) {
        self.runs += 1;
        let out = std::fs::File::create(self.log_path(self.runs, "stdout")).expect("stdout file");
        let err = std::fs::File::create(self.log_path(self.runs, "stderr")).expect("stderr file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "gateway exited during start-up ({status}):\n{}",
                        self.stderr(self.runs)
                    );
                }
            }
            if let Ok(r) = self
                .client
                .get(format!("{}/health", self.base()))
                .send()
                .await
            {
                // 403 at accept: the allow-list leaves this test's address out, yet it serves.
                if r.status().is_success() || r.status() == 403 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not healthy in time:\n{}",
                self.stderr(self.runs)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait; returns the exit status's success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`HUP`, `TERM`, …) to the running gateway.
    pub fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let st = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(c.id().to_string())
                .status()
                .expect("kill");
            assert!(st.success());
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (SIGTERM) and starts again on the same port and data dir.
    pub async fn restart(&mut self) {
        assert!(
            self.stop(),
            "gateway did not stop cleanly:\n{}",
            self.stderr(self.runs)
        );
        self.spawn_and_wait().await;
    }

    pub async fn restart_with(&mut self, opts: GatewayOpts) {
        assert!(self.stop(), "gateway did not stop cleanly");
        self.opts = opts;
        self.client = self.client_with(self.opts.tls_identity.as_ref());
        self.spawn_and_wait().await;
    }

    /// A request with an optional bearer token.
    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let mut r = self
            .client
            .request(method, format!("{}{}", self.base(), path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends a JSON request and returns (status, body as JSON or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.req(method, path, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        split(resp).await
    }

    /// The Prometheus text of `/metrics` as anyone without a token sees it.
    pub async fn public_metrics(&self) -> String {
        self.req(Method::GET, "/metrics", None)
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text")
    }

    /// The Prometheus text of `/metrics`, with the admin's detail.
    pub async fn metrics(&self) -> String {
        self.req(Method::GET, "/metrics", Some(ADMIN))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    /// Panics when `needle` occurs in any file of the data dir.
    pub fn assert_data_dir_lacks(&self, needle: &[u8], what: &str) {
        for f in files_under(&self.data_dir()) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{what} in {}",
                f.display()
            );
        }
    }

    /// Creates an org as the admin; panics unless it was created.
    pub async fn create_org(&self, org: &str, name: &str) {
        let body = serde_json::json!({"org_id": org, "display_name": name});
        let (s, b) = self.admin(Method::POST, "/orgs", Some(body)).await;
        assert_eq!(s, 201, "creating org {org}: {b}");
    }

    /// A fresh org API token with `role`, named after the role.
    pub async fn org_token(&self, org: &str, role: &str) -> String {
        let body = serde_json::json!({"name": role, "role": role});
        let (s, t) = self
            .admin(Method::POST, &format!("/orgs/{org}/api-tokens"), Some(body))
            .await;
        assert_eq!(s, 201, "creating a {role} token for {org}: {t}");
        t["token"].as_str().unwrap_or_default().to_owned()
    }

    /// Creates a formation (new genesis) as the admin; panics unless it was created.
    pub async fn create_formation(&self, org: &str, app: &str) -> Value {
        let body = serde_json::json!({"app_id": app});
        let (s, b) = self
            .admin(Method::POST, &format!("/orgs/{org}/formations"), Some(body))
            .await;
        assert_eq!(s, 201, "creating formation {org}/{app}: {b}");
        b
    }

    /// Upserts `docs` (id, data) into `org`'s formation `app` as the admin; asserts the 202
    /// and returns its body.
    pub async fn upsert(
        &self,
        org: &str,
        app: &str,
        collection: &str,
        docs: Vec<(String, Value)>,
    ) -> Value {
        let changes: Vec<Value> = docs
            .into_iter()
            .map(|(id, data)| serde_json::json!({"collection": collection, "doc_id": id, "op": "upsert", "data": data}))
            .collect();
        let (s, b) = self
            .admin(
                Method::POST,
                &format!("/orgs/{org}/formations/{app}/changes"),
                Some(Value::Array(changes)),
            )
            .await;
        assert_eq!(s, 202, "ingest into {org}/{app}: {b}");
        b
    }
}

pub async fn split(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let streaming = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        // An event stream never ends; its status is the answer.
        return (status, Value::String("event-stream".into()));
    }
    let text = resp.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        // Every test's gateway output is scanned: no secret may ever be logged.
        if !std::thread::panicking() {
            if let Some(leak) = secret_in(&self.all_output()) {
                panic!(
                    "the gateway logged a secret ({leak}):\n{}",
                    self.all_output()
                );
            }
        }
    }
}

/// Secrets the suite uses, and shapes of secrets the gateway issues, found in `text`.
/// Generated admin tokens (`pga_…`) are printed once on purpose and are not counted.
pub fn secret_in(text: &str) -> Option<&'static str> {
    const FIXED: &[(&str, &str)] = &[
        (super::KEK_A, "test KEK A"),
        (super::KEK_B, "test KEK B"),
        (super::ADMIN, "configured admin token"),
        ("PRIVATE KEY-----", "a PEM private key"),
        ("secret-gateway", "an IdP client secret"),
        ("correct horse battery", "a TPM auth value"),
        ("node-token-123", "a sidecar token"),
    ];
    if let Some((_, what)) = FIXED.iter().find(|(s, _)| text.contains(s)) {
        return Some(what);
    }
    // `pgt_<16 hex>_<secret>` and `peb_<16 hex>_<secret>`: an id alone may appear, a secret not.
    for prefix in ["pgt_", "peb_"] {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + 4..];
            let id_ok = rest.len() > 17 && rest[..16].bytes().all(|b| b.is_ascii_hexdigit());
            if id_ok
                && rest.as_bytes()[16] == b'_'
                && rest[17..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            {
                return Some(if prefix == "pgt_" {
                    "an API token"
                } else {
                    "a bootstrap token"
                });
            }
        }
    }
    None
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
