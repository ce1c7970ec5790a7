//! One append: the changes that differ from the last captured state become events in their
//! org's log, inside the org's share of the quota.

use super::orgs::{self, OrgFill};
use super::{
    doc_key, put_u64, read_u64, Appended, FormationRef, FullPolicy, OutboxConfig, BYTES, DROPPED,
    NEXT_LSN,
};
use crate::cdc::event::{canonical, Change, DocState, Op};
use crate::cdc::CdcError;
use crate::store::{DocRecord, EventRecord, Reader, Record, Table, Txn};

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Dropped {
    pub events: u64,
    pub bytes: u64,
}

pub(super) struct Done {
    pub outcomes: Vec<Appended>,
    pub added: u64,
    pub dropped: Dropped,
    pub last: Option<u64>,
    pub fill: OrgFill,
}

/// Meta key of a formation's count of live documents.
pub(super) fn doc_count_key(formation_uid: &[u8; 16]) -> Vec<u8> {
    let mut k = b"docs\0".to_vec();
    k.extend_from_slice(formation_uid);
    k
}

/// The formation's live documents: the stored count, or (first time) counted once.
fn doc_count(t: &Txn<'_>, formation_uid: &[u8; 16]) -> Result<u64, CdcError> {
    if let Some(v) = t.get_raw(Table::Meta, &doc_count_key(formation_uid))? {
        return Ok(v.try_into().map_or(0, u64::from_le_bytes));
    }
    let mut n = 0;
    for (_, v) in t.scan(Table::Docs, formation_uid, None, usize::MAX)? {
        if DocRecord::decode(&v)?.content_hash.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// A change made ready before the write transaction, on the caller's thread: its document
/// key, its content hash and its org log value already encoded, so the writer thread only
/// reads, compares, sets the seq and inserts (for a change that turns out to be no change,
/// the encoding is wasted off the writer's critical path).
pub(super) struct Prepared {
    key: Vec<u8>,
    /// `None` for a delete.
    hash: Option<[u8; 32]>,
    /// Room for the org seq, then the event record.
    event: Vec<u8>,
}

pub(super) fn prepare(
    src: &FormationRef,
    changes: Vec<Change>,
    now: u64,
) -> Result<Vec<Prepared>, CdcError> {
    changes
        .into_iter()
        .map(|c| {
            let key = doc_key(&src.formation_uid, &c.collection, &c.doc_id);
            let encrypted = matches!(c.state, DocState::Encrypted(_));
            let (op, data, hash) = match canonical(c.state) {
                Some((bytes, h)) => (Op::Upsert, Some(bytes), Some(h)),
                None => (Op::Delete, None, None),
            };
            let rec = EventRecord {
                org_id: src.org_id.clone(),
                app_id: src.app_id.clone(),
                encrypted,
                collection: c.collection,
                doc_id: c.doc_id,
                op: op.to_byte(),
                data,
                content_hash: hash.unwrap_or([0; 32]),
                observed_ms: now,
                org_uid: src.org_uid,
            };
            Ok(Prepared {
                key,
                hash,
                event: rec.encode_after(orgs::SEQ_BYTES)?,
            })
        })
        .collect()
}

pub(super) fn append_in(
    t: &mut Txn<'_>,
    src: &FormationRef,
    changes: Vec<Prepared>,
    cfg: OutboxConfig,
    share: u64,
) -> Result<Done, CdcError> {
    let org = src.org_uid;
    let mut next = read_u64(t, NEXT_LSN)?.max(1);
    let used = read_u64(t, BYTES)?;
    let mut fill = orgs::read_fill(t, &org)?;
    let mut live = doc_count(t, &src.formation_uid)?;
    let mut added = 0u64;
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut last = None;
    // Every document's last state in one read; a document changed twice in this append
    // sees its first change in the transaction's buffer.
    let keys: Vec<&[u8]> = changes.iter().map(|p| p.key.as_slice()).collect();
    let stored = t.get_many_raw(Table::Docs, &keys)?;
    for (p, stored) in changes.into_iter().zip(stored) {
        let Prepared {
            key,
            hash: new_hash,
            event: mut value,
        } = p;
        let raw = match t.buffered(Table::Docs, &key) {
            Some(own) => own.clone(),
            None => stored,
        };
        let prev: Option<DocRecord> = raw.map(|raw| DocRecord::decode(&raw)).transpose()?;
        // A delete of a document never captured announces nothing: there is no state to end.
        let unchanged = match &prev {
            Some(p) => p.content_hash == new_hash,
            None => new_hash.is_none(),
        };
        if unchanged {
            outcomes.push(Appended::Unchanged);
            continue;
        }
        let was_live = prev.as_ref().is_some_and(|p| p.content_hash.is_some());
        match (was_live, new_hash.is_some()) {
            (false, true) => {
                if live >= src.max_documents {
                    return Err(CdcError::DocumentQuota {
                        limit: src.max_documents,
                    });
                }
                live += 1;
            }
            (true, false) => live = live.saturating_sub(1),
            _ => {}
        }
        added += orgs::stored_bytes(value.len().saturating_sub(orgs::SEQ_BYTES));
        fill.seq += 1;
        fill.events += 1;
        fill.last_lsn = next;
        if let Some(room) = value.get_mut(..orgs::SEQ_BYTES) {
            room.copy_from_slice(&fill.seq.to_le_bytes());
        }
        t.put_raw(Table::OrgLog, orgs::log_key(&org, next), value);
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
    // The org's share bounds it; the whole quota is a backstop while shares change.
    let org_over = |freed: u64| fill.bytes.saturating_sub(freed) + added > share;
    let all_over = |freed: u64| used.saturating_sub(freed) + added > cfg.quota_bytes;
    if org_over(0) || all_over(0) {
        if added > share || cfg.policy == FullPolicy::Block {
            return Err(CdcError::Full {
                used: fill.bytes,
                quota: share,
            });
        }
        // Only the org's own oldest events make room; the events of this append are not
        // yet visible to the scan.
        let (n, b) = orgs::drop_oldest(t, &org, |freed| org_over(freed) || all_over(freed))?;
        if org_over(b) || all_over(b) {
            return Err(CdcError::Full {
                used: fill.bytes,
                quota: share,
            });
        }
        dropped = Dropped {
            events: n,
            bytes: b,
        };
        put_u64(t, DROPPED, read_u64(t, DROPPED)? + n);
    }
    t.put_raw(
        Table::Meta,
        doc_count_key(&src.formation_uid),
        live.to_le_bytes().to_vec(),
    );
    fill.bytes = fill.bytes.saturating_sub(dropped.bytes) + added;
    fill.events = fill.events.saturating_sub(dropped.events);
    orgs::put_fill(t, &org, fill);
    put_u64(t, NEXT_LSN, next);
    put_u64(t, BYTES, used.saturating_sub(dropped.bytes) + added);
    Ok(Done {
        outcomes,
        added,
        dropped,
        last,
        fill,
    })
}
