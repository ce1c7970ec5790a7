//! Append-only, hash-chained audit log of administrative actions.
//!
//! Each record's hash = SHA-256(label ‖ prev_hash ‖ canonical fields), so altering, removing
//! or reordering any record breaks the chain at that point; [`verify_chain`] finds the first
//! broken link. Records are listed per org through the `audit_by_org` index keyed by the org's
//! creation uid, so a re-created org does not inherit its predecessor's history.

use sha2::{Digest, Sha256};

use super::{now_ms, Actor, TenantError};
use crate::store::{keys, AuditHeadRecord, AuditRecord, Reader, Record, StoreError, Table, Txn};

const LABEL: &[u8] = b"peat-gateway:audit:v1";
/// Largest page `GET /orgs/{org}/audit` returns.
pub const MAX_PAGE: usize = 1000;

/// What to record; the chain fields are filled in by [`append`].
pub(crate) struct Event<'a> {
    pub org: Option<(&'a str, [u8; 16])>,
    pub actor: &'a Actor,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
}

/// Appends one record inside the caller's transaction.
pub(crate) fn append(txn: &mut Txn<'_>, ev: Event<'_>) -> Result<u64, StoreError> {
    let head: Option<AuditHeadRecord> = txn.get(Table::Meta, keys::AUDIT_HEAD)?;
    let (seq, prev_hash) = match head {
        Some(h) => (h.seq + 1, h.hash),
        None => (1, [0u8; 32]),
    };
    let mut rec = AuditRecord {
        seq,
        time_ms: now_ms(),
        org_id: ev.org.map(|(id, _)| id.to_owned()),
        org_uid: ev.org.map(|(_, uid)| uid),
        actor_id: ev.actor.id.clone(),
        actor_role: ev.actor.role.to_owned(),
        action: ev.action.to_owned(),
        target: ev.target.to_owned(),
        outcome: ev.outcome.to_owned(),
        prev_hash,
        hash: [0; 32],
    };
    rec.hash = chain_hash(&rec);
    txn.put(Table::Audit, keys::audit(seq), &rec)?;
    if let Some(uid) = rec.org_uid {
        txn.put_raw(Table::AuditByOrg, keys::audit_by_org(&uid, seq), Vec::new());
    }
    txn.put(
        Table::Meta,
        keys::AUDIT_HEAD.to_vec(),
        &AuditHeadRecord {
            seq,
            hash: rec.hash,
        },
    )?;
    Ok(seq)
}

fn chain_hash(r: &AuditRecord) -> [u8; 32] {
    fn lp(h: &mut Sha256, s: &str) {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        h.update(len.to_le_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(r.prev_hash);
    h.update(r.seq.to_le_bytes());
    h.update(r.time_ms.to_le_bytes());
    lp(&mut h, r.org_id.as_deref().unwrap_or(""));
    h.update(r.org_uid.unwrap_or([0; 16]));
    lp(&mut h, &r.actor_id);
    lp(&mut h, &r.actor_role);
    lp(&mut h, &r.action);
    lp(&mut h, &r.target);
    lp(&mut h, &r.outcome);
    h.finalize().into()
}

/// One audit record as callers see it.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    pub org_id: Option<String>,
    pub actor_id: String,
    pub actor_role: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub hash: [u8; 32],
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        Self {
            seq: r.seq,
            time_ms: r.time_ms,
            org_id: r.org_id,
            actor_id: r.actor_id,
            actor_role: r.actor_role,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            hash: r.hash,
        }
    }
}

/// A page of an org's audit log, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` to get the next (older) page; `None` at the start of the log.
    pub next_before: Option<u64>,
    /// Records read to fill the page (more than its length when a filter skipped some).
    pub scanned: usize,
}

/// Which entries a page keeps: `actor` anywhere in the actor id, `action` as its prefix
/// (`sink.` for every sink action), both case-insensitive.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
}

