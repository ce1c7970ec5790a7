//! Each org's slice of the outbox: the `org_log` (org uid ‖ LSN → org seq ‖ event record),
//! the org's fill (last seq, bytes held) and its share of the byte quota.
//!
//! Design constraints:
//! - A sink, a live stream or a status figure reads only its own org's key range, so an
//!   event of one org is never read on behalf of another (compared by immutable uid).
//! - An org's seq counts its events in LSN order; the backlog after a cursor is the org's
//!   last seq minus the seq at the cursor, with no scan.
//! - Shares sum to the quota: one org's dead sink fills only its own share.

use std::collections::HashMap;

use super::{lsn_of, put_u64, read_u64, EVENT_OVERHEAD};
use crate::cdc::CdcError;
use crate::store::{EventRecord, Reader, Record, Table, Txn};

/// Meta key prefix of an org's fill.
const FILL: &[u8] = b"org-fill\0";
/// Set once every event is in the org log (events of older schemas are moved first).
pub(super) const LOGGED: &[u8] = b"org-log";
/// Events moved per transaction while moving older events.
const STAMP_CHUNK: usize = 2048;
/// Bytes of the org seq before the event record in a log value.
pub(super) const SEQ_BYTES: usize = 8;

/// One org's figures, kept in memory and in `meta` (committed with the events they count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgFill {
    /// Seq of the org's newest event (its events ever appended and kept at append time).
    pub seq: u64,
    /// Bytes its retained events take, overhead included.
    pub bytes: u64,
    /// How many of its events the outbox holds.
    pub events: u64,
    /// LSN of its newest event.
    pub last_lsn: u64,
}

pub(super) fn fill_key(org_uid: &[u8; 16]) -> Vec<u8> {
    let mut k = FILL.to_vec();
    k.extend_from_slice(org_uid);
    k
}

pub(super) fn read_fill(r: &impl Reader, org_uid: &[u8; 16]) -> Result<OrgFill, CdcError> {
    let v = r
        .get_raw(Table::Meta, &fill_key(org_uid))?
        .unwrap_or_default();
    let at = |i: usize| {
        v.get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    Ok(OrgFill {
        seq: at(0),
        bytes: at(1),
        events: at(2),
        last_lsn: at(3),
    })
}

pub(super) fn put_fill(t: &mut Txn<'_>, org_uid: &[u8; 16], f: OrgFill) {
    let v: Vec<u8> = [f.seq, f.bytes, f.events, f.last_lsn]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    t.put_raw(Table::Meta, fill_key(org_uid), v);
}

/// Every org's fill, as stored.
pub(super) fn all_fills(r: &impl Reader) -> Result<HashMap<[u8; 16], OrgFill>, CdcError> {
    let mut out = HashMap::new();
    for (k, _) in r.scan(Table::Meta, FILL, None, usize::MAX)? {
        if let Ok(uid) = <[u8; 16]>::try_from(&k[FILL.len()..]) {
            out.insert(uid, read_fill(r, &uid)?);
        }
    }
    Ok(out)
}

pub(super) fn log_key(org_uid: &[u8; 16], lsn: u64) -> Vec<u8> {
    let mut k = org_uid.to_vec();
    k.extend_from_slice(&lsn.to_be_bytes());
    k
}

/// A log value whose first [`SEQ_BYTES`] are room for the seq: the record encoded ahead
/// of the write transaction, the seq set in it.
pub(super) fn log_value(seq: u64, record: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SEQ_BYTES + record.len());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(record);
    v
}

/// A log value's org seq and event record.
pub(super) fn parse_log(v: &[u8]) -> (u64, &[u8]) {
    let seq = v
        .get(..SEQ_BYTES)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    (seq, v.get(SEQ_BYTES..).unwrap_or_default())
}

/// What an event takes against the quota: its record and the per-event overhead.
pub(super) fn stored_bytes(record_len: usize) -> u64 {
    record_len as u64 + EVENT_OVERHEAD
}

/// The org's events after `after`, oldest first: (lsn, event, stored bytes, org seq).
pub(super) fn read_after(
    r: &impl Reader,
    org_uid: &[u8; 16],
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, EventRecord, usize, u64)>, CdcError> {
    let from = log_key(org_uid, after);
    let mut out = Vec::new();
    for (k, v) in r.scan(Table::OrgLog, org_uid, Some(&from), limit)? {
        let (seq, raw) = parse_log(&v);
        let ev = EventRecord::decode(raw)?;
        // The key is the org's; the record must agree, or nothing is delivered from it.
        if ev.org_uid != *org_uid {
            continue;
        }
        out.push((lsn_of(&k), ev, raw.len(), seq));
    }
    Ok(out)
}

/// How many of the org's events have an LSN at or below `cursor` (its seq at the cursor).
pub(super) fn seq_at(r: &impl Reader, org_uid: &[u8; 16], cursor: u64) -> Result<u64, CdcError> {
    let from = log_key(org_uid, cursor);
    if let Some((_, v)) = r.scan(Table::OrgLog, org_uid, Some(&from), 1)?.first() {
        return Ok(parse_log(v).0.saturating_sub(1));
    }
    Ok(read_fill(r, org_uid)?.seq)
}

