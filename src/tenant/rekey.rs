//! Re-wrapping every sealed record under the keyring's current KEK (a rotation or a move to
//! another provider). Each record commits on its own and only if unchanged meanwhile, so a
//! kill at any point leaves every record sealed under either the old KEK or the new one, and
//! running again resumes.

use super::service::Tenancy;
use super::TenantError;
use crate::keys::RecordIdentity;
use crate::store::{Reader, Table};

const PAGE: usize = 256;
/// Every sealed record kind is at codec version 1.
const CODEC: u8 = 1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub total: u64,
    pub rewrapped: u64,
    pub already_current: u64,
}

/// `org 0x00 app 0x00 kind` → the parts.
fn identity_of(key: &[u8]) -> Option<(String, String, String)> {
    let mut parts = key.splitn(3, |b| *b == 0);
    let org = std::str::from_utf8(parts.next()?).ok()?;
    let app = std::str::from_utf8(parts.next()?).ok()?;
    let kind = std::str::from_utf8(parts.next()?).ok()?;
    Some((org.to_owned(), app.to_owned(), kind.to_owned()))
}

/// The uid a sealed record is bound to: its formation's for the kinds a formation owns
/// (genesis, sidecar secrets), none for the kinds keyed by an id random per creation.
pub(crate) fn owner_uid(r: &impl Reader, sealed_key: &[u8]) -> Result<[u8; 16], TenantError> {
    let Some((org, app, kind)) = identity_of(sealed_key) else {
        return Ok([0; 16]);
    };
    let owned_by_formation = [
        super::formations::GENESIS_KIND,
        super::sources::TOKEN_KIND,
        super::sources::CLIENT_KEY_KIND,
    ]
    .contains(&kind.as_str());
    if !owned_by_formation {
        return Ok([0; 16]);
    }
    let f: Option<crate::store::FormationRecord> = r.get(
        Table::Formations,
        &crate::store::keys::formation(&org, &app),
    )?;
    Ok(f.map_or([0; 16], |f| f.formation_uid))
}

impl Tenancy {
    /// Re-wraps (or, for old-format records, re-seals) every record not under the current
    /// KEK; `progress(done, total)` after each record. With `dry_run`, only counts.
    pub async fn rewrap_all(
        &self,
        dry_run: bool,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<RewrapReport, TenantError> {
        let total = self.store.read(|r| r.count(Table::Sealed)).await?;
        let mut report = RewrapReport {
            total,
            ..Default::default()
        };
        let mut after: Option<Vec<u8>> = None;
        loop {
            let cursor = after.clone();
            let page = self
                .store
                .read(move |r| r.scan(Table::Sealed, b"", cursor.as_deref(), PAGE))
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, v) in page {
                if self.keyring.is_current(&v)? {
                    report.already_current += 1;
                } else if dry_run {
                    report.rewrapped += 1;
                } else {
                    let (org, app, kind) =
                        identity_of(&k).ok_or(crate::store::StoreError::Decode {
                            kind: "sealed key",
                            reason: "not org/app/kind",
                        })?;
                    let key = k.clone();
                    let uid = self.store.read(move |r| owner_uid(r, &key)).await?;
                    let id = RecordIdentity {
                        org: &org,
                        app: &app,
                        kind: &kind,
                        codec_version: CODEC,
                        uid,
                    };
                    let new = self.keyring.rewrap(id, &v).await?;
                    self.store
                        .write(move |t| -> Result<(), TenantError> {
                            if t.get_raw(Table::Sealed, &k)?.as_deref() == Some(v.as_slice()) {
                                t.put_raw(Table::Sealed, k, new);
                            }
                            Ok(())
                        })
                        .await?;
                    report.rewrapped += 1;
                }
                progress(report.rewrapped + report.already_current, total);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::identity_of;

    #[test]
    fn sealed_keys_split_into_their_identity() {
        assert_eq!(
            identity_of(b"acme\0mesh\0genesis"),
            Some(("acme".into(), "mesh".into(), "genesis".into()))
        );
        assert_eq!(
            identity_of(b"acme\0sink.0011\0sink-secret").map(|i| i.1),
            Some("sink.0011".into())
        );
        assert_eq!(identity_of(b"no-separators"), None);
    }
}
