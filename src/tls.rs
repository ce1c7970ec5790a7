//! rustls settings built from PEM text, with the ring provider: one place for every TLS
//! client (broker sinks, the sidecar) and the simulator's TLS front.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates in `pem` (`what` names the setting in errors); none is an error.
pub fn roots(pem: &str, what: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("{what}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{what}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{what} holds no certificate"));
    }
    Ok(roots)
}

/// A certificate chain and its private key, both PEM.
pub fn identity(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("client_cert_pem: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("client_key_pem: {e}"))?;
    Ok((chain, key))
}

/// A TLS client trusting exactly the CAs in `ca_pem` (else the public web roots), presenting
/// `client` (certificate PEM, key PEM) when given.
pub fn client_config(
    ca_pem: Option<&str>,
    client: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, String> {
    let roots = match ca_pem {
        Some(pem) => roots(pem, "tls_ca_pem")?,
        None => {
            let mut r = rustls::RootCertStore::empty();
            r.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            r
        }
    };
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    match client {
        Some((cert, key)) => {
            let (chain, key) = identity(cert, key)?;
            b.with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key do not match: {e}"))
        }
        None => Ok(b.with_no_client_auth()),
    }
}

/// A TLS server with `cert_pem`/`key_pem`; with `client_ca_pem`, only clients presenting a
/// certificate from that CA are admitted.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<rustls::ServerConfig, String> {
    let (chain, key) = identity(cert_pem, key_pem)?;
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let b = match client_ca_pem {
        Some(pem) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(pem, "client CA")?),
                provider(),
            )
            .build()
            .map_err(|e| format!("client CA: {e}"))?;
            b.with_client_cert_verifier(verifier)
        }
        None => b.with_no_client_auth(),
    };
    b.with_single_cert(chain, key)
        .map_err(|e| format!("server certificate: {e}"))
}

/// The API listener's TLS: the server certificate, and with `client_ca_pem` a check of client
/// certificates against that CA (required, or optional so routes can decide).
pub fn server_config_for_listener(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no PEM certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "private key: no PEM private key (PKCS#8, PKCS#1 or SEC1) found".to_owned()
        }
        other => format!("private key: {other}"),
    })?;
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let b = match client_ca_pem {
        Some(pem) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(pem, "client CA")?),
                provider(),
            );
            let v = if require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            b.with_client_cert_verifier(v.build().map_err(|e| format!("client CA: {e}"))?)
        }
        None => b.with_no_client_auth(),
    };
    b.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "private key does not match the certificate".into(),
        other => format!("certificate or key: {other}"),
    })
}
