//! MeshCertificate: an authority's Ed25519 statement about a subject key (§3.7).
//!
//! Layout (148 + m + n bytes, little-endian):
//! ```text
//! 0       32  subject public key
//! 32      1   m, then m bytes mesh_id
//! 33+m    1   n, then n bytes node_id
//! 34+m+n  1   tier byte
//! 35+m+n  1   permissions
//! 36+m+n  8   issued_at_ms
//! 44+m+n  8   expires_at_ms (0 = never)
//! 52+m+n  32  issuer public key
//! 84+m+n  64  signature by the issuer over bytes [0, 84+m+n)
//! ```

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::wire::{put_str_u8, Reader};
use super::{MeshError, MeshTier, Permissions};

const WHAT: &str = "certificate";
pub const MIN_CERTIFICATE_LEN: usize = 148;

/// The fields a certificate states, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFields {
    pub subject: [u8; 32],
    pub mesh_id: String,
    pub node_id: String,
    pub tier: MeshTier,
    pub permissions: Permissions,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// A decoded certificate; `encode()` reproduces the input bytes exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshCertificate {
    pub fields: CertificateFields,
    pub issuer: [u8; 32],
    pub signature: [u8; 64],
}

impl CertificateFields {
    fn signed_portion(&self, issuer: &[u8; 32]) -> Result<Vec<u8>, MeshError> {
        let mut out = Vec::with_capacity(84 + self.mesh_id.len() + self.node_id.len());
        out.extend_from_slice(&self.subject);
        put_str_u8(&mut out, WHAT, "mesh_id", &self.mesh_id)?;
        put_str_u8(&mut out, WHAT, "node_id", &self.node_id)?;
        out.push(self.tier.to_byte());
        out.push(self.permissions.bits());
        out.extend_from_slice(&self.issued_at_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(issuer);
        Ok(out)
    }

    /// Signs with the issuer key; strings over 255 bytes are refused, never wrapped.
    pub fn sign(self, issuer: &SigningKey) -> Result<MeshCertificate, MeshError> {
        let issuer_pk = issuer.verifying_key().to_bytes();
        let portion = self.signed_portion(&issuer_pk)?;
        let signature = issuer.sign(&portion).to_bytes();
        Ok(MeshCertificate {
            fields: self,
            issuer: issuer_pk,
            signature,
        })
    }
}

impl MeshCertificate {
    pub fn encode(&self) -> Result<Vec<u8>, MeshError> {
        let mut out = self.fields.signed_portion(&self.issuer)?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Strict decode: exact length, valid UTF-8, known tier byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, MeshError> {
        let mut r = Reader::at_least(WHAT, bytes, MIN_CERTIFICATE_LEN)?;
        let (subject, mesh_id, node_id) = r.subject_and_ids()?;
        let tier = MeshTier::from_byte(WHAT, r.u8()?)?;
        let permissions = Permissions::from_wire(r.u8()?);
        let issued_at_ms = r.u64()?;
        let expires_at_ms = r.u64()?;
        let issuer = r.array()?;
        let signature = r.array()?;
        r.finish()?;
        Ok(Self {
            fields: CertificateFields {
                subject,
                mesh_id,
                node_id,
                tier,
                permissions,
                issued_at_ms,
                expires_at_ms,
            },
            issuer,
            signature,
        })
    }

    /// Verifies the signature with the issuer key the certificate carries (strict Ed25519).
    /// Whether that issuer is trusted is the caller's decision.
    pub fn verify_signature(&self) -> Result<(), MeshError> {
        let bad = MeshError::BadSignature { what: WHAT };
        let key = VerifyingKey::from_bytes(&self.issuer).map_err(|_| bad.clone())?;
        let portion = self.fields.signed_portion(&self.issuer)?;
        key.verify_strict(&portion, &Signature::from_bytes(&self.signature))
            .map_err(|_| bad)
    }

    /// `issued_at ≤ now` and (`expires_at == 0` or `now < expires_at`); no skew tolerance.
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        self.fields.issued_at_ms <= now_ms
            && (self.fields.expires_at_ms == 0 || now_ms < self.fields.expires_at_ms)
    }

