//! Sinks: where events go. A sink delivers a batch and says what the broker acknowledged;
//! cursors, retries, dead letters and rate limits are the dispatcher's.

mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "mqtt5")]
mod mqtt5;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "nats")]
pub mod nats_auth;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod resp;
#[cfg(any(feature = "nats", feature = "mqtt"))]
pub mod token;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use super::ce_binary::{binary, Attributes};
use super::ce_json::cloud_event_bytes;
use super::event::{cloud_event, event_id};
use crate::store::EventRecord;
use crate::tenant::{ContentMode, SinkDef, SinkSpec};

/// One event ready to send.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub lsn: u64,
    /// `<gateway-id>:<lsn>`; every sink carries it in its native dedupe field.
    pub id: String,
    pub event: EventRecord,
    /// What the message carries: the structured CloudEvent, or in binary mode the data alone.
    /// Shared: a publish (and a retry) hands the client the same buffer.
    pub body: bytes::Bytes,
    /// Binary mode: the event's other attributes, for the message headers.
    pub attributes: Option<Attributes>,
}

impl Delivery {
    /// The event `lsn` as the sink's content mode sends it.
    pub fn new(gateway_id: &str, lsn: u64, event: EventRecord, mode: ContentMode) -> Self {
        let (body, attributes) = match mode {
            // A batched sink joins the structured events of a batch into one message.
            ContentMode::Structured | ContentMode::Batched => {
                (cloud_event_bytes(gateway_id, lsn, &event), None)
            }
            ContentMode::Binary => {
                let (attrs, data) = binary(gateway_id, lsn, &event);
                (data, Some(attrs))
            }
        };
        Self {
            lsn,
            id: event_id(gateway_id, lsn),
            event,
            body: body.into(),
            attributes,
        }
    }

    /// A made-up event with its own `id` and the type `io.peat.gateway.test` (a sink test),
    /// in the sink's content mode.
    pub fn test(gateway_id: &str, event: EventRecord, id: &str, mode: ContentMode) -> Self {
        let mut d = Self::new(gateway_id, 0, event, mode);
        d.id = id.to_owned();
        match &mut d.attributes {
            None => {
                let mut ce = cloud_event(gateway_id, 0, &d.event);
                ce.id = id.to_owned();
                ce.kind = TEST_EVENT_TYPE;
                d.body = ce.to_bytes().into();
            }
            Some(attrs) => {
                for (attr, value) in attrs.iter_mut() {
                    match attr.name {
                        "id" => *value = id.to_owned().into(),
                        "type" => *value = TEST_EVENT_TYPE.into(),
                        _ => {}
                    }
                }
            }
        }
        d
    }
}

/// Structured events as one JSON array (`application/cloudevents-batch+json`).
#[cfg(any(feature = "nats", feature = "webhook"))]
fn batch_array(batch: &[Delivery]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.iter().map(|d| d.body.len() + 1).sum::<usize>() + 1);
    out.push(b'[');
    for (i, d) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&d.body);
    }
    out.push(b']');
    out
}

/// A batch's dedupe id, the same on every retry of it: `<first event id>-<last lsn>`.
#[cfg(any(feature = "nats", feature = "webhook"))]
fn batch_id(batch: &[Delivery]) -> String {
    match (batch.first(), batch.last()) {
        (Some(first), Some(last)) => format!("{}-{}", first.id, last.lsn),
        _ => String::new(),
    }
}

/// The type of the event `POST …/test` sends.
const TEST_EVENT_TYPE: &str = "io.peat.gateway.test";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// Link or broker trouble: retry the whole batch later with the same ids.
    Transient(String),
    /// The receiver asked to come back later (`Retry-After`).
    Busy {
        retry_after: std::time::Duration,
        reason: String,
    },
    /// The broker refused `batch[index]` for good; the events before it were acknowledged.
    Rejected { index: usize, reason: String },
}

pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

pub trait Sink: Send {
    /// Delivers the batch in order; `Ok` means every event was acknowledged.
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> DeliverFuture<'a>;
    /// Human-readable target for status pages, without credentials.
    fn target(&self) -> String;
    /// Whether the link to the broker is up, for sinks whose client reconnects by itself: a
    /// loop backing off after link trouble retries as soon as this turns true. `false` (the
    /// default) leaves the backoff to run out.
    fn link_up(&self) -> bool {
        false
    }
}

/// What sinks may need from the gateway's configuration.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub data_dir: PathBuf,
    pub default_nats_url: Option<String>,
    /// Brokers for Kafka sinks that name none (`PEAT_CDC_KAFKA_BROKERS`).
    pub default_kafka_brokers: Option<String>,
    /// Where each org's sinks may connect.
    pub egress: crate::egress::Policies,
}

/// Why a stored sink of a type this binary lacks cannot run.
#[allow(dead_code)]
fn not_built(spec: &SinkSpec) -> String {
    format!(
        "the {} sink is not built into this binary (cargo feature {}); \
         use a build with it, or delete the sink",
        spec.type_name(),
        spec.kind()
    )
}