impl Filter {
    fn keeps(&self, r: &AuditRecord) -> bool {
        let actor = self
            .actor
            .as_deref()
            .is_none_or(|a| r.actor_id.to_lowercase().contains(&a.to_lowercase()));
        let action = self
            .action
            .as_deref()
            .is_none_or(|a| r.action.to_lowercase().starts_with(&a.to_lowercase()));
        actor && action
    }
}

/// Most records one filtered page reads before answering with what it found.
const SCAN_CAP: usize = 20_000;

/// Fills a page from `next(before, n)`, which yields up to `n` records older than `before`,
/// newest first.
fn page_of(
    limit: usize,
    before: Option<u64>,
    filter: &Filter,
    mut next: impl FnMut(Option<u64>, usize) -> Result<Vec<AuditRecord>, TenantError>,
) -> Result<AuditPage, TenantError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut entries = Vec::with_capacity(limit);
    let mut cursor = before;
    let mut scanned = 0;
    loop {
        let left = limit - entries.len();
        // A filter may skip most records: read in larger steps then.
        let want = if filter.actor.is_none() && filter.action.is_none() {
            left
        } else {
            left.clamp(64, MAX_PAGE)
        };
        let batch = next(cursor, want)?;
        let ended = batch.len() < want;
        for rec in batch {
            scanned += 1;
            cursor = Some(rec.seq);
            if filter.keeps(&rec) {
                entries.push(AuditEntry::from(rec));
                if entries.len() == limit {
                    return Ok(AuditPage {
                        entries,
                        next_before: cursor,
                        scanned,
                    });
                }
            }
        }
        if ended {
            return Ok(AuditPage {
                entries,
                next_before: None,
                scanned,
            });
        }
        if scanned >= SCAN_CAP {
            return Ok(AuditPage {
                entries,
                next_before: cursor,
                scanned,
            });
        }
    }
}

pub(crate) fn list_for_org(
    r: &impl Reader,
    org_uid: &[u8; 16],
    before: Option<u64>,
    limit: usize,
    filter: &Filter,
) -> Result<AuditPage, TenantError> {
    page_of(limit, before, filter, |before, n| {
        let bound = before.map(|b| keys::audit_by_org(org_uid, b));
        let idx = r.scan_rev(Table::AuditByOrg, org_uid, bound.as_deref(), n)?;
        let mut out = Vec::with_capacity(idx.len());
        for (k, _) in &idx {
            let seq = keys::audit_seq_of(k).ok_or(StoreError::Decode {
                kind: "audit index",
                reason: "short key",
            })?;
            if let Some(rec) = r.get::<AuditRecord>(Table::Audit, &keys::audit(seq))? {
                out.push(rec);
            }
        }
        Ok(out)
    })
}

/// Every entry, all orgs and the gateway's own, newest first.
pub(crate) fn list_all(
    r: &impl Reader,
    before: Option<u64>,
    limit: usize,
    filter: &Filter,
) -> Result<AuditPage, TenantError> {
    page_of(limit, before, filter, |before, n| {
        let bound = before.map(keys::audit);
        r.scan_rev(Table::Audit, b"", bound.as_deref(), n)?
            .iter()
            .map(|(_, v)| Ok(<AuditRecord as crate::store::Record>::decode(v)?))
            .collect()
    })
}

/// What retention keeps of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Records older than this go (0: kept whatever their age).
    pub max_age_ms: u64,
    /// At most this many records are kept.
    pub max_records: u64,
}

