//! The envelope format and the [`Keyring`] that seals and opens records.
//!
//! ```text
//! 0        4   magic "PENV"
//! 4        1   version 0x04 (0x03 and 0x02 still read)
//! 5        1   provider byte (0 plaintext, 1 local, 2 tpm, 3 vault, 4 aws-kms)
//! 6        1   KEK id length k (u8)
//! 7        k   KEK id (UTF-8)
//! 7+k      2   wrapped DEK length w (u16 LE)
//! 9+k      w   wrapped DEK (provider-specific)
//! 9+k+w    12  nonce
//! 21+k+w   …   AES-256-GCM ciphertext ‖ tag (16)
//! ```
//! Header = bytes `[0, 9+k+w)`.
//! - v4 AAD = [`aad_v4`]`(identity)`: the payload is bound to the record (names and the
//!   owner's immutable uid), not to the KEK, so a rotation re-wraps the DEK (itself bound to
//!   the same identity by the provider) and leaves nonce and ciphertext as they are. A record
//!   of a deleted formation does not open for a re-created one of the same name.
//! - v3 AAD = [`aad_v3`]`(identity)`, names only; v2 AAD = [`aad`]`(identity, header)`: read
//!   only; rotation rewrites such records as v4.

use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use zeroize::Zeroizing;

use super::random::{random_nonce, random_secret32};
use super::{KeyError, KeyProvider, ProviderKind};

const MAGIC: &[u8; 4] = b"PENV";
const VERSION: u8 = 4;
const V3: u8 = 3;
const V2: u8 = 2;
const AAD_LABEL: &[u8] = b"peat-gateway:envelope:v2";
const AAD_LABEL_V3: &[u8] = b"peat-gateway:envelope:v3";
const AAD_LABEL_V4: &[u8] = b"peat-gateway:envelope:v4";

/// What a sealed record is, bound into its AAD. Changing any field makes the record unreadable.
#[derive(Debug, Clone, Copy)]
pub struct RecordIdentity<'a> {
    pub org: &'a str,
    pub app: &'a str,
    pub kind: &'a str,
    pub codec_version: u8,
    /// The immutable uid of what owns the record where its names can come back (a formation
    /// re-created under the same name); all zero where `app` is already random per creation.
    pub uid: [u8; 16],
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

    /// The v4 identity: the names, then the owner's uid.
    fn encode_v4(&self) -> Vec<u8> {
        let mut out = self.encode();
        out.extend_from_slice(&self.uid);
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

/// The v3 AAD: the record's names alone.
pub(crate) fn aad_v3(identity: &RecordIdentity<'_>) -> Vec<u8> {
    [AAD_LABEL_V3, &identity.encode()].concat()
}

/// The v4 AAD: the record's names and its owner's uid.
pub(crate) fn aad_v4(identity: &RecordIdentity<'_>) -> Vec<u8> {
    [AAD_LABEL_V4, &identity.encode_v4()].concat()
}

/// Seals with the configured provider; opens with it or with a previous KEK still held during
/// a rotation. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    previous: Arc<[Arc<dyn KeyProvider>]>,
}

