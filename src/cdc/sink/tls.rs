//! TLS client settings shared by the broker sinks (rustls with ring).

use std::sync::Arc;

/// A TLS client trusting exactly the CA certificates in `pem`, or the public web roots when
/// `pem` is `None`.
pub fn client_config(pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("tls_ca_pem: {e}"))?;
                roots.add(cert).map_err(|e| format!("tls_ca_pem: {e}"))?;
            }
            if roots.is_empty() {
                return Err("tls_ca_pem holds no certificate".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| format!("TLS setup: {e}"))
}
