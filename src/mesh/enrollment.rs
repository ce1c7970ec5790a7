//! Enrollment request and response (§3.8).
//!
//! Request (109 + m + n + t bytes): subject key 32 ‖ u8 m, mesh_id ‖ u8 n, node_id ‖ requested
//! tier ‖ u16 t, token ‖ timestamp_ms u64 ‖ signature 64 by the **subject key** over every byte
//! before it (proof of possession).
//!
//! Response (≥ 13 bytes, unsigned): status ‖ u16 reason ‖ u8 has-cert [u16 cert] ‖ u8 has-secret
//! [u16 secret] ‖ timestamp_ms u64.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::wire::{put_bytes_u16, put_str_u16, put_str_u8, Reader};
use super::{MeshCertificate, MeshError, MeshTier};

const REQ: &str = "enrollment request";
const RESP: &str = "enrollment response";
pub const MIN_REQUEST_LEN: usize = 109;
pub const MIN_RESPONSE_LEN: usize = 13;

/// A device's request for a certificate. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentRequest {
    pub subject: [u8; 32],
    pub mesh_id: String,
    pub node_id: String,
    pub requested_tier: MeshTier,
    pub token: Zeroizing<Vec<u8>>,
    pub timestamp_ms: u64,
    pub signature: [u8; 64],
}

impl std::fmt::Debug for EnrollmentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentRequest")
            .field("subject", &hex::encode(self.subject))
            .field("mesh_id", &self.mesh_id)
            .field("node_id", &self.node_id)
            .field("requested_tier", &self.requested_tier)
            .field("token", &format_args!("[{} bytes]", self.token.len()))
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

fn request_portion(
    subject: &[u8; 32],
    mesh_id: &str,
    node_id: &str,
    tier: MeshTier,
    token: &[u8],
    timestamp_ms: u64,
) -> Result<Vec<u8>, MeshError> {
    let mut out = Vec::with_capacity(45 + mesh_id.len() + node_id.len() + token.len());
    out.extend_from_slice(subject);
    put_str_u8(&mut out, REQ, "mesh_id", mesh_id)?;
    put_str_u8(&mut out, REQ, "node_id", node_id)?;
    out.push(tier.to_byte());
    put_bytes_u16(&mut out, REQ, "token", token)?;
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    Ok(out)
}

impl EnrollmentRequest {
    /// Builds and signs a request with the device key (what a device does).
    pub fn signed(
        device: &SigningKey,
        mesh_id: &str,
        node_id: &str,
        requested_tier: MeshTier,
        token: &[u8],
        timestamp_ms: u64,
    ) -> Result<Self, MeshError> {
        let subject = device.verifying_key().to_bytes();
        let portion = request_portion(
            &subject,
            mesh_id,
            node_id,
            requested_tier,
            token,
            timestamp_ms,
        )?;
        Ok(Self {
            subject,
            mesh_id: mesh_id.to_owned(),
            node_id: node_id.to_owned(),
            requested_tier,
            token: Zeroizing::new(token.to_vec()),
            timestamp_ms,
            signature: device.sign(&portion).to_bytes(),
        })
    }

    fn signed_portion(&self) -> Result<Vec<u8>, MeshError> {
        request_portion(
            &self.subject,
            &self.mesh_id,
            &self.node_id,
            self.requested_tier,
            &self.token,
            self.timestamp_ms,
        )
    }

