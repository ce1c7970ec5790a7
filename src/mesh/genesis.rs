//! MeshGenesis: a formation's root of trust and its persistence encoding (§3.2).
//!
//! Layout (75 + n bytes, little-endian):
//! ```text
//! 0     2   name length n (u16)
//! 2     n   mesh_name (UTF-8)
//! 2+n   32  mesh_seed
//! 34+n  32  authority Ed25519 seed
//! 66+n  8   created_at_ms (u64)
//! 74+n  1   policy byte
//! ```
//! The encoding holds every secret of the formation: only `keys/` may persist it, sealed.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::kdf::{device_seed, hkdf32, signing_key};
use super::wire::{put_str_u16, Reader};
use super::{MembershipPolicy, MeshCredentials, MeshError};

const WHAT: &str = "genesis";
const MAX_NAME: usize = 255;

/// The secret root of one formation. `Debug` prints only public facts.
pub struct MeshGenesis {
    mesh_name: String,
    mesh_seed: Zeroizing<[u8; 32]>,
    authority_seed: Zeroizing<[u8; 32]>,
    created_at_ms: u64,
    policy: MembershipPolicy,
    /// Derived from `authority_seed` once: deriving it costs a scalar multiplication.
    authority: ed25519_dalek::SigningKey,
}

impl MeshGenesis {
    /// Builds a genesis from a 32-byte seed, deriving the authority key as peat-mesh does.
    ///
    /// `mesh_name` must be 1–255 bytes of `[A-Za-z0-9._-]`: it is also peat-node's app id.
    pub fn with_seed(
        mesh_name: &str,
        mesh_seed: Zeroizing<[u8; 32]>,
        created_at_ms: u64,
        policy: MembershipPolicy,
    ) -> Result<Self, MeshError> {
        check_name(mesh_name)?;
        let authority_seed = device_seed(mesh_seed.as_ref(), "peat-mesh:authority-keypair");
        Ok(Self {
            mesh_name: mesh_name.to_owned(),
            mesh_seed,
            authority: signing_key(&authority_seed),
            authority_seed,
            created_at_ms,
            policy,
        })
    }

    pub fn mesh_name(&self) -> &str {
        &self.mesh_name
    }

    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    pub fn policy(&self) -> MembershipPolicy {
        self.policy
    }

    /// First 4 bytes of HKDF(salt = name, ikm = seed, info `peat-mesh:mesh-id`), uppercase hex.
    pub fn mesh_id(&self) -> String {
        let okm = hkdf32(
            Some(self.mesh_name.as_bytes()),
            self.mesh_seed.as_ref(),
            b"peat-mesh:mesh-id",
        );
        hex::encode_upper(&okm[..4])
    }

    /// The pre-shared formation secret (peat-node's `PEAT_NODE_SHARED_KEY`).
    pub fn formation_secret(&self) -> Zeroizing<[u8; 32]> {
        hkdf32(
            Some(self.mesh_name.as_bytes()),
            self.mesh_seed.as_ref(),
            b"peat-mesh:formation-secret",
        )
    }

    pub fn authority_public_key(&self) -> [u8; 32] {
        self.authority.verifying_key().to_bytes()
    }

    /// The authority's signing key (zeroized on drop), for issuing certificates. A copy of
    /// the derived key: nothing is recomputed.
    pub fn authority_signing_key(&self) -> ed25519_dalek::SigningKey {
        self.authority.clone()
    }

    /// First 16 bytes of SHA-256(authority public key), lowercase hex.
    pub fn authority_device_id(&self) -> String {
        let digest = Sha256::digest(self.authority_public_key());
        hex::encode(&digest[..16])
    }

    /// The shareable bundle for devices; it still carries the formation secret.
    pub fn credentials(&self) -> MeshCredentials {
        MeshCredentials::new(
            &self.mesh_name,
            &self.mesh_id(),
            self.formation_secret(),
            self.authority_public_key(),
            self.policy,
        )
    }

    /// Encodes the secret persistence form.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, MeshError> {
        let mut out = Zeroizing::new(Vec::with_capacity(75 + self.mesh_name.len()));
        put_str_u16(&mut out, WHAT, "mesh_name", &self.mesh_name)?;
        out.extend_from_slice(self.mesh_seed.as_ref());
        out.extend_from_slice(self.authority_seed.as_ref());
        out.extend_from_slice(&self.created_at_ms.to_le_bytes());
        out.push(self.policy.to_byte());
        Ok(out)
    }

    /// Decodes the persistence form; the authority seed is taken as stored, not re-derived.
    pub fn decode(bytes: &[u8]) -> Result<Self, MeshError> {
        let mut r = Reader::new(WHAT, bytes);
        let mesh_name = r.str_u16("mesh_name")?.to_owned();
        check_name(&mesh_name)?;
        let mesh_seed = Zeroizing::new(r.array::<32>()?);
        let authority_seed = Zeroizing::new(r.array::<32>()?);
        let created_at_ms = r.u64()?;
        let policy = MembershipPolicy::from_byte(WHAT, r.u8()?)?;
        r.finish()?;
        Ok(Self {
            mesh_name,
            mesh_seed,
            authority: signing_key(&authority_seed),
            authority_seed,
            created_at_ms,
            policy,
        })
    }
}

