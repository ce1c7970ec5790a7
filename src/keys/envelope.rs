//! The envelope format and the [`Keyring`] that seals and opens records.
//!
//! ```text
//! 0        4   magic "PENV"
//! 4        1   version 0x02
//! 5        1   provider byte (0 plaintext, 1 local, 2 tpm, 3 vault, 4 aws-kms)
//! 6        1   KEK id length k (u8)
//! 7        k   KEK id (UTF-8)
//! 7+k      2   wrapped DEK length w (u16 LE)
//! 9+k      w   wrapped DEK (provider-specific)
//! 9+k+w    12  nonce
//! 21+k+w   …   AES-256-GCM ciphertext ‖ tag (16)
//! ```
//! Header = bytes `[0, 9+k+w)`. AAD = [`aad`]`(identity, header)`.

use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use zeroize::Zeroizing;

use super::random::{random_nonce, random_secret32};
use super::{KeyError, KeyProvider, ProviderKind};

const MAGIC: &[u8; 4] = b"PENV";
const VERSION: u8 = 2;
const AAD_LABEL: &[u8] = b"peat-gateway:envelope:v2";

/// What a sealed record is, bound into its AAD. Changing any field makes the record unreadable.
#[derive(Debug, Clone, Copy)]
pub struct RecordIdentity<'a> {
    pub org: &'a str,
    pub app: &'a str,
    pub kind: &'a str,
    pub codec_version: u8,
}

impl RecordIdentity<'_> {
    /// Canonical bytes: each string u16-LE length-prefixed, then the codec version byte.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.org.len() + self.app.len() + self.kind.len());
        for s in [self.org, self.app, self.kind] {
            // Identifiers are validated to at most 128 bytes long before they get here.
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.push(self.codec_version);
        out
    }
}

/// The one place the AAD of an envelope is built.
pub(crate) fn aad(identity: &RecordIdentity<'_>, header: &[u8]) -> Vec<u8> {
    let id = identity.encode();
    let mut out = Vec::with_capacity(AAD_LABEL.len() + header.len() + id.len());
    out.extend_from_slice(AAD_LABEL);
    out.extend_from_slice(header);
    out.extend_from_slice(&id);
    out
}

/// Seals and opens records with the configured provider. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
}

impl Keyring {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Self { provider }
    }

    pub fn provider_kind(&self) -> ProviderKind {
        self.provider.kind()
    }

    pub fn kek_id(&self) -> &str {
        self.provider.kek_id()
    }

    /// Encrypts `plaintext` under a fresh DEK wrapped by the provider.
    pub async fn seal(
        &self,
        identity: RecordIdentity<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let dek = random_secret32()?;
        let context = identity.encode();
        let wrapped = self.provider.wrap(&dek, &context).await?;
        let kek_id = self.provider.kek_id().as_bytes();
        let k = u8::try_from(kek_id.len()).map_err(|_| KeyError::Malformed {
            what: "KEK id longer than 255 bytes",
        })?;
        let w = u16::try_from(wrapped.len()).map_err(|_| KeyError::Malformed {
            what: "wrapped DEK longer than 65535 bytes",
        })?;
        let mut out = Vec::with_capacity(21 + kek_id.len() + wrapped.len() + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.provider.kind().to_byte());
        out.push(k);
        out.extend_from_slice(kek_id);
        out.extend_from_slice(&w.to_le_bytes());
        out.extend_from_slice(&wrapped);
        let header_len = out.len();
        let nonce = random_nonce()?;
        let aad = aad(&identity, &out[..header_len]);
        let ct = cipher(&dek)?
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Authentication)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens an envelope sealed for `identity`; refuses plaintext and foreign keys.
    pub async fn open(
        &self,
        identity: RecordIdentity<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let parsed = parse(sealed)?;
        let configured = self.provider.kind();
        if parsed.provider != configured {
            return Err(if parsed.provider == ProviderKind::Plaintext {
                KeyError::PlaintextRefused { configured }
            } else {
                KeyError::ProviderMismatch {
                    record: parsed.provider,
                    configured,
                }
            });
        }
        if parsed.kek_id != self.provider.kek_id() {
            return Err(KeyError::KekMismatch {
                record_kek_id: parsed.kek_id.to_owned(),
                configured_kek_id: self.provider.kek_id().to_owned(),
            });
        }
        let context = identity.encode();
        let dek = self.provider.unwrap(parsed.wrapped, &context).await?;
        let aad = aad(&identity, parsed.header);
        let plain = cipher(&dek)?
            .decrypt(
                &Nonce::from(parsed.nonce),
                Payload {
                    msg: parsed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Authentication)?;
        Ok(Zeroizing::new(plain))
    }
}

fn cipher(dek: &[u8; 32]) -> Result<Aes256Gcm, KeyError> {
    Aes256Gcm::new_from_slice(dek).map_err(|_| KeyError::Malformed { what: "DEK length" })
}

struct Parsed<'a> {
    provider: ProviderKind,
    kek_id: &'a str,
    wrapped: &'a [u8],
    header: &'a [u8],
    nonce: [u8; 12],
    ciphertext: &'a [u8],
}

