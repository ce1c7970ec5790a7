//! Tenancy: orgs, formations, API tokens, roles and the audit log — the rules over `store/`.
//!
//! Invariants:
//! - Each mutation is one store transaction that also appends its audit record; a failed
//!   audit write fails the mutation.
//! - An [`OrgScope`] can only be obtained from an authenticated [`Principal`], so no service
//!   method can act on an org the caller was not cleared for. Another org's resources answer
//!   "not found", never "forbidden".
//! - Formation genesis is stored only sealed (`keys::Keyring`), in the formation's transaction.
//! - Deleting a formation or an org removes everything it owns in that same transaction.
//! - Token secrets are shown once and stored only as SHA-256 hashes, compared in constant time.
//!
//! Does not: speak HTTP (see `api/`), or choose key providers (see `config/`).

mod audit;
mod clock;
mod egress;
mod error;
mod formation_cache;
mod formations;
mod ids;
mod network;
mod orgs;
mod principal;
mod rekey;
mod service;
mod sessions;
mod sink_codec;
mod sink_spec;
mod sinks;
mod sources;
mod tokens;

pub(crate) use audit::{append as audit_append, Event as AuditEvent};
pub use audit::{
    AuditEntry, AuditPage, ChainReport, Filter as AuditFilter, Retention as AuditRetention,
};
pub use clock::now_ms;
pub use error::TenantError;
pub(crate) use formation_cache::WithFormation;
pub use formations::{CredentialsExport, Formation, NewFormation};
pub use ids::validate_id;
pub(crate) use ids::{random_token_id, random_uid};
pub(crate) use orgs::load_org;
pub use orgs::{NewOrg, Org, OrgPatch, Quotas, QuotasPatch};
pub use principal::{Actor, Need, OrgScope, Principal, Role};
pub use rekey::RewrapReport;
pub(crate) use service::{random_secret, token_hash};
pub use service::{AdminAuth, AdminBootstrap, Tenancy};
pub use sessions::{session_of, SessionInfo, SignIn, SESSION_TTL_MS};
pub use sinks::{
    parse_mqtt_url, split_password, with_password, ContentMode, MqttAddr, NewSink, SinkDef,
    SinkPatch, SinkSecrets, SinkSpec, SinkStart, MQTT5_NOT_BUILT, SINK_TYPES,
};
pub use sources::{redact_endpoint, NewSource, SourceDef, SourceSecrets};
pub use tokens::{IssuedToken, NewApiToken, TokenInfo};
