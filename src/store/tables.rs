//! Table definitions and key layouts. All tables map bytes to bytes.
//!
//! ```text
//! meta               utf-8 name                  -> raw or record (schema_version u32 LE, admin_token, audit_head)
//! orgs               org_id                      -> OrgRecord
//! formations         org_id 0x00 app_id          -> FormationRecord
//! sealed             org_id 0x00 app_id 0x00 kind -> envelope bytes (keys/)
//! api_tokens         token_id                    -> ApiTokenRecord
//! api_tokens_by_org  org_id 0x00 token_id        -> empty
//! audit              seq u64 BE                  -> AuditRecord
//! audit_by_org       org_uid (16) seq u64 BE     -> empty
//! sinks              org_id 0x00 sink_id         -> SinkRecord
//! sources            org_id 0x00 app_id          -> SourceRecord
//! boot_tokens        token_id                    -> BootTokenRecord
//! boot_tokens_by_formation  org 0x00 app 0x00 token_id -> empty
//! certificates       org 0x00 app 0x00 fingerprint (32) -> CertRecord
//! revocations        org 0x00 app 0x00 subject (32)     -> RevocationRecord
//! enrollments        org 0x00 app 0x00 enrollment_id    -> PendingRecord
//! enroll_replay      expires_ms u64 BE ‖ SHA-256 of the request -> empty
//! enroll_settings    org_id 0x00 app_id          -> EnrollSettingsRecord
//! idps               org_id 0x00 idp_id          -> IdpRecord
//! idp_keys           org_id 0x00 idp_id          -> IdpKeysRecord (discovery + JWKS cache)
//! policy_rules       org_id 0x00 rule_id         -> RuleRecord
//! identity_settings  org_id                      -> IdentitySettingsRecord
//! org_networks       org_id                      -> OrgNetworkRecord
//! source_grants      org_id                      -> SourceGrantRecord (sidecar endpoints the admin granted)
//! egress             org_id                      -> EgressRecord (internal networks and hosts the admin granted)
//! peers              org 0x00 app 0x00 subject (32) -> expiry of its newest certificate, u64 LE
//! expiry             when_ms u64 BE ‖ kind u8 ‖ row key -> empty (1 certificate, 2 enrollment row; pruned from `when`)
//!
//! cdc.redb (outbox schema):
//! meta               utf-8 name                  -> raw (schema_version, next_lsn, gateway_id, …)
//! org_log            org_uid (16) lsn u64 BE     -> org seq u64 LE ‖ EventRecord (each org's events, in order)
//! docs               formation_uid (16) collection 0x00 doc_id -> DocRecord
//! cursors            sink_uid (16)               -> lsn u64 BE (last acknowledged)
//! dead_letters       sink_uid (16) lsn u64 BE    -> DeadLetterRecord
//! events, org_events (schemas 1–2; emptied into org_log at start-up)
//!                    lsn u64 BE -> EventRecord; org_uid (16) lsn u64 BE -> org seq u64 LE ‖ stored bytes u64 LE
//! ```
//! Identifiers never contain 0x00 (validated in `tenant/`), so `org 0x00` is an exact prefix.

use redb::TableDefinition;

pub(crate) type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Meta,
    Orgs,
    Formations,
    Sealed,
    ApiTokens,
    ApiTokensByOrg,
    Audit,
    AuditByOrg,
    Sinks,
    Sources,
    BootTokens,
    BootTokensByFormation,
    Certificates,
    Revocations,
    Enrollments,
    EnrollReplay,
    EnrollSettings,
    Idps,
    IdpKeys,
    PolicyRules,
    IdentitySettings,
    OrgNetworks,
    SourceGrants,
    Egress,
    Peers,
    Expiry,
    Events,
    Docs,
    Cursors,
    DeadLetters,
    OrgEvents,
    OrgLog,
}

