//! The dispatcher: one delivery loop per sink, each from its own cursor.
//!
//! A loop reads a batch after its cursor, keeps what the sink's filter wants, delivers, and
//! only then moves its cursor. Transient errors retry the same batch (same event ids) with
//! jittered backoff capped at 5 s; a permanent refusal stalls the sink with the reason until
//! an operator retries or skips (a skipped event is parked as a dead letter).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::sink::{self, Delivery, Sink, SinkContext, SinkError};
use super::{CdcError, Outbox};
use crate::tenant::{now_ms, SinkDef, SinkStart, Tenancy};

mod rate;
mod sink_loop;

pub use rate::DeliveryRate;

use sink_loop::Loop;

const BATCH_EVENTS: usize = 1024;
/// How far the stored cursor may trail deliveries while a backlog drains.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
const BATCH_BYTES: usize = 1024 * 1024;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How often a loop backing off asks whether its sink's link is back.
const LINK_POLL: Duration = Duration::from_millis(20);
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Housekeeping rounds between compaction checks.
const COMPACT_EVERY: u64 = 10;
/// Housekeeping rounds between re-reading sink definitions; API changes resync at once, so
/// this only catches what changed behind the API's back.
const RESYNC_EVERY: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkState {
    Starting,
    /// Caught up, waiting for events.
    Idle,
    Delivering,
    /// Retrying after link or broker errors.
    Disconnected,
    /// A permanent refusal waits for an operator: retry or skip.
    Stalled,
    /// Disabled by an operator; the cursor holds, events are retained.
    Paused,
    /// The sink could not be built (for example a type this binary lacks).
    Failed,
}