/// The org's seq at a resume point `after`, when it can be known: the event at `after` is the
/// org's and still held, or `after` lies among the org's held events. `None` when events of
/// the org after `after` may have left the outbox (the caller reports a possible gap).
pub(super) fn resume_seq(
    r: &impl Reader,
    org_uid: &[u8; 16],
    after: u64,
) -> Result<Option<u64>, CdcError> {
    if let Some(v) = r.get_raw(Table::OrgLog, &log_key(org_uid, after))? {
        return Ok(Some(parse_log(&v).0));
    }
    match r.scan(Table::OrgLog, org_uid, None, 1)?.first() {
        Some((k, _)) if lsn_of(k) < after => Ok(Some(seq_at(r, org_uid, after)?)),
        _ => Ok(None),
    }
}

/// Removes the org's oldest events while `over` says it holds too much; returns (events,
/// bytes) removed. Deletes stay pending until the operation ends, so it pages on by key.
pub(super) fn drop_oldest(
    t: &mut Txn<'_>,
    org_uid: &[u8; 16],
    mut over: impl FnMut(u64) -> bool,
) -> Result<(u64, u64), CdcError> {
    let (mut n, mut freed) = (0u64, 0u64);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = t.scan(Table::OrgLog, org_uid, after.as_deref(), 256)?;
        if page.is_empty() {
            return Ok((n, freed));
        }
        for (k, v) in page {
            if !over(freed) {
                return Ok((n, freed));
            }
            after = Some(k.clone());
            t.delete(Table::OrgLog, k);
            n += 1;
            freed += stored_bytes(parse_log(&v).1.len());
        }
    }
}

/// Removes up to `limit` of the org's events at or below `floor`; returns (events, bytes).
pub(super) fn trim_to(
    t: &mut Txn<'_>,
    org_uid: &[u8; 16],
    floor: u64,
    limit: usize,
) -> Result<(u64, u64), CdcError> {
    let (mut n, mut freed) = (0u64, 0u64);
    for (k, v) in t.scan(Table::OrgLog, org_uid, None, limit)? {
        if lsn_of(&k) > floor {
            break;
        }
        t.delete(Table::OrgLog, k);
        n += 1;
        freed += stored_bytes(parse_log(&v).1.len());
    }
    if n > 0 {
        let mut f = read_fill(t, org_uid)?;
        f.bytes = f.bytes.saturating_sub(freed);
        f.events = f.events.saturating_sub(n);
        put_fill(t, org_uid, f);
    }
    Ok((n, freed))
}

/// What moving older events did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    /// Events moved into their org's log.
    pub moved: u64,
    /// Events of orgs that no longer exist: nothing could deliver them.
    pub orphaned: u64,
}

/// Moves one chunk of the oldest events of schemas 1 and 2 (`events`, indexed in
/// `org_events` or, before that, not at all and perhaps without an org uid) into the org
/// log, resolving org names to uids with `orgs`. An event already indexed keeps its seq; one
/// that was not gets the org's next. Returns the chunk's figures and whether any were left.
pub(super) fn stamp_chunk(
    t: &mut Txn<'_>,
    orgs: &HashMap<String, [u8; 16]>,
) -> Result<(Stamped, bool), CdcError> {
    let mut st = Stamped::default();
    let rows = t.scan(Table::Events, b"", None, STAMP_CHUNK)?;
    if rows.is_empty() {
        return Ok((st, false));
    }
    let mut fills: HashMap<[u8; 16], OrgFill> = HashMap::new();
    // The global byte count holds the old sizes: take those off and add the new ones.
    let (mut old, mut new) = (0u64, 0u64);
    for (k, v) in rows {
        let lsn = lsn_of(&k);
        t.delete(Table::Events, k);
        let mut ev = EventRecord::decode(&v)?;
        if ev.org_uid == [0; 16] {
            match orgs.get(&ev.org_id) {
                Some(uid) => ev.org_uid = *uid,
                None => {
                    old += stored_bytes(v.len());
                    st.orphaned += 1;
                    continue;
                }
            }
        }
        let uid = ev.org_uid;
        let key = log_key(&uid, lsn);
        st.moved += 1;
        if let Some(index) = t.get_raw(Table::OrgEvents, &key)? {
            // Counted in its org's fill already. A schema 2 index entry starts with the seq,
            // as a log value does (then its stored bytes, not needed).
            t.delete(Table::OrgEvents, key.clone());
            t.put_raw(Table::OrgLog, key, log_value(parse_log(&index).0, &v));
            continue;
        }
        let raw = ev.encode()?;
        let b = stored_bytes(raw.len());
        let fill = match fills.get(&uid) {
            Some(f) => *f,
            None => read_fill(t, &uid)?,
        };
        let fill = OrgFill {
            seq: fill.seq + 1,
            bytes: fill.bytes + b,
            events: fill.events + 1,
            last_lsn: lsn,
        };
        fills.insert(uid, fill);
        t.put_raw(Table::OrgLog, key, log_value(fill.seq, &raw));
        old += v.len() as u64;
        new += raw.len() as u64;
    }
    for (uid, f) in fills {
        put_fill(t, &uid, f);
    }
    if old != new {
        let used = (read_u64(t, super::BYTES)? + new).saturating_sub(old);
        put_u64(t, super::BYTES, used);
    }
    Ok((st, true))
}

/// Each org's share of `quota`: equal shares of the whole, so their sum never passes it.
pub fn share_of(quota: u64, orgs: u64) -> u64 {
    quota / orgs.max(1)
}
