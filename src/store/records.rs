//! The versioned records kept in the state database (`state.redb`). Field order is part of
//! the format.

use serde::{Deserialize, Serialize};

use super::codec::{decode_body, decode_current};
use super::{Record, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotasRecord {
    pub max_formations: u32,
    pub max_peers_per_formation: u32,
    pub max_documents_per_formation: u32,
    pub max_cdc_sinks: u32,
    pub max_enrollments_per_hour: u32,
    pub max_api_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgRecord {
    pub org_id: String,
    /// Random per creation: a re-created org with the same id shares nothing with the old one.
    pub org_uid: [u8; 16],
    pub display_name: String,
    pub quotas: QuotasRecord,
    pub created_at_ms: u64,
}

impl Record for OrgRecord {
    const KIND: &'static str = "org";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationRecord {
    pub org_id: String,
    pub app_id: String,
    pub formation_uid: [u8; 16],
    pub mesh_id: String,
    pub authority_public_key: [u8; 32],
    pub policy: u8,
    pub created_at_ms: u64,
    /// True when the genesis was imported rather than generated here.
    pub adopted: bool,
}

impl Record for FormationRecord {
    const KIND: &'static str = "formation";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub token_id: String,
    pub org_id: String,
    pub org_uid: [u8; 16],
    pub name: String,
    pub role: u8,
    /// SHA-256 of the secret; the secret itself is shown once and never stored.
    pub secret_hash: [u8; 32],
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    pub created_by: String,
}

impl Record for ApiTokenRecord {
    const KIND: &'static str = "api-token";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTokenRecord {
    pub secret_hash: [u8; 32],
    pub created_at_ms: u64,
}

impl Record for AdminTokenRecord {
    const KIND: &'static str = "admin-token";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub org_id: Option<String>,
    pub org_uid: Option<[u8; 16]>,
    pub actor_id: String,
    pub actor_role: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl Record for AuditRecord {
    const KIND: &'static str = "audit";
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHeadRecord {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Record for AuditHeadRecord {
    const KIND: &'static str = "audit-head";
    const VERSION: u8 = 1;
}

/// A bootstrap token for enrollment: the secret is shown once; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTokenRecord {
    pub token_id: String,
    pub org_id: String,
    pub app_id: String,
    pub label: String,
    pub secret_hash: [u8; 32],
    pub tier: u8,
    pub permissions: u8,
    /// `None`: unlimited until expiry or revocation.
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    pub created_by: String,
    /// The formation it was issued for, by uid: it admits to no formation re-created under
    /// the same name. All zero for tokens issued before version 2 (they die with their
    /// formation all the same).
    pub formation_uid: [u8; 16],
}

#[derive(Deserialize)]
struct BootTokenRecordV1 {
    token_id: String,
    org_id: String,
    app_id: String,
    label: String,
    secret_hash: [u8; 32],
    tier: u8,
    permissions: u8,
    max_uses: Option<u32>,
    uses: u32,
    created_at_ms: u64,
    expires_at_ms: Option<u64>,
    revoked_at_ms: Option<u64>,
    created_by: String,
}

impl Record for BootTokenRecord {
    const KIND: &'static str = "boot-token";
    const VERSION: u8 = 2;

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(1) => decode_body::<BootTokenRecordV1>(Self::KIND, &bytes[1..]).map(|v| Self {
                token_id: v.token_id,
                org_id: v.org_id,
                app_id: v.app_id,
                label: v.label,
                secret_hash: v.secret_hash,
                tier: v.tier,
                permissions: v.permissions,
                max_uses: v.max_uses,
                uses: v.uses,
                created_at_ms: v.created_at_ms,
                expires_at_ms: v.expires_at_ms,
                revoked_at_ms: v.revoked_at_ms,
                created_by: v.created_by,
                formation_uid: [0; 16],
            }),
            _ => decode_current(bytes),
        }
    }
}

/// An issued certificate, kept for the inventory, renewal and revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    pub certificate: Vec<u8>,
    pub subject: [u8; 32],
    pub node_id: String,
    pub tier: u8,
    pub permissions: u8,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    /// How it was granted: `open`, `token:<id>`, `oidc:<issuer>#<sub>`, `approval:<id>`, `renewal`.
    pub granted_via: String,
}

impl Record for CertRecord {
    const KIND: &'static str = "certificate";
    const VERSION: u8 = 1;
}

/// A revoked subject key; never deleted while its formation lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub subject: [u8; 32],
    pub reason: String,
    pub revoked_at_ms: u64,
    pub revoked_by: String,
}

impl Record for RevocationRecord {
    const KIND: &'static str = "revocation";
    const VERSION: u8 = 1;
}

/// An enrollment awaiting (or past) an operator's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    pub enrollment_id: String,
    /// The signed request as received (binary form).
    pub request: Vec<u8>,
    pub tier: u8,
    pub permissions: u8,
    /// Who the identity check said the requester is.
    pub identity: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// 0 pending, 1 approved, 2 denied.
    pub state: u8,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<u64>,
    pub reason: Option<String>,
    /// Fingerprint of the certificate issued on approval.
    pub certificate: Option<[u8; 32]>,
}

