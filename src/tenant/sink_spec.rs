//! What a sink delivers to ([`SinkSpec`]) and the checks a definition passes before it is
//! stored: URLs, names, TLS material, per-type limits. Storage and lifecycle are `sinks.rs`'s.

use serde::{Deserialize, Serialize};

use super::{validate_id, TenantError};

/// Longest list in a sink filter.
const MAX_FILTER: usize = 64;
const MAX_PREFIX: usize = 128;

/// Where a sink delivers. Serialized into [`SinkRecord::spec`]; variant order is part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkSpec {
    /// JSON lines under `<data dir>/sinks/<org>/<name>.jsonl`, rotated by size.
    File { name: String },
    /// NATS JetStream; `url` falls back to `PEAT_CDC_NATS_URL`.
    Nats {
        subject_prefix: String,
        url: Option<String>,
        stream: Option<String>,
        /// PEM of the CA that signs the server's certificate (`tls://` URLs).
        tls_ca_pem: Option<String>,
    },
    /// MQTT at QoS 1 (3.1.1; 5 in binary content mode), `mqtt://` or
    /// `mqtts://[user:pass@]host[:port]`.
    Mqtt {
        url: String,
        topic_prefix: String,
        /// PEM of the CA that signs the broker's certificate (`mqtts://`; default: web roots).
        tls_ca_pem: Option<String>,
    },
    /// Batched, signed HTTP POSTs. `allow_private` lifts the guard on link-local and cloud
    /// metadata addresses.
    Webhook {
        url: String,
        allow_private: bool,
        /// PEM of the CA that signs the endpoint's certificate (default: web roots).
        tls_ca_pem: Option<String>,
    },
    /// Redis Streams, `redis://` or `rediss://[user@]host[:port][/db]` (the password is
    /// sealed apart); `stream` may use `{org}` and `{app}`; `maxlen` trims approximately.
    RedisStreams {
        url: String,
        stream: String,
        maxlen: Option<u64>,
        tls_ca_pem: Option<String>,
    },
    /// Kafka; `brokers` (`host:port,…`) falls back to `PEAT_CDC_KAFKA_BROKERS`. The SASL
    /// password is sealed with the sink's secrets.
    Kafka {
        topic: String,
        brokers: Option<String>,
        tls: bool,
        tls_ca_pem: Option<String>,
        sasl_mechanism: Option<String>,
        sasl_username: Option<String>,
        compression: Option<String>,
        batch_size: Option<u32>,
    },
}

/// Why an MQTT sink cannot take binary mode in a build without MQTT 5.
pub const MQTT5_NOT_BUILT: &str = "binary mode on MQTT needs MQTT 5, which is not built into \
    this binary (cargo feature mqtt5); use structured, or a build with it";

/// How a sink carries each CloudEvent (CloudEvents protocol bindings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentMode {
    /// The whole event as JSON in the message body.
    #[default]
    Structured,
    /// The document itself as the body, the event's attributes in message headers (`ce-…`
    /// on NATS, `ce_…` on Kafka, MQTT 5 user properties), so consumers read the document and
    /// route on headers.
    Binary,
    /// Each delivery batch as one message: a JSON array of structured CloudEvents
    /// (`application/cloudevents-batch+json`) on `<prefix>.<org>.batch` (NATS), so a backlog
    /// drains at a message per batch rather than per event.
    Batched,
}

impl ContentMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Structured => "structured",
            Self::Binary => "binary",
            Self::Batched => "batched",
        }
    }

    pub fn parse(s: &str) -> Result<Self, TenantError> {
        match s {
            "structured" => Ok(Self::Structured),
            "binary" => Ok(Self::Binary),
            "batched" => Ok(Self::Batched),
            _ => Err(TenantError::invalid(
                "content_mode",
                "must be structured, binary or batched",
            )),
        }
    }

    pub(super) fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::Binary,
            2 => Self::Batched,
            _ => Self::Structured,
        }
    }

    pub(super) fn byte(self) -> u8 {
        match self {
            Self::Structured => 0,
            Self::Binary => 1,
            Self::Batched => 2,
        }
    }

    /// Refuses binary mode for a sink whose protocol has no message headers to carry it, and
    /// batched mode but on NATS (a webhook posts batches in every mode).
    pub(crate) fn check(self, spec: &SinkSpec) -> Result<(), TenantError> {
        match (self, spec) {
            (Self::Binary, SinkSpec::Mqtt { .. }) if !cfg!(feature = "mqtt5") => {
                Err(TenantError::invalid("content_mode", MQTT5_NOT_BUILT))
            }
            (Self::Structured, _)
            | (
                Self::Binary,
                SinkSpec::Nats { .. } | SinkSpec::Kafka { .. } | SinkSpec::Mqtt { .. },
            )
            | (Self::Batched, SinkSpec::Nats { .. }) => Ok(()),
            (Self::Batched, SinkSpec::Webhook { .. }) => Err(TenantError::invalid(
                "content_mode",
                "a webhook posts each batch as one request (application/cloudevents-batch+json) \
                 already; leave content_mode structured",
            )),
            (Self::Batched, other) => Err(TenantError::invalid(
                "content_mode",
                format!(
                    "batched is for NATS sinks (a message per batch); a {} sink delivers a \
                     message per event",
                    other.type_name()
                ),
            )),
            (Self::Binary, other) => Err(TenantError::invalid(
                "content_mode",
                format!(
                    "binary needs message headers: NATS, Kafka and MQTT (5) sinks carry it; a \
                     {} sink delivers structured CloudEvents only",
                    other.type_name()
                ),
            )),
        }
    }
}

