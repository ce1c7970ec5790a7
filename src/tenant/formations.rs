//! Formations: one Peat mesh each, with its genesis sealed under the key provider.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::formation_cache::WithFormation;
use super::orgs::{check_quota, load_org};
use super::service::Tenancy;
use super::{now_ms, validate_id, OrgScope, TenantError};
use crate::keys::{random_secret32, RecordIdentity};
use crate::mesh::{MembershipPolicy, MeshGenesis};
use crate::store::{keys, FormationRecord, Reader, Record, Seen, Table, Txn};

/// Largest page of `GET /orgs/{org}/formations`.
pub const MAX_FORMATION_PAGE: usize = 1000;
pub(crate) const GENESIS_KIND: &str = "genesis";
const GENESIS_CODEC: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formation {
    pub org_id: String,
    pub app_id: String,
    pub mesh_id: String,
    pub policy: MembershipPolicy,
    pub authority_public_key: [u8; 32],
    pub created_at_ms: u64,
    pub adopted: bool,
    /// Random per creation; keys the formation's CDC document cursors.
    pub formation_uid: [u8; 16],
}

impl TryFrom<FormationRecord> for Formation {
    type Error = TenantError;
    fn try_from(r: FormationRecord) -> Result<Self, TenantError> {
        Ok(Self {
            policy: MembershipPolicy::from_byte("formation record", r.policy)?,
            org_id: r.org_id,
            app_id: r.app_id,
            mesh_id: r.mesh_id,
            authority_public_key: r.authority_public_key,
            created_at_ms: r.created_at_ms,
            adopted: r.adopted,
            formation_uid: r.formation_uid,
        })
    }
}

pub struct NewFormation {
    pub app_id: String,
    pub policy: Option<MembershipPolicy>,
    /// A peat-mesh genesis encoding to adopt instead of generating a new one.
    pub genesis: Option<Zeroizing<Vec<u8>>>,
}

/// What `GET …/credentials` hands out. Holds the formation secret: never log it.
pub struct CredentialsExport {
    pub mesh_id: String,
    pub formation_secret: Zeroizing<[u8; 32]>,
    pub authority_public_key: [u8; 32],
    pub credentials: Zeroizing<Vec<u8>>,
}

/// A genesis is bound to its formation's uid: a formation re-created under the same name
/// cannot open its predecessor's.
pub(crate) fn genesis_identity<'a>(
    org: &'a str,
    app: &'a str,
    uid: [u8; 16],
) -> RecordIdentity<'a> {
    RecordIdentity {
        org,
        app,
        kind: GENESIS_KIND,
        codec_version: GENESIS_CODEC,
        uid,
    }
}

/// Removes every enrollment row under `prefix` (a formation's or an org's): bootstrap tokens
/// die with their formation, and so do its certificates, revocations and approvals.
pub(crate) fn delete_enrollment_rows(t: &mut Txn<'_>, prefix: &[u8]) -> Result<(), TenantError> {
    for (k, _) in t.scan(Table::BootTokensByFormation, prefix, None, usize::MAX)? {
        if let Some(id) = k.rsplit(|b| *b == 0).next() {
            t.delete(Table::BootTokens, id.to_vec());
        }
        t.delete(Table::BootTokensByFormation, k);
    }
    t.delete_prefix(Table::Certificates, prefix)?;
    t.delete_prefix(Table::Revocations, prefix)?;
    t.delete_prefix(Table::Enrollments, prefix)?;
    t.delete_prefix(Table::Peers, prefix)?;
    t.delete_prefix(Table::Meta, &keys::peer_count(prefix))?;
    Ok(())
}

