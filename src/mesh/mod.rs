//! Peat security formats, byte-compatible with peat-mesh 0.6.0 (`reference/peat-wire.md` §3).
//!
//! Invariants:
//! - Pure: no I/O, no clock, no async runtime, no storage (checked by `tests/it/architecture.rs`).
//! - Decoders are strict: exact total length, lengths checked before allocating, known enum bytes.
//! - Encoders refuse strings longer than their length prefix allows; nothing is truncated.
//! - Secret material (seeds, formation secrets) lives only in zeroizing types without `Debug`.
//!
//! Entry points: [`MeshGenesis`], [`MeshCredentials`], [`MeshCertificate`],
//! [`EnrollmentRequest`] / [`EnrollmentResponse`], [`FormationKey`], [`documents`].

mod certificate;
mod credentials;
pub mod documents;
mod enrollment;
mod error;
mod formation_key;
mod genesis;
mod kdf;
mod policy;
mod wire;

pub use certificate::{CertificateFields, MeshCertificate};
pub use credentials::MeshCredentials;
pub use enrollment::{EnrollmentRequest, EnrollmentResponse, EnrollmentStatus};
pub use error::MeshError;
pub use formation_key::{decode_challenge, encode_challenge, transport_public_key, FormationKey};
pub use genesis::MeshGenesis;
pub use policy::{MembershipPolicy, MeshTier, Permissions};
