//! Peat security formats, byte-compatible with peat-mesh 0.6.0 (`reference/peat-wire.md` §3).
//!
//! Invariants:
//! - Pure: no I/O, no clock, no async runtime, no storage (checked by `tests/it/architecture.rs`).
//! - Decoders are strict: exact total length, lengths checked before allocating, known enum bytes.
//! - Encoders refuse strings longer than their length prefix allows; nothing is truncated.
//! - Secret material (seeds, formation secrets) lives only in zeroizing types without `Debug`.
//!
//! Entry points: [`MeshGenesis`], [`MeshCredentials`], [`MembershipPolicy`].

mod credentials;
mod error;
mod genesis;
mod kdf;
mod policy;
mod wire;

pub use credentials::MeshCredentials;
pub use error::MeshError;
pub use genesis::MeshGenesis;
pub use policy::{MembershipPolicy, MeshTier};
