//! `local` provider: a 256-bit KEK given as 64 hex characters (`PEAT_KEK`).
//!
//! Wrapped DEK = nonce (12) ‖ AES-256-GCM(KEK, DEK, AAD = label ‖ context) (48) = 60 bytes.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{BoxFuture, KeyProvider, ProviderKind};
use crate::keys::random::random_nonce;
use crate::keys::KeyError;

const WRAP_LABEL: &[u8] = b"peat-gateway:dek-wrap:v1";

/// The local KEK. Holds the key in zeroizing memory; has no `Debug`.
pub struct LocalKek {
    kek: Zeroizing<[u8; 32]>,
    kek_id: String,
    kind: ProviderKind,
}

impl LocalKek {
    pub fn new(kek: Zeroizing<[u8; 32]>) -> Self {
        Self::held_by(kek, ProviderKind::Local)
    }

    /// The same wrapping under a KEK that another provider holds at rest (the TPM unseals it
    /// into memory at start-up); envelopes name that provider.
    pub fn held_by(kek: Zeroizing<[u8; 32]>, kind: ProviderKind) -> Self {
        let mut h = Sha256::new();
        h.update(b"peat-gateway:kek-id:v1");
        h.update(kek.as_ref());
        let kek_id = format!("{}:{}", kind.name(), hex::encode(&h.finalize()[..8]));
        Self { kek, kek_id, kind }
    }

    fn cipher(&self) -> Result<Aes256Gcm, KeyError> {
        Aes256Gcm::new_from_slice(self.kek.as_ref())
            .map_err(|_| KeyError::Malformed { what: "KEK length" })
    }

    fn wrap_now(&self, dek: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        let nonce = random_nonce()?;
        let aad = [WRAP_LABEL, context].concat();
        let ct = self
            .cipher()?
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: dek,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Authentication)?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap_now(&self, wrapped: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        if wrapped.len() != 60 {
            return Err(KeyError::Malformed {
                what: "local wrapped DEK is not 60 bytes",
            });
        }
        let (nonce, ct) = wrapped.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| KeyError::Malformed {
            what: "local wrapped DEK nonce",
        })?;
        let aad = [WRAP_LABEL, context].concat();
        let dek = Zeroizing::new(
            self.cipher()?
                .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: &aad })
                .map_err(|_| KeyError::Authentication)?,
        );
        super::dek_from(&dek)
    }
}

impl KeyProvider for LocalKek {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn kek_id(&self) -> &str {
        &self.kek_id
    }

    fn wrap<'a>(
        &'a self,
        dek: &'a [u8; 32],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>> {
        Box::pin(async move { self.wrap_now(dek, context) })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, KeyError>> {
        Box::pin(async move { self.unwrap_now(wrapped, context) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_id_is_stable_and_reveals_nothing_of_the_key() {
        let a = LocalKek::new(Zeroizing::new([0x11; 32]));
        let b = LocalKek::new(Zeroizing::new([0x11; 32]));
        let c = LocalKek::new(Zeroizing::new([0x12; 32]));
        assert_eq!(a.kek_id(), b.kek_id());
        assert_ne!(a.kek_id(), c.kek_id());
        assert!(a.kek_id().starts_with("local:"));
        assert!(!a.kek_id().contains("1111"));
    }

    #[test]
    fn wrapped_dek_opens_only_with_the_same_kek_and_context() {
        let kek = LocalKek::new(Zeroizing::new([0x11; 32]));
        let dek = [0x5a; 32];
        let w = kek.wrap_now(&dek, b"ctx-a").unwrap();
        assert_eq!(w.len(), 60);
        assert_eq!(*kek.unwrap_now(&w, b"ctx-a").unwrap(), dek);
        assert!(matches!(
            kek.unwrap_now(&w, b"ctx-b"),
            Err(KeyError::Authentication)
        ));
        let other = LocalKek::new(Zeroizing::new([0x12; 32]));
        assert!(matches!(
            other.unwrap_now(&w, b"ctx-a"),
            Err(KeyError::Authentication)
        ));
    }
}
