//! What enrollment keeps, and for how long: each formation's peers (one per subject key, for
//! `max_peers_per_formation`), and the pruning of certificates and enrollment rows a grace
//! period (`RETENTION_GRACE_MS`, 7 days) after they expired or were decided, so neither the
//! inventory nor the peer count grows with devices long gone.

use crate::store::{keys, CertRecord, PendingRecord, Reader, Table, Txn};
use crate::tenant::TenantError;

/// Rows pruned per enrollment at most, so pruning never holds the writer for long.
const PRUNE_BATCH: usize = 64;

fn peer_key(org: &str, app: &str, subject: &[u8; 32]) -> Vec<u8> {
    keys::formation_row(org, app, subject)
}

/// The formation's peers: the stored count, or (first time) counted once.
fn peer_count(t: &Txn<'_>, formation: &[u8]) -> Result<u64, TenantError> {
    if let Some(v) = t.get_raw(Table::Meta, &keys::peer_count(formation))? {
        return Ok(v.try_into().map_or(0, u64::from_le_bytes));
    }
    Ok(t.scan(Table::Peers, formation, None, usize::MAX)?.len() as u64)
}

fn set_peer_count(t: &mut Txn<'_>, formation: &[u8], n: u64) {
    t.put_raw(
        Table::Meta,
        keys::peer_count(formation),
        n.to_le_bytes().to_vec(),
    );
}

fn peer_until(r: &impl Reader, key: &[u8]) -> Result<Option<u64>, TenantError> {
    Ok(r.get_raw(Table::Peers, key)?
        .map(|v| v.try_into().map_or(0, u64::from_le_bytes)))
}

/// Counts `subject` as a peer of the formation until `expires_ms`; a new subject past
/// `max_peers` is refused, naming the quota.
pub(crate) fn admit_peer(
    t: &mut Txn<'_>,
    org: &str,
    app: &str,
    subject: &[u8; 32],
    expires_ms: u64,
    max_peers: u32,
) -> Result<(), TenantError> {
    let key = peer_key(org, app, subject);
    let until = match peer_until(t, &key)? {
        Some(u) => u.max(expires_ms),
        None => {
            let prefix = keys::formation_row(org, app, b"");
            let n = peer_count(t, &prefix)?;
            if n >= u64::from(max_peers) {
                return Err(TenantError::QuotaExceeded {
                    quota: "max_peers_per_formation",
                    limit: max_peers,
                });
            }
            set_peer_count(t, &prefix, n + 1);
            expires_ms
        }
    };
    t.put_raw(Table::Peers, key, until.to_le_bytes().to_vec());
    Ok(())
}

/// Schedules a certificate row for pruning a grace period after it expires.
pub(crate) fn schedule_certificate(t: &mut Txn<'_>, row: &[u8], expires_ms: u64) {
    let when = expires_ms.saturating_add(keys::RETENTION_GRACE_MS);
    t.put_raw(
        Table::Expiry,
        keys::expiry(when, keys::EXPIRY_CERTIFICATE, row),
        Vec::new(),
    );
}

/// Schedules an enrollment row for pruning a grace period after `at_ms` (its expiry while
/// pending, its decision once decided).
pub(crate) fn schedule_enrollment(t: &mut Txn<'_>, row: &[u8], at_ms: u64) {
    let when = at_ms.saturating_add(keys::RETENTION_GRACE_MS);
    t.put_raw(
        Table::Expiry,
        keys::expiry(when, keys::EXPIRY_ENROLLMENT, row),
        Vec::new(),
    );
}

/// Whether the first key of a table keyed by a big-endian time is due by `now`: the common
/// case of nothing due then reads one row, not a batch.
pub(crate) fn first_due(t: &Txn<'_>, table: Table, now: u64) -> Result<bool, TenantError> {
    Ok(t.scan(table, b"", None, 1)?
        .first()
        .is_some_and(|(k, _)| key_time(k) <= now))
}

