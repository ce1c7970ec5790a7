//! Schema versions and migrations of both databases: each [`Schema`] lists the steps that
//! take a file from one version to the next, run in order when the file is opened.

use std::path::Path;

use redb::{Database, ReadableDatabase, WriteTransaction};

use super::error::RedbResultExt;
use super::{keys, StoreError, Table};

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// One database's tables and migrations. `migrations[i]` moves schema `i` to `i + 1`;
/// schema 0 is a new, empty file, so the current version is `migrations.len()`.
#[derive(Debug)]
pub struct Schema {
    pub name: &'static str,
    migrations: &'static [Migration],
}

impl Schema {
    pub fn version(&self) -> u32 {
        self.migrations.len() as u32
    }
}

/// `state.redb`: tenancy, keys, sinks, audit.
pub static STATE: Schema = Schema {
    name: "state",
    migrations: &[
        state_v1, state_v2, state_v3, state_v4, state_v5, state_v6, state_v7,
    ],
};

/// `cdc.redb`: the outbox and everything that churns with it.
pub static OUTBOX: Schema = Schema {
    name: "outbox",
    migrations: &[outbox_v1, outbox_v2, outbox_v3],
};

/// The state schema this build writes.
pub const SCHEMA_VERSION: u32 = 7;

pub(super) fn migrate(db: &Database, path: &Path, schema: &Schema) -> Result<(), StoreError> {
    let found = read_schema_version(db)?;
    let current = schema.version();
    if found > current {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: current,
        });
    }
    if found == 0 && current > 0 {
        // A new file holds nothing to move: every step in one commit (one sync, not one per
        // step, on a first start).
        let wtx = db.begin_write().op("begin migration")?;
        for step in schema.migrations {
            step(&wtx)?;
        }
        return commit_version(wtx, current);
    }
    for from in found..current {
        let to = from + 1;
        tracing::info!(
            database = schema.name,
            from,
            to,
            "migrating database schema"
        );
        let wtx = db.begin_write().op("begin migration")?;
        schema.migrations[from as usize](&wtx)?;
        commit_version(wtx, to)?;
    }
    Ok(())
}

fn commit_version(wtx: WriteTransaction, version: u32) -> Result<(), StoreError> {
    {
        let mut meta = wtx.open_table(Table::Meta.def()).op("open meta")?;
        meta.insert(keys::SCHEMA_VERSION, version.to_le_bytes().as_slice())
            .op("write schema version")?;
    }
    wtx.commit().op("commit migration")
}

pub(super) fn read_schema_version(db: &Database) -> Result<u32, StoreError> {
    let rtx = db.begin_read().op("begin read")?;
    read_schema_version_of(&rtx)
}

pub(super) fn read_schema_version_of(rtx: &redb::ReadTransaction) -> Result<u32, StoreError> {
    let meta = match rtx.open_table(Table::Meta.def()) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(StoreError::redb("open meta")(e.into())),
    };
    let Some(raw) = meta.get(keys::SCHEMA_VERSION).op("read schema version")? else {
        return Ok(0);
    };
    let bytes: [u8; 4] = raw.value().try_into().map_err(|_| StoreError::Decode {
        kind: "schema version",
        reason: "not 4 bytes",
    })?;
    Ok(u32::from_le_bytes(bytes))
}

fn create(wtx: &WriteTransaction, tables: &[Table]) -> Result<(), StoreError> {
    for t in tables {
        wtx.open_table(t.def()).op("create table")?;
    }
    Ok(())
}

/// State schema 1: tenancy and audit.
fn state_v1(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(
        wtx,
        &[
            Table::Meta,
            Table::Orgs,
            Table::Formations,
            Table::Sealed,
            Table::ApiTokens,
            Table::ApiTokensByOrg,
            Table::Audit,
            Table::AuditByOrg,
        ],
    )
}

/// State schema 2: CDC sink definitions.
fn state_v2(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(wtx, &[Table::Sinks])
}

/// State schema 3: CDC source bindings.
fn state_v3(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(wtx, &[Table::Sources])
}

/// State schema 4: enrollment (bootstrap tokens, certificates, revocations, approvals).
fn state_v4(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(
        wtx,
        &[
            Table::BootTokens,
            Table::BootTokensByFormation,
            Table::Certificates,
            Table::Revocations,
            Table::Enrollments,
            Table::EnrollReplay,
            Table::EnrollSettings,
        ],
    )
}

/// State schema 5: identity providers, their cached keys, claim rules, org identity settings.
fn state_v5(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(
        wtx,
        &[
            Table::Idps,
            Table::IdpKeys,
            Table::PolicyRules,
            Table::IdentitySettings,
        ],
    )
}

