//! HKDF-SHA256 derivations used by the formats (`reference/peat-wire.md` §3.1–3.2).

use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// HKDF-SHA256 with 32 bytes of output; `salt = None` is the RFC default (32 zero bytes).
pub(crate) fn hkdf32(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(salt, ikm).expand(info, okm.as_mut());
    okm
}

/// peat-mesh `DeviceKeypair::from_seed`: Ed25519 seed = HKDF(salt none, ikm, info = context).
pub(crate) fn device_seed(ikm: &[u8], context: &str) -> Zeroizing<[u8; 32]> {
    hkdf32(None, ikm, context.as_bytes())
}

pub(crate) fn signing_key(seed: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/vectors/peat-mesh-0.6.0.json")).unwrap()
    }

    #[test]
    fn device_keypairs_from_seed_match_reference_vectors() {
        let v = vectors();
        let list = v["keypairs"]["from_seed"].as_array().unwrap();
        assert!(!list.is_empty());
        for case in list {
            let ikm = hex::decode(case["inputs"]["seed_hex"].as_str().unwrap()).unwrap();
            let ctx = case["inputs"]["context"].as_str().unwrap();
            let seed = device_seed(&ikm, ctx);
            assert_eq!(hex::encode(*seed), case["derived_ed25519_seed_hex"]);
            let key = signing_key(&seed);
            assert_eq!(
                hex::encode(key.verifying_key().to_bytes()),
                case["public_key_hex"]
            );
            let msg = case["sign_message_utf8"].as_str().unwrap();
            assert_eq!(
                hex::encode(key.sign(msg.as_bytes()).to_bytes()),
                case["signature_hex"]
            );
        }
    }

    #[test]
    fn device_keypairs_from_secret_bytes_match_reference_vectors() {
        let v = vectors();
        for case in v["keypairs"]["from_secret_bytes"].as_array().unwrap() {
            let secret: [u8; 32] = hex::decode(case["secret_hex"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let key = signing_key(&secret);
            assert_eq!(
                hex::encode(key.verifying_key().to_bytes()),
                case["public_key_hex"]
            );
        }
    }
}
