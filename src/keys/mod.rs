//! Envelope encryption of stored secrets and the key providers that hold the KEK.
//!
//! Every sealed record is an envelope: a fresh 256-bit DEK encrypts the payload with
//! AES-256-GCM; the provider wraps the DEK under its KEK, bound to the record's identity (org,
//! app, kind, codec version). The payload's AAD is that identity too (envelope v3), so a record
//! moved to another row, or re-labelled, fails to open, and a KEK rotation re-wraps DEKs only.
//!
//! Security considerations: someone holding the data directory but not the KEK learns which
//! orgs and formations exist and the public facts stored beside them (mesh id, authority
//! public key), never a seed, formation secret or token. With the `plaintext` provider (dev
//! mode only) the data directory alone reveals everything.
//!
//! Invariants:
//! - Once a real provider is configured, an envelope marked plaintext is refused, never used.
//! - Key material lives only in `Zeroizing` types; no type here derives `Debug` over a secret.
//! - The AAD is built by [`envelope::aad_v3`] (and, for reading v2, [`envelope::aad`]) alone,
//!   each tested against a fixed vector.
//!
//! Does not: store anything, or pick a provider from configuration (see `config/`).

mod envelope;
mod error;
pub mod health;
mod provider;
mod random;
pub mod recovery;
pub mod tcti;
#[cfg(feature = "tpm")]
pub mod tpm;

pub use envelope::{Keyring, RecordIdentity};
pub use error::KeyError;
#[cfg(feature = "dev")]
pub use provider::Plaintext;
pub use provider::{
    kms, AwsKms, KeyProvider, KmsSettings, LocalKek, ProviderKind, VaultSettings, VaultTransit,
};
pub use random::random_secret32;