impl SinkState {
    pub fn name(self) -> &'static str {
        match self {
            SinkState::Starting => "starting",
            SinkState::Idle => "idle",
            SinkState::Delivering => "delivering",
            SinkState::Disconnected => "disconnected",
            SinkState::Stalled => "stalled",
            SinkState::Paused => "paused",
            SinkState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SinkStatus {
    pub state: SinkState,
    pub target: String,
    pub cursor: u64,
    /// How many of the org's events lie at or below the cursor (the backlog's base).
    pub cursor_seq: u64,
    pub last_error: Option<String>,
    /// LSN of the event a stalled sink is stuck on.
    pub stalled_lsn: Option<u64>,
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub last_delivery_ms: Option<u64>,
    /// Delivered events over wall time (see [`DeliveryRate`]).
    pub rate: DeliveryRate,
    /// Whether `cursor` and `cursor_seq` hold the stored cursor yet (a starting loop reads it).
    pub cursor_loaded: bool,
}

impl SinkStatus {
    fn new(target: String) -> Self {
        Self {
            state: SinkState::Starting,
            target,
            cursor: 0,
            cursor_seq: 0,
            last_error: None,
            stalled_lsn: None,
            delivered: 0,
            delivered_bytes: 0,
            retried: 0,
            dead_lettered: 0,
            last_delivery_ms: None,
            rate: DeliveryRate::default(),
            cursor_loaded: false,
        }
    }
}

/// What an operator asks of a stalled sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Retry,
    Skip,
}

struct Running {
    def: SinkDef,
    status: Arc<Mutex<SinkStatus>>,
    stop: watch::Sender<bool>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    outbox: Outbox,
    tenancy: Tenancy,
    ctx: SinkContext,
    running: Mutex<HashMap<[u8; 16], Running>>,
    /// Org ids by uid, as of the last sync (for per-org figures).
    orgs: Mutex<HashMap<[u8; 16], String>>,
}

/// Owns the sink loops. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking loop must not take the status page with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Dispatcher {
    pub fn new(outbox: Outbox, tenancy: Tenancy, ctx: SinkContext) -> Self {
        Self {
            inner: Arc::new(Inner {
                outbox,
                tenancy,
                ctx,
                running: Mutex::new(HashMap::new()),
                orgs: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Brokers for Kafka sinks that name none.
    pub fn default_kafka_brokers(&self) -> Option<&str> {
        self.inner.ctx.default_kafka_brokers.as_deref()
    }

    /// Starts loops for new sinks, restarts changed ones, stops removed ones; shares the
    /// outbox among the orgs and drops the events of deleted orgs.
    pub async fn sync(&self) -> Result<(), CdcError> {
        let orgs = self.inner.tenancy.org_uids().await?;
        let outbox = &self.inner.outbox;
        outbox.set_org_count(orgs.len() as u64);
        let live: std::collections::HashSet<[u8; 16]> = orgs.values().copied().collect();
        *lock(&self.inner.orgs) = orgs.iter().map(|(k, v)| (*v, k.clone())).collect();
        for uid in outbox.known_orgs() {
            if !live.contains(&uid) {
                let n = outbox.forget_org(uid).await?;
                tracing::info!(events = n, "dropped the outbox events of a deleted org");
            }
        }
        let defs = self.inner.tenancy.all_sinks().await?;
        // Secrets are opened only for loops about to start, not on every sync.
        let starting: Vec<&SinkDef> = {
            let running = lock(&self.inner.running);
            defs.iter()
                .filter(|d| running.get(&d.sink_uid).is_none_or(|r| r.def != **d))
                .collect()
        };
        let mut secrets = HashMap::new();
        for d in starting {
            match self.inner.tenancy.sink_secret(d).await {
                Ok(Some(k)) => {
                    secrets.insert(d.sink_uid, k);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(sink = %d.sink_id, error = %e, "sink secret unavailable"),
            }
        }
        let mut gone = Vec::new();
        {
            let mut running = lock(&self.inner.running);
            let wanted: HashMap<[u8; 16], &SinkDef> =
                defs.iter().map(|d| (d.sink_uid, d)).collect();
            running.retain(|uid, r| {
                let keep = wanted.get(uid).is_some_and(|d| **d == r.def);
                if !keep {
                    let _ = r.stop.send(true);
                    if !wanted.contains_key(uid) {
                        gone.push(*uid);
                    }
                }
                keep
            });
            for d in &defs {
                running
                    .entry(d.sink_uid)
                    .or_insert_with(|| self.start(d.clone(), secrets.remove(&d.sink_uid)));
            }
        }
        for uid in gone {
            self.inner.outbox.forget_sink(uid).await?;
        }
        Ok(())
    }

    fn start(&self, def: SinkDef, secret: Option<crate::tenant::SinkSecrets>) -> Running {
        let built = sink::build(&def, &self.inner.ctx, secret);
        let target = built
            .as_ref()
            .map_or_else(|_| "-".to_owned(), |s| s.target());
        let status = Arc::new(Mutex::new(SinkStatus::new(target)));
        let (stop, stop_rx) = watch::channel(false);
        let (commands, cmd_rx) = mpsc::channel(4);
        let l = Loop {
            outbox: self.inner.outbox.clone(),
            def: def.clone(),
            status: status.clone(),
            stop: stop_rx,
            commands: cmd_rx,
            seqs: Vec::new(),
        };
        let task = tokio::spawn(async move {
            match built {
                Ok(sink) => l.run(sink).await,
                Err(reason) => {
                    tracing::error!(sink = %l.def.sink_id, org = %l.def.org_id, %reason, "sink cannot start");
                    let mut s = lock(&l.status);
                    s.state = SinkState::Failed;
                    s.last_error = Some(reason);
                }
            }
        });
        Running {
            def,
            status,
            stop,
            commands,
            task,
        }
    }

    pub fn status(&self, sink_uid: &[u8; 16]) -> Option<SinkStatus> {
        lock(&self.inner.running)
            .get(sink_uid)
            .map(|r| lock(&r.status).clone())
    }

    /// Every org's uid and id, as of the last sync.
    pub fn org_names(&self) -> Vec<([u8; 16], String)> {
        lock(&self.inner.orgs)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Events of the sink's org after its cursor.
    /// The sink's backlog; `None` while its loop has not read its cursor yet.
    pub fn backlog(&self, def: &SinkDef, st: &SinkStatus) -> Option<u64> {
        st.cursor_loaded.then(|| {
            self.inner
                .outbox
                .org_fill(&def.org_uid)
                .seq
                .saturating_sub(st.cursor_seq)
        })
    }

    /// Every running sink's definition and status, for metrics.
    pub fn all_status(&self) -> Vec<(SinkDef, SinkStatus)> {
        lock(&self.inner.running)
            .values()
            .map(|r| (r.def.clone(), lock(&r.status).clone()))
            .collect()
    }

    /// Asks a stalled sink to retry or skip; `false` when the sink is not stalled.
    pub fn command(&self, sink_uid: &[u8; 16], cmd: Command) -> bool {
        let running = lock(&self.inner.running);
        let Some(r) = running.get(sink_uid) else {
            return false;
        };
        if lock(&r.status).state != SinkState::Stalled {
            return false;
        }
        r.commands.try_send(cmd).is_ok()
    }

    /// Drops the outbox state of deleted formations and stops the sinks of deleted orgs.
    /// The tenancy deletion already stands; a failure here only leaves unreachable records.
    pub async fn forget_formations(&self, uids: Vec<[u8; 16]>) {
        for uid in uids {
            if let Err(e) = self.inner.outbox.forget_formation(uid).await {
                tracing::warn!(error = %e, "could not drop a deleted formation's document hashes");
            }
        }
        if let Err(e) = self.sync().await {
            tracing::warn!(error = %e, "sink sync failed");
        }
    }

    /// Builds a separate instance of the sink, with its sealed credentials.
    async fn instance(&self, def: &SinkDef) -> Result<Box<dyn Sink>, String> {
        let secrets = self
            .inner
            .tenancy
            .sink_secret(def)
            .await
            .map_err(|e| format!("sink credentials: {e}"))?;
        sink::build(def, &self.inner.ctx, secrets)
    }

    /// Delivers one synthetic event (type `io.peat.gateway.test`) straight to the sink,
    /// outside the outbox; the answer says whether the receiver took it.
    pub async fn test_sink(&self, def: &SinkDef) -> Result<String, String> {
        let mut sink = self.instance(def).await?;
        let gw = self.inner.outbox.gateway_id().to_owned();
        let now = now_ms();
        let id = format!("{gw}:test-{now}");
        let event = crate::store::EventRecord {
            org_id: def.org_id.clone(),
            org_uid: def.org_uid,
            app_id: "_test".into(),
            collection: "_test".into(),
            doc_id: format!("test-{now}"),
            op: 1,
            data: Some(br#"{"test":true}"#.to_vec()),
            encrypted: false,
            content_hash: [0; 32],
            observed_ms: now,
        };
        let d = Delivery::test(&gw, event, &id, def.content_mode);
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            sink.deliver(std::slice::from_ref(&d)),
        )
        .await;
        match r {
            Ok(Ok(())) => Ok(id),
            Ok(Err(SinkError::Transient(e) | SinkError::Busy { reason: e, .. })) => Err(e),
            Ok(Err(SinkError::Rejected { reason, .. })) => Err(reason),
            Err(_) => Err("no answer within 15 s".into()),
        }
    }

    /// Delivers the sink's dead letters again, oldest first, through a separate instance;
    /// each delivered one leaves the dead-letter table. Returns (delivered, still parked).
    pub async fn replay_dead_letters(&self, def: &SinkDef) -> Result<(u64, u64), String> {
        let mut sink = self.instance(def).await?;
        let parked = self
            .inner
            .outbox
            .dead_letters(def.sink_uid, usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let total = parked.len() as u64;
        let gw = self.inner.outbox.gateway_id().to_owned();
        let mut delivered = Vec::new();
        for (lsn, dl) in parked {
            // Parked by this sink's own loop; checked again so nothing crosses orgs.
            if dl.event.org_uid != def.org_uid {
                continue;
            }
            let d = Delivery::new(&gw, lsn, dl.event.clone(), def.content_mode);
            match sink.deliver(std::slice::from_ref(&d)).await {
                Ok(()) => delivered.push(lsn),
                Err(_) => break,
            }
        }
        let n = delivered.len() as u64;
        self.inner
            .outbox
            .remove_dead_letters(def.sink_uid, delivered)
            .await
            .map_err(|e| e.to_string())?;
        Ok((n, total - n))
    }

    /// Drops the sink's dead letters for good.
    pub async fn discard_dead_letters(&self, def: &SinkDef) -> Result<u64, CdcError> {
        let lsns: Vec<u64> = self
            .inner
            .outbox
            .dead_letters(def.sink_uid, usize::MAX)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        let n = lsns.len() as u64;
        self.inner
            .outbox
            .remove_dead_letters(def.sink_uid, lsns)
            .await?;
        Ok(n)
    }

    /// Periodic work: pick up sink changes and trim what every sink has acknowledged.
    pub async fn housekeeping(self, mut shutdown: watch::Receiver<bool>) {
        let mut rounds: u64 = 0;
        let mut trimmed_since_check = false;
        loop {
            rounds += 1;
            if rounds % RESYNC_EVERY == 0 {
                if let Err(e) = self.sync().await {
                    tracing::warn!(error = %e, "sink sync failed");
                }
            }
            let mut by_org: HashMap<[u8; 16], Vec<[u8; 16]>> = HashMap::new();
            for r in lock(&self.inner.running).values() {
                by_org
                    .entry(r.def.org_uid)
                    .or_default()
                    .push(r.def.sink_uid);
            }
            match self.inner.outbox.trim(by_org.into_iter().collect()).await {
                Ok(0) => {}
                Ok(n) => {
                    trimmed_since_check = true;
                    tracing::debug!(events = n, "outbox trimmed");
                }
                Err(e) => tracing::warn!(error = %e, "outbox trim failed"),
            }
            if rounds % COMPACT_EVERY == 0 {
                let draining = std::mem::take(&mut trimmed_since_check);
                if let Err(e) = self.inner.outbox.maybe_compact(draining).await {
                    tracing::warn!(error = %e, "outbox compaction failed; will retry");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(HOUSEKEEPING) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Stops every loop; cursors already committed stay.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = lock(&self.inner.running)
            .drain()
            .map(|(_, r)| {
                let _ = r.stop.send(true);
                r.task
            })
            .collect();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}
