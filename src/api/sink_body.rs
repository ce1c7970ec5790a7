//! The `sink_type` bodies of `POST /orgs/{org_id}/sinks`, parsed into a sink spec and its
//! sealed secrets (credentials and client certificates are checked here, never echoed).

use serde::Deserialize;
use serde_json::Value;

use crate::tenant::{SinkSecrets, SinkSpec, TenantError, SINK_TYPES};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    name: String,
}

#[cfg(feature = "webhook")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    #[serde(default)]
    allow_private: bool,
    tls_ca_pem: Option<String>,
    client_cert_pem: Option<String>,
    client_key_pem: Option<crate::secret::Secret>,
}

/// A client certificate the sink presents, into its sealed secrets: both or neither, and a key
/// that matches the certificate. Never shown again.
#[cfg_attr(
    not(any(
        feature = "nats",
        feature = "mqtt",
        feature = "webhook",
        feature = "redis",
        feature = "kafka"
    )),
    allow(dead_code)
)]
fn client_cert(
    cert: Option<String>,
    key: Option<crate::secret::Secret>,
    secrets: &mut SinkSecrets,
) -> Result<(), TenantError> {
    match (cert, key) {
        (None, None) => Ok(()),
        (Some(cert), Some(key)) => {
            crate::tls::client_config(None, Some((&cert, key.expose()))).map_err(|e| {
                TenantError::Invalid {
                    field: "client_key_pem",
                    reason: e,
                }
            })?;
            secrets.client_cert_pem = Some(cert);
            secrets.client_key_pem = Some(key.expose().to_owned());
            Ok(())
        }
        _ => Err(TenantError::Invalid {
            field: "client_cert_pem",
            reason: "give client_cert_pem and client_key_pem together".into(),
        }),
    }
}

#[cfg(feature = "mqtt")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttBody {
    url: String,
    topic_prefix: String,
    tls_ca_pem: Option<String>,
    client_cert_pem: Option<String>,
    client_key_pem: Option<crate::secret::Secret>,
}

#[cfg(feature = "kafka")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaBody {
    topic: String,
    brokers: Option<String>,
    #[serde(default)]
    tls: bool,
    tls_ca_pem: Option<String>,
    client_cert_pem: Option<String>,
    client_key_pem: Option<crate::secret::Secret>,
    sasl_mechanism: Option<String>,
    sasl_username: Option<String>,
    /// Sealed, never shown.
    sasl_password: Option<crate::secret::Secret>,
    compression: Option<String>,
    batch_size: Option<u32>,
}

#[cfg(feature = "redis")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisBody {
    url: String,
    stream: String,
    maxlen: Option<u64>,
    tls_ca_pem: Option<String>,
    client_cert_pem: Option<String>,
    client_key_pem: Option<crate::secret::Secret>,
}

#[cfg(feature = "nats")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsBody {
    subject_prefix: String,
    url: Option<String>,
    stream: Option<String>,
    tls_ca_pem: Option<String>,
    /// Contents of a `.creds` file; sealed, never shown.
    creds: Option<crate::secret::Secret>,
    /// An nkey seed (`SU…`); sealed, never shown.
    nkey_seed: Option<crate::secret::Secret>,
    client_cert_pem: Option<String>,
    client_key_pem: Option<crate::secret::Secret>,
}

/// The sink types this build has, as `sink_type` names them.
pub(crate) const BUILT_TYPES: &[&str] = &[
    "File",
    #[cfg(feature = "nats")]
    "Nats",
    #[cfg(feature = "mqtt")]
    "Mqtt",
    #[cfg(feature = "webhook")]
    "Webhook",
    #[cfg(feature = "redis")]
    "RedisStreams",
    #[cfg(feature = "kafka")]
    "Kafka",
];

