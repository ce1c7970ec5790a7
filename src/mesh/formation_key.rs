//! Pre-shared formation key admission (§3.5) and transport key derivation (§3.6).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::kdf::{device_seed, hkdf32, signing_key};
use super::wire::{put_str_u16, Reader};
use super::MeshError;

const CHALLENGE: &str = "formation challenge";

/// The 32-byte formation key as peat-mesh's `FormationKey` holds it.
pub struct FormationKey(Zeroizing<[u8; 32]>);

impl FormationKey {
    pub fn new(secret: Zeroizing<[u8; 32]>) -> Self {
        Self(secret)
    }

    /// Trims, decodes standard base64; 32 bytes are used as-is, any other length is hashed.
    pub fn from_base64(s: &str) -> Result<Self, MeshError> {
        use base64::Engine as _;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|_| MeshError::InvalidField {
                    what: "formation key",
                    field: "base64",
                })?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        if raw.len() == 32 {
            out.copy_from_slice(&raw);
        } else {
            out.copy_from_slice(&Sha256::digest(raw.as_slice()));
        }
        Ok(Self(out))
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.0
    }

    fn hmac(&self, formation_id: &str, nonce: &[u8; 32]) -> Hmac<Sha256> {
        let key = hkdf32(
            Some(formation_id.as_bytes()),
            self.0.as_ref(),
            b"peat-protocol-v1-formation",
        );
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(nonce);
        mac.update(formation_id.as_bytes());
        mac
    }

    /// HMAC-SHA256 over nonce ‖ formation id under the HKDF-derived key.
    pub fn respond(&self, formation_id: &str, nonce: &[u8; 32]) -> [u8; 32] {
        self.hmac(formation_id, nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Constant-time check of a peer's response.
    pub fn verify(&self, formation_id: &str, nonce: &[u8; 32], response: &[u8]) -> bool {
        self.hmac(formation_id, nonce)
            .verify_slice(response)
            .is_ok()
    }
}

/// `u16 id length ‖ formation_id ‖ nonce(32)`.
pub fn encode_challenge(formation_id: &str, nonce: &[u8; 32]) -> Result<Vec<u8>, MeshError> {
    let mut out = Vec::with_capacity(34 + formation_id.len());
    put_str_u16(&mut out, CHALLENGE, "formation_id", formation_id)?;
    out.extend_from_slice(nonce);
    Ok(out)
}

pub fn decode_challenge(bytes: &[u8]) -> Result<(String, [u8; 32]), MeshError> {
    let mut r = Reader::new(CHALLENGE, bytes);
    let id = r.str_u16("formation_id")?.to_owned();
    let nonce = r.array()?;
    r.finish()?;
    Ok((id, nonce))
}

/// A node's iroh transport key: seed = HKDF(salt none, IKM = the decoded shared key as raw
/// bytes, info = `iroh:` ‖ node id). Returns the public key (the EndpointId).
pub fn transport_public_key(shared_key: &[u8], node_id: &str) -> [u8; 32] {
    let seed = device_seed(shared_key, &format!("iroh:{node_id}"));
    signing_key(&seed).verifying_key().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/vectors/peat-mesh-0.6.0.json")).unwrap()
    }

    fn nonce(v: &Value) -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    #[test]
    fn formation_key_challenges_match_reference() {
        let v = vectors();
        for case in v["formation_keys"]["vectors"].as_array().unwrap() {
            let i = &case["inputs"];
            let key = match i["secret"]["secret_hex"].as_str() {
                Some(h) => {
                    FormationKey::new(Zeroizing::new(hex::decode(h).unwrap().try_into().unwrap()))
                }
                None => FormationKey::from_base64(i["secret"]["base64"].as_str().unwrap()).unwrap(),
            };
            assert_eq!(hex::encode(key.secret()), case["effective_secret_hex"]);
            let id = i["formation_id"].as_str().unwrap();
            let n = nonce(&i["nonce_hex"]);
            let resp = key.respond(id, &n);
            assert_eq!(hex::encode(resp), case["response_hex"], "{}", case["label"]);
            assert!(key.verify(id, &n, &resp));
            let mut flipped = resp;
            flipped[31] ^= 1;
            assert!(!key.verify(id, &n, &flipped));
            let other = case["other_formation_id"].as_str().unwrap();
            assert_eq!(
                hex::encode(key.respond(other, &n)),
                case["other_formation_id_response_hex"]
            );
            let ch = encode_challenge(id, &n).unwrap();
            assert_eq!(hex::encode(&ch), case["challenge_bytes_hex"]);
            assert_eq!(decode_challenge(&ch).unwrap(), (id.to_owned(), n));
        }
        assert!(FormationKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn transport_keys_match_reference_endpoint_ids() {
        let v = vectors();
        for case in v["iroh_endpoint_ids"]["vectors"].as_array().unwrap() {
            let i = &case["inputs"];
            let key = base64::engine::general_purpose::STANDARD
                .decode(i["shared_key_base64"].as_str().unwrap())
                .unwrap();
            let pk = transport_public_key(&key, i["node_id"].as_str().unwrap());
            assert_eq!(
                hex::encode(pk),
                case["endpoint_id_hex"],
                "{}",
                case["label"]
            );
        }
    }
}