impl Record for PendingRecord {
    const KIND: &'static str = "enrollment";
    const VERSION: u8 = 1;
}

/// Per-formation enrollment settings; absent means the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollSettingsRecord {
    pub validity_secs: u64,
    pub window_secs: u64,
    pub backdate_secs: u64,
    pub deliver_formation_secret: bool,
    pub open_tier: u8,
    pub open_permissions: u8,
    pub approval_ttl_secs: u64,
    /// Write certificate and revocation documents to the node through the bound sidecar.
    pub publish_documents: bool,
}

impl Record for EnrollSettingsRecord {
    const KIND: &'static str = "enroll-settings";
    const VERSION: u8 = 1;
}

/// An org's OpenID provider. The client secret, when set, is a sealed record of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpRecord {
    pub idp_id: String,
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<String>,
    pub client_id: Option<String>,
    pub has_client_secret: bool,
    pub tls_ca_pem: Option<String>,
    pub enabled: bool,
    pub introspection: bool,
    pub max_staleness_secs: u64,
    pub clock_skew_secs: u64,
    pub min_refresh_secs: u64,
    pub created_at_ms: u64,
}

impl Record for IdpRecord {
    const KIND: &'static str = "idp";
    const VERSION: u8 = 1;
}

/// What was last fetched from an IdP; served while it is unreachable, up to a staleness limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpKeysRecord {
    pub jwks_json: String,
    pub jwks_uri: String,
    pub introspection_endpoint: Option<String>,
    pub fetched_at_ms: u64,
    pub last_attempt_ms: u64,
    pub last_error: Option<String>,
}

impl Record for IdpKeysRecord {
    const KIND: &'static str = "idp-keys";
    const VERSION: u8 = 1;
}

/// One claim rule; `conditions` hold (claim path, operator byte, JSON value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub rule_id: String,
    pub priority: u32,
    pub deny: bool,
    pub conditions: Vec<(String, u8, String)>,
    pub tier: u8,
    pub permissions: u8,
    pub formations: Vec<String>,
    pub description: String,
    pub created_at_ms: u64,
    /// The org role a single sign-on with matching claims gets (`Role` byte); `None`: this
    /// rule grants no sign-in.
    pub role: Option<u8>,
}

#[derive(Deserialize)]
struct RuleRecordV1 {
    rule_id: String,
    priority: u32,
    deny: bool,
    conditions: Vec<(String, u8, String)>,
    tier: u8,
    permissions: u8,
    formations: Vec<String>,
    description: String,
    created_at_ms: u64,
}

impl Record for RuleRecord {
    const KIND: &'static str = "rule";
    const VERSION: u8 = 2;

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(1) => decode_body::<RuleRecordV1>(Self::KIND, &bytes[1..]).map(|v| Self {
                rule_id: v.rule_id,
                priority: v.priority,
                deny: v.deny,
                conditions: v.conditions,
                tier: v.tier,
                permissions: v.permissions,
                formations: v.formations,
                description: v.description,
                created_at_ms: v.created_at_ms,
                role: None,
            }),
            _ => decode_current(bytes),
        }
    }
}

/// What an org's claims get when no rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySettingsRecord {
    pub no_match_allow: bool,
    pub no_match_tier: u8,
    pub no_match_permissions: u8,
}

impl Record for IdentitySettingsRecord {
    const KIND: &'static str = "identity-settings";
    const VERSION: u8 = 1;
}

/// Networks an org's tokens and devices may come from (CIDR text); empty: any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgNetworkRecord {
    pub allow: Vec<String>,
}

impl Record for OrgNetworkRecord {
    const KIND: &'static str = "org-network";
    const VERSION: u8 = 1;
}

/// A CDC sink's definition; its delivery cursor lives in the outbox database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkRecord {
    pub org_id: String,
    pub sink_id: String,
    /// Random per creation: keys the cursor and dead letters, so a re-created sink starts fresh.
    pub sink_uid: [u8; 16],
    /// Postcard of `tenant::SinkSpec`, versioned with this record.
    pub spec: Vec<u8>,
    pub enabled: bool,
    pub formations: Vec<String>,
    pub collections: Vec<String>,
    pub rate_limit_bytes_per_sec: u64,
    /// 0 = from the oldest retained event, 1 = from events after creation.
    pub start: u8,
    pub created_at_ms: u64,
    /// CloudEvents content mode: 0 structured, 1 binary, 2 batched.
    pub content_mode: u8,
}

/// Version 1: before the content mode (every sink structured).
#[derive(Serialize, Deserialize)]
struct SinkRecordV1 {
    org_id: String,
    sink_id: String,
    sink_uid: [u8; 16],
    spec: Vec<u8>,
    enabled: bool,
    formations: Vec<String>,
    collections: Vec<String>,
    rate_limit_bytes_per_sec: u64,
    start: u8,
    created_at_ms: u64,
}

