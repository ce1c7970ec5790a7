//! The outbox: `cdc.redb`, events by LSN, each org's index of its events, per-document
//! content hashes, per-sink cursors and dead letters, all written through the store's
//! group-commit writer.

mod append;
mod orgs;
mod sinks;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::event::Change;
use super::CdcError;
use crate::store::{
    CommitStats, DocRecord, EventRecord, Reader, Record, Store, StoreOptions, Table, Txn, OUTBOX,
};
use crate::tenant::now_ms;
use append::{append_in, prepare};
pub use orgs::{share_of, OrgFill, Stamped};

const NEXT_LSN: &[u8] = b"next_lsn";
const BYTES: &[u8] = b"bytes";
const DROPPED: &[u8] = b"dropped";
const GATEWAY_ID: &[u8] = b"gateway_id";
/// Events removed per trim transaction, so one trim never holds the writer for long.
const TRIM_CHUNK: usize = 4096;
/// Per-event overhead counted against the quota besides the record (key, B-tree share).
const EVENT_OVERHEAD: u64 = 16;

/// What to do when an append would pass the byte quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Refuse the append (ingest answers 503 with `Retry-After`); nothing is lost.
    Block,
    /// Remove the oldest events to make room; each loss is counted and audited.
    DropOldest,
}

impl FullPolicy {
    pub fn parse(s: &str) -> Option<FullPolicy> {
        match s {
            "block" => Some(FullPolicy::Block),
            "drop-oldest" => Some(FullPolicy::DropOldest),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FullPolicy::Block => "block",
            FullPolicy::DropOldest => "drop-oldest",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    pub quota_bytes: u64,
    pub policy: FullPolicy,
    /// Files smaller than this are never compacted.
    pub compact_min_bytes: u64,
}

/// The formation a change belongs to.
#[derive(Debug, Clone)]
pub struct FormationRef {
    pub org_id: String,
    /// The org's immutable uid: what isolates its events from every other org's.
    pub org_uid: [u8; 16],
    pub app_id: String,
    pub formation_uid: [u8; 16],
    /// The org's `max_documents_per_formation`: live documents this formation may hold.
    pub max_documents: u64,
}

/// The outcome of one change of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// A new event with this LSN.
    Event(u64),
    /// The same state as last captured: no event.
    Unchanged,
}

#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    dropped: AtomicU64,
    appended: AtomicU64,
    suppressed: AtomicU64,
}

/// What one append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReport {
    /// One per change, in order.
    pub outcomes: Vec<Appended>,
    /// Old events removed to make room (policy drop-oldest).
    pub dropped: u64,
}

/// Figures for metrics and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    pub head_lsn: u64,
    pub bytes: u64,
    pub quota_bytes: u64,
    pub dropped: u64,
    pub appended: u64,
    pub suppressed: u64,
}

/// Handle to the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    gateway_id: Arc<str>,
    cfg: OutboxConfig,
    head: Arc<watch::Sender<u64>>,
    counters: Arc<Counters>,
    /// Each org's fill as last committed.
    fills: Arc<Mutex<HashMap<[u8; 16], OrgFill>>>,
    /// How many orgs share the quota.
    orgs: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_u64(r: &impl Reader, key: &[u8]) -> Result<u64, CdcError> {
    Ok(r.get_raw(Table::Meta, key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_le_bytes))
}

fn put_u64(t: &mut Txn<'_>, key: &[u8], v: u64) {
    t.put_raw(Table::Meta, key.to_vec(), v.to_le_bytes().to_vec());
}

fn doc_key(formation_uid: &[u8; 16], collection: &str, doc_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(18 + collection.len() + doc_id.len());
    k.extend_from_slice(formation_uid);
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k.extend_from_slice(doc_id.as_bytes());
    k
}

fn lsn_of(key: &[u8]) -> u64 {
    key.get(key.len().saturating_sub(8)..)
        .and_then(|t| <[u8; 8]>::try_from(t).ok())
        .map_or(0, u64::from_be_bytes)
}