impl Keyring {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Self {
            provider,
            previous: Arc::new([]),
        }
    }

    /// A keyring that also opens records sealed under `previous` KEKs (an unfinished
    /// rotation); new records are sealed under `provider` only.
    pub fn with_previous(
        provider: Arc<dyn KeyProvider>,
        previous: Vec<Arc<dyn KeyProvider>>,
    ) -> Self {
        Self {
            provider,
            previous: previous.into(),
        }
    }

    /// Which of the held providers sealed this envelope, or why none did.
    fn holder(&self, provider: ProviderKind, kek_id: &str) -> Result<&dyn KeyProvider, KeyError> {
        let configured = self.provider.kind();
        if let Some(p) = std::iter::once(&self.provider)
            .chain(self.previous.iter())
            .find(|p| p.kind() == provider && p.kek_id() == kek_id)
        {
            return Ok(p.as_ref());
        }
        Err(if provider == ProviderKind::Plaintext {
            KeyError::PlaintextRefused { configured }
        } else if provider != configured {
            KeyError::ProviderMismatch {
                record: provider,
                configured,
            }
        } else {
            KeyError::KekMismatch {
                record_kek_id: kek_id.to_owned(),
                configured_kek_id: self.provider.kek_id().to_owned(),
            }
        })
    }

    /// Whether the envelope is sealed under the current KEK in the current format.
    pub fn is_current(&self, sealed: &[u8]) -> Result<bool, KeyError> {
        let p = parse(sealed)?;
        Ok(p.version == VERSION
            && p.provider == self.provider.kind()
            && p.kek_id == self.provider.kek_id())
    }

    /// Re-wraps the DEK of a v4 envelope under the current KEK without touching the payload;
    /// an older envelope is opened and sealed again as v4.
    pub async fn rewrap(
        &self,
        identity: RecordIdentity<'_>,
        sealed: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let parsed = parse(sealed)?;
        if parsed.version != VERSION {
            let plain = self.open(identity, sealed).await?;
            return self.seal(identity, &plain).await;
        }
        let context = identity.encode_v4();
        let dek = self
            .holder(parsed.provider, parsed.kek_id)?
            .unwrap(parsed.wrapped, &context)
            .await?;
        // Proves the DEK opens the payload before the old wrap is given up.
        cipher(&dek)?
            .decrypt(
                &Nonce::from(parsed.nonce),
                Payload {
                    msg: parsed.ciphertext,
                    aad: &aad_v4(&identity),
                },
            )
            .map_err(|_| KeyError::Authentication)?;
        let mut out = self.header(&dek, &context).await?;
        out.extend_from_slice(&parsed.nonce);
        out.extend_from_slice(parsed.ciphertext);
        Ok(out)
    }

    /// Magic, version, provider, KEK id and the DEK wrapped by the current provider.
    async fn header(&self, dek: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        let wrapped = self.provider.wrap(dek, context).await?;
        let kek_id = self.provider.kek_id().as_bytes();
        let k = u8::try_from(kek_id.len()).map_err(|_| KeyError::Malformed {
            what: "KEK id longer than 255 bytes",
        })?;
        let w = u16::try_from(wrapped.len()).map_err(|_| KeyError::Malformed {
            what: "wrapped DEK longer than 65535 bytes",
        })?;
        let mut out = Vec::with_capacity(21 + kek_id.len() + wrapped.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.provider.kind().to_byte());
        out.push(k);
        out.extend_from_slice(kek_id);
        out.extend_from_slice(&w.to_le_bytes());
        out.extend_from_slice(&wrapped);
        Ok(out)
    }

    /// The current provider, to build another keyring around it.
    pub fn provider(&self) -> Arc<dyn KeyProvider> {
        self.provider.clone()
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
        let mut out = self.header(&dek, &identity.encode_v4()).await?;
        let nonce = random_nonce()?;
        let ct = cipher(&dek)?
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad_v4(&identity),
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
        let holder = self.holder(parsed.provider, parsed.kek_id)?;
        let (context, aad) = match parsed.version {
            V2 => (identity.encode(), aad(&identity, parsed.header)),
            V3 => (identity.encode(), aad_v3(&identity)),
            _ => (identity.encode_v4(), aad_v4(&identity)),
        };
        let dek = holder.unwrap(parsed.wrapped, &context).await?;
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
    version: u8,
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
    if ![VERSION, V3, V2].contains(&version) {
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
        version,
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
            uid: [7; 16],
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
    fn fuzz_envelopes() {
        let k = local(1);
        let seeds = [&b""[..], b"payload", &[0u8; 300]]
            .iter()
            .map(|p| block_on(k.seal(id("a", "b"), p)).unwrap())
            .collect();
        crate::fuzz::run("key-envelope", seeds, |b| {
            // Parsing is what untrusted bytes reach; opening one that parses must refuse or
            // give the plaintext, never panic.
            if parse(b).is_ok() {
                let _ = block_on(k.open(id("a", "b"), b));
            }
            Ok(())
        });
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
    fn v3_aad_is_the_identity_alone() {
        let got = aad_v3(&id("acme", "mesh-1"));
        let want = "706561742d676174657761793a656e76656c6f70653a7633\
                    040061636d65\
                    06006d6573682d31\
                    070067656e65736973\
                    01";
        assert_eq!(hex::encode(got), want.replace(' ', ""));
    }

    #[test]
    fn rewrap_moves_a_record_to_a_new_kek_keeping_its_ciphertext() {
        block_on(async {
            let old = local(1);
            let sealed = old.seal(id("a", "b"), b"payload").await.unwrap();
            let new = Keyring::with_previous(
                Arc::new(LocalKek::new(Zeroizing::new([2; 32]))),
                vec![Arc::new(LocalKek::new(Zeroizing::new([1; 32])))],
            );
            assert!(!new.is_current(&sealed).unwrap());
            assert_eq!(
                new.open(id("a", "b"), &sealed).await.unwrap().as_slice(),
                b"payload"
            );
            let moved = new.rewrap(id("a", "b"), &sealed).await.unwrap();
            assert!(new.is_current(&moved).unwrap());
            assert_eq!(
                moved[moved.len() - 23..],
                sealed[sealed.len() - 23..],
                "payload untouched"
            );
            assert_eq!(
                local(2)
                    .open(id("a", "b"), &moved)
                    .await
                    .unwrap()
                    .as_slice(),
                b"payload"
            );
            assert!(matches!(
                old.open(id("a", "b"), &moved).await,
                Err(KeyError::KekMismatch { .. })
            ));
            assert!(
                new.rewrap(id("x", "b"), &sealed).await.is_err(),
                "identity still bound"
            );
        });
    }

    /// An envelope of an older `version`, with the AAD that version used.
    async fn legacy(k: &Keyring, version: u8, plain: &[u8]) -> Vec<u8> {
        let dek = [9u8; 32];
        let mut hdr = b"PENV".to_vec();
        hdr.push(version);
        hdr.push(ProviderKind::Local.to_byte());
        let kek_id = k.kek_id().as_bytes().to_vec();
        hdr.push(kek_id.len() as u8);
        hdr.extend_from_slice(&kek_id);
        let wrapped = k.provider.wrap(&dek, &id("a", "b").encode()).await.unwrap();
        hdr.extend_from_slice(&(wrapped.len() as u16).to_le_bytes());
        hdr.extend_from_slice(&wrapped);
        let aad = match version {
            V2 => aad(&id("a", "b"), &hdr),
            _ => aad_v3(&id("a", "b")),
        };
        let nonce = [3u8; 12];
        let ct = cipher(&dek)
            .unwrap()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap();
        [hdr, nonce.to_vec(), ct].concat()
    }

    #[test]
    fn v2_records_still_open_and_rewrap_into_the_current_version() {
        block_on(async {
            // A v2 envelope: header-bound AAD, version byte 2.
            let k = local(1);
            let v2 = legacy(&k, V2, b"old").await;
            assert_eq!(k.open(id("a", "b"), &v2).await.unwrap().as_slice(), b"old");
            assert!(!k.is_current(&v2).unwrap());
            let v4 = k.rewrap(id("a", "b"), &v2).await.unwrap();
            assert_eq!(v4[4], VERSION);
            assert_eq!(k.open(id("a", "b"), &v4).await.unwrap().as_slice(), b"old");
        });
    }

    #[test]
    fn v3_records_open_by_name_and_v4_ones_only_for_their_owner() {
        block_on(async {
            // A v3 envelope: names only.
            let k = local(1);
            let v3 = legacy(&k, V3, b"v3").await;
            assert_eq!(k.open(id("a", "b"), &v3).await.unwrap().as_slice(), b"v3");
            let v4 = k.rewrap(id("a", "b"), &v3).await.unwrap();
            assert_eq!(v4[4], VERSION);
            // Same names, another owner (a formation re-created under the same name): refused.
            let mut other = id("a", "b");
            other.uid = [8; 16];
            assert!(k.open(other, &v4).await.is_err());
            assert_eq!(k.open(id("a", "b"), &v4).await.unwrap().as_slice(), b"v3");
        });
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
