//! Reloading the listener's TLS material without a restart: on SIGHUP and when the files
//! change. A failed reload keeps the material in use and says why.

use std::sync::Arc;

use peat_gateway::config::Config;
use peat_gateway::listen;

/// Where the listener's TLS material comes from, to read it again.
pub(crate) struct TlsFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_ca: Option<std::path::PathBuf>,
    require_client_cert: bool,
}

impl From<&Config> for TlsFiles {
    fn from(cfg: &Config) -> Self {
        let p = cfg.tls_paths.clone().unwrap_or_default();
        Self {
            cert: p.cert,
            key: p.key,
            client_ca: p.client_ca,
            require_client_cert: cfg.tls.as_ref().is_some_and(|t| t.require_client_cert),
        }
    }
}

impl TlsFiles {
    /// The new server settings and the certificate's end (Unix seconds).
    fn load(&self) -> Result<(std::sync::Arc<rustls::ServerConfig>, i64), String> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let cert_pem = read(&self.cert)?;
        let end = listen::cert_not_after(&cert_pem)
            .map_err(|e| format!("{} {e}", self.cert.display()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if end <= now {
            return Err(format!("{}: the certificate expired", self.cert.display()));
        }
        let m = listen::TlsMaterial {
            cert_pem,
            key_pem: zeroize::Zeroizing::new(read(&self.key)?),
            client_ca_pem: match &self.client_ca {
                Some(p) => Some(read(p)?),
                None => None,
            },
            require_client_cert: self.require_client_cert,
        };
        Ok((m.server_config()?, end))
    }

    /// What identifies each file's current content cheaply: modification time, inode and
    /// length, so both rewriting a file and renaming a new one into place count as a change.
    fn stamp(&self) -> Vec<Option<(std::time::SystemTime, u64, u64)>> {
        use std::os::unix::fs::MetadataExt as _;
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.ino(), m.len())))
            })
            .collect()
    }
}

/// Reloads the listener's certificate, key and client CA on SIGHUP and when the files change
/// (checked every 5 s). A failed reload keeps the material in use and says why.
pub(crate) async fn tls_reloads(
    state: listen::TlsState,
    files: TlsFiles,
    metrics: Arc<peat_gateway::metrics::Metrics>,
    activity: peat_gateway::api::Activity,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut seen = files.stamp();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        let why = tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => "SIGHUP",
            _ = tick.tick() => {
                let now = files.stamp();
                if now == seen { continue; }
                seen = now;
                "file change"
            }
            _ = stop.changed() => return,
        };
        match files.load() {
            Ok((cfg, not_after)) => {
                state.replace(cfg);
                activity.tls_loaded(Some(not_after));
                metrics.tls_reloads.inc();
                tracing::info!(trigger = why, "listener TLS material reloaded");
            }
            Err(e) => {
                activity.tls_reload_refused(e.clone());
                metrics.tls_reload_failures.inc();
                tracing::error!(trigger = why, error = %e, "TLS reload failed; the previous certificate stays in use");
            }
        }
    }
}
