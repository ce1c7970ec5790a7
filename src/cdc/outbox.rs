//! The outbox: `cdc.redb`, events by LSN, per-document content hashes, per-sink cursors and
//! dead letters, all written through the store's group-commit writer.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::event::{canonical, Change, DocState, Op};
use super::CdcError;
use crate::store::{
    CommitStats, DeadLetterRecord, DocRecord, EventRecord, Reader, Record, Store, StoreOptions,
    Table, Txn, OUTBOX,
};
use crate::tenant::now_ms;

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
    pub app_id: String,
    pub formation_uid: [u8; 16],
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

fn dead_key(sink_uid: &[u8; 16], lsn: u64) -> Vec<u8> {
    let mut k = sink_uid.to_vec();
    k.extend_from_slice(&lsn.to_be_bytes());
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
        let (gateway_id, head, bytes, dropped) =
            store.read_blocking(|r| -> Result<_, CdcError> {
                let id = r
                    .get_raw(Table::Meta, GATEWAY_ID)?
                    .and_then(|v| String::from_utf8(v).ok());
                Ok((
                    id,
                    read_u64(r, NEXT_LSN)?.saturating_sub(1),
                    read_u64(r, BYTES)?,
                    read_u64(r, DROPPED)?,
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
        })
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
        let (outcomes, added, dropped, last) = self
            .store
            .write(move |t| append_in(t, &src, changes, cfg, now))
            .await?;
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
                "outbox full: dropped the oldest events (policy drop-oldest)"
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

    /// Up to `limit` events after `after`, with their stored size.
    pub async fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventRecord, usize)>, CdcError> {
        self.store
            .read(move |r| {
                let key = after.to_be_bytes();
                r.scan(Table::Events, b"", Some(&key), limit)?
                    .into_iter()
                    .map(|(k, v)| Ok((lsn_of(&k), EventRecord::decode(&v)?, v.len())))
                    .collect()
            })
            .await
    }

    /// A sink's last acknowledged LSN; `None` before its first delivery.
    pub async fn cursor(&self, sink_uid: [u8; 16]) -> Result<Option<u64>, CdcError> {
        self.store
            .read(move |r| {
                Ok(r.get_raw(Table::Cursors, &sink_uid)?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .map(u64::from_be_bytes))
            })
            .await
    }

    pub async fn set_cursor(&self, sink_uid: [u8; 16], lsn: u64) -> Result<(), CdcError> {
        self.store
            .write(move |t| -> Result<(), CdcError> {
                t.put_raw(
                    Table::Cursors,
                    sink_uid.to_vec(),
                    lsn.to_be_bytes().to_vec(),
                );
                Ok(())
            })
            .await
    }

    /// Parks a permanently refused event in the dead-letter table; the sink's cursor stays
    /// before it until an operator skips it.
    pub async fn park(
        &self,
        sink_uid: [u8; 16],
        lsn: u64,
        event: EventRecord,
        reason: String,
    ) -> Result<(), CdcError> {
        let rec = DeadLetterRecord {
            reason,
            parked_at_ms: now_ms(),
            event,
        };
        self.store
            .write(move |t| -> Result<(), CdcError> {
                t.put(Table::DeadLetters, dead_key(&sink_uid, lsn), &rec)?;
                Ok(())
            })
            .await
    }

    /// A sink's parked events, oldest first.
    pub async fn dead_letters(
        &self,
        sink_uid: [u8; 16],
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, CdcError> {
        self.store
            .read(move |r| {
                r.scan(Table::DeadLetters, &sink_uid, None, limit)?
                    .into_iter()
                    .map(|(k, v)| Ok((lsn_of(&k), DeadLetterRecord::decode(&v)?)))
                    .collect()
            })
            .await
    }

    /// Removes the given dead letters of a sink (delivered by a replay, or discarded).
    pub async fn remove_dead_letters(
        &self,
        sink_uid: [u8; 16],
        lsns: Vec<u64>,
    ) -> Result<(), CdcError> {
        self.store
            .write(move |t| -> Result<(), CdcError> {
                for lsn in lsns {
                    t.delete(Table::DeadLetters, dead_key(&sink_uid, lsn));
                }
                Ok(())
            })
            .await
    }

    /// Removes a sink's cursor and dead letters (the sink was deleted).
    pub async fn forget_sink(&self, sink_uid: [u8; 16]) -> Result<(), CdcError> {
        self.store
            .write(move |t| -> Result<(), CdcError> {
                t.delete(Table::Cursors, sink_uid.to_vec());
                t.delete_prefix(Table::DeadLetters, &sink_uid)?;
                Ok(())
            })
            .await
    }

    /// Removes events every listed sink has acknowledged. With no sinks, keeps everything:
    /// the first sink created receives the backlog.
    pub async fn trim(&self, sinks: Vec<[u8; 16]>) -> Result<u64, CdcError> {
        if sinks.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            let s = sinks.clone();
            let (n, bytes) = self
                .store
                .write(move |t| -> Result<(u64, u64), CdcError> {
                    let mut floor = u64::MAX;
                    for uid in &s {
                        let c = t
                            .get_raw(Table::Cursors, uid)?
                            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                            .map_or(0, u64::from_be_bytes);
                        floor = floor.min(c);
                    }
                    let mut n = 0;
                    let mut bytes = 0;
                    for (k, v) in t.scan(Table::Events, b"", None, TRIM_CHUNK)? {
                        if lsn_of(&k) > floor {
                            break;
                        }
                        bytes += v.len() as u64 + EVENT_OVERHEAD;
                        t.delete(Table::Events, k);
                        n += 1;
                    }
                    if n > 0 {
                        let used = read_u64(t, BYTES)?.saturating_sub(bytes);
                        put_u64(t, BYTES, used);
                    }
                    Ok((n, bytes))
                })
                .await?;
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
                Ok(t.delete_prefix(Table::Docs, &formation_uid)?)
            })
            .await
    }

    /// Compacts `cdc.redb` when the file has grown well past what it holds (events trimmed
    /// after a long outage leave free pages behind). Returns the sizes when it ran.
    pub async fn maybe_compact(&self) -> Result<Option<(u64, u64)>, CdcError> {
        let file = self.store.file_bytes();
        let held = self.counters.bytes.load(Ordering::Relaxed);
        if file < self.cfg.compact_min_bytes || file < 2 * (held + 16 * 1024 * 1024) {
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

    pub fn file_bytes(&self) -> u64 {
        self.store.file_bytes()
    }

    pub async fn shutdown(&self) {
        self.store.shutdown().await;
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Dropped {
    events: u64,
    bytes: u64,
}

type AppendResult = (Vec<Appended>, u64, Dropped, Option<u64>);

fn append_in(
    t: &mut Txn<'_>,
    src: &FormationRef,
    changes: Vec<Change>,
    cfg: OutboxConfig,
    now: u64,
) -> Result<AppendResult, CdcError> {
    let mut next = read_u64(t, NEXT_LSN)?.max(1);
    let mut used = read_u64(t, BYTES)?;
    let mut added = 0u64;
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut last = None;
    for c in changes {
        let key = doc_key(&src.formation_uid, &c.collection, &c.doc_id);
        let prev: Option<DocRecord> = t.get(Table::Docs, &key)?;
        let canon = canonical(&c.state);
        let new_hash = canon.as_ref().map(|(_, h)| *h);
        let unchanged = match &prev {
            Some(p) => p.content_hash == new_hash,
            None => false,
        };
        if unchanged {
            outcomes.push(Appended::Unchanged);
            continue;
        }
        let (op, data, hash) = match canon {
            Some((bytes, h)) => (Op::Upsert, Some(bytes), h),
            None => (Op::Delete, None, [0; 32]),
        };
        let rec = EventRecord {
            org_id: src.org_id.clone(),
            app_id: src.app_id.clone(),
            collection: c.collection,
            doc_id: c.doc_id,
            op: op.to_byte(),
            data,
            encrypted: matches!(c.state, DocState::Encrypted(_)),
            content_hash: hash,
            observed_ms: now,
        };
        let bytes = rec.encode()?;
        added += bytes.len() as u64 + EVENT_OVERHEAD;
        t.put_raw(Table::Events, next.to_be_bytes().to_vec(), bytes);
        t.put(
            Table::Docs,
            key,
            &DocRecord {
                content_hash: new_hash,
                lsn: next,
            },
        )?;
        outcomes.push(Appended::Event(next));
        last = Some(next);
        next += 1;
    }
    let mut dropped = Dropped::default();
    if used + added > cfg.quota_bytes {
        if added > cfg.quota_bytes || cfg.policy == FullPolicy::Block {
            return Err(CdcError::Full {
                used,
                quota: cfg.quota_bytes,
            });
        }
        // Oldest first; the events of this append are not yet visible to the scan.
        // Deletes stay pending until the operation ends, so page on from the last key seen.
        let mut after: Option<Vec<u8>> = None;
        while used + added > cfg.quota_bytes {
            let page = t.scan(Table::Events, b"", after.as_deref(), 256)?;
            if page.is_empty() {
                break;
            }
            for (k, v) in page {
                if used + added <= cfg.quota_bytes {
                    break;
                }
                let b = v.len() as u64 + EVENT_OVERHEAD;
                used = used.saturating_sub(b);
                dropped.events += 1;
                dropped.bytes += b;
                after = Some(k.clone());
                t.delete(Table::Events, k);
            }
        }
        put_u64(t, DROPPED, read_u64(t, DROPPED)? + dropped.events);
    }
    put_u64(t, NEXT_LSN, next);
    put_u64(t, BYTES, used + added);
    Ok((outcomes, added, dropped, last))
}

/// Random-source failure while naming the gateway.
#[derive(Debug)]
struct StoreErrorRng;

impl From<StoreErrorRng> for CdcError {
    fn from(_: StoreErrorRng) -> Self {
        CdcError::Tenant(crate::tenant::TenantError::Key(crate::keys::KeyError::Rng))
    }
}