/// Builds the live sink for a definition; `secret` is its opened sealed secret (a webhook's
/// signing key, a broker password).
pub fn build(
    def: &SinkDef,
    ctx: &SinkContext,
    secrets: Option<crate::tenant::SinkSecrets>,
) -> Result<Box<dyn Sink>, String> {
    let secrets = secrets.unwrap_or_default();
    // Unused by a build with no broker sinks.
    #[allow(unused_variables)]
    let password = secrets.password.clone();
    match &def.spec {
        SinkSpec::File { name } => Ok(Box::new(file::FileSink::new(
            ctx.data_dir.join("sinks").join(&def.org_id),
            name,
        ))),
        #[cfg(feature = "nats")]
        SinkSpec::Nats {
            subject_prefix,
            url,
            stream,
            tls_ca_pem,
        } => {
            let url = url
                .clone()
                .or_else(|| ctx.default_nats_url.clone())
                .ok_or_else(|| {
                    "no NATS URL: give `url` in the sink or set PEAT_CDC_NATS_URL".to_owned()
                })?;
            let url = match &password {
                Some(p) => crate::tenant::with_password(&url, p),
                None => url,
            };
            Ok(Box::new(nats::NatsSink::new(
                url,
                ctx.egress.for_org(&def.org_id),
                subject_prefix.clone(),
                def.org_id.clone(),
                stream.clone(),
                def.content_mode == ContentMode::Batched,
                nats::NatsAuth {
                    // Stored before creation checked them: refused here, never retried.
                    creds: secrets
                        .nats_creds
                        .as_deref()
                        .map(nats_auth::parse_creds)
                        .transpose()
                        .map_err(|e| format!("the sink's NATS credentials are malformed: {e}"))?,
                    nkey_seed: secrets
                        .nats_nkey_seed
                        .as_deref()
                        .map(|seed| nats_auth::check_seed(seed).map(|()| seed.to_owned()))
                        .transpose()
                        .map_err(|e| format!("the sink's NATS nkey seed is malformed: {e}"))?,
                    tls_ca_pem: tls_ca_pem.clone(),
                    client: secrets
                        .client_identity()
                        .map(|(c, k)| (c.to_owned(), zeroize::Zeroizing::new(k.to_owned()))),
                },
            )?))
        }
        #[cfg(feature = "webhook")]
        SinkSpec::Webhook {
            url,
            allow_private,
            tls_ca_pem,
        } => {
            let key = secrets
                .webhook_key
                .clone()
                .ok_or_else(|| "the webhook's signing secret could not be opened".to_owned())?;
            // `allow_private` no longer opens anything: the gateway admin grants networks.
            let _ = allow_private;
            Ok(Box::new(webhook::WebhookSink::new(
                url,
                ctx.egress.for_org(&def.org_id),
                zeroize::Zeroizing::new(key),
                tls_ca_pem.as_deref(),
                secrets.client_identity(),
            )?))
        }
        #[cfg(feature = "redis")]
        SinkSpec::RedisStreams {
            url,
            stream,
            maxlen,
            tls_ca_pem,
        } => Ok(Box::new(redis::RedisSink::new(
            url,
            password,
            stream.clone(),
            *maxlen,
            ctx.egress.for_org(&def.org_id),
            tls_ca_pem.as_deref(),
            secrets.client_identity(),
        )?)),
        #[cfg(feature = "kafka")]
        SinkSpec::Kafka {
            topic,
            brokers,
            tls,
            tls_ca_pem,
            sasl_mechanism,
            sasl_username,
            compression,
            batch_size,
        } => {
            let brokers = brokers
                .clone()
                .or_else(|| ctx.default_kafka_brokers.clone())
                .ok_or_else(|| {
                    "no Kafka brokers: give `brokers` in the sink or set PEAT_CDC_KAFKA_BROKERS"
                        .to_owned()
                })?;
            let sasl = match (sasl_mechanism, sasl_username) {
                (Some(m), Some(u)) => Some(kafka::Sasl {
                    mechanism: m.clone(),
                    username: u.clone(),
                    password: password.clone().unwrap_or_default(),
                }),
                _ => None,
            };
            Ok(Box::new(kafka::KafkaSink::new(
                &brokers,
                topic.clone(),
                compression.as_deref(),
                batch_size.map(|n| n as usize),
                ctx.egress.for_org(&def.org_id),
                *tls,
                tls_ca_pem.as_deref(),
                secrets.client_identity(),
                sasl,
            )?))
        }
        #[cfg(feature = "mqtt")]
        SinkSpec::Mqtt { .. }
            if def.content_mode == ContentMode::Binary && !cfg!(feature = "mqtt5") =>
        {
            Err(crate::tenant::MQTT5_NOT_BUILT.to_owned())
        }
        #[cfg(feature = "mqtt")]
        SinkSpec::Mqtt {
            url,
            topic_prefix,
            tls_ca_pem,
        } => Ok(Box::new(mqtt::MqttSink::new(
            &match &password {
                Some(p) => crate::tenant::with_password(url, p),
                None => url.clone(),
            },
            topic_prefix.clone(),
            def.org_id.clone(),
            &def.sink_id,
            ctx.egress.for_org(&def.org_id),
            tls_ca_pem.as_deref(),
            secrets.client_identity(),
            def.content_mode == ContentMode::Binary,
        )?)),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{SinkDef, SinkStart};

    fn def(spec: SinkSpec) -> SinkDef {
        SinkDef {
            org_id: "acme".into(),
            org_uid: [1; 16],
            sink_id: "s1".into(),
            sink_uid: [2; 16],
            spec,
            enabled: true,
            formations: Vec::new(),
            collections: Vec::new(),
            rate_limit_bytes_per_sec: 0,
            start: SinkStart::Earliest,
            created_at_ms: 0,
            content_mode: crate::tenant::ContentMode::Structured,
        }
    }

    fn ctx() -> SinkContext {
        SinkContext {
            data_dir: std::env::temp_dir(),
            default_nats_url: None,
            default_kafka_brokers: None,
            egress: crate::egress::Policies::default(),
        }
    }

    #[test]
    fn a_stored_sink_of_a_type_this_build_lacks_does_not_start_and_says_which_feature() {
        let specs = [
            SinkSpec::Nats {
                subject_prefix: "p".into(),
                url: Some("nats://192.0.2.1:4222".into()),
                stream: None,
                tls_ca_pem: None,
            },
            SinkSpec::Mqtt {
                url: "mqtt://192.0.2.1:1883".into(),
                topic_prefix: "p".into(),
                tls_ca_pem: None,
            },
            SinkSpec::RedisStreams {
                url: "redis://192.0.2.1:6379".into(),
                stream: "s".into(),
                maxlen: None,
                tls_ca_pem: None,
            },
            SinkSpec::Kafka {
                topic: "t".into(),
                brokers: Some("192.0.2.1:9092".into()),
                tls: false,
                tls_ca_pem: None,
                sasl_mechanism: None,
                sasl_username: None,
                compression: None,
                batch_size: None,
            },
        ];
        let ctx = ctx();
        let features = [
            ("nats", cfg!(feature = "nats")),
            ("mqtt", cfg!(feature = "mqtt")),
            ("redis", cfg!(feature = "redis")),
            ("kafka", cfg!(feature = "kafka")),
        ];
        for spec in specs {
            let built = features.iter().any(|(f, on)| *on && *f == spec.kind());
            let def = def(spec);
            let refusal = build(&def, &ctx, None).err().unwrap_or_default();
            let named = refusal.contains(&format!("(cargo feature {})", def.spec.kind()));
            assert_eq!(named, !built, "{}: {refusal}", def.spec.type_name());
        }
    }

    #[test]
    fn binary_mode_goes_where_the_protocol_carries_attributes_and_mqtt_needs_mqtt5() {
        let mqtt = SinkSpec::Mqtt {
            url: "mqtt://192.0.2.1:1883".into(),
            topic_prefix: "p".into(),
            tls_ca_pem: None,
        };
        let redis = SinkSpec::RedisStreams {
            url: "redis://192.0.2.1:6379".into(),
            stream: "s".into(),
            maxlen: None,
            tls_ca_pem: None,
        };
        let refusal = |spec: &SinkSpec| {
            ContentMode::Binary
                .check(spec)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(refusal(&redis).contains("RedisStreams sink delivers structured"));
        assert!(ContentMode::Structured.check(&redis).is_ok());
        assert_eq!(
            refusal(&mqtt).contains("(cargo feature mqtt5)"),
            !cfg!(feature = "mqtt5"),
            "{}",
            refusal(&mqtt)
        );
        // A stored binary MQTT sink in a build without MQTT 5 does not start, and says why.
        let mut d = def(mqtt);
        d.content_mode = ContentMode::Binary;
        let started = build(&d, &ctx(), None).err().unwrap_or_default();
        if cfg!(feature = "mqtt") && !cfg!(feature = "mqtt5") {
            assert!(started.contains("(cargo feature mqtt5)"), "{started}");
        } else if cfg!(feature = "mqtt5") {
            assert_eq!(started, "");
        }
    }

    #[cfg(feature = "nats")]
    #[test]
    fn a_stored_nats_sink_with_malformed_creds_or_seed_does_not_start_and_says_so() {
        let def = def(SinkSpec::Nats {
            subject_prefix: "p".into(),
            url: Some("nats://192.0.2.1:4222".into()),
            stream: None,
            tls_ca_pem: None,
        });
        let ctx = ctx();
        let mut secrets = crate::tenant::SinkSecrets::default();
        secrets.nats_creds = Some("not a creds file".into());
        let refusal = build(&def, &ctx, Some(secrets)).err().unwrap_or_default();
        assert!(
            refusal.contains("NATS credentials are malformed"),
            "{refusal}"
        );
        let mut secrets = crate::tenant::SinkSecrets::default();
        secrets.nats_nkey_seed = Some("SUnot-a-seed".into());
        let refusal = build(&def, &ctx, Some(secrets)).err().unwrap_or_default();
        assert!(refusal.contains("NATS nkey seed is malformed"), "{refusal}");
    }
}
