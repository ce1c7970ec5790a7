//! Errors of envelope encryption and key providers.

use super::ProviderKind;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("stored record is not an envelope (unencrypted data is refused)")]
    NotAnEnvelope,
    #[error("envelope version {version} is not supported by this build")]
    UnsupportedVersion { version: u8 },
    #[error("envelope is malformed: {what}")]
    Malformed { what: &'static str },
    #[error("record is stored unencrypted but the key provider is {configured}; refusing to use it (run migrate-keys to encrypt it)")]
    PlaintextRefused { configured: ProviderKind },
    #[error("record was sealed by the {record} key provider but {configured} is configured")]
    ProviderMismatch {
        record: ProviderKind,
        configured: ProviderKind,
    },
    #[error("record was sealed under KEK {record_kek_id} but the configured KEK is {configured_kek_id}; check PEAT_KEK")]
    KekMismatch {
        record_kek_id: String,
        configured_kek_id: String,
    },
    #[error("record failed authentication: wrong key, or the record was altered or moved")]
    Authentication,
    #[error("the operating system's random number generator failed")]
    Rng,
    #[error("could not {what}: {detail}")]
    Tpm { what: &'static str, detail: String },
    #[error("could not {what}: {detail}")]
    Remote { what: &'static str, detail: String },
}