/// Each sink type: its name in the API, and its [`SinkSpec::kind`], which is also the cargo
/// feature that builds it in (File is always built).
pub const SINK_TYPES: &[(&str, &str)] = &[
    ("File", "file"),
    ("Nats", "nats"),
    ("Mqtt", "mqtt"),
    ("Webhook", "webhook"),
    ("RedisStreams", "redis"),
    ("Kafka", "kafka"),
];

impl SinkSpec {
    /// The type's name in the API (`{"Nats": {…}}`).
    pub fn type_name(&self) -> &'static str {
        let kind = self.kind();
        SINK_TYPES
            .iter()
            .find(|(_, k)| *k == kind)
            .map_or(kind, |(name, _)| name)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SinkSpec::File { .. } => "file",
            SinkSpec::Nats { .. } => "nats",
            SinkSpec::Mqtt { .. } => "mqtt",
            SinkSpec::Webhook { .. } => "webhook",
            SinkSpec::RedisStreams { .. } => "redis",
            SinkSpec::Kafka { .. } => "kafka",
        }
    }

    pub(super) fn validate(&self) -> Result<(), TenantError> {
        match self {
            SinkSpec::File { name } => validate_id("sink_type.File.name", name),
            SinkSpec::Nats {
                subject_prefix,
                url,
                stream,
                tls_ca_pem,
            } => {
                if let Some(pem) = tls_ca_pem {
                    if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 64 * 1024 {
                        return Err(TenantError::invalid(
                            "sink_type.Nats.tls_ca_pem",
                            "must be PEM certificates (-----BEGIN CERTIFICATE-----), at most 64 KiB",
                        ));
                    }
                }
                let tokens_ok = !subject_prefix.is_empty()
                    && subject_prefix.len() <= MAX_PREFIX
                    && subject_prefix.split('.').all(|t| {
                        !t.is_empty()
                            && t.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    });
                if !tokens_ok {
                    return Err(TenantError::invalid(
                        "sink_type.Nats.subject_prefix",
                        "dot-separated tokens of letters, digits, '-' and '_' (for example peat.cdc)",
                    ));
                }
                if let Some(u) = url {
                    if !["nats://", "tls://"].iter().any(|p| u.starts_with(p)) || u.len() > 512 {
                        return Err(TenantError::invalid(
                            "sink_type.Nats.url",
                            "must start with nats:// or tls://",
                        ));
                    }
                }
                if let Some(s) = stream {
                    validate_id("sink_type.Nats.stream", s)?;
                }
                Ok(())
            }
            SinkSpec::RedisStreams {
                url,
                stream,
                maxlen,
                tls_ca_pem,
            } => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                    || url.len() > 512
                    || url.chars().any(char::is_whitespace)
                {
                    return Err(TenantError::invalid(
                        "sink_type.RedisStreams.url",
                        "must be a redis:// or rediss:// URL",
                    ));
                }
                let name_ok = !stream.is_empty()
                    && stream.len() <= 256
                    && stream.chars().all(|c| c.is_ascii_graphic());
                if !name_ok {
                    return Err(TenantError::invalid(
                        "sink_type.RedisStreams.stream",
                        "1 to 256 printable characters; {org} and {app} are replaced",
                    ));
                }
                if maxlen.is_some_and(|n| n == 0 || n > 1_000_000_000) {
                    return Err(TenantError::invalid(
                        "sink_type.RedisStreams.maxlen",
                        "must be between 1 and 1000000000 (leave it out to keep every entry)",
                    ));
                }
                if let Some(pem) = tls_ca_pem {
                    if !url.starts_with("rediss://") || !pem.contains("-----BEGIN CERTIFICATE-----")
                    {
                        return Err(TenantError::invalid(
                            "sink_type.RedisStreams.tls_ca_pem",
                            "PEM certificates, with a rediss:// URL",
                        ));
                    }
                }
                Ok(())
            }
            SinkSpec::Kafka {
                topic,
                tls,
                tls_ca_pem,
                sasl_mechanism,
                sasl_username,
                compression,
                batch_size,
                ..
            } => {
                let topic_ok = !topic.is_empty()
                    && topic.len() <= 249
                    && topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !topic_ok {
                    return Err(TenantError::invalid(
                        "sink_type.Kafka.topic",
                        "1 to 249 letters, digits, '.', '_' or '-'",
                    ));
                }
                if tls_ca_pem.is_some() && !tls {
                    return Err(TenantError::invalid(
                        "sink_type.Kafka.tls_ca_pem",
                        "a CA needs tls: true",
                    ));
                }
                match (sasl_mechanism.as_deref(), sasl_username) {
                    (None, None) => {}
                    (Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"), Some(u)) if !u.is_empty() => {}
                    _ => {
                        return Err(TenantError::invalid(
                            "sink_type.Kafka.sasl_mechanism",
                            "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with sasl_username and sasl_password",
                        ))
                    }
                }
                if !matches!(
                    compression.as_deref(),
                    None | Some("none" | "gzip" | "snappy")
                ) {
                    return Err(TenantError::invalid(
                        "sink_type.Kafka.compression",
                        "none, gzip or snappy",
                    ));
                }
                if batch_size.is_some_and(|n| n == 0 || n > 10_000) {
                    return Err(TenantError::invalid(
                        "sink_type.Kafka.batch_size",
                        "records per produce request, 1 to 10000",
                    ));
                }
                Ok(())
            }
            SinkSpec::Webhook { url, .. } => {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.len() <= 2048
                    && !url.chars().any(char::is_whitespace);
                if !ok {
                    return Err(TenantError::invalid(
                        "sink_type.Webhook.url",
                        "must be an http:// or https:// URL",
                    ));
                }
                Ok(())
            }
            SinkSpec::Mqtt {
                url,
                topic_prefix,
                tls_ca_pem,
            } => {
                if let Some(pem) = tls_ca_pem {
                    if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 64 * 1024 {
                        return Err(TenantError::invalid(
                            "sink_type.Mqtt.tls_ca_pem",
                            "must be PEM certificates (-----BEGIN CERTIFICATE-----), at most 64 KiB",
                        ));
                    }
                }
                parse_mqtt_url(url).map_err(|e| TenantError::invalid("sink_type.Mqtt.url", e))?;
                let ok = !topic_prefix.is_empty()
                    && topic_prefix.len() <= MAX_PREFIX
                    && topic_prefix.split('/').all(|t| {
                        !t.is_empty()
                            && t.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    });
                if !ok {
                    return Err(TenantError::invalid(
                        "sink_type.Mqtt.topic_prefix",
                        "'/'-separated levels of letters, digits, '-', '_' and '.' (for example peat/cdc)",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Where an MQTT sink connects.
#[derive(Debug, Clone)]
pub struct MqttAddr {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<crate::secret::Secret>,
}

/// Parses `mqtt://[user:pass@]host[:port]`.
pub fn parse_mqtt_url(url: &str) -> Result<MqttAddr, String> {
    let (tls, rest) = match (url.strip_prefix("mqtts://"), url.strip_prefix("mqtt://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err("must start with mqtt:// or mqtts://".to_owned()),
    };
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let hostport = hostport.trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("'{p}' is not a port"))?,
        ),
        None => (hostport, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let (user, password) = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
        Some((u, p)) => (
            Some(u.to_owned()),
            Some(crate::secret::Secret::new(p.to_owned())),
        ),
        None => (None, None),
    };
    Ok(MqttAddr {
        tls,
        host: host.to_owned(),
        port,
        user,
        password,
    })
}

/// `scheme://user:password@host…` → (`scheme://user@host…`, password).
pub fn split_password(url: &str) -> (String, Option<String>) {
    let Some(s) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let rest = &url[s..];
    let end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return (url.to_owned(), None);
    };
    match rest[..at].split_once(':') {
        Some((user, pass)) => (
            format!("{}{user}@{}", &url[..s], &rest[at + 1..]),
            Some(pass.to_owned()),
        ),
        None => (url.to_owned(), None),
    }
}

/// Puts a password back into a URL that names a user (`scheme://user@host` →
/// `scheme://user:password@host`); a URL without a user gets `:password@` as a token.
pub fn with_password(url: &str, password: &str) -> String {
    let Some(s) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[s..];
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}{}:{password}{}", &url[..s], &rest[..at], &rest[at..]),
        None => format!("{}{password}@{rest}", &url[..s]),
    }
}

pub(super) fn validate_filter(field: &'static str, list: &[String]) -> Result<(), TenantError> {
    if list.len() > MAX_FILTER {
        return Err(TenantError::invalid(
            field,
            format!("at most {MAX_FILTER} entries"),
        ));
    }
    list.iter().try_for_each(|v| validate_id(field, v))
}
