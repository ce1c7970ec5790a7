//! MeshCredentials: the bundle a device or node needs to join a formation (§3.3).
//!
//! Layout (75 + n bytes): name length n (u16), mesh_name, mesh_id (8 ASCII), formation secret
//! (32), authority public key (32), policy byte. It carries no private key, but the formation
//! secret yields every node's transport key: treat it as a secret.

use std::fmt;

use zeroize::Zeroizing;

use super::wire::{put_str_u16, Reader};
use super::{MembershipPolicy, MeshError};

const WHAT: &str = "credentials";

pub struct MeshCredentials {
    mesh_name: String,
    mesh_id: String,
    formation_secret: Zeroizing<[u8; 32]>,
    authority_public_key: [u8; 32],
    policy: MembershipPolicy,
}

impl MeshCredentials {
    pub(crate) fn new(
        mesh_name: &str,
        mesh_id: &str,
        formation_secret: Zeroizing<[u8; 32]>,
        authority_public_key: [u8; 32],
        policy: MembershipPolicy,
    ) -> Self {
        Self {
            mesh_name: mesh_name.to_owned(),
            mesh_id: mesh_id.to_owned(),
            formation_secret,
            authority_public_key,
            policy,
        }
    }

    pub fn mesh_name(&self) -> &str {
        &self.mesh_name
    }

    pub fn mesh_id(&self) -> &str {
        &self.mesh_id
    }

    pub fn formation_secret(&self) -> &[u8; 32] {
        &self.formation_secret
    }

    pub fn authority_public_key(&self) -> [u8; 32] {
        self.authority_public_key
    }

    pub fn policy(&self) -> MembershipPolicy {
        self.policy
    }

    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, MeshError> {
        if self.mesh_id.len() != 8 || !self.mesh_id.is_ascii() {
            return Err(MeshError::InvalidField {
                what: WHAT,
                field: "mesh_id",
            });
        }
        let mut out = Zeroizing::new(Vec::with_capacity(75 + self.mesh_name.len()));
        put_str_u16(&mut out, WHAT, "mesh_name", &self.mesh_name)?;
        out.extend_from_slice(self.mesh_id.as_bytes());
        out.extend_from_slice(self.formation_secret.as_ref());
        out.extend_from_slice(&self.authority_public_key);
        out.push(self.policy.to_byte());
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MeshError> {
        let mut r = Reader::new(WHAT, bytes);
        let mesh_name = r.str_u16("mesh_name")?.to_owned();
        let raw_id = r.bytes(8)?;
        if !raw_id.is_ascii() {
            return Err(MeshError::InvalidField {
                what: WHAT,
                field: "mesh_id",
            });
        }
        let mesh_id = String::from_utf8_lossy(raw_id).into_owned();
        let formation_secret = Zeroizing::new(r.array::<32>()?);
        let authority_public_key = r.array::<32>()?;
        let policy = MembershipPolicy::from_byte(WHAT, r.u8()?)?;
        r.finish()?;
        Ok(Self {
            mesh_name,
            mesh_id,
            formation_secret,
            authority_public_key,
            policy,
        })
    }
}

impl fmt::Debug for MeshCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshCredentials")
            .field("mesh_name", &self.mesh_name)
            .field("mesh_id", &self.mesh_id)
            .field("formation_secret", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::MeshGenesis;
    use serde_json::Value;

    fn genesis_a() -> (Value, MeshGenesis) {
        let v: Value =
            serde_json::from_str(include_str!("../../tests/vectors/peat-mesh-0.6.0.json")).unwrap();
        let case = v["genesis"][0].clone();
        let enc = hex::decode(case["genesis_encoded_hex"].as_str().unwrap()).unwrap();
        (case, MeshGenesis::decode(&enc).unwrap())
    }

    #[test]
    fn credentials_of_genesis_a_are_byte_identical() {
        let (case, g) = genesis_a();
        let enc = g.credentials().encode().unwrap();
        assert_eq!(hex::encode(enc.as_slice()), case["credentials_encoded_hex"]);
        let back = MeshCredentials::decode(&enc).unwrap();
        assert_eq!(back.mesh_id(), "0B6CA76F");
        assert_eq!(back.mesh_name(), "TEST");
        assert_eq!(back.policy(), MembershipPolicy::Controlled);
        assert_eq!(back.encode().unwrap().as_slice(), enc.as_slice());
    }

    #[test]
    fn credentials_decode_rejects_every_truncation_and_trailing_bytes() {
        let (_, g) = genesis_a();
        let enc = g.credentials().encode().unwrap().to_vec();
        for cut in 0..enc.len() {
            assert!(MeshCredentials::decode(&enc[..cut]).is_err());
        }
        let mut long = enc.clone();
        long.extend_from_slice(&[0, 0]);
        assert!(matches!(
            MeshCredentials::decode(&long),
            Err(MeshError::TrailingBytes { extra: 2, .. })
        ));
    }

    #[test]
    fn debug_output_hides_the_formation_secret() {
        let (case, g) = genesis_a();
        let dbg = format!("{:?}", g.credentials());
        assert!(!dbg.contains(case["formation_secret_hex"].as_str().unwrap()));
        assert!(dbg.contains("[redacted]"));
    }
}
