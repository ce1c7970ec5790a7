//! One formation's capture loop: connect, subscribe, reconcile, turn frames into changes,
//! settle bursts whose frames disagree, watch the link (reference: peat-wire §2.9, §2.11).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::client::{ChangeStream, SidecarClient, SourceError};
use super::wire::{ChangeType, DocumentChange};
use super::{lock, AppendHook, Reconciliation, SourceHealth};
use crate::cdc::{CdcError, Change, DocState, FormationRef, Outbox};
use crate::tenant::{now_ms, SourceDef, Tenancy};

const EMPTY_ID: &str = "empty document id";
const NOT_JSON: &str = "not JSON";

/// Why the outbox refuses a change, as a short reason for counts and lists.
fn refusal_reason(e: &CdcError) -> &'static str {
    match e {
        CdcError::Invalid {
            field: "collection",
            ..
        } => "invalid collection name",
        CdcError::Invalid {
            field: "doc_id", ..
        } => "invalid document id",
        CdcError::Invalid { field: "data", .. } => "not a JSON object",
        CdcError::DocumentQuota { .. } => "quota max_documents_per_formation",
        _ => "refused by the outbox",
    }
}

/// How often an open link is proven (a stopped node answers nothing, streams included).
const LIVENESS: Duration = Duration::from_secs(2);
/// How long a liveness probe may take.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
const APPEND_CHUNK: usize = 256;
/// A burst is settled once the stream has been quiet this long…
const SETTLE_QUIET: Duration = Duration::from_millis(250);
/// …or this long after its first frame, whichever comes first (a busy stream is never quiet).
const SETTLE_MAX: Duration = Duration::from_secs(1);

pub(super) struct Capture {
    pub(super) outbox: Outbox,
    pub(super) tenancy: Tenancy,
    pub(super) on_append: Option<AppendHook>,
    pub(super) def: SourceDef,
    pub(super) client: SidecarClient,
    pub(super) health: Arc<Mutex<SourceHealth>>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) reconcile: Arc<tokio::sync::Notify>,
    pub(super) settling: Settling,
}

/// What the capture remembers between a burst and its settling.
#[derive(Default)]
pub(super) struct Settling {
    /// Documents taken from frames since the last settling, and when the first came.
    unsettled: HashMap<(String, String), Seen>,
    unsettled_since: Option<tokio::time::Instant>,
    /// Documents a reconciliation changed since the last settling: a frame of theirs may be
    /// older than what the reconciliation read.
    reconciled: HashSet<(String, String)>,
    reconciling: bool,
}

/// What the frames since the last settling said of a document.
enum Seen {
    /// One state, however many frames carried it: nothing to doubt.
    One(DocState),
    /// Different states, or a frame after a reconciliation changed it: the order is unknown.
    Doubt,
}

/// Probes the node every [`LIVENESS`]; ends with the reason after two probes in a row failed
/// (a stopped node keeps its sockets open and says nothing).
async fn watch_liveness(client: SidecarClient) -> SourceError {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + LIVENESS, LIVENESS);
    let mut failures = 0;
    loop {
        tick.tick().await;
        let failure = match tokio::time::timeout(LIVENESS_TIMEOUT, client.status()).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(SourceError::Unreachable {
                endpoint: client.endpoint().to_owned(),
                reason: format!(
                    "the node stopped answering (no answer to two status probes in {} s each)",
                    LIVENESS_TIMEOUT.as_secs()
                ),
            }),
        };
        match failure {
            None => failures = 0,
            Some(e) => {
                failures += 1;
                if failures >= 2 {
                    return e;
                }
            }
        }
    }
}

/// `work`, unless the node stops answering first.
async fn alive<T>(
    work: impl std::future::Future<Output = Result<T, SourceError>>,
    liveness: &mut (impl std::future::Future<Output = SourceError> + Unpin),
) -> Result<T, SourceError> {
    tokio::select! {
        r = work => r,
        e = liveness => Err(e),
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1u32 << attempt.min(5))
        .min(BACKOFF_CAP);
    let mut r = [0u8; 1];
    let _ = getrandom::fill(&mut r);
    base.mul_f64(0.5 + f64::from(r[0]) / 510.0)
}

