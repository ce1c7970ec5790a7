//! The KeyProvider family: who holds the KEK and wraps DEKs under it.

pub mod kms;
mod local;
#[cfg(feature = "dev")]
mod plaintext;
mod vault;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use zeroize::Zeroizing;

use super::KeyError;

pub use kms::{AwsKms, KmsSettings};
pub use local::LocalKek;
#[cfg(feature = "dev")]
pub use plaintext::Plaintext;
pub use vault::{VaultSettings, VaultTransit};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An unwrapped DEK: exactly 32 bytes, kept in zeroizing memory.
pub(crate) fn dek_from(raw: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if raw.len() != 32 {
        return Err(KeyError::Malformed {
            what: "unwrapped DEK is not 32 bytes",
        });
    }
    out.copy_from_slice(raw);
    Ok(out)
}

/// A base64 DEK from a remote provider's answer (`what` names the answer in errors).
pub(crate) fn dek_from_b64(
    b64: Option<&str>,
    what: &'static str,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    use base64::Engine as _;
    let b64 = b64.ok_or(KeyError::Malformed { what })?;
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KeyError::Malformed { what })?,
    );
    dek_from(&raw)
}

/// Which provider sealed an envelope; stored as one byte in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Plaintext,
    Local,
    Tpm,
    Vault,
    AwsKms,
}

impl ProviderKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Self::Plaintext => 0,
            Self::Local => 1,
            Self::Tpm => 2,
            Self::Vault => 3,
            Self::AwsKms => 4,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Result<Self, KeyError> {
        Ok(match b {
            0 => Self::Plaintext,
            1 => Self::Local,
            2 => Self::Tpm,
            3 => Self::Vault,
            4 => Self::AwsKms,
            _ => {
                return Err(KeyError::Malformed {
                    what: "provider byte",
                })
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Local => "local",
            Self::Tpm => "tpm",
            Self::Vault => "vault",
            Self::AwsKms => "aws-kms",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Holds a KEK and wraps 32-byte DEKs under it.
///
/// `context` is the record identity; a provider must bind it so that a wrapped DEK cannot be
/// replayed onto another record (local: AAD; KMS: EncryptionContext; Transit: context).
pub trait KeyProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// A stable, non-secret name of the KEK, recorded in every envelope.
    fn kek_id(&self) -> &str;
    fn wrap<'a>(
        &'a self,
        dek: &'a [u8; 32],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>>;
    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, KeyError>>;
}
