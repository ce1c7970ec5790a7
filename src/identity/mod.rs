//! The formation authority: enrollment decisions, bootstrap tokens, certificates, approvals.
//!
//! Flow of `POST …/enroll`: rate limits (source address, org quota) → proof of possession
//! (Ed25519 by the subject key over the request) → mesh id → freshness window → then, in one
//! transaction: replay mark, revocation check, admission (Open; bootstrap token consumed
//! atomically; renewal by a current certificate), Strict → pending for an operator, else the
//! certificate is signed and recorded, and the decision audited.
//!
//! Invariants:
//! - A certificate is issued only to the key that signed the request, with a tier no more
//!   trusted than requested, and is recorded in the inventory in the same commit.
//! - A revocation wins over everything: a revoked key gets `Revoked`, never a certificate.
//! - Token secrets are stored hashed; decisions never log a token or the formation secret.
//!
//! Does not: parse HTTP (see `api/enroll.rs`), or hold keys longer than one decision.

mod approvals;
mod authority;
pub mod bootstrap;
pub mod certs;
mod events;
mod limits;
pub mod oidc;
mod retention;
pub mod rules;
pub mod settings;
pub mod x509;

pub use approvals::PendingInfo;
pub use authority::{Authority, Decision, EnrollInput, EnrollOutcome};
pub use bootstrap::{BootTokenInfo, NewBootToken};
pub use certs::{CertInfo, Revocation};
pub use events::{EnrollEvent, EnrollEvents};
pub use limits::EnrollLimits;
pub use settings::EnrollSettings;