/// Removes up to `chunk` of the oldest records that retention no longer keeps, with their
/// per-org index entries, and moves the checkpoint (the last removed record's seq and hash)
/// so the remaining chain still verifies from it. Returns how many went.
pub(crate) fn prune(
    t: &mut Txn<'_>,
    keep: Retention,
    now: u64,
    chunk: usize,
) -> Result<u64, StoreError> {
    let Some(head) = t.get::<AuditHeadRecord>(Table::Meta, keys::AUDIT_HEAD)? else {
        return Ok(0);
    };
    let oldest_kept_seq = head.seq.saturating_sub(keep.max_records) + 1;
    let cutoff = (keep.max_age_ms > 0).then(|| now.saturating_sub(keep.max_age_ms));
    let mut last: Option<AuditHeadRecord> = None;
    let mut n = 0;
    for (k, v) in t.scan(Table::Audit, b"", None, chunk)? {
        let rec = AuditRecord::decode(&v)?;
        // The newest record (the head) always stays, so the chain never becomes empty.
        let too_old = cutoff.is_some_and(|c| rec.time_ms < c);
        if rec.seq >= head.seq || !(too_old || rec.seq < oldest_kept_seq) {
            break;
        }
        t.delete(Table::Audit, k);
        if let Some(uid) = rec.org_uid {
            t.delete(Table::AuditByOrg, keys::audit_by_org(&uid, rec.seq));
        }
        last = Some(AuditHeadRecord {
            seq: rec.seq,
            hash: rec.hash,
        });
        n += 1;
    }
    if let Some(cp) = last {
        t.put(Table::Meta, keys::AUDIT_CHECKPOINT.to_vec(), &cp)?;
    }
    Ok(n)
}

/// Result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainReport {
    Intact {
        records: u64,
        /// The retention checkpoint the walk started from, if records were pruned.
        from_seq: Option<u64>,
    },
    Broken {
        seq: u64,
        reason: &'static str,
        checked: u64,
    },
}

