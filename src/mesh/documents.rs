//! Certificate and revocation documents as peat-mesh's certificate store reads them (§3.9).

use base64::Engine as _;
use serde::Serialize;

use super::{MeshCertificate, MeshError};

pub const CERTIFICATES: &str = "certificates";
pub const REVOCATIONS: &str = "revocations";

/// Field order is the wire order peat-mesh writes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertificateEntry {
    pub cert_data: String,
    pub node_id: String,
    pub tier: &'static str,
    pub subject: String,
    pub issuer: String,
    pub permissions: u8,
    pub expires_at_ms: u64,
    pub written_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RevocationEntry {
    pub subject: String,
    pub reason: String,
    pub timestamp_ms: u64,
}

impl CertificateEntry {
    pub fn new(cert: &MeshCertificate, written_at_ms: u64) -> Result<Self, MeshError> {
        Ok(Self {
            cert_data: base64::engine::general_purpose::STANDARD.encode(cert.encode()?),
            node_id: cert.fields.node_id.clone(),
            tier: cert.fields.tier.name(),
            subject: hex::encode(cert.fields.subject),
            issuer: hex::encode(cert.issuer),
            permissions: cert.fields.permissions.bits(),
            expires_at_ms: cert.fields.expires_at_ms,
            written_at_ms,
        })
    }
}

/// The document id of either kind: the subject key in lowercase hex.
pub fn doc_id(subject: &[u8; 32]) -> String {
    hex::encode(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn entries_serialize_exactly_as_peat_mesh_writes_them() {
        let v: Value =
            serde_json::from_str(include_str!("../../tests/vectors/peat-mesh-0.6.0.json")).unwrap();
        let s = &v["certificate_store"];
        let cert = MeshCertificate::decode(
            &hex::decode(
                v["certificates"]["vectors"][0]["encoded_hex"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let written = s["certificate_entry"]["value"]["written_at_ms"]
            .as_u64()
            .unwrap();
        let e = CertificateEntry::new(&cert, written).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            s["certificate_entry"]["serde_json_compact"]
                .as_str()
                .unwrap()
        );
        let r = RevocationEntry {
            subject: doc_id(&cert.fields.subject),
            reason: "key compromised".into(),
            timestamp_ms: 1_700_000_200_000,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            s["revocation_entry"]["serde_json_compact"]
                .as_str()
                .unwrap()
        );
        assert_eq!(
            format!("{CERTIFICATES}:{}", doc_id(&cert.fields.subject)),
            s["document_keys"]["certificate"].as_str().unwrap()
        );
    }
}