impl Outbox {
    /// Opens (creating) `cdc.redb` in `dir`. Blocks on disk I/O: call from `spawn_blocking`.
    pub fn open(
        dir: &Path,
        cache_bytes: usize,
        cfg: OutboxConfig,
        on_commit: Option<Arc<dyn Fn(CommitStats) + Send + Sync>>,
    ) -> Result<Self, CdcError> {
        let opts = StoreOptions {
            cache_bytes,
            schema: &OUTBOX,
        };
        let store = Store::open(&dir.join("cdc.redb"), &opts, on_commit)?;
        let (gateway_id, head, bytes, dropped, fills) =
            store.read_blocking(|r| -> Result<_, CdcError> {
                let id = r
                    .get_raw(Table::Meta, GATEWAY_ID)?
                    .and_then(|v| String::from_utf8(v).ok());
                Ok((
                    id,
                    read_u64(r, NEXT_LSN)?.saturating_sub(1),
                    read_u64(r, BYTES)?,
                    read_u64(r, DROPPED)?,
                    orgs::all_fills(r)?,
                ))
            })?;
        let gateway_id = match gateway_id {
            Some(id) => id,
            None => {
                let mut raw = [0u8; 6];
                getrandom::fill(&mut raw).map_err(|_| StoreErrorRng)?;
                let id = format!("gw-{}", hex::encode(raw));
                let v = id.clone();
                store.write_blocking(move |t| -> Result<(), CdcError> {
                    t.put_raw(Table::Meta, GATEWAY_ID.to_vec(), v.into_bytes());
                    Ok(())
                })?;
                id
            }
        };
        let counters = Counters::default();
        counters.bytes.store(bytes, Ordering::Relaxed);
        counters.dropped.store(dropped, Ordering::Relaxed);
        Ok(Self {
            store,
            gateway_id: gateway_id.into(),
            cfg,
            head: Arc::new(watch::channel(head).0),
            counters: Arc::new(counters),
            fills: Arc::new(Mutex::new(fills)),
            orgs: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Moves events written before the org log (schemas 1 and 2, some without an org uid)
    /// into it, resolving org names with `orgs` (name → uid); events of orgs that no longer
    /// exist are removed. Runs at start-up, before anything appends, in chunks with progress
    /// logged; a cut-short run resumes.
    pub async fn stamp_older_events(
        &self,
        orgs: HashMap<String, [u8; 16]>,
    ) -> Result<Stamped, CdcError> {
        let done = self
            .store
            .read(|r| Ok::<_, CdcError>(r.exists(Table::Meta, orgs::LOGGED)?))
            .await?;
        if done {
            return Ok(Stamped::default());
        }
        let orgs = Arc::new(orgs);
        let mut total = Stamped::default();
        loop {
            let o = orgs.clone();
            let (st, more) = self.store.write(move |t| orgs::stamp_chunk(t, &o)).await?;
            if !more {
                break;
            }
            total.moved += st.moved;
            total.orphaned += st.orphaned;
            tracing::info!(
                moved = total.moved,
                orphaned = total.orphaned,
                "moving the outbox's older events into each org's log"
            );
        }
        let fills = self
            .store
            .write(|t| -> Result<_, CdcError> {
                t.put_raw(Table::Meta, orgs::LOGGED.to_vec(), vec![1]);
                let used = read_u64(t, BYTES)?;
                Ok((orgs::all_fills(t)?, used))
            })
            .await?;
        *lock(&self.fills) = fills.0;
        self.counters.bytes.store(fills.1, Ordering::Relaxed);
        Ok(total)
    }

    /// How many orgs share the byte quota (each gets an equal share).
    pub fn set_org_count(&self, n: u64) {
        self.orgs.store(n.max(1), Ordering::Relaxed);
    }

    /// An org's share of the byte quota.
    pub fn org_share(&self) -> u64 {
        share_of(self.cfg.quota_bytes, self.orgs.load(Ordering::Relaxed))
    }

    /// Orgs holding (or having held) events.
    pub fn known_orgs(&self) -> Vec<[u8; 16]> {
        lock(&self.fills).keys().copied().collect()
    }

    /// An org's fill: its newest seq and the bytes its events hold.
    pub fn org_fill(&self, org_uid: &[u8; 16]) -> OrgFill {
        lock(&self.fills).get(org_uid).copied().unwrap_or_default()
    }

    /// The org's events after `after`, oldest first: (lsn, event, stored bytes, org seq).
    /// Never an event of another org.
    pub async fn read_org_after(
        &self,
        org_uid: [u8; 16],
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventRecord, usize, u64)>, CdcError> {
        self.store
            .read(move |r| orgs::read_after(r, &org_uid, after, limit))
            .await
    }

    /// How many of the org's events lie at or below `cursor`; the backlog after it is the
    /// org's newest seq minus this.
    pub async fn org_seq_at(&self, org_uid: [u8; 16], cursor: u64) -> Result<u64, CdcError> {
        self.store
            .read(move |r| orgs::seq_at(r, &org_uid, cursor))
            .await
    }

    /// The org's seq at a resume point, when it can be known (see `orgs::resume_seq`).
    pub async fn org_resume_seq(
        &self,
        org_uid: [u8; 16],
        after: u64,
    ) -> Result<Option<u64>, CdcError> {
        self.store
            .read(move |r| orgs::resume_seq(r, &org_uid, after))
            .await
    }

    /// Removes every event of a deleted org and its figures.
    pub async fn forget_org(&self, org_uid: [u8; 16]) -> Result<u64, CdcError> {
        let removed = self.trim_org(org_uid, None).await?;
        self.store
            .write(move |t| -> Result<(), CdcError> {
                t.delete(Table::Meta, orgs::fill_key(&org_uid));
                Ok(())
            })
            .await?;
        lock(&self.fills).remove(&org_uid);
        self.reload_bytes().await?;
        Ok(removed)
    }

    async fn reload_bytes(&self) -> Result<(), CdcError> {
        let used = self.store.read(|r| read_u64(r, BYTES)).await?;
        self.counters.bytes.store(used, Ordering::Relaxed);
        Ok(())
    }

    /// This gateway's id: the first half of every event id.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// Highest committed LSN; changes wake [`Outbox::watch`] receivers.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    pub fn stats(&self) -> OutboxStats {
        let c = &self.counters;
        OutboxStats {
            head_lsn: self.head(),
            bytes: c.bytes.load(Ordering::Relaxed),
            quota_bytes: self.cfg.quota_bytes,
            dropped: c.dropped.load(Ordering::Relaxed),
            appended: c.appended.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
        }
    }

    pub fn policy(&self) -> FullPolicy {
        self.cfg.policy
    }

    /// Appends the changes that differ from the last captured state, in order, in one
    /// transaction with their cursor updates. Resolves after the commit is durable.
    pub async fn append(
        &self,
        src: FormationRef,
        changes: Vec<Change>,
    ) -> Result<AppendReport, CdcError> {
        self.append_with(src, changes, None).await
    }

    /// [`Outbox::append`] under a source's own full-outbox policy (`None`: the gateway's).
    pub async fn append_with(
        &self,
        src: FormationRef,
        changes: Vec<Change>,
        policy: Option<FullPolicy>,
    ) -> Result<AppendReport, CdcError> {
        for c in &changes {
            c.validate()?;
        }
        let mut cfg = self.cfg;
        if let Some(p) = policy {
            cfg.policy = p;
        }
        let now = now_ms();
        let share = self.org_share();
        let org_uid = src.org_uid;
        let prepared = prepare(&src, changes, now)?;
        let done = self
            .store
            .write(move |t| append_in(t, &src, prepared, cfg, share))
            .await?;
        lock(&self.fills).insert(org_uid, done.fill);
        let (outcomes, added, dropped, last) = (done.outcomes, done.added, done.dropped, done.last);
        let c = &self.counters;
        c.bytes.fetch_add(added, Ordering::Relaxed);
        if dropped.events > 0 {
            c.dropped.fetch_add(dropped.events, Ordering::Relaxed);
            c.bytes.fetch_sub(
                dropped.bytes.min(c.bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            tracing::warn!(
                events = dropped.events,
                bytes = dropped.bytes,
                org = %hex::encode(org_uid),
                "the org's outbox share is full: dropped its oldest events (policy drop-oldest)"
            );
        }
        let n = outcomes
            .iter()
            .filter(|o| matches!(o, Appended::Event(_)))
            .count() as u64;
        c.appended.fetch_add(n, Ordering::Relaxed);
        c.suppressed
            .fetch_add(outcomes.len() as u64 - n, Ordering::Relaxed);
        if let Some(lsn) = last {
            self.head.send_if_modified(|h| {
                let newer = lsn > *h;
                if newer {
                    *h = lsn;
                }
                newer
            });
        }
        Ok(AppendReport {
            outcomes,
            dropped: dropped.events,
        })
    }

    /// Removes each org's events that every sink of that org has acknowledged. An org with
    /// no sink keeps everything (its first sink receives the backlog), inside its share.
    pub async fn trim(&self, orgs: Vec<([u8; 16], Vec<[u8; 16]>)>) -> Result<u64, CdcError> {
        let mut removed = 0;
        for (org, sinks) in orgs {
            if !sinks.is_empty() {
                removed += self.trim_org(org, Some(sinks)).await?;
            }
        }
        Ok(removed)
    }

    /// Removes the org's events every one of `sinks` acknowledged (`None`: all of them), a
    /// chunk per transaction.
    async fn trim_org(&self, org: [u8; 16], sinks: Option<Vec<[u8; 16]>>) -> Result<u64, CdcError> {
        let mut removed = 0;
        loop {
            let s = sinks.clone();
            let (n, bytes, fill) = self
                .store
                .write(move |t| -> Result<_, CdcError> {
                    let mut floor = u64::MAX;
                    for uid in s.iter().flatten() {
                        let c = t
                            .get_raw(Table::Cursors, uid)?
                            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                            .map_or(0, u64::from_be_bytes);
                        floor = floor.min(c);
                    }
                    let (n, bytes) = orgs::trim_to(t, &org, floor, TRIM_CHUNK)?;
                    if n > 0 {
                        let used = read_u64(t, BYTES)?.saturating_sub(bytes);
                        put_u64(t, BYTES, used);
                    }
                    Ok((n, bytes, orgs::read_fill(t, &org)?))
                })
                .await?;
            if n > 0 {
                lock(&self.fills).insert(org, fill);
            }
            let c = &self.counters.bytes;
            c.fetch_sub(bytes.min(c.load(Ordering::Relaxed)), Ordering::Relaxed);
            removed += n;
            if n < TRIM_CHUNK as u64 {
                return Ok(removed);
            }
        }
    }

    /// Ids of the documents of one collection whose last captured state is live.
    pub async fn live_docs(
        &self,
        formation_uid: [u8; 16],
        collection: String,
    ) -> Result<Vec<String>, CdcError> {
        self.store
            .read(move |r| {
                let mut prefix = formation_uid.to_vec();
                prefix.extend_from_slice(collection.as_bytes());
                prefix.push(0);
                let mut out = Vec::new();
                for (k, v) in r.scan(Table::Docs, &prefix, None, usize::MAX)? {
                    if DocRecord::decode(&v)?.content_hash.is_some() {
                        if let Ok(id) = std::str::from_utf8(&k[prefix.len()..]) {
                            out.push(id.to_owned());
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Removes the document cursors of a deleted formation.
    pub async fn forget_formation(&self, formation_uid: [u8; 16]) -> Result<u64, CdcError> {
        self.store
            .write(move |t| -> Result<u64, CdcError> {
                t.delete(Table::Meta, append::doc_count_key(&formation_uid));
                Ok(t.delete_prefix(Table::Docs, &formation_uid)?)
            })
            .await
    }

    /// Compacts `cdc.redb` when the file has grown well past what it holds (events trimmed
    /// after a long outage leave free pages behind). Returns the sizes when it ran.
    /// `draining`: sinks trimmed events since the last check.
    pub async fn maybe_compact(&self, draining: bool) -> Result<Option<(u64, u64)>, CdcError> {
        let file = self.store.file_bytes();
        let held = self.counters.bytes.load(Ordering::Relaxed);
        if !compaction_due(file, held, self.cfg.compact_min_bytes, draining) {
            return Ok(None);
        }
        tracing::info!(
            file_mib = file >> 20,
            held_mib = held >> 20,
            "compacting the outbox file"
        );
        let (before, after) = self.store.compact().await?;
        tracing::info!(
            before_mib = before >> 20,
            after_mib = after >> 20,
            "outbox compacted"
        );
        Ok(Some((before, after)))
    }

    /// A consistent copy of `cdc.redb` at `dest` (see [`Store::snapshot_to`]); its schema.
    pub fn snapshot_to(&self, dest: &std::path::Path) -> Result<u32, CdcError> {
        Ok(self.store.snapshot_to(dest)?)
    }

    /// Whether `cdc.redb`'s writer answers within `within` and takes writes.
    pub async fn writer_healthy(&self, within: std::time::Duration) -> bool {
        self.store.writer_healthy(within).await
    }

    pub fn file_bytes(&self) -> u64 {
        self.store.file_bytes()
    }

    pub fn is_poisoned(&self) -> bool {
        self.store.is_poisoned()
    }

    /// See [`crate::store::Store::try_recover`].
    pub async fn try_recover(&self) {
        let _ = self.store.try_recover().await;
    }

    /// Why the outbox refuses writes, when it does (a failed commit; a full disk).
    pub fn write_problem(&self) -> Option<String> {
        self.store.write_problem()
    }

    pub async fn shutdown(&self) {
        self.store.shutdown().await;
    }
}

/// Random-source failure while naming the gateway.
#[derive(Debug)]
struct StoreErrorRng;

impl From<StoreErrorRng> for CdcError {
    fn from(_: StoreErrorRng) -> Self {
        CdcError::Tenant(crate::tenant::TenantError::Key(crate::keys::KeyError::Rng))
    }
}

/// Whether a file of `file` bytes holding `held` is worth compacting: it has grown past twice
/// what it holds (plus 16 MiB), and no drain is under way unless it holds under an eighth of
/// the file (a compaction copies what is held: in the middle of a drain it doubles the work
/// of reading the backlog out; at its end it copies little).
fn compaction_due(file: u64, held: u64, min: u64, draining: bool) -> bool {
    let grown = file >= min && file >= 2 * (held + 16 * 1024 * 1024);
    grown && (!draining || held.saturating_mul(8) <= file)
}

#[cfg(test)]
mod tests;