/// Walks every record from the first; reports the first broken link. `progress` is called
/// every 10,000 records with the count so far.
pub(crate) fn verify_chain(
    r: &impl Reader,
    mut progress: impl FnMut(u64),
) -> Result<ChainReport, TenantError> {
    // After retention pruned the oldest records, the chain resumes from the checkpoint.
    let checkpoint: Option<AuditHeadRecord> = r.get(Table::Meta, keys::AUDIT_CHECKPOINT)?;
    let (mut prev, first) = match &checkpoint {
        Some(c) => (c.hash, c.seq + 1),
        None => ([0u8; 32], 1),
    };
    let mut expect_seq = first;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = r.scan(Table::Audit, b"", after.as_deref(), 1024)?;
        if page.is_empty() {
            break;
        }
        for (k, v) in &page {
            let checked = expect_seq - first;
            let rec = match AuditRecord::decode(v) {
                Ok(rec) => rec,
                Err(_) => {
                    return Ok(ChainReport::Broken {
                        seq: expect_seq,
                        reason: "record unreadable",
                        checked,
                    })
                }
            };
            if k.as_slice() != keys::audit(rec.seq).as_slice() || rec.seq != expect_seq {
                return Ok(ChainReport::Broken {
                    seq: expect_seq,
                    reason: "sequence gap or record moved",
                    checked,
                });
            }
            if rec.prev_hash != prev {
                return Ok(ChainReport::Broken {
                    seq: rec.seq,
                    reason: "previous-hash link does not match",
                    checked,
                });
            }
            if chain_hash(&rec) != rec.hash {
                return Ok(ChainReport::Broken {
                    seq: rec.seq,
                    reason: "record content does not match its hash",
                    checked,
                });
            }
            prev = rec.hash;
            expect_seq += 1;
            if (expect_seq - first) % 10_000 == 0 {
                progress(expect_seq - first);
            }
        }
        after = page.last().map(|(k, _)| k.clone());
    }
    let records = expect_seq - first;
    let from_seq = checkpoint.map(|c| c.seq + 1);
    let head: Option<AuditHeadRecord> = r.get(Table::Meta, keys::AUDIT_HEAD)?;
    match head {
        None if records == 0 => Ok(ChainReport::Intact { records, from_seq }),
        Some(h) if h.seq == expect_seq - 1 && h.hash == prev => {
            Ok(ChainReport::Intact { records, from_seq })
        }
        _ => Ok(ChainReport::Broken {
            seq: expect_seq,
            reason: "chain head does not match the last record (records removed from the end)",
            checked: records,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn actor() -> Actor {
        Actor {
            id: "admin".into(),
            role: "admin",
        }
    }

    fn with_store(
        f: impl FnOnce(Store) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb"), &StoreOptions::default(), None).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f(s));
    }

    async fn append_n(s: &Store, n: usize, uid: [u8; 16]) {
        for i in 0..n {
            append_one(s, actor(), "org.update", uid, i).await;
        }
    }

    async fn append_one(s: &Store, a: Actor, action: &'static str, uid: [u8; 16], i: usize) {
        s.write(move |t| -> Result<(), StoreError> {
            let target = format!("org/acme/{i}");
            append(
                t,
                Event {
                    org: Some(("acme", uid)),
                    actor: &a,
                    action,
                    target: &target,
                    outcome: "ok",
                },
            )?;
            Ok(())
        })
        .await
        .unwrap();
    }

    #[test]
    fn retention_prunes_the_oldest_and_the_rest_verifies_from_the_checkpoint() {
        with_store(|s| {
            Box::pin(async move {
                append_n(&s, 20, [1; 16]).await;
                let keep = Retention {
                    max_age_ms: 0,
                    max_records: 5,
                };
                let n = s.write(move |t| prune(t, keep, now_ms(), 6)).await.unwrap();
                assert_eq!(n, 6, "a chunk at a time");
                let n = s
                    .write(move |t| prune(t, keep, now_ms(), 100))
                    .await
                    .unwrap();
                assert_eq!(n, 9, "down to the newest five");
                let report = s.read(|r| verify_chain(r, |_| {})).await.unwrap();
                assert_eq!(
                    report,
                    ChainReport::Intact {
                        records: 5,
                        from_seq: Some(16)
                    }
                );
                let page = s
                    .read(|r| list_for_org(r, &[1; 16], None, 100, &Filter::default()))
                    .await
                    .unwrap();
                assert_eq!(page.entries.len(), 5, "the org index went with them");
                // By age: everything older than now, except the head, which always stays.
                let old = Retention {
                    max_age_ms: 1,
                    max_records: 1000,
                };
                std::thread::sleep(std::time::Duration::from_millis(5));
                let n = s
                    .write(move |t| prune(t, old, now_ms(), 100))
                    .await
                    .unwrap();
                assert_eq!(n, 4);
                let report = s.read(|r| verify_chain(r, |_| {})).await.unwrap();
                assert_eq!(
                    report,
                    ChainReport::Intact {
                        records: 1,
                        from_seq: Some(20)
                    }
                );
                // Removing a record after the checkpoint is still caught.
                append_n(&s, 3, [1; 16]).await;
                s.write(|t| -> Result<(), StoreError> {
                    t.delete(Table::Audit, keys::audit(21));
                    Ok(())
                })
                .await
                .unwrap();
                let report = s.read(|r| verify_chain(r, |_| {})).await.unwrap();
                assert!(
                    matches!(report, ChainReport::Broken { seq: 21, .. }),
                    "{report:?}"
                );
            })
        });
    }

    #[test]
    fn intact_chain_verifies_and_pages_newest_first() {
        with_store(|s| {
            Box::pin(async move {
                append_n(&s, 5, [1; 16]).await;
                append_n(&s, 2, [2; 16]).await;
                let report = s.read(|r| verify_chain(r, |_| {})).await.unwrap();
                assert_eq!(
                    report,
                    ChainReport::Intact {
                        records: 7,
                        from_seq: None
                    }
                );
                let p1 = s
                    .read(|r| list_for_org(r, &[1; 16], None, 2, &Filter::default()))
                    .await
                    .unwrap();
                let seqs: Vec<u64> = p1.entries.iter().map(|e| e.seq).collect();
                assert_eq!(seqs, [5, 4]);
                assert_eq!(p1.next_before, Some(4));
                let p3 = s
                    .read(|r| list_for_org(r, &[1; 16], Some(2), 10, &Filter::default()))
                    .await
                    .unwrap();
                assert_eq!(p3.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
                assert_eq!(p3.next_before, None);
                let other = s
                    .read(|r| list_for_org(r, &[2; 16], None, 10, &Filter::default()))
                    .await
                    .unwrap();
                assert_eq!(other.entries.len(), 2);
                s.shutdown().await;
            })
        });
    }

    #[test]
    fn filters_keep_matching_entries_across_pages_and_say_where_to_go_on() {
        with_store(|s| {
            Box::pin(async move {
                for i in 0..300usize {
                    let a = Actor {
                        id: if i % 3 == 0 {
                            format!("token:ab{i}")
                        } else {
                            "admin".into()
                        },
                        role: "org-admin",
                    };
                    let action = if i % 10 == 0 {
                        "sink.create"
                    } else {
                        "org.update"
                    };
                    append_one(&s, a, action, [1; 16], i).await;
                }
                let sinks = Filter {
                    actor: None,
                    action: Some("SINK.".into()),
                };
                let p = s
                    .read(move |r| list_for_org(r, &[1; 16], None, 20, &sinks))
                    .await
                    .unwrap();
                // Every tenth record (i = 290, 280, …, 0 → seq i + 1), all 30 fit in one page of 20 + rest.
                assert_eq!(p.entries.len(), 20);
                assert!(p.entries.iter().all(|e| e.action == "sink.create"));
                assert_eq!(p.entries[0].seq, 291);
                assert_eq!(p.next_before, Some(p.entries[19].seq));
                let both = Filter {
                    actor: Some("token:AB".into()),
                    action: Some("sink.".into()),
                };
                let after = p.next_before;
                let rest = s
                    .read(move |r| list_for_org(r, &[1; 16], after, 100, &both))
                    .await
                    .unwrap();
                // i divisible by 30 and older than the first page's end: i = 90, 60, 30, 0.
                let seqs: Vec<u64> = rest.entries.iter().map(|e| e.seq).collect();
                assert_eq!(seqs, [91, 61, 31, 1]);
                assert_eq!(rest.next_before, None, "the start of the log");
                s.shutdown().await;
            })
        });
    }

    #[test]
    fn altered_record_is_reported_at_its_sequence_number() {
        with_store(|s| {
            Box::pin(async move {
                append_n(&s, 4, [1; 16]).await;
                s.write(|t| -> Result<(), StoreError> {
                    let mut rec: AuditRecord = t.get(Table::Audit, &keys::audit(3))?.unwrap();
                    rec.outcome = "forged".into();
                    t.put(Table::Audit, keys::audit(3), &rec)
                })
                .await
                .unwrap();
                let report = s.read(|r| verify_chain(r, |_| {})).await.unwrap();
                assert_eq!(
                    report,
                    ChainReport::Broken {
                        seq: 3,
                        reason: "record content does not match its hash",
                        checked: 2
                    }
                );
                s.shutdown().await;
            })
        });
    }

    #[test]
    fn removed_records_are_detected_in_the_middle_and_at_the_end() {
        with_store(|s| {
            Box::pin(async move {
                append_n(&s, 4, [1; 16]).await;
                s.write(|t| -> Result<(), StoreError> {
                    t.delete(Table::Audit, keys::audit(4));
                    Ok(())
                })
                .await
                .unwrap();
                let report = s.read(|r| verify_chain(r, |_| {})).await.unwrap();
                assert!(matches!(
                    report,
                    ChainReport::Broken {
                        seq: 4,
                        checked: 3,
                        ..
                    }
                ));
                s.write(|t| -> Result<(), StoreError> {
                    t.delete(Table::Audit, keys::audit(2));
                    Ok(())
                })
                .await
                .unwrap();
                let report = s.read(|r| verify_chain(r, |_| {})).await.unwrap();
                assert!(matches!(
                    report,
                    ChainReport::Broken {
                        seq: 2,
                        checked: 1,
                        ..
                    }
                ));
                s.shutdown().await;
            })
        });
    }
}
