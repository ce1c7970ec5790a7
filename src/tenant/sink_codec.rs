//! The stored encodings of sink specs and sink secrets (postcard), older versions included:
//! what was written before a field was added still opens.

use serde::{Deserialize, Serialize};

use super::sinks::SinkSpec;

/// The spec as first stored (webhooks without a CA); still read.
#[derive(Deserialize)]
enum SinkSpecV1 {
    File {
        name: String,
    },
    Nats {
        subject_prefix: String,
        url: Option<String>,
        stream: Option<String>,
        tls_ca_pem: Option<String>,
    },
    Mqtt {
        url: String,
        topic_prefix: String,
        tls_ca_pem: Option<String>,
    },
    Webhook {
        url: String,
        allow_private: bool,
    },
}

pub(crate) fn decode_spec(bytes: &[u8]) -> Option<SinkSpec> {
    if let Ok(s) = postcard::from_bytes::<SinkSpec>(bytes) {
        return Some(s);
    }
    Some(match postcard::from_bytes::<SinkSpecV1>(bytes).ok()? {
        SinkSpecV1::File { name } => SinkSpec::File { name },
        SinkSpecV1::Nats {
            subject_prefix,
            url,
            stream,
            tls_ca_pem,
        } => SinkSpec::Nats {
            subject_prefix,
            url,
            stream,
            tls_ca_pem,
        },
        SinkSpecV1::Mqtt {
            url,
            topic_prefix,
            tls_ca_pem,
        } => SinkSpec::Mqtt {
            url,
            topic_prefix,
            tls_ca_pem,
        },
        SinkSpecV1::Webhook { url, allow_private } => SinkSpec::Webhook {
            url,
            allow_private,
            tls_ca_pem: None,
        },
    })
}

/// Credentials a sink needs, sealed as one record under the key provider.
#[derive(Default, Clone, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct SinkSecrets {
    /// A webhook's signing key.
    pub webhook_key: Option<Vec<u8>>,
    /// The password taken out of a broker URL.
    pub password: Option<String>,
    /// A NATS `.creds` file's contents (JWT and nkey seed).
    pub nats_creds: Option<String>,
    /// A NATS nkey seed (`SU…`).
    pub nats_nkey_seed: Option<String>,
    /// The client certificate (PEM chain) the sink presents to its broker or endpoint.
    pub client_cert_pem: Option<String>,
    /// Its private key (PEM).
    pub client_key_pem: Option<String>,
}

/// The secrets as first stored, before client certificates; still read.
#[derive(Deserialize)]
struct SinkSecretsV1 {
    webhook_key: Option<Vec<u8>>,
    password: Option<String>,
    nats_creds: Option<String>,
    nats_nkey_seed: Option<String>,
}

impl SinkSecrets {
    pub(crate) fn is_empty(&self) -> bool {
        self.webhook_key.is_none()
            && self.password.is_none()
            && self.nats_creds.is_none()
            && self.nats_nkey_seed.is_none()
            && self.client_cert_pem.is_none()
    }

    /// The client identity as (certificate PEM, key PEM), when one is set.
    pub fn client_identity(&self) -> Option<(&str, &str)> {
        Some((
            self.client_cert_pem.as_deref()?,
            self.client_key_pem.as_deref()?,
        ))
    }

    pub(crate) fn decode(plain: &[u8]) -> Option<Self> {
        if let Ok(s) = postcard::from_bytes::<SinkSecrets>(plain) {
            return Some(s);
        }
        let v1: SinkSecretsV1 = postcard::from_bytes(plain).ok()?;
        Some(Self {
            webhook_key: v1.webhook_key,
            password: v1.password,
            nats_creds: v1.nats_creds,
            nats_nkey_seed: v1.nats_nkey_seed,
            client_cert_pem: None,
            client_key_pem: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_stored_sink_specs_and_secrets() {
        let specs = [
            SinkSpec::File { name: "f".into() },
            SinkSpec::Nats {
                subject_prefix: "peat".into(),
                url: Some("nats://h:4222".into()),
                stream: None,
                tls_ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
            },
            SinkSpec::Mqtt {
                url: "mqtts://h".into(),
                topic_prefix: "t".into(),
                tls_ca_pem: None,
            },
        ];
        let seeds = specs
            .iter()
            .filter_map(|s| postcard::to_allocvec(s).ok())
            .collect();
        crate::fuzz::run("sink-spec", seeds, |b| {
            let _ = SinkSecrets::decode(b);
            crate::fuzz::round_trip(
                b,
                |b| decode_spec(b).ok_or(()),
                |s| postcard::to_allocvec(s).map_err(drop),
            )
        });
    }

    #[test]
    fn specs_and_secrets_stored_before_client_certificates_still_open() {
        #[derive(serde::Serialize)]
        enum OldSpec {
            #[allow(dead_code)]
            File {
                name: String,
            },
            #[allow(dead_code)]
            Nats {
                a: String,
                b: Option<String>,
                c: Option<String>,
                d: Option<String>,
            },
            #[allow(dead_code)]
            Mqtt {
                a: String,
                b: String,
                c: Option<String>,
            },
            Webhook {
                url: String,
                allow_private: bool,
            },
        }
        let old = postcard::to_allocvec(&OldSpec::Webhook {
            url: "https://h/x".into(),
            allow_private: true,
        })
        .unwrap();
        assert_eq!(
            decode_spec(&old),
            Some(SinkSpec::Webhook {
                url: "https://h/x".into(),
                allow_private: true,
                tls_ca_pem: None
            })
        );
        #[derive(serde::Serialize)]
        struct OldSecrets {
            webhook_key: Option<Vec<u8>>,
            password: Option<String>,
            nats_creds: Option<String>,
            nats_nkey_seed: Option<String>,
        }
        let old = postcard::to_allocvec(&OldSecrets {
            webhook_key: Some(vec![1, 2, 3]),
            password: None,
            nats_creds: None,
            nats_nkey_seed: Some("SU".into()),
        })
        .unwrap();
        let s = SinkSecrets::decode(&old).unwrap();
        assert_eq!(s.webhook_key.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(s.nats_nkey_seed.as_deref(), Some("SU"));
        assert!(s.client_identity().is_none());
    }
}