/// The upstream shape `{"<Type>": {…}}`; types this binary lacks are refused, never accepted
/// and dropped.
pub(super) fn spec_of(
    v: Value,
    egress: &crate::egress::Egress,
    default_kafka_brokers: Option<&str>,
) -> Result<(SinkSpec, SinkSecrets), TenantError> {
    #[cfg(not(feature = "kafka"))]
    let _ = default_kafka_brokers;
    let invalid = |r: String| TenantError::Invalid {
        field: "sink_type",
        reason: r,
    };
    // A literal internal address is refused at creation; names are checked when connecting.
    // Unused by a build with no network sinks.
    #[allow(unused_variables)]
    let literal = |url: &str| -> Result<(), TenantError> {
        match url::Url::parse(url).ok().as_ref().and_then(url::Url::host) {
            Some(h) => egress
                .check_literal(&h)
                .map_err(|reason| TenantError::NotGranted { reason }),
            None => Ok(()),
        }
    };
    let Value::Object(m) = v else {
        return Err(invalid(
            "must be an object like {\"Nats\":{\"subject_prefix\":\"peat\"}}".into(),
        ));
    };
    let mut it = m.into_iter();
    let (Some((kind, body)), None) = (it.next(), it.next()) else {
        return Err(invalid("must name exactly one sink type".into()));
    };
    let parse = |e: serde_json::Error| invalid(format!("{kind}: {e}"));
    match kind.as_str() {
        "File" => {
            let b: FileBody = serde_json::from_value(body).map_err(parse)?;
            Ok((SinkSpec::File { name: b.name }, SinkSecrets::default()))
        }
        #[cfg(feature = "nats")]
        "Nats" => {
            let b: NatsBody = serde_json::from_value(body).map_err(parse)?;
            if let Some(u) = &b.url {
                literal(u)?;
            }
            let bad = |field: &'static str| {
                move |reason: String| TenantError::Invalid {
                    field,
                    reason: format!("Nats: {reason}"),
                }
            };
            if let Some(c) = &b.creds {
                crate::cdc::sink::nats_auth::parse_creds(c.expose()).map_err(bad("creds"))?;
            }
            if let Some(s) = &b.nkey_seed {
                crate::cdc::sink::nats_auth::check_seed(s.expose()).map_err(bad("nkey_seed"))?;
            }
            let mut secrets = SinkSecrets::default();
            secrets.nats_creds = b.creds.map(|c| c.expose().to_owned());
            secrets.nats_nkey_seed = b.nkey_seed.map(|c| c.expose().to_owned());
            client_cert(b.client_cert_pem, b.client_key_pem, &mut secrets)?;
            Ok((
                SinkSpec::Nats {
                    subject_prefix: b.subject_prefix,
                    url: b.url,
                    stream: b.stream,
                    tls_ca_pem: b.tls_ca_pem,
                },
                secrets,
            ))
        }
        #[cfg(feature = "mqtt")]
        "Mqtt" => {
            let b: MqttBody = serde_json::from_value(body).map_err(parse)?;
            literal(&b.url)?;
            let mut secrets = SinkSecrets::default();
            client_cert(b.client_cert_pem, b.client_key_pem, &mut secrets)?;
            Ok((
                SinkSpec::Mqtt {
                    url: b.url,
                    topic_prefix: b.topic_prefix,
                    tls_ca_pem: b.tls_ca_pem,
                },
                secrets,
            ))
        }
        #[cfg(feature = "webhook")]
        "Webhook" => {
            let b: WebhookBody = serde_json::from_value(body).map_err(parse)?;
            literal(&b.url)?;
            crate::cdc::sink::webhook::check_url(&b.url, egress)
                .map_err(|e| invalid(format!("Webhook url {e}")))?;
            if let Some(pem) = &b.tls_ca_pem {
                crate::tls::roots(pem, "sink_type.Webhook.tls_ca_pem").map_err(&invalid)?;
            }
            let mut secrets = SinkSecrets::default();
            client_cert(b.client_cert_pem, b.client_key_pem, &mut secrets)?;
            Ok((
                SinkSpec::Webhook {
                    url: b.url,
                    allow_private: b.allow_private,
                    tls_ca_pem: b.tls_ca_pem,
                },
                secrets,
            ))
        }
        #[cfg(feature = "redis")]
        "RedisStreams" => {
            let b: RedisBody = serde_json::from_value(body).map_err(parse)?;
            literal(&b.url)?;
            crate::cdc::sink::redis::parse_url(&b.url)
                .map_err(|e| invalid(format!("RedisStreams url {e}")))?;
            if let Some(pem) = &b.tls_ca_pem {
                crate::tls::roots(pem, "sink_type.RedisStreams.tls_ca_pem").map_err(&invalid)?;
            }
            let mut secrets = SinkSecrets::default();
            client_cert(b.client_cert_pem, b.client_key_pem, &mut secrets)?;
            Ok((
                SinkSpec::RedisStreams {
                    url: b.url,
                    stream: b.stream,
                    maxlen: b.maxlen,
                    tls_ca_pem: b.tls_ca_pem,
                },
                secrets,
            ))
        }
        #[cfg(feature = "kafka")]
        "Kafka" => {
            let b: KafkaBody = serde_json::from_value(body).map_err(parse)?;
            let brokers = b
                .brokers
                .as_deref()
                .or(default_kafka_brokers)
                .ok_or_else(|| {
                    invalid("Kafka: no brokers: give `brokers` (host:port,…) in the sink or set PEAT_CDC_KAFKA_BROKERS".into())
                })?;
            for (host, _) in crate::cdc::sink::kafka::parse_brokers(brokers)
                .map_err(|e| invalid(format!("Kafka brokers: {e}")))?
            {
                if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                    egress
                        .check(&host, ip)
                        .map_err(|reason| TenantError::NotGranted { reason })?;
                }
            }
            if b.sasl_mechanism.is_some() != b.sasl_password.is_some() {
                return Err(invalid(
                    "Kafka: sasl_mechanism, sasl_username and sasl_password go together".into(),
                ));
            }
            if let Some(pem) = &b.tls_ca_pem {
                crate::tls::roots(pem, "sink_type.Kafka.tls_ca_pem").map_err(&invalid)?;
            }
            let mut secrets = SinkSecrets::default();
            client_cert(b.client_cert_pem, b.client_key_pem, &mut secrets)?;
            secrets.password = b.sasl_password.map(|p| p.expose().to_owned());
            Ok((
                SinkSpec::Kafka {
                    topic: b.topic,
                    brokers: b.brokers,
                    tls: b.tls,
                    tls_ca_pem: b.tls_ca_pem,
                    sasl_mechanism: b.sasl_mechanism,
                    sasl_username: b.sasl_username,
                    compression: b.compression,
                    batch_size: b.batch_size,
                },
                secrets,
            ))
        }
        other => Err(invalid(
            match SINK_TYPES.iter().find(|(k, _)| *k == other) {
                Some((k, feature)) => format!(
                    "the {k} sink is not built into this binary (cargo feature {feature}); use {}",
                    BUILT_TYPES.join(", ")
                ),
                None => format!(
                    "unknown sink type '{other}'; use {}",
                    BUILT_TYPES.join(", ")
                ),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_type_this_build_lacks_is_refused_by_its_feature() {
        let egress = crate::egress::Policies::default().for_org("acme");
        for (kind, feature) in SINK_TYPES.iter().filter(|(k, _)| *k != "File") {
            let body = serde_json::json!({ *kind: {"url": "nats://192.0.2.1:4222"} });
            let r = spec_of(body, &egress, None);
            let text = match r {
                Err(TenantError::Invalid { reason, .. }) => reason,
                Err(e) => e.to_string(),
                Ok(_) => String::new(),
            };
            let built = BUILT_TYPES.contains(kind);
            let refused = text.contains(&format!("(cargo feature {feature})"));
            assert_eq!(refused, !built, "{kind}: {text}");
        }
        let r = spec_of(serde_json::json!({"Carrier": {}}), &egress, None);
        assert!(
            matches!(r, Err(TenantError::Invalid { reason, .. }) if reason.starts_with("unknown sink type"))
        );
    }
}