    pub fn encode(&self) -> Result<Vec<u8>, MeshError> {
        let mut out = self.signed_portion()?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Strict decode: exact length (trailing bytes refused), valid UTF-8, known tier.
    pub fn decode(bytes: &[u8]) -> Result<Self, MeshError> {
        let mut r = Reader::at_least(REQ, bytes, MIN_REQUEST_LEN)?;
        let (subject, mesh_id, node_id) = r.subject_and_ids()?;
        let requested_tier = MeshTier::from_byte(REQ, r.u8()?)?;
        let t = usize::from(r.u16()?);
        let token = Zeroizing::new(r.bytes(t)?.to_vec());
        let timestamp_ms = r.u64()?;
        let signature = r.array()?;
        r.finish()?;
        Ok(Self {
            subject,
            mesh_id,
            node_id,
            requested_tier,
            token,
            timestamp_ms,
            signature,
        })
    }

    /// Proof of possession: the subject key signed every byte before the signature. Refuses
    /// invalid and small-order keys (strict verification).
    pub fn verify(&self) -> Result<(), MeshError> {
        let bad = MeshError::BadSignature { what: REQ };
        if self.subject == [0; 32] {
            return Err(bad);
        }
        let key = VerifyingKey::from_bytes(&self.subject).map_err(|_| bad.clone())?;
        if key.is_weak() {
            return Err(bad);
        }
        key.verify_strict(
            &self.signed_portion()?,
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| bad)
    }
}

/// The answer's status byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollmentStatus {
    Pending,
    Approved,
    Denied { reason: String },
    Revoked { reason: String },
}

impl EnrollmentStatus {
    pub fn byte(&self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Approved => 1,
            Self::Denied { .. } => 2,
            Self::Revoked { .. } => 3,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied { .. } => "denied",
            Self::Revoked { .. } => "revoked",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Denied { reason } | Self::Revoked { reason } => Some(reason),
            _ => None,
        }
    }
}

/// The answer to a request. `Debug` hides the formation secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentResponse {
    pub status: EnrollmentStatus,
    pub certificate: Option<MeshCertificate>,
    pub formation_secret: Option<Zeroizing<Vec<u8>>>,
    pub timestamp_ms: u64,
}

impl std::fmt::Debug for EnrollmentResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentResponse")
            .field("status", &self.status)
            .field("certificate", &self.certificate.is_some())
            .field("formation_secret", &self.formation_secret.is_some())
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