/// State schema 6: per-org network allow-lists.
fn state_v6(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(wtx, &[Table::OrgNetworks])
}

/// State schema 7: what the gateway admin grants each org (sidecar endpoints, egress); each
/// formation's peers (for `max_peers_per_formation`) and the expiry index that prunes old
/// certificates and enrollment rows, both built from the rows already there.
fn state_v7(wtx: &WriteTransaction) -> Result<(), StoreError> {
    use super::{CertRecord, PendingRecord, Record};
    use redb::ReadableTable as _;
    create(
        wtx,
        &[
            Table::SourceGrants,
            Table::Egress,
            Table::Peers,
            Table::Expiry,
        ],
    )?;
    let grace = keys::RETENTION_GRACE_MS;
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut peers: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
    {
        let certs = wtx
            .open_table(Table::Certificates.def())
            .op("open certificates")?;
        for item in certs.iter().op("scan certificates")? {
            let (k, v) = item.op("read a certificate")?;
            let (k, v) = (k.value().to_vec(), v.value().to_vec());
            let rec = CertRecord::decode(&v)?;
            let when = rec.expires_at_ms.saturating_add(grace);
            entries.push((keys::expiry(when, keys::EXPIRY_CERTIFICATE, &k), Vec::new()));
            let mut peer = k[..k.len().saturating_sub(32)].to_vec();
            peer.extend_from_slice(&rec.subject);
            let e = peers.entry(peer).or_insert(0);
            *e = (*e).max(rec.expires_at_ms);
        }
        let rows = wtx
            .open_table(Table::Enrollments.def())
            .op("open enrollments")?;
        for item in rows.iter().op("scan enrollments")? {
            let (k, v) = item.op("read an enrollment")?;
            let (k, v) = (k.value().to_vec(), v.value().to_vec());
            let rec = PendingRecord::decode(&v)?;
            let when = rec
                .decided_at_ms
                .unwrap_or(rec.expires_at_ms)
                .saturating_add(grace);
            entries.push((keys::expiry(when, keys::EXPIRY_ENROLLMENT, &k), Vec::new()));
        }
    }
    let mut expiry = wtx.open_table(Table::Expiry.def()).op("open expiry")?;
    for (k, v) in &entries {
        expiry
            .insert(k.as_slice(), v.as_slice())
            .op("index expiry")?;
    }
    let mut table = wtx.open_table(Table::Peers.def()).op("open peers")?;
    for (k, until) in &peers {
        table
            .insert(k.as_slice(), until.to_le_bytes().as_slice())
            .op("index peers")?;
    }
    Ok(())
}

/// Outbox schema 1.
fn outbox_v1(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(
        wtx,
        &[
            Table::Meta,
            Table::Events,
            Table::Docs,
            Table::Cursors,
            Table::DeadLetters,
        ],
    )
}

/// Outbox schema 2: each org's events indexed apart (tenant isolation, per-org quota). The
/// index of older events is built at start-up, where org names can be resolved to uids.
fn outbox_v2(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(wtx, &[Table::OrgEvents])
}

/// Outbox schema 3: each org's events kept under its uid with their org seq (one insert per
/// event where the event and its index took two). Older events are moved at start-up, in
/// chunks, where org names can be resolved to uids.
fn outbox_v3(wtx: &WriteTransaction) -> Result<(), StoreError> {
    create(wtx, &[Table::OrgLog])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(db: &Database) -> Vec<String> {
        use redb::TableHandle as _;
        let rtx = db.begin_read().unwrap();
        let mut names: Vec<String> = rtx
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_migrated_step_by_step_ends_as_a_new_one_made_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.redb"), dir.path().join("new.redb"));
        let older = Schema {
            name: "state",
            migrations: &STATE.migrations[..3],
        };
        let db = Database::create(&old).unwrap();
        migrate(&db, &old, &older).unwrap();
        assert_eq!(read_schema_version(&db).unwrap(), 3);
        migrate(&db, &old, &STATE).unwrap();
        let fresh = Database::create(&new).unwrap();
        migrate(&fresh, &new, &STATE).unwrap();
        assert_eq!(read_schema_version(&db).unwrap(), SCHEMA_VERSION);
        assert_eq!(read_schema_version(&fresh).unwrap(), SCHEMA_VERSION);
        assert_eq!(tables(&db), tables(&fresh));
        assert!(tables(&fresh).contains(&"expiry".to_owned()));
    }
}