fn parse(b: &[u8]) -> Result<Parsed<'_>, KeyError> {
    if b.len() < 4 || &b[..4] != MAGIC {
        return Err(KeyError::NotAnEnvelope);
    }
    let short = KeyError::Malformed {
        what: "envelope shorter than its header says",
    };
    let version = *b.get(4).ok_or(KeyError::Malformed { what: "no version" })?;
    if version != VERSION {
        return Err(KeyError::UnsupportedVersion { version });
    }
    let provider = ProviderKind::from_byte(*b.get(5).ok_or(KeyError::Malformed {
        what: "no provider byte",
    })?)?;
    let k = usize::from(*b.get(6).ok_or(KeyError::Malformed {
        what: "no KEK id length",
    })?);
    let kek_raw = b.get(7..7 + k).ok_or(KeyError::Malformed {
        what: "KEK id truncated",
    })?;
    let kek_id = std::str::from_utf8(kek_raw).map_err(|_| KeyError::Malformed {
        what: "KEK id is not UTF-8",
    })?;
    let wl = b.get(7 + k..9 + k).ok_or(KeyError::Malformed {
        what: "wrapped DEK length truncated",
    })?;
    let w = usize::from(u16::from_le_bytes([wl[0], wl[1]]));
    let header_end = 9 + k + w;
    let wrapped = b.get(9 + k..header_end).ok_or(KeyError::Malformed {
        what: "wrapped DEK truncated",
    })?;
    let nonce: [u8; 12] = b
        .get(header_end..header_end + 12)
        .and_then(|n| n.try_into().ok())
        .ok_or(short)?;
    let ciphertext = &b[header_end + 12..];
    if ciphertext.len() < 16 {
        return Err(KeyError::Malformed {
            what: "ciphertext shorter than its tag",
        });
    }
    Ok(Parsed {
        provider,
        kek_id,
        wrapped,
        header: &b[..header_end],
        nonce,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LocalKek;

    fn id<'a>(org: &'a str, app: &'a str) -> RecordIdentity<'a> {
        RecordIdentity {
            org,
            app,
            kind: "genesis",
            codec_version: 1,
        }
    }

    fn local(byte: u8) -> Keyring {
        Keyring::new(Arc::new(LocalKek::new(Zeroizing::new([byte; 32]))))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn aad_matches_its_fixed_vector() {
        let got = aad(&id("acme", "mesh-1"), b"HDR");
        let want = "706561742d676174657761793a656e76656c6f70653a7632\
                    484452\
                    040061636d65\
                    06006d6573682d31\
                    070067656e65736973\
                    01";
        assert_eq!(hex::encode(got), want.replace(' ', ""));
    }

    #[test]
    fn sealed_record_round_trips_and_hides_the_plaintext() {
        block_on(async {
            let k = local(1);
            let secret = b"formation-secret-bytes-0123456789";
            let sealed = k.seal(id("acme", "m1"), secret).await.unwrap();
            assert!(!sealed.windows(secret.len()).any(|w| w == secret));
            assert_eq!(&sealed[..4], b"PENV");
            let open = k.open(id("acme", "m1"), &sealed).await.unwrap();
            assert_eq!(open.as_slice(), secret);
        });
    }

    #[test]
    fn record_moved_to_another_identity_fails_authentication() {
        block_on(async {
            let k = local(1);
            let sealed = k.seal(id("acme", "m1"), b"x").await.unwrap();
            for other in [id("acme", "m2"), id("evil", "m1")] {
                assert!(matches!(
                    k.open(other, &sealed).await,
                    Err(KeyError::Authentication)
                ));
            }
        });
    }

    #[test]
    fn wrong_kek_is_named_not_guessed() {
        block_on(async {
            let sealed = local(1).seal(id("a", "b"), b"x").await.unwrap();
            match local(2).open(id("a", "b"), &sealed).await {
                Err(KeyError::KekMismatch {
                    record_kek_id,
                    configured_kek_id,
                }) => assert_ne!(record_kek_id, configured_kek_id),
                other => panic!("expected KekMismatch, got {other:?}"),
            }
        });
    }

    #[test]
    fn tampering_with_any_byte_is_detected() {
        block_on(async {
            let k = local(1);
            let sealed = k.seal(id("a", "b"), b"payload").await.unwrap();
            for i in 0..sealed.len() {
                let mut t = sealed.clone();
                t[i] ^= 0x01;
                assert!(k.open(id("a", "b"), &t).await.is_err(), "byte {i}");
            }
            for cut in 0..sealed.len() {
                assert!(k.open(id("a", "b"), &sealed[..cut]).await.is_err());
            }
        });
    }

    #[test]
    fn unencrypted_bytes_are_refused() {
        block_on(async {
            let raw = b"\x04\x00TEST....";
            assert!(matches!(
                local(1).open(id("a", "b"), raw).await,
                Err(KeyError::NotAnEnvelope)
            ));
        });
    }

    #[cfg(feature = "dev")]
    #[test]
    fn plaintext_envelope_is_refused_once_a_real_provider_is_configured() {
        block_on(async {
            let dev = Keyring::new(Arc::new(crate::keys::Plaintext));
            let sealed = dev.seal(id("a", "b"), b"x").await.unwrap();
            assert_eq!(
                dev.open(id("a", "b"), &sealed).await.unwrap().as_slice(),
                b"x"
            );
            assert!(matches!(
                local(1).open(id("a", "b"), &sealed).await,
                Err(KeyError::PlaintextRefused {
                    configured: ProviderKind::Local
                })
            ));
        });
    }
}