impl EnrollmentResponse {
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, MeshError> {
        let mut out = Zeroizing::new(Vec::with_capacity(256));
        out.push(self.status.byte());
        put_str_u16(&mut out, RESP, "reason", self.status.reason().unwrap_or(""))?;
        match &self.certificate {
            Some(c) => {
                out.push(1);
                put_bytes_u16(&mut out, RESP, "certificate", &c.encode()?)?;
            }
            None => out.push(0),
        }
        match &self.formation_secret {
            Some(s) => {
                out.push(1);
                put_bytes_u16(&mut out, RESP, "formation_secret", s)?;
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MeshError> {
        let mut r = Reader::at_least(RESP, bytes, MIN_RESPONSE_LEN)?;
        let status_byte = r.u8()?;
        let reason = r.str_u16("reason")?.to_owned();
        let status = match status_byte {
            0 => EnrollmentStatus::Pending,
            1 => EnrollmentStatus::Approved,
            2 => EnrollmentStatus::Denied { reason },
            3 => EnrollmentStatus::Revoked { reason },
            value => {
                return Err(MeshError::UnknownEnum {
                    what: RESP,
                    field: "status",
                    value,
                })
            }
        };
        let flag = |r: &mut Reader<'_>, field: &'static str| -> Result<bool, MeshError> {
            match r.u8()? {
                0 => Ok(false),
                1 => Ok(true),
                value => Err(MeshError::UnknownEnum {
                    what: RESP,
                    field,
                    value,
                }),
            }
        };
        let certificate = if flag(&mut r, "has-certificate")? {
            let n = usize::from(r.u16()?);
            Some(MeshCertificate::decode(r.bytes(n)?)?)
        } else {
            None
        };
        let formation_secret = if flag(&mut r, "has-formation-secret")? {
            let n = usize::from(r.u16()?);
            Some(Zeroizing::new(r.bytes(n)?.to_vec()))
        } else {
            None
        };
        let timestamp_ms = r.u64()?;
        r.finish()?;
        Ok(Self {
            status,
            certificate,
            formation_secret,
            timestamp_ms,
        })
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

    #[test]
    fn requests_are_byte_exact_and_prove_possession() {
        let v = vectors();
        for case in v["enrollment"]["requests"].as_array().unwrap() {
            let bytes = h(&case["encoded_hex"]);
            let req = EnrollmentRequest::decode(&bytes).unwrap();
            assert_eq!(req.encode().unwrap(), bytes, "{}", case["label"]);
            req.verify().unwrap();
            assert_eq!(req.mesh_id, case["inputs"]["mesh_id"].as_str().unwrap());
            assert_eq!(
                req.timestamp_ms,
                case["inputs"]["timestamp_ms"].as_u64().unwrap()
            );
            for t in case["tampered"].as_array().unwrap() {
                let failed = EnrollmentRequest::decode(&h(&t["encoded_hex"]))
                    .and_then(|r| r.verify())
                    .is_err();
                assert!(failed, "tampered {} must fail", t["label"]);
            }
        }
        // Signing the first vector's fields with its key reproduces it (deterministic Ed25519).
        let case = &v["enrollment"]["requests"][0];
        let key = SigningKey::from_bytes(&[0x21; 32]);
        let i = &case["inputs"];
        let again = EnrollmentRequest::signed(
            &key,
            i["mesh_id"].as_str().unwrap(),
            i["node_id"].as_str().unwrap(),
            MeshTier::from_name(i["requested_tier"].as_str().unwrap()).unwrap(),
            &h(&i["bootstrap_token_hex"]),
            i["timestamp_ms"].as_u64().unwrap(),
        )
        .unwrap();
        assert_eq!(again.encode().unwrap(), h(&case["encoded_hex"]));
        assert!(!format!("{again:?}").contains("tok-alpha"));
    }

    #[test]
    fn responses_are_byte_exact() {
        let v = vectors();
        let mut all: Vec<Value> = v["enrollment"]["responses"].as_array().unwrap().clone();
        all.push(v["enrollment"]["static_service"]["denied_invalid_token"]["response"].clone());
        all.push(v["enrollment"]["static_service"]["denied_mesh_mismatch"]["response"].clone());
        for case in all {
            let bytes = h(&case["encoded_hex"]);
            let resp = EnrollmentResponse::decode(&bytes).unwrap();
            assert_eq!(
                resp.encode().unwrap().as_slice(),
                bytes,
                "{}",
                case["label"]
            );
            if let Some(c) = &resp.certificate {
                c.verify_signature().unwrap();
            }
        }
    }

    #[test]
    fn decode_errors_and_quirks_are_refused() {
        let v = vectors();
        assert!(matches!(
            EnrollmentRequest::decode(&[0; 108]),
            Err(MeshError::TooShort { min: 109, .. })
        ));
        assert!(matches!(
            EnrollmentResponse::decode(&[0; 12]),
            Err(MeshError::TooShort { min: 13, .. })
        ));
        let mut bad = vec![9u8, 0, 0, 0, 0];
        bad.extend_from_slice(&[0; 8]);
        assert!(matches!(
            EnrollmentResponse::decode(&bad),
            Err(MeshError::UnknownEnum { value: 9, .. })
        ));
        assert!(matches!(
            EnrollmentRequest::decode(&h(
                &v["quirks"]["enrollment_request_trailing_bytes"]["input_hex"]
            )),
            Err(MeshError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn all_zero_and_small_order_subject_keys_are_refused() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let mut req =
            EnrollmentRequest::signed(&key, "0B6CA76F", "n", MeshTier::Edge, b"", 1).unwrap();
        req.verify().unwrap();
        req.subject = [0; 32];
        assert!(req.verify().is_err());
        // The identity point (small order).
        let mut ident = [0u8; 32];
        ident[0] = 1;
        req.subject = ident;
        assert!(req.verify().is_err());
    }
}