/// The big-endian time a replay or expiry key starts with (0 for a short key).
pub(crate) fn key_time(k: &[u8]) -> u64 {
    k.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Prunes what is due by `now`, a bounded batch per call. A row that was renewed, decided
/// later or is gone only loses its index entry.
pub(crate) fn prune(t: &mut Txn<'_>, now: u64) -> Result<u64, TenantError> {
    let mut pruned = 0;
    if !first_due(t, Table::Expiry, now)? {
        return Ok(0);
    }
    for (k, _) in t.scan(Table::Expiry, b"", None, PRUNE_BATCH)? {
        let when = key_time(&k);
        if when > now {
            break;
        }
        let kind = k.get(8).copied().unwrap_or(0);
        let row = k.get(9..).unwrap_or_default().to_vec();
        t.delete(Table::Expiry, k);
        let grace = keys::RETENTION_GRACE_MS;
        match kind {
            keys::EXPIRY_CERTIFICATE => {
                let Some(rec) = t.get::<CertRecord>(Table::Certificates, &row)? else {
                    continue;
                };
                if rec.expires_at_ms.saturating_add(grace) > now {
                    continue;
                }
                t.delete(Table::Certificates, row.clone());
                let mut peer = row[..row.len().saturating_sub(32)].to_vec();
                peer.extend_from_slice(&rec.subject);
                if peer_until(t, &peer)?.is_some_and(|u| u <= rec.expires_at_ms) {
                    t.delete(Table::Peers, peer);
                    let formation = &row[..row.len().saturating_sub(32)];
                    let n = peer_count(t, formation)?;
                    set_peer_count(t, formation, n.saturating_sub(1));
                }
                pruned += 1;
            }
            keys::EXPIRY_ENROLLMENT => {
                let Some(rec) = t.get::<PendingRecord>(Table::Enrollments, &row)? else {
                    continue;
                };
                let at = rec.decided_at_ms.unwrap_or(rec.expires_at_ms);
                if at.saturating_add(grace) > now {
                    continue;
                }
                t.delete(Table::Enrollments, row);
                pruned += 1;
            }
            _ => {}
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn cert(subject: u8, expires: u64) -> CertRecord {
        CertRecord {
            certificate: vec![1, 2, 3],
            subject: [subject; 32],
            node_id: "n".into(),
            tier: 0,
            permissions: 0,
            issued_at_ms: 0,
            expires_at_ms: expires,
            granted_via: "open".into(),
        }
    }

    fn issue(
        t: &mut Txn<'_>,
        subject: u8,
        fp: u8,
        expires: u64,
        max: u32,
    ) -> Result<(), TenantError> {
        let rec = cert(subject, expires);
        admit_peer(t, "o", "a", &rec.subject, expires, max)?;
        let key = keys::formation_row("o", "a", &[fp; 32]);
        schedule_certificate(t, &key, expires);
        t.put(Table::Certificates, key, &rec)?;
        Ok(())
    }

    #[test]
    fn peers_are_capped_and_expired_certificates_leave_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&dir.path().join("s.redb"), &StoreOptions::default(), None).unwrap();
        let day = 86_400_000;
        // One operation per enrollment, as the gateway does.
        for (subject, fp, expires) in [(1, 1, day), (2, 2, day), (1, 3, 2 * day)] {
            store
                .write_blocking(move |t| issue(t, subject, fp, expires, 2))
                .unwrap();
        }
        let third = store.write_blocking(move |t| issue(t, 3, 4, day, 2));
        assert!(
            matches!(
                third,
                Err(TenantError::QuotaExceeded {
                    quota: "max_peers_per_formation",
                    limit: 2
                })
            ),
            "a renewal of a known key is no new peer; a third key is one too many: {third:?}"
        );
        let grace = keys::RETENTION_GRACE_MS;
        let n = store
            .write_blocking(move |t| prune(t, day + grace - 1))
            .unwrap();
        assert_eq!(n, 0, "not before the grace has passed");
        let n = store
            .write_blocking(move |t| prune(t, day + grace))
            .unwrap();
        assert_eq!(n, 2, "both certificates that expired on day 1");
        let left = store
            .write_blocking(move |t| -> Result<usize, TenantError> {
                Ok(t.scan(Table::Certificates, b"", None, 10)?.len())
            })
            .unwrap();
        assert_eq!(left, 1);
        // Subject 2 is gone, subject 1 stays with its renewal: a new key fits again.
        store
            .write_blocking(move |t| issue(t, 3, 5, 3 * day, 2))
            .unwrap();
        let n = store
            .write_blocking(move |t| prune(t, 4 * day + grace))
            .unwrap();
        assert_eq!(n, 2);
        let peers = store
            .write_blocking(move |t| -> Result<usize, TenantError> {
                Ok(t.scan(Table::Peers, b"", None, 10)?.len())
            })
            .unwrap();
        assert_eq!(peers, 0);
    }
}
