//! KEK recovery file: the KEK wrapped under an operator passphrase (Argon2id + AES-256-GCM),
//! so a replacement board's TPM can re-seal it and the formations stay readable.
//!
//! JSON: `{"format", "kek_id", "kdf": {"m_kib", "t", "p", "salt"}, "nonce", "ciphertext"}`
//! (base64); the AAD is the format name and the KEK id, so neither can be swapped.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::random::random_nonce;
use super::KeyError;

const FORMAT: &str = "peat-gateway-kek-recovery/1";
/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;
// 64 MiB, 3 passes: seconds on a gateway, far more for anyone guessing.
const M_KIB: u32 = 64 * 1024;
const T: u32 = 3;
const P: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Kdf {
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: String,
    kek_id: String,
    kdf: Kdf,
    nonce: String,
    ciphertext: String,
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|_| KeyError::Malformed {
        what: "recovery file key-derivation parameters",
    })?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|_| KeyError::Malformed {
            what: "recovery key derivation",
        })?;
    Ok(key)
}

fn aad(kek_id: &str) -> Vec<u8> {
    [FORMAT.as_bytes(), b"\0", kek_id.as_bytes()].concat()
}

/// Wraps `kek` (whose id is `kek_id`) under `passphrase`.
pub fn export(kek: &[u8; 32], kek_id: &str, passphrase: &str) -> Result<String, KeyError> {
    export_with(kek, kek_id, passphrase, (M_KIB, T, P))
}

fn export_with(
    kek: &[u8; 32],
    kek_id: &str,
    passphrase: &str,
    (m_kib, t, p): (u32, u32, u32),
) -> Result<String, KeyError> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(KeyError::Malformed {
            what: "recovery passphrase shorter than 12 characters",
        });
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| KeyError::Rng)?;
    let key = derive(passphrase, &salt, m_kib, t, p)?;
    let nonce = random_nonce()?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| KeyError::Malformed {
        what: "recovery key",
    })?;
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: kek,
                aad: &aad(kek_id),
            },
        )
        .map_err(|_| KeyError::Authentication)?;
    let f = File {
        format: FORMAT.into(),
        kek_id: kek_id.into(),
        kdf: Kdf {
            m_kib,
            t,
            p,
            salt: B64.encode(salt),
        },
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(ct),
    };
    serde_json::to_string_pretty(&f).map_err(|_| KeyError::Malformed {
        what: "recovery file",
    })
}

/// Opens a recovery file; returns the KEK and the id it had.
pub fn import(text: &str, passphrase: &str) -> Result<(Zeroizing<[u8; 32]>, String), KeyError> {
    let bad = |what| KeyError::Malformed { what };
    let f: File = serde_json::from_str(text)
        .map_err(|_| bad("recovery file (not the JSON this gateway writes)"))?;
    if f.format != FORMAT {
        return Err(bad("recovery file format"));
    }
    // Bounds keep a crafted file from asking for unbounded memory or time.
    if f.kdf.m_kib > 1024 * 1024 || f.kdf.t > 16 || f.kdf.p > 8 {
        return Err(bad("recovery file key-derivation parameters"));
    }
    let salt = B64
        .decode(&f.kdf.salt)
        .map_err(|_| bad("recovery file salt"))?;
    let nonce: [u8; 12] = B64
        .decode(&f.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or(bad("recovery file nonce"))?;
    let ct = B64
        .decode(&f.ciphertext)
        .map_err(|_| bad("recovery file ciphertext"))?;
    let key = derive(passphrase, &salt, f.kdf.m_kib, f.kdf.t, f.kdf.p)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| bad("recovery key"))?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ct,
                    aad: &aad(&f.kek_id),
                },
            )
            .map_err(|_| KeyError::Authentication)?,
    );
    let mut kek = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(bad("recovered KEK length"));
    }
    kek.copy_from_slice(&plain);
    Ok((kek, f.kek_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let kek = [7u8; 32];
        let text = export(&kek, "tpm:0011223344556677", "correct horse battery").unwrap();
        assert!(!text.contains(&hex::encode(kek)));
        let (back, id) = import(&text, "correct horse battery").unwrap();
        assert_eq!((*back, id.as_str()), (kek, "tpm:0011223344556677"));
        assert!(matches!(
            import(&text, "wrong horse battery"),
            Err(KeyError::Authentication)
        ));
        let swapped = text.replace("tpm:0011223344556677", "tpm:ffffffffffffffff");
        assert!(
            import(&swapped, "correct horse battery").is_err(),
            "the id is bound"
        );
        assert!(export(&kek, "x", "short").is_err());
    }

    /// Seeds with a small key derivation, so each case costs microseconds; a mutation that
    /// asks for more than 64 KiB is only parsed (the bound itself is checked above).
    #[test]
    fn fuzz_recovery_files() {
        let pass = "correct horse battery";
        let seeds = [(8, 1, 1), (16, 2, 1)]
            .into_iter()
            .filter_map(|kdf| export_with(&[9; 32], "local:00aa", pass, kdf).ok())
            .map(String::into_bytes)
            .collect();
        crate::fuzz::run("key-recovery", seeds, |b| {
            let Ok(text) = std::str::from_utf8(b) else {
                return Ok(());
            };
            match serde_json::from_str::<File>(text) {
                Ok(f) if f.kdf.m_kib <= 64 && f.kdf.t <= 2 => match import(text, pass) {
                    Ok((kek, _)) if *kek != [9; 32] => Err("a different KEK came out".into()),
                    _ => Ok(()),
                },
                _ => Ok(()),
            }
        });
    }
}