impl Capture {
    fn set(&self, f: impl FnOnce(&mut SourceHealth)) {
        f(&mut lock(&self.health));
    }

    fn formation(&self) -> FormationRef {
        FormationRef {
            org_id: self.def.org_id.clone(),
            org_uid: self.def.org_uid,
            max_documents: self.def.max_documents,
            app_id: self.def.app_id.clone(),
            formation_uid: self.def.formation_uid,
        }
    }

    pub(super) async fn run(mut self) {
        let mut attempt = 0u32;
        let mut last_node: Option<(String, String)> = None;
        while !*self.stop.borrow() {
            let started = std::time::Instant::now();
            let result = self.session(&mut last_node).await;
            self.set(|h| h.connected = false);
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::info!(org = %self.def.org_id, app = %self.def.app_id, error = %e, "node link lost; reconnecting");
                    self.set(|h| h.last_error = Some(e.to_string()));
                }
            }
            // A session that lasted resets the backoff: the next attempt is prompt.
            attempt = if started.elapsed() > Duration::from_secs(30) {
                0
            } else {
                attempt + 1
            };
            tokio::select! {
                _ = tokio::time::sleep(backoff(attempt)) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    /// One connection: status, stream, reconciliation, frames. `Ok` only when stopped.
    async fn session(
        &mut self,
        last_node: &mut Option<(String, String)>,
    ) -> Result<(), SourceError> {
        let st = self.client.status().await?;
        if let Some(pinned) = &self.def.node_id {
            if *pinned != st.node_id {
                self.set(|h| h.wrong_node = Some(st.node_id.clone()));
                return Err(SourceError::WrongNode {
                    expected: pinned.clone(),
                    got: st.node_id,
                });
            }
        }
        self.set(|h| h.wrong_node = None);
        let ident = (st.node_id.clone(), st.endpoint_addr.clone());
        if last_node.as_ref().is_some_and(|l| *l != ident) {
            if self.def.node_id.is_some() {
                tracing::info!(org = %self.def.org_id, app = %self.def.app_id, node = %st.node_id,
                    "the pinned node restarted; reconciling");
            } else {
                // Without --node-id a node draws a new id at every start: a restart and a
                // replacement look alike.
                tracing::info!(org = %self.def.org_id, app = %self.def.app_id, node = %st.node_id,
                    "the node restarted or was replaced (its id is random per start; pin node_id to tell them apart); reconciling");
            }
        }
        *last_node = Some(ident);
        let mut stream = self.client.subscribe(&self.def.collections).await?;
        self.set(|h| {
            h.connected = true;
            h.node_id = st.node_id;
            h.endpoint_addr = st.endpoint_addr;
            h.connects += 1;
            h.last_error = None;
        });
        // The node is probed the whole time, reconciliations included: a node that stops
        // answering mid-reconciliation is seen as soon as when it is quiet.
        let mut liveness = Box::pin(watch_liveness(self.client.clone()));
        alive(self.reconcile(), &mut liveness).await?;
        let every = Duration::from_secs(self.def.reconcile_secs);
        let mut reconcile_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut settle_at: Option<tokio::time::Instant> = None;
        loop {
            let settle = async {
                match settle_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = stream.next_batch() => match batch? {
                    Some(frames) => {
                        alive(self.frames(&mut stream, frames), &mut liveness).await?;
                        settle_at = self.settling.unsettled_since.map(|first| {
                            (tokio::time::Instant::now() + SETTLE_QUIET).min(first + SETTLE_MAX)
                        });
                    }
                    None => return Err(SourceError::Cut),
                },
                () = settle => {
                    settle_at = None;
                    alive(self.settle(), &mut liveness).await?;
                }
                _ = reconcile_tick.tick() => alive(self.reconcile(), &mut liveness).await?,
                _ = self.reconcile.notified() => alive(self.reconcile(), &mut liveness).await?,
                e = &mut liveness => return Err(e),
                _ = self.stop.changed() => return Ok(()),
            }
        }
    }

    async fn frames(
        &mut self,
        stream: &mut ChangeStream,
        frames: Vec<DocumentChange>,
    ) -> Result<(), SourceError> {
        let n = frames.len() as u64;
        let mut changes = Vec::with_capacity(frames.len());
        let mut encrypted = 0;
        for f in frames {
            if !self.def.collections.contains(&f.collection) {
                continue;
            }
            if f.doc_id.is_empty() {
                self.refuse(&f.collection, "", EMPTY_ID).await;
                continue;
            }
            let state = match (f.change_type, f.json_data.as_deref()) {
                (ChangeType::Upsert, Some(j)) => match Change::state_from_node(Some(j)) {
                    Ok(s) => s,
                    Err(_) => {
                        self.refuse(&f.collection, &f.doc_id, NOT_JSON).await;
                        self.settling.unsettled.remove(&(f.collection, f.doc_id));
                        continue;
                    }
                },
                // Maybe deleted, maybe a sync artefact: the node's current state decides.
                (ChangeType::Upsert | ChangeType::Delete, _) => {
                    match self.read_back(&f.collection, &f.doc_id).await? {
                        Ok(s) => s,
                        Err(reason) => {
                            self.refuse(&f.collection, &f.doc_id, reason).await;
                            self.settling.unsettled.remove(&(f.collection, f.doc_id));
                            continue;
                        }
                    }
                }
                (ChangeType::Unknown, _) => continue,
            };
            if matches!(state, DocState::Encrypted(_)) {
                encrypted += 1;
            }
            changes.push(Change {
                collection: f.collection,
                doc_id: f.doc_id,
                state,
            });
        }
        if encrypted > 0 && lock(&self.health).encrypted_payloads == 0 {
            tracing::warn!(org = %self.def.org_id, app = %self.def.app_id,
                "the node sends ENC:v1 payloads: it lacks its at-rest key; events carry them opaque");
        }
        let skipped = stream.skipped;
        self.set(|h| {
            h.frames += n;
            h.encrypted_payloads += encrypted;
            h.skipped_frames = h.skipped_frames.max(skipped);
            h.last_event_ms = Some(now_ms());
        });
        let offered: Vec<(String, String)> = changes
            .iter()
            .map(|c| (c.collection.clone(), c.doc_id.clone()))
            .collect();
        let changes = self.admit(changes).await;
        // A refused state is counted once: settling does not read it again.
        let admitted: HashSet<(&str, &str)> = changes
            .iter()
            .map(|c| (c.collection.as_str(), c.doc_id.as_str()))
            .collect();
        for key in offered {
            if !admitted.contains(&(key.0.as_str(), key.1.as_str())) {
                self.settling.unsettled.remove(&key);
            }
        }
        for c in &changes {
            let key = (c.collection.clone(), c.doc_id.clone());
            let doubt = self.settling.reconciled.contains(&key);
            match self.settling.unsettled.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(if doubt {
                        Seen::Doubt
                    } else {
                        Seen::One(c.state.clone())
                    });
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if matches!(o.get(), Seen::One(s) if *s != c.state) {
                        o.insert(Seen::Doubt);
                    }
                }
            }
        }
        // Settled (and forgotten) after the burst either way: only doubts cost a read.
        if !self.settling.unsettled.is_empty() {
            self.settling
                .unsettled_since
                .get_or_insert_with(tokio::time::Instant::now);
        }
        self.append_admitted(changes).await;
        Ok(())
    }

    /// Frames of one burst may arrive out of order (concurrent writers on 0.1.0) or after a
    /// reconciliation read a newer state: for a document whose frames disagree, the state
    /// read back after the burst is the truth for the cursor (peat-wire §2.11). The content
    /// hashes absorb what is already captured.
    async fn settle(&mut self) -> Result<(), SourceError> {
        self.settling.unsettled_since = None;
        self.settling.reconciled.clear();
        let doubtful: Vec<(String, String)> = std::mem::take(&mut self.settling.unsettled)
            .into_iter()
            .filter(|(_, seen)| matches!(seen, Seen::Doubt))
            .map(|(key, _)| key)
            .collect();
        let mut changes = Vec::with_capacity(doubtful.len());
        for (collection, doc_id) in doubtful {
            match self.read_back(&collection, &doc_id).await? {
                Ok(state) => changes.push(Change {
                    collection,
                    doc_id,
                    state,
                }),
                Err(reason) => self.refuse(&collection, &doc_id, reason).await,
            }
        }
        self.append(changes).await;
        Ok(())
    }

    /// The node's current state of a document; `Err` with the reason when it is not one the
    /// gateway captures (not JSON).
    async fn read_back(
        &self,
        collection: &str,
        doc_id: &str,
    ) -> Result<Result<DocState, &'static str>, SourceError> {
        let json = self.client.get(collection, doc_id).await?;
        Ok(Change::state_from_node(json.as_deref()).map_err(|_| NOT_JSON))
    }

    /// Counts, lists and (the first time) audits a document the gateway does not capture;
    /// it holds back nothing else.
    async fn refuse(&self, collection: &str, doc_id: &str, reason: &'static str) {
        let first = lock(&self.health).refuse(collection, doc_id, reason, now_ms());
        if first {
            tracing::warn!(org = %self.def.org_id, app = %self.def.app_id, collection, doc_id, reason,
                "a document on the node is not captured");
            let target = format!(
                "org/{}/formation/{}/document/{collection}/{doc_id}",
                self.def.org_id, self.def.app_id
            );
            if let Err(e) = self
                .tenancy
                .audit_event(
                    &crate::tenant::Actor::system(),
                    &self.def.org_id,
                    "source.refused",
                    target,
                    reason,
                )
                .await
            {
                tracing::warn!(error = %e, "a refused document was not audited");
            }
        }
    }

    /// Keeps the changes the outbox takes; the others are refused one by one.
    async fn admit(&self, changes: Vec<Change>) -> Vec<Change> {
        let mut ok = Vec::with_capacity(changes.len());
        for c in changes {
            match c.validate() {
                Ok(()) => ok.push(c),
                Err(e) => {
                    let reason = refusal_reason(&e);
                    self.refuse(&c.collection, &c.doc_id, reason).await;
                }
            }
        }
        ok
    }

    /// Appends, retrying while the outbox is full (the node keeps its state meanwhile). Each
    /// change stands alone: one the outbox refuses is listed and skipped, never holding back
    /// the others.
    async fn append(&mut self, changes: Vec<Change>) {
        let changes = self.admit(changes).await;
        self.append_admitted(changes).await;
    }

    async fn append_admitted(&mut self, changes: Vec<Change>) {
        for chunk in changes.chunks(APPEND_CHUNK) {
            match self.append_chunk(chunk.to_vec()).await {
                Some(Err(CdcError::DocumentQuota { .. })) => {
                    // Updates of documents it holds still fit; find the new ones that do not.
                    for c in chunk {
                        if let Some(Err(e)) = self.append_chunk(vec![c.clone()]).await {
                            self.refuse(&c.collection, &c.doc_id, refusal_reason(&e))
                                .await;
                        }
                    }
                }
                Some(Err(e)) => {
                    for c in chunk {
                        self.refuse(&c.collection, &c.doc_id, refusal_reason(&e))
                            .await;
                    }
                }
                Some(Ok(())) | None => {}
            }
        }
    }

    /// One append, retried while the outbox cannot take it for now; `Some(Err)` when it was
    /// refused for good, `None` when stopped.
    async fn append_chunk(&mut self, chunk: Vec<Change>) -> Option<Result<(), CdcError>> {
        let mut attempt = 0;
        loop {
            let policy = self.def.full_policy.and_then(crate::cdc::FullPolicy::parse);
            match self
                .outbox
                .append_with(self.formation(), chunk.clone(), policy)
                .await
            {
                Ok(r) => {
                    if let Some(hook) = &self.on_append {
                        hook(&r);
                    }
                    let appended = r
                        .outcomes
                        .iter()
                        .filter(|o| matches!(o, crate::cdc::Appended::Event(_)))
                        .count() as u64;
                    if self.settling.reconciling {
                        for (c, o) in chunk.iter().zip(&r.outcomes) {
                            if matches!(o, crate::cdc::Appended::Event(_)) {
                                self.settling
                                    .reconciled
                                    .insert((c.collection.clone(), c.doc_id.clone()));
                            }
                        }
                    }
                    self.set(|h| {
                        h.appended += appended;
                        h.unchanged += r.outcomes.len() as u64 - appended;
                    });
                    if r.dropped > 0 {
                        tracing::warn!(org = %self.def.org_id, app = %self.def.app_id, events = r.dropped,
                            "outbox full: the oldest events were dropped (this source's policy drop-oldest)");
                    }
                    return Some(Ok(()));
                }
                Err(e @ (CdcError::Invalid { .. } | CdcError::DocumentQuota { .. })) => {
                    return Some(Err(e))
                }
                Err(e) => {
                    self.set(|h| h.last_error = Some(format!("outbox: {e}")));
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                        _ = self.stop.changed() => return None,
                    }
                }
            }
        }
    }

    /// Presence and content diff against the node: new and changed documents become upserts,
    /// documents the gateway holds live but the node no longer lists become deletes. A
    /// document the gateway cannot capture is refused on its own.
    async fn reconcile(&mut self) -> Result<(), SourceError> {
        let mut report = Reconciliation {
            at_ms: now_ms(),
            ..Default::default()
        };
        let before = lock(&self.health).appended;
        self.settling.reconciled.clear();
        self.settling.reconciling = true;
        let result = self.reconcile_all(&mut report).await;
        self.settling.reconciling = false;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        report.appended = lock(&self.health).appended - before;
        tracing::debug!(org = %self.def.org_id, app = %self.def.app_id, ?report, outcome, "reconciled with the node");
        self.set(|h| {
            h.last_reconciliation = Some(report);
            *h.reconciliations.entry(outcome).or_default() += 1;
        });
        result
    }

    async fn reconcile_all(&mut self, report: &mut Reconciliation) -> Result<(), SourceError> {
        for collection in self.def.collections.clone() {
            let listed = self.client.list(&collection).await?;
            report.listed += listed.len() as u64;
            let mut changes = Vec::new();
            for id in &listed {
                if id.is_empty() {
                    self.refuse(&collection, "", EMPTY_ID).await;
                    continue;
                }
                match self.read_back(&collection, id).await? {
                    Ok(state) => changes.push(Change {
                        collection: collection.clone(),
                        doc_id: id.clone(),
                        state,
                    }),
                    Err(reason) => self.refuse(&collection, id, reason).await,
                }
            }
            let listed: HashSet<String> = listed.into_iter().collect();
            let live = self
                .outbox
                .live_docs(self.def.formation_uid, collection.clone())
                .await
                .unwrap_or_default();
            for id in live.into_iter().filter(|id| !listed.contains(id)) {
                // Confirm: it may have been written after the listing.
                let Ok(state) = self.read_back(&collection, &id).await? else {
                    continue;
                };
                if state == DocState::Deleted {
                    report.deleted += 1;
                }
                changes.push(Change {
                    collection: collection.clone(),
                    doc_id: id,
                    state,
                });
            }
            self.append(changes).await;
        }
        Ok(())
    }
}