impl Record for SinkRecord {
    const KIND: &'static str = "sink";
    const VERSION: u8 = 2;

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(1) => decode_body::<SinkRecordV1>(Self::KIND, &bytes[1..]).map(|v| Self {
                org_id: v.org_id,
                sink_id: v.sink_id,
                sink_uid: v.sink_uid,
                spec: v.spec,
                enabled: v.enabled,
                formations: v.formations,
                collections: v.collections,
                rate_limit_bytes_per_sec: v.rate_limit_bytes_per_sec,
                start: v.start,
                created_at_ms: v.created_at_ms,
                content_mode: 0,
            }),
            _ => decode_current(bytes),
        }
    }
}

/// Where a formation's changes are captured from: a peat-node sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub endpoint: String,
    pub collections: Vec<String>,
    /// The bearer token is sealed beside the formation's genesis when present.
    pub has_token: bool,
    /// For `https://` endpoints: the CA that signs the sidecar's certificate.
    pub tls_ca_pem: Option<String>,
    /// Client certificate for mTLS; its key is sealed beside the token.
    pub client_cert_pem: Option<String>,
    pub reconcile_secs: u64,
    /// This source's full-outbox policy: 0 the gateway's, 1 block, 2 drop-oldest.
    pub full_policy: u8,
    pub updated_at_ms: u64,
    /// The node id the operator set (`--node-id`); every connect checks it when present.
    pub node_id: Option<String>,
}

#[derive(Deserialize)]
struct SourceRecordV1 {
    endpoint: String,
    collections: Vec<String>,
    has_token: bool,
    tls_ca_pem: Option<String>,
    client_cert_pem: Option<String>,
    reconcile_secs: u64,
    full_policy: u8,
    updated_at_ms: u64,
}

impl Record for SourceRecord {
    const KIND: &'static str = "source";
    const VERSION: u8 = 2;

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.first() {
            Some(1) => decode_body::<SourceRecordV1>(Self::KIND, &bytes[1..]).map(|v| Self {
                endpoint: v.endpoint,
                collections: v.collections,
                has_token: v.has_token,
                tls_ca_pem: v.tls_ca_pem,
                client_cert_pem: v.client_cert_pem,
                reconcile_secs: v.reconcile_secs,
                full_policy: v.full_policy,
                updated_at_ms: v.updated_at_ms,
                node_id: None,
            }),
            _ => decode_current(bytes),
        }
    }
}

/// The sidecar endpoints the gateway admin lets an org bind its formations to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceGrantRecord {
    pub endpoints: Vec<String>,
}

/// The internal networks and host names the gateway admin lets an org's outbound
/// connections reach (the public internet needs no grant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRecord {
    pub networks: Vec<String>,
    pub hosts: Vec<String>,
}

impl Record for EgressRecord {
    const KIND: &'static str = "egress";
    const VERSION: u8 = 1;
}

impl Record for SourceGrantRecord {
    const KIND: &'static str = "source-grant";
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_with_its_version_byte_first() {
        let r = AdminTokenRecord {
            secret_hash: [7; 32],
            created_at_ms: 42,
        };
        let bytes = r.encode().unwrap();
        assert_eq!(bytes[0], AdminTokenRecord::VERSION);
        assert_eq!(AdminTokenRecord::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn a_sink_stored_before_content_modes_reads_back_structured() {
        let v1 = SinkRecordV1 {
            org_id: "acme".into(),
            sink_id: "s1".into(),
            sink_uid: [4; 16],
            spec: vec![1, 2, 3],
            enabled: true,
            formations: vec!["mesh".into()],
            collections: vec![],
            rate_limit_bytes_per_sec: 9,
            start: 1,
            created_at_ms: 77,
        };
        let mut bytes = vec![1];
        bytes.extend(postcard::to_allocvec(&v1).unwrap());
        let r = SinkRecord::decode(&bytes).unwrap();
        assert_eq!(
            (
                r.sink_id.as_str(),
                r.spec.as_slice(),
                r.start,
                r.content_mode
            ),
            ("s1", &[1u8, 2, 3][..], 1, 0)
        );
        let binary = SinkRecord {
            content_mode: 1,
            ..r
        };
        assert_eq!(
            SinkRecord::decode(&binary.encode().unwrap()).unwrap(),
            binary
        );
    }

    #[test]
    fn unknown_version_and_trailing_bytes_are_refused() {
        let r = AuditHeadRecord {
            seq: 1,
            hash: [0; 32],
        };
        let mut bytes = r.encode().unwrap();
        let mut newer = bytes.clone();
        newer[0] = 99;
        assert!(AuditHeadRecord::decode(&newer).is_err());
        bytes.push(0);
        assert!(AuditHeadRecord::decode(&bytes).is_err());
        assert!(AuditHeadRecord::decode(&[]).is_err());
    }
}