impl fmt::Debug for MeshGenesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshGenesis")
            .field("mesh_name", &self.mesh_name)
            .field("mesh_id", &self.mesh_id())
            .field("policy", &self.policy)
            .field("secrets", &"[redacted]")
            .finish()
    }
}

fn check_name(name: &str) -> Result<(), MeshError> {
    if name.len() > MAX_NAME {
        return Err(MeshError::TooLong {
            what: WHAT,
            field: "mesh_name",
            len: name.len(),
            max: MAX_NAME,
        });
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(MeshError::InvalidField {
            what: WHAT,
            field: "mesh_name",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn genesis_a() -> Value {
        let v: Value =
            serde_json::from_str(include_str!("../../tests/vectors/peat-mesh-0.6.0.json")).unwrap();
        v["genesis"][0].clone()
    }

    fn build(case: &Value) -> MeshGenesis {
        let inputs = &case["inputs"];
        let seed: [u8; 32] = hex::decode(inputs["mesh_seed_hex"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let policy = MembershipPolicy::from_name(inputs["policy"].as_str().unwrap()).unwrap();
        MeshGenesis::with_seed(
            inputs["mesh_name"].as_str().unwrap(),
            Zeroizing::new(seed),
            inputs["created_at_ms"].as_u64().unwrap(),
            policy,
        )
        .unwrap()
    }

    #[test]
    fn genesis_a_derivations_match_reference_vector() {
        let case = genesis_a();
        let g = build(&case);
        assert_eq!(g.mesh_id(), case["mesh_id"]);
        assert_eq!(
            hex::encode(*g.formation_secret()),
            case["formation_secret_hex"]
        );
        assert_eq!(
            hex::encode(g.authority_public_key()),
            case["authority_public_key_hex"]
        );
        assert_eq!(g.authority_device_id(), case["authority_device_id"]);
        assert_eq!(
            hex::encode(*g.authority_seed),
            case["authority_secret_seed_hex"]
        );
    }

    #[test]
    fn genesis_a_encoding_is_byte_identical_and_round_trips() {
        let case = genesis_a();
        let g = build(&case);
        let enc = g.encode().unwrap();
        assert_eq!(hex::encode(enc.as_slice()), case["genesis_encoded_hex"]);
        assert_eq!(
            enc.len() as u64,
            case["genesis_encoded_len"].as_u64().unwrap()
        );
        let back = MeshGenesis::decode(&enc).unwrap();
        assert_eq!(back.encode().unwrap().as_slice(), enc.as_slice());
        assert_eq!(back.mesh_id(), case["mesh_id"]);
    }

    #[test]
    fn decode_takes_authority_seed_from_bytes() {
        let case = genesis_a();
        let mut enc = build(&case).encode().unwrap().to_vec();
        // Replace the authority seed (offset 34 + n, n = 4) as an external authority would.
        enc[38..70].copy_from_slice(&[7u8; 32]);
        let g = MeshGenesis::decode(&enc).unwrap();
        assert_eq!(
            g.authority_public_key(),
            signing_key(&[7u8; 32]).verifying_key().to_bytes()
        );
    }

    #[test]
    fn decode_is_strict_about_length_and_policy() {
        let case = genesis_a();
        let enc = build(&case).encode().unwrap().to_vec();
        let mut long = enc.clone();
        long.push(0);
        assert!(matches!(
            MeshGenesis::decode(&long),
            Err(MeshError::TrailingBytes { extra: 1, .. })
        ));
        for cut in 0..enc.len() {
            assert!(MeshGenesis::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_policy = enc.clone();
        *bad_policy.last_mut().unwrap() = 9;
        assert!(matches!(
            MeshGenesis::decode(&bad_policy),
            Err(MeshError::UnknownEnum { value: 9, .. })
        ));
    }

    #[test]
    fn names_outside_the_app_id_alphabet_or_too_long_are_refused() {
        let seed = || Zeroizing::new([1u8; 32]);
        for bad in ["", "a b", "a/b", "é"] {
            assert!(
                MeshGenesis::with_seed(bad, seed(), 0, MembershipPolicy::Open).is_err(),
                "{bad:?}"
            );
        }
        let long = "n".repeat(256);
        assert!(matches!(
            MeshGenesis::with_seed(&long, seed(), 0, MembershipPolicy::Open),
            Err(MeshError::TooLong { len: 256, .. })
        ));
        assert!(
            MeshGenesis::with_seed(&"n".repeat(255), seed(), 0, MembershipPolicy::Open).is_ok()
        );
    }

    #[test]
    fn debug_output_carries_no_secret() {
        let case = genesis_a();
        let g = build(&case);
        let dbg = format!("{g:?}");
        assert!(dbg.contains("0B6CA76F"));
        for secret in [
            "mesh_seed_hex",
            "authority_secret_seed_hex",
            "formation_secret_hex",
        ] {
            let hexed = case.get(secret).or(case["inputs"].get(secret)).unwrap();
            assert!(!dbg.contains(hexed.as_str().unwrap()));
        }
        assert!(!dbg.contains("66, 66"), "seed bytes printed: {dbg}");
    }
}