impl Tenancy {
    pub async fn create_formation(
        &self,
        scope: &OrgScope,
        new: NewFormation,
    ) -> Result<Formation, TenantError> {
        validate_id("app_id", &new.app_id)?;
        let org_id = scope.org_id().to_owned();
        let (genesis, adopted) = match &new.genesis {
            Some(bytes) => {
                let g = MeshGenesis::decode(bytes)
                    .map_err(|e| TenantError::invalid("genesis", e.to_string()))?;
                if g.mesh_name() != new.app_id {
                    return Err(TenantError::invalid(
                        "genesis",
                        "its mesh name must equal app_id",
                    ));
                }
                if new.policy.is_some_and(|p| p != g.policy()) {
                    return Err(TenantError::invalid(
                        "enrollment_policy",
                        "differs from the adopted genesis's policy",
                    ));
                }
                (g, true)
            }
            None => (
                MeshGenesis::with_seed(
                    &new.app_id,
                    random_secret32()?,
                    now_ms(),
                    new.policy.unwrap_or_default(),
                )?,
                false,
            ),
        };
        let encoded = genesis.encode()?;
        let formation_uid = super::ids::random_uid()?;
        let sealed = self
            .keyring
            .seal(
                genesis_identity(&org_id, &new.app_id, formation_uid),
                &encoded,
            )
            .await?;
        let rec = FormationRecord {
            org_id: org_id.clone(),
            app_id: new.app_id.clone(),
            formation_uid,
            mesh_id: genesis.mesh_id(),
            authority_public_key: genesis.authority_public_key(),
            policy: genesis.policy().to_byte(),
            created_at_ms: now_ms(),
            adopted,
        };
        let action = if adopted {
            "formation.adopt"
        } else {
            "formation.create"
        };
        let target = format!("org/{org_id}/formation/{}", new.app_id);
        self.mutate(
            scope.actor(),
            action,
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                let key = keys::formation(&org_id, &rec.app_id);
                if t.exists(Table::Formations, &key)? {
                    return Err(TenantError::Conflict { what: "formation" });
                }
                check_quota(
                    t,
                    Table::Formations,
                    &org_id,
                    "max_formations",
                    org.quotas.max_formations,
                )?;
                t.put(Table::Formations, key, &rec)?;
                t.put_raw(
                    Table::Sealed,
                    keys::sealed(&org_id, &rec.app_id, GENESIS_KIND),
                    sealed,
                );
                Ok((Formation::try_from(rec)?, Some((org.org_id, org.org_uid))))
            },
        )
        .await
    }

    pub async fn list_formations(
        &self,
        scope: &OrgScope,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Formation>, TenantError> {
        let org_id = scope.org_id().to_owned();
        let limit = limit.clamp(1, MAX_FORMATION_PAGE);
        self.store
            .read(move |r| {
                load_org(r, &org_id)?;
                let prefix = keys::org_prefix(&org_id);
                let after_key = after.map(|a| keys::formation(&org_id, &a));
                r.scan(Table::Formations, &prefix, after_key.as_deref(), limit)?
                    .into_iter()
                    .map(|(_, v)| Formation::try_from(FormationRecord::decode(&v)?))
                    .collect()
            })
            .await
    }

    pub async fn get_formation(
        &self,
        scope: &OrgScope,
        app_id: &str,
    ) -> Result<Formation, TenantError> {
        let key = keys::formation(scope.org_id(), app_id);
        let rec: Option<FormationRecord> = self
            .store
            .read(move |r| r.get(Table::Formations, &key))
            .await
            .map_err(TenantError::Store)?;
        Formation::try_from(rec.ok_or(TenantError::NotFound { what: "formation" })?)
    }

    /// The formation, its org's immutable uid (which every captured change carries) and the
    /// org's `max_documents_per_formation`.
    pub async fn formation_with_org_uid(
        &self,
        scope: &OrgScope,
        app_id: &str,
    ) -> Result<(Formation, [u8; 16], u32), TenantError> {
        let memo = &self.ingest_formations;
        if let Some(found) = memo.found(scope.org_id(), app_id, |s| self.store.unchanged(s)) {
            return Ok(found);
        }
        let key = keys::formation(scope.org_id(), app_id);
        let org_id = scope.org_id().to_owned();
        let ((rec, uid), seen) = self
            .store
            .read_seen(move |r| -> Result<_, TenantError> {
                let org = super::orgs::load_org(r, &org_id)?;
                let rec: Option<FormationRecord> = r.get(Table::Formations, &key)?;
                Ok((rec, (org.org_uid, org.quotas.max_documents_per_formation)))
            })
            .await?;
        let f = Formation::try_from(rec.ok_or(TenantError::NotFound { what: "formation" })?)?;
        let found = (f, uid.0, uid.1);
        memo.keep(scope.org_id(), app_id, seen, found.clone());
        Ok(found)
    }

    /// Deletes the formation and every record it owns, in one transaction. Returns the
    /// formation's uid, which keys its records in the outbox database.
    pub async fn delete_formation(
        &self,
        scope: &OrgScope,
        app_id: &str,
    ) -> Result<[u8; 16], TenantError> {
        let org_id = scope.org_id().to_owned();
        let app_id = app_id.to_owned();
        let forget = (org_id.clone(), app_id.clone());
        let target = format!("org/{org_id}/formation/{app_id}");
        let deleted = self
            .mutate(
                scope.actor(),
                "formation.delete",
                target,
                Some(org_id.clone()),
                move |t| {
                    let org = load_org(t, &org_id)?;
                    let key = keys::formation(&org_id, &app_id);
                    let rec: FormationRecord = t
                        .get(Table::Formations, &key)?
                        .ok_or(TenantError::NotFound { what: "formation" })?;
                    t.delete(Table::Sources, key.clone());
                    t.delete(Table::Formations, key);
                    let rows = keys::sealed_prefix(&org_id, &app_id);
                    t.delete_prefix(Table::Sealed, &rows)?;
                    delete_enrollment_rows(t, &rows)?;
                    t.delete(Table::EnrollSettings, keys::formation(&org_id, &app_id));
                    Ok((rec.formation_uid, Some((org.org_id, org.org_uid))))
                },
            )
            .await;
        // Its secrets leave memory with it (a new formation of the name has another uid).
        self.geneses.forget(&forget.0, Some(&forget.1));
        deleted
    }

    /// Opens the sealed genesis; the export is audited before it is returned.
    /// The formation and its opened genesis (which holds the authority key: never log it).
    pub(crate) async fn open_genesis(
        &self,
        org_id: &str,
        app_id: &str,
    ) -> Result<(Formation, Arc<MeshGenesis>), TenantError> {
        let (f, g, (), _) = self.open_genesis_and(org_id, app_id, |_| Ok(())).await?;
        Ok((f, g))
    }

    /// [`Self::open_genesis`] with `also` read in the same store read, answered from `memo`
    /// while no table that read opened has been written since (a hot path such as enrollment
    /// then makes no trip to a blocking thread).
    pub(crate) async fn open_genesis_kept<T: Clone + Send + 'static>(
        &self,
        memo: &WithFormation<T>,
        org_id: &str,
        app_id: &str,
        also: impl FnOnce(&crate::store::ReadView) -> Result<T, TenantError> + Send + 'static,
    ) -> Result<(Formation, Arc<MeshGenesis>, T), TenantError> {
        let kept = memo.found(org_id, app_id, |s| self.store.unchanged(s));
        if let Some((f, extra)) = kept {
            if let Some(g) = self.geneses.get(org_id, app_id, &f.formation_uid) {
                return Ok((f, g, extra));
            }
        }
        let (f, g, extra, seen) = self.open_genesis_and(org_id, app_id, also).await?;
        memo.keep(org_id, app_id, seen, (f.clone(), extra.clone()));
        Ok((f, g, extra))
    }

    /// [`Self::open_genesis`] with `also` read in the same store read, and what it read.
    async fn open_genesis_and<T: Send + 'static>(
        &self,
        org_id: &str,
        app_id: &str,
        also: impl FnOnce(&crate::store::ReadView) -> Result<T, TenantError> + Send + 'static,
    ) -> Result<(Formation, Arc<MeshGenesis>, T, Seen), TenantError> {
        let (org, app) = (org_id.to_owned(), app_id.to_owned());
        let ((rec, sealed, extra), seen) = self
            .store
            .read_seen(move |r| {
                let extra = also(r)?;
                let rec: FormationRecord = r
                    .get(Table::Formations, &keys::formation(&org, &app))?
                    .ok_or(TenantError::NotFound { what: "formation" })?;
                let sealed = r
                    .get_raw(Table::Sealed, &keys::sealed(&org, &app, GENESIS_KIND))?
                    .ok_or(TenantError::NotFound {
                        what: "formation genesis",
                    })?;
                Ok::<_, TenantError>((rec, sealed, extra))
            })
            .await?;
        let uid = rec.formation_uid;
        if let Some(g) = self.geneses.get(org_id, app_id, &uid) {
            return Ok((Formation::try_from(rec)?, g, extra, seen));
        }
        let plain = self
            .keyring
            .open(genesis_identity(org_id, app_id, uid), &sealed)
            .await?;
        let genesis = Arc::new(MeshGenesis::decode(&plain)?);
        self.geneses
            .put_genesis(org_id, app_id, uid, genesis.clone());
        Ok((Formation::try_from(rec)?, genesis, extra, seen))
    }

    pub async fn export_credentials(
        &self,
        scope: &OrgScope,
        app_id: &str,
    ) -> Result<CredentialsExport, TenantError> {
        let org_id = scope.org_id().to_owned();
        let app = app_id.to_owned();
        let (_, genesis) = self.open_genesis(&org_id, &app).await?;
        let creds = genesis.credentials();
        let export = CredentialsExport {
            mesh_id: genesis.mesh_id(),
            formation_secret: genesis.formation_secret(),
            authority_public_key: genesis.authority_public_key(),
            credentials: creds.encode()?,
        };
        let target = format!("org/{org_id}/formation/{app}");
        self.mutate(
            scope.actor(),
            "formation.credentials.export",
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                Ok(((), Some((org.org_id, org.org_uid))))
            },
        )
        .await?;
        Ok(export)
    }

    /// Opens up to `sample` sealed records to prove the configured key fits the data.
    pub async fn verify_keys(&self, sample: usize) -> Result<usize, TenantError> {
        let rows = self
            .store
            .read(move |r| -> Result<_, TenantError> {
                let mut out = Vec::new();
                for (k, v) in r.scan(Table::Sealed, b"", None, sample)? {
                    out.push((super::rekey::owner_uid(r, &k)?, k, v));
                }
                Ok(out)
            })
            .await?;
        let mut opened = 0;
        for (uid, k, v) in rows {
            let mut parts = k.split(|b| *b == 0);
            let (Some(org), Some(app), Some(kind)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(org), Ok(app), Ok(kind)) = (
                std::str::from_utf8(org),
                std::str::from_utf8(app),
                std::str::from_utf8(kind),
            ) else {
                continue;
            };
            if kind != GENESIS_KIND {
                continue;
            }
            self.keyring
                .open(genesis_identity(org, app, uid), &v)
                .await?;
            opened += 1;
        }
        Ok(opened)
    }
}