    /// Milliseconds left; `u64::MAX` for a certificate that never expires.
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        if self.fields.expires_at_ms == 0 {
            u64::MAX
        } else {
            self.fields.expires_at_ms.saturating_sub(now_ms)
        }
    }

    pub fn is_root(&self) -> bool {
        self.fields.subject == self.issuer
    }

    /// SHA-256 of the wire bytes, lowercase hex: the inventory's identifier.
    pub fn fingerprint(&self) -> Result<String, MeshError> {
        Ok(hex::encode(Sha256::digest(self.encode()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/vectors/peat-mesh-0.6.0.json")).unwrap()
    }

    fn h(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().unwrap()).unwrap()
    }

    fn genesis_a_authority() -> SigningKey {
        let g = super::super::MeshGenesis::with_seed(
            "TEST",
            zeroize::Zeroizing::new([0x42; 32]),
            1_700_000_000_000,
            super::super::MembershipPolicy::Controlled,
        )
        .unwrap();
        g.authority_signing_key()
    }

    #[test]
    fn certificates_are_byte_exact_to_the_reference_and_verify() {
        let v = vectors();
        let authority = genesis_a_authority();
        for case in v["certificates"]["vectors"].as_array().unwrap() {
            let bytes = h(&case["encoded_hex"]);
            let cert = MeshCertificate::decode(&bytes).unwrap();
            assert_eq!(cert.encode().unwrap(), bytes, "{}", case["label"]);
            cert.verify_signature().unwrap();
            let i = &case["inputs"];
            assert_eq!(cert.fields.mesh_id, i["mesh_id"].as_str().unwrap());
            assert_eq!(cert.fields.node_id, i["node_id"].as_str().unwrap());
            assert_eq!(u64::from(cert.fields.permissions.bits()), i["permissions"]);
            assert_eq!(cert.is_root(), case["is_root"].as_bool().unwrap());
            // Issuing the same fields with the same authority gives the same bytes.
            if i["issuer_public_key_hex"] == hex::encode(authority.verifying_key().to_bytes()) {
                let again = cert.fields.clone().sign(&authority).unwrap();
                assert_eq!(again.encode().unwrap(), bytes);
            }
            for (name, bit) in case["has_permission"].as_object().unwrap() {
                let p = Permissions::from_name(name).unwrap();
                assert_eq!(cert.fields.permissions.has(p), bit.as_bool().unwrap());
            }
            for t in case["validity"].as_array().unwrap() {
                let now = t["now_ms"].as_u64().unwrap();
                assert_eq!(cert.is_valid_at(now), t["is_valid"].as_bool().unwrap());
                if cert.fields.expires_at_ms != 0 {
                    assert_eq!(
                        cert.remaining_ms(now),
                        t["time_remaining_ms"].as_u64().unwrap()
                    );
                }
            }
            for t in case["tampered"].as_array().unwrap() {
                let b = h(&t["encoded_hex"]);
                let failed = MeshCertificate::decode(&b)
                    .and_then(|c| c.verify_signature())
                    .is_err();
                assert!(failed, "tampered {} must fail", t["label"]);
            }
        }
    }

    #[test]
    fn quirk_inputs_are_refused() {
        let v = vectors();
        let q = &v["quirks"];
        assert!(matches!(
            MeshCertificate::decode(&h(&q["certificate_trailing_byte"]["input_hex"])),
            Err(MeshError::TrailingBytes { .. })
        ));
        assert!(
            MeshCertificate::decode(&h(&q["certificate_node_id_256_bytes"]["encoded_hex"]))
                .is_err()
        );
        let fields = CertificateFields {
            subject: [1; 32],
            mesh_id: "0B6CA76F".into(),
            node_id: "n".repeat(256),
            tier: MeshTier::Edge,
            permissions: Permissions::STANDARD,
            issued_at_ms: 0,
            expires_at_ms: 0,
        };
        assert!(matches!(
            fields.sign(&genesis_a_authority()),
            Err(MeshError::TooLong {
                len: 256,
                max: 255,
                ..
            })
        ));
        assert!(matches!(
            MeshCertificate::decode(&[0; 147]),
            Err(MeshError::TooShort {
                total: 147,
                min: 148,
                ..
            })
        ));
    }
}