impl Table {
    pub(crate) fn def(self) -> Def {
        TableDefinition::new(self.name())
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Orgs => "orgs",
            Table::Formations => "formations",
            Table::Sealed => "sealed",
            Table::ApiTokens => "api_tokens",
            Table::ApiTokensByOrg => "api_tokens_by_org",
            Table::Audit => "audit",
            Table::AuditByOrg => "audit_by_org",
            Table::Sinks => "sinks",
            Table::Sources => "sources",
            Table::BootTokens => "boot_tokens",
            Table::BootTokensByFormation => "boot_tokens_by_formation",
            Table::Certificates => "certificates",
            Table::Revocations => "revocations",
            Table::Enrollments => "enrollments",
            Table::EnrollReplay => "enroll_replay",
            Table::EnrollSettings => "enroll_settings",
            Table::Idps => "idps",
            Table::IdpKeys => "idp_keys",
            Table::PolicyRules => "policy_rules",
            Table::IdentitySettings => "identity_settings",
            Table::OrgNetworks => "org_networks",
            Table::SourceGrants => "source_grants",
            Table::Egress => "egress",
            Table::Peers => "peers",
            Table::Expiry => "expiry",
            Table::Events => "events",
            Table::Docs => "docs",
            Table::Cursors => "cursors",
            Table::DeadLetters => "dead_letters",
            Table::OrgEvents => "org_events",
            Table::OrgLog => "org_log",
        }
    }
}

/// Key builders; the only place key layouts are spelled out.
pub mod keys {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const ADMIN_TOKEN: &[u8] = b"admin_token";
    pub const AUDIT_HEAD: &[u8] = b"audit_head";
    /// The last record pruned by retention (seq and hash): the chain resumes from it.
    pub const AUDIT_CHECKPOINT: &[u8] = b"audit_checkpoint";

    pub fn org(org: &str) -> Vec<u8> {
        org.as_bytes().to_vec()
    }

    /// Prefix of everything an org owns in a `org 0x00 …` keyed table.
    pub fn org_prefix(org: &str) -> Vec<u8> {
        let mut k = org.as_bytes().to_vec();
        k.push(0);
        k
    }

    pub fn formation(org: &str, app: &str) -> Vec<u8> {
        let mut k = org_prefix(org);
        k.extend_from_slice(app.as_bytes());
        k
    }

    pub fn sealed(org: &str, app: &str, kind: &str) -> Vec<u8> {
        let mut k = formation(org, app);
        k.push(0);
        k.extend_from_slice(kind.as_bytes());
        k
    }

    /// Prefix of every sealed record of one formation.
    pub fn sealed_prefix(org: &str, app: &str) -> Vec<u8> {
        let mut k = formation(org, app);
        k.push(0);
        k
    }

    pub fn token_by_org(org: &str, token_id: &str) -> Vec<u8> {
        let mut k = org_prefix(org);
        k.extend_from_slice(token_id.as_bytes());
        k
    }

    pub fn audit(seq: u64) -> Vec<u8> {
        seq.to_be_bytes().to_vec()
    }

    pub fn audit_by_org(org_uid: &[u8; 16], seq: u64) -> Vec<u8> {
        let mut k = org_uid.to_vec();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// `org 0x00 app 0x00 tail`: a row owned by one formation.
    pub fn formation_row(org: &str, app: &str, tail: &[u8]) -> Vec<u8> {
        let mut k = sealed_prefix(org, app);
        k.extend_from_slice(tail);
        k
    }

    /// Meta key of the count of peers under `formation` (a formation's row prefix); an
    /// org's prefix covers all its formations' counts.
    pub fn peer_count(formation: &[u8]) -> Vec<u8> {
        let mut k = b"peers\0".to_vec();
        k.extend_from_slice(formation);
        k
    }

    /// How long expired certificates and decided enrollments stay listed before pruning.
    pub const RETENTION_GRACE_MS: u64 = 7 * 86_400_000;
    pub const EXPIRY_CERTIFICATE: u8 = 1;
    pub const EXPIRY_ENROLLMENT: u8 = 2;

    /// An `expiry` entry: prune the row `row` of `kind` from `when_ms` on.
    pub fn expiry(when_ms: u64, kind: u8, row: &[u8]) -> Vec<u8> {
        let mut k = when_ms.to_be_bytes().to_vec();
        k.push(kind);
        k.extend_from_slice(row);
        k
    }

    pub fn replay(expires_ms: u64, digest: &[u8; 32]) -> Vec<u8> {
        let mut k = expires_ms.to_be_bytes().to_vec();
        k.extend_from_slice(digest);
        k
    }

    /// The sequence number at the end of an `audit_by_org` key.
    pub fn audit_seq_of(key: &[u8]) -> Option<u64> {
        let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
        Some(u64::from_be_bytes(tail))
    }

    /// The tail of a key after `prefix`, as UTF-8.
    pub fn suffix_str<'a>(key: &'a [u8], prefix: &[u8]) -> Option<&'a str> {
        std::str::from_utf8(key.strip_prefix(prefix)?).ok()
    }
}
