//! Sources: capture from a co-located peat-node sidecar (reference: peat-wire §2.9).
//!
//! One capture loop per bound formation: `GetStatus`, open `Subscribe` for the configured
//! collections, reconcile (`ListDocuments` + `GetDocument`) right after the stream is open and
//! periodically, then turn each frame into a change. The node sends current state, duplicates
//! and no-ops; the outbox's content hashes absorb them. An UPSERT without data or a DELETE is
//! only "maybe deleted": the state read back with `GetDocument` decides. Documents that vanish
//! without a word (lag, remote deletes on old nodes) are found by reconciliation.

mod capture;
pub mod client;
pub mod simulator;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use self::capture::{Capture, Settling};
use self::client::SidecarClient;
use super::Outbox;
use crate::tenant::{SourceDef, Tenancy};

pub use health::{Reconciliation, Refusal, SourceHealth};

mod health;

struct Running {
    def: SourceDef,
    client: SidecarClient,
    health: Arc<Mutex<SourceHealth>>,
    stop: watch::Sender<bool>,
    /// Wakes the loop to reconcile now (an operator asked).
    reconcile: Arc<tokio::sync::Notify>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Called with every capture append (the CDC counters count node changes too).
pub type AppendHook = Arc<dyn Fn(&super::AppendReport) + Send + Sync>;

/// Owns the capture loops. Cheap to clone.
#[derive(Clone)]
pub struct Sources {
    outbox: Outbox,
    tenancy: Tenancy,
    running: Arc<Mutex<HashMap<(String, String), Running>>>,
    on_append: Option<AppendHook>,
}

impl Sources {
    pub fn new(outbox: Outbox, tenancy: Tenancy) -> Self {
        Self {
            outbox,
            tenancy,
            running: Arc::default(),
            on_append: None,
        }
    }

    /// Reports every append a capture loop makes.
    pub fn with_append_hook(mut self, hook: AppendHook) -> Self {
        self.on_append = Some(hook);
        self
    }

    /// Starts loops for new bindings, restarts changed ones, stops removed ones.
    pub async fn sync(&self) -> Result<(), super::CdcError> {
        let defs = self.tenancy.all_sources().await?;
        // Secrets are opened only for loops about to start.
        let starting: Vec<&SourceDef> = {
            let running = lock(&self.running);
            defs.iter()
                .filter(|d| {
                    running
                        .get(&(d.org_id.clone(), d.app_id.clone()))
                        .is_none_or(|r| r.def != **d)
                })
                .collect()
        };
        let mut secrets = HashMap::new();
        for d in starting {
            match self.tenancy.source_secrets(d).await {
                Ok(s) => {
                    secrets.insert((d.org_id.clone(), d.app_id.clone()), s);
                }
                Err(e) => {
                    tracing::error!(org = %d.org_id, app = %d.app_id, error = %e, "source secrets unavailable")
                }
            }
        }
        let mut running = lock(&self.running);
        // A rebound formation keeps its counts: the link is new, its history is not.
        let mut kept_health = HashMap::new();
        running.retain(|k, r| {
            let keep = defs
                .iter()
                .any(|d| (&d.org_id, &d.app_id) == (&k.0, &k.1) && *d == r.def);
            if !keep {
                let _ = r.stop.send(true);
                kept_health.insert(k.clone(), r.health.clone());
            }
            keep
        });
        for d in defs {
            let key = (d.org_id.clone(), d.app_id.clone());
            if running.contains_key(&key) {
                continue;
            }
            if !d.granted {
                tracing::warn!(org = %d.org_id, app = %d.app_id,
                    "the source's sidecar endpoint is not granted to its org; not capturing (PUT /orgs/{{org}}/source-grants)");
                continue;
            }
            let sec = secrets.remove(&key).unwrap_or_default();
            let tls = client::TlsSettings {
                ca_pem: d.tls_ca_pem.clone(),
                client_cert_pem: d.client_cert_pem.clone(),
                client_key_pem: sec.client_key_pem,
            };
            let client = match SidecarClient::new(&d.endpoint, sec.token, tls) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(org = %d.org_id, app = %d.app_id, error = %e, "cannot build the sidecar client");
                    continue;
                }
            };
            let health = kept_health.remove(&key).map_or_else(
                || Arc::new(Mutex::new(SourceHealth::default())),
                |h| {
                    let fresh = Arc::new(Mutex::new(lock(&h).clone()));
                    lock(&fresh).connected = false;
                    fresh
                },
            );
            let (stop, stop_rx) = watch::channel(false);
            let reconcile = Arc::new(tokio::sync::Notify::new());
            let capture = Capture {
                reconcile: reconcile.clone(),
                outbox: self.outbox.clone(),
                tenancy: self.tenancy.clone(),
                on_append: self.on_append.clone(),
                def: d.clone(),
                client: client.clone(),
                health: health.clone(),
                stop: stop_rx,
                settling: Settling::default(),
            };
            tokio::spawn(capture.run());
            running.insert(
                key,
                Running {
                    def: d,
                    client,
                    health,
                    stop,
                    reconcile,
                },
            );
        }
        Ok(())
    }

    /// The client of the formation's bound sidecar, to write documents to its node.
    pub fn client(&self, org: &str, app: &str) -> Option<SidecarClient> {
        lock(&self.running)
            .get(&(org.to_owned(), app.to_owned()))
            .map(|r| r.client.clone())
    }

    /// Asks the formation's capture loop to reconcile with its node now; `false` when the
    /// link is not up (it reconciles on connecting anyway).
    pub fn reconcile_now(&self, org: &str, app: &str) -> bool {
        let running = lock(&self.running);
        match running.get(&(org.to_owned(), app.to_owned())) {
            Some(r) if lock(&r.health).connected => {
                r.reconcile.notify_one();
                true
            }
            _ => false,
        }
    }

    pub fn health(&self, org: &str, app: &str) -> Option<SourceHealth> {
        lock(&self.running)
            .get(&(org.to_owned(), app.to_owned()))
            .map(|r| lock(&r.health).clone())
    }

    /// Every loop's binding and health, for metrics.
    pub fn all_health(&self) -> Vec<(SourceDef, SourceHealth)> {
        lock(&self.running)
            .values()
            .map(|r| (r.def.clone(), lock(&r.health).clone()))
            .collect()
    }

    pub fn shutdown(&self) {
        for (_, r) in lock(&self.running).drain() {
            let _ = r.stop.send(true);
        }
    }
}
