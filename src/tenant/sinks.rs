//! CDC sink definitions: where an org's captured changes go. Delivery itself is `cdc/`'s.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::orgs::{check_quota, load_org};
use super::service::Tenancy;
pub(crate) use super::sink_codec::decode_spec;
pub use super::sink_codec::SinkSecrets;
use super::{now_ms, validate_id, Actor, OrgScope, TenantError};
use crate::keys::{random_secret32, RecordIdentity};
use crate::store::{keys, Reader, SinkRecord, Table};

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
    /// MQTT 3.1.1 at QoS 1, `mqtt://` or `mqtts://[user:pass@]host[:port]`.
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

impl SinkSpec {
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

    fn validate(&self) -> Result<(), TenantError> {
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

/// Where a new sink starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkStart {
    /// Every event still in the outbox.
    #[default]
    Earliest,
    /// Only events captured after the sink was created.
    Latest,
}

/// A sink definition as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDef {
    pub org_id: String,
    /// The owning org's immutable uid: a sink delivers only events carrying it.
    pub org_uid: [u8; 16],
    pub sink_id: String,
    pub sink_uid: [u8; 16],
    pub spec: SinkSpec,
    pub enabled: bool,
    pub formations: Vec<String>,
    pub collections: Vec<String>,
    pub rate_limit_bytes_per_sec: u64,
    pub start: SinkStart,
    pub created_at_ms: u64,
}

impl SinkDef {
    /// Whether this sink wants events of `app`'s `collection`.
    pub fn wants(&self, app: &str, collection: &str) -> bool {
        (self.formations.is_empty() || self.formations.iter().any(|f| f == app))
            && (self.collections.is_empty() || self.collections.iter().any(|c| c == collection))
    }

    fn from_record(r: SinkRecord, org_uid: [u8; 16]) -> Result<Self, TenantError> {
        let spec = decode_spec(&r.spec).ok_or(crate::store::StoreError::Decode {
            kind: "sink",
            reason: "unknown sink type",
        })?;
        Ok(Self {
            org_id: r.org_id,
            org_uid,
            sink_id: r.sink_id,
            sink_uid: r.sink_uid,
            spec,
            enabled: r.enabled,
            formations: r.formations,
            collections: r.collections,
            rate_limit_bytes_per_sec: r.rate_limit_bytes_per_sec,
            start: if r.start == 1 {
                SinkStart::Latest
            } else {
                SinkStart::Earliest
            },
            created_at_ms: r.created_at_ms,
        })
    }
}

pub struct NewSink {
    pub spec: SinkSpec,
    /// Credentials given with the definition (NATS creds or nkey).
    pub secrets: SinkSecrets,
    pub enabled: bool,
    pub formations: Vec<String>,
    pub collections: Vec<String>,
    pub rate_limit_bytes_per_sec: u64,
    pub start: SinkStart,
}

/// Partial change; absent fields keep their value.
#[derive(Default)]
pub struct SinkPatch {
    pub enabled: Option<bool>,
    pub formations: Option<Vec<String>>,
    pub collections: Option<Vec<String>>,
    pub rate_limit_bytes_per_sec: Option<u64>,
}

fn validate_filter(field: &'static str, list: &[String]) -> Result<(), TenantError> {
    if list.len() > MAX_FILTER {
        return Err(TenantError::invalid(
            field,
            format!("at most {MAX_FILTER} entries"),
        ));
    }
    list.iter().try_for_each(|v| validate_id(field, v))
}

const SECRET_KIND: &str = "sink-secret";

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

/// The sealed-table "app" of a sink's secret: `sink.` cannot start a formation id, so the two
/// never collide.
fn secret_app(sink_id: &str) -> String {
    format!("sink.{sink_id}")
}

fn secret_identity<'a>(org: &'a str, app: &'a str) -> RecordIdentity<'a> {
    RecordIdentity {
        org,
        app,
        kind: SECRET_KIND,
        codec_version: 1,
        // The sink id in `app` is random per creation: it binds the record already.
        uid: [0; 16],
    }
}

fn sink_key(org: &str, sink_id: &str) -> Vec<u8> {
    let mut k = keys::org_prefix(org);
    k.extend_from_slice(sink_id.as_bytes());
    k
}

impl Tenancy {
    /// Creates a sink. A webhook sink gets a signing secret, sealed like formation keys and
    /// returned here only (`whsec_<base64>`).
    pub async fn create_sink(
        &self,
        scope: &OrgScope,
        new: NewSink,
    ) -> Result<(SinkDef, Option<Zeroizing<String>>), TenantError> {
        new.spec.validate()?;
        validate_filter("formations", &new.formations)?;
        validate_filter("collections", &new.collections)?;
        let sink_id = super::ids::random_token_id()?;
        let mut sink_uid = [0u8; 16];
        getrandom::fill(&mut sink_uid).map_err(|_| TenantError::Key(crate::keys::KeyError::Rng))?;
        let org_id = scope.org_id().to_owned();
        // A webhook gets a generated signing key (shown once); a broker password in a URL is
        // taken out of the stored URL. Secrets are sealed like formation keys.
        let mut spec = new.spec;
        let mut secrets = new.secrets.clone();
        let mut shown = None;
        match &mut spec {
            SinkSpec::Webhook { .. } => {
                let key = random_secret32()?;
                let mut s = Zeroizing::new(String::from("whsec_"));
                base64::engine::general_purpose::STANDARD.encode_string(key.as_ref(), &mut s);
                secrets.webhook_key = Some(key.to_vec());
                shown = Some(s);
            }
            SinkSpec::Nats { url: Some(url), .. }
            | SinkSpec::Mqtt { url, .. }
            | SinkSpec::RedisStreams { url, .. } => {
                let (clean, password) = split_password(url);
                *url = clean;
                secrets.password = password;
            }
            _ => {}
        }
        let spec_bytes = postcard::to_allocvec(&spec)
            .map_err(|_| crate::store::StoreError::Encode { kind: "sink" })?;
        let sealed = if secrets.is_empty() {
            None
        } else {
            let plain = Zeroizing::new(postcard::to_allocvec(&secrets).map_err(|_| {
                crate::store::StoreError::Encode {
                    kind: "sink secrets",
                }
            })?);
            Some(
                self.keyring
                    .seal(secret_identity(&org_id, &secret_app(&sink_id)), &plain)
                    .await?,
            )
        };
        let target = format!("org/{org_id}/sink/{sink_id}");
        let def = self
            .mutate(
                scope.actor(),
                "sink.create",
                target,
                Some(org_id.clone()),
                move |t| {
                    let org = load_org(t, &org_id)?;
                    check_quota(
                        t,
                        Table::Sinks,
                        &org_id,
                        "max_cdc_sinks",
                        org.quotas.max_cdc_sinks,
                    )?;
                    let rec = SinkRecord {
                        org_id: org_id.clone(),
                        sink_id: sink_id.clone(),
                        sink_uid,
                        spec: spec_bytes,
                        enabled: new.enabled,
                        formations: new.formations,
                        collections: new.collections,
                        rate_limit_bytes_per_sec: new.rate_limit_bytes_per_sec,
                        start: u8::from(new.start == SinkStart::Latest),
                        created_at_ms: now_ms(),
                    };
                    t.put(Table::Sinks, sink_key(&org_id, &sink_id), &rec)?;
                    if let Some(sealed) = sealed {
                        t.put_raw(
                            Table::Sealed,
                            keys::sealed(&org_id, &secret_app(&sink_id), SECRET_KIND),
                            sealed,
                        );
                    }
                    Ok((
                        SinkDef::from_record(rec, org.org_uid)?,
                        Some((org.org_id, org.org_uid)),
                    ))
                },
            )
            .await?;
        Ok((def, shown))
    }

    /// A sink's sealed credentials, opened under the key provider; `None` when it has none.
    pub async fn sink_secret(&self, def: &SinkDef) -> Result<Option<SinkSecrets>, TenantError> {
        let key = keys::sealed(&def.org_id, &secret_app(&def.sink_id), SECRET_KIND);
        let Some(sealed) = self
            .store
            .read(move |r| r.get_raw(Table::Sealed, &key))
            .await?
        else {
            return Ok(None);
        };
        let plain = self
            .keyring
            .open(
                secret_identity(&def.org_id, &secret_app(&def.sink_id)),
                &sealed,
            )
            .await?;
        let secrets = SinkSecrets::decode(&plain).ok_or(crate::store::StoreError::Decode {
            kind: "sink secrets",
            reason: "malformed",
        })?;
        Ok(Some(secrets))
    }

    pub async fn list_sinks(&self, scope: &OrgScope) -> Result<Vec<SinkDef>, TenantError> {
        let org_id = scope.org_id().to_owned();
        self.store
            .read(move |r| {
                let org = load_org(r, &org_id)?;
                r.scan(Table::Sinks, &keys::org_prefix(&org_id), None, usize::MAX)?
                    .into_iter()
                    .map(|(_, v)| {
                        SinkDef::from_record(crate::store::Record::decode(&v)?, org.org_uid)
                    })
                    .collect()
            })
            .await
    }

    pub async fn get_sink(&self, scope: &OrgScope, sink_id: &str) -> Result<SinkDef, TenantError> {
        let key = sink_key(scope.org_id(), sink_id);
        let org_id = scope.org_id().to_owned();
        self.store
            .read(move |r| {
                let org = load_org(r, &org_id)?;
                let rec: SinkRecord = r
                    .get(Table::Sinks, &key)?
                    .ok_or(TenantError::NotFound { what: "sink" })?;
                SinkDef::from_record(rec, org.org_uid)
            })
            .await
    }

    /// Every sink of every org, for the dispatcher.
    pub async fn all_sinks(&self) -> Result<Vec<SinkDef>, TenantError> {
        self.store
            .read(|r| {
                r.scan(Table::Sinks, b"", None, usize::MAX)?
                    .into_iter()
                    .map(|(_, v)| {
                        let rec: SinkRecord = crate::store::Record::decode(&v)?;
                        let org = load_org(r, &rec.org_id)?;
                        SinkDef::from_record(rec, org.org_uid)
                    })
                    .collect()
            })
            .await
    }

    pub async fn patch_sink(
        &self,
        scope: &OrgScope,
        sink_id: &str,
        patch: SinkPatch,
        action: &'static str,
    ) -> Result<SinkDef, TenantError> {
        if let Some(f) = &patch.formations {
            validate_filter("formations", f)?;
        }
        if let Some(c) = &patch.collections {
            validate_filter("collections", c)?;
        }
        let org_id = scope.org_id().to_owned();
        let key = sink_key(&org_id, sink_id);
        let target = format!("org/{org_id}/sink/{sink_id}");
        self.mutate(
            scope.actor(),
            action,
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                let mut rec: SinkRecord = t
                    .get(Table::Sinks, &key)?
                    .ok_or(TenantError::NotFound { what: "sink" })?;
                if let Some(e) = patch.enabled {
                    rec.enabled = e;
                }
                if let Some(f) = patch.formations {
                    rec.formations = f;
                }
                if let Some(c) = patch.collections {
                    rec.collections = c;
                }
                if let Some(r) = patch.rate_limit_bytes_per_sec {
                    rec.rate_limit_bytes_per_sec = r;
                }
                t.put(Table::Sinks, key, &rec)?;
                Ok((
                    SinkDef::from_record(rec, org.org_uid)?,
                    Some((org.org_id, org.org_uid)),
                ))
            },
        )
        .await
    }

    pub async fn delete_sink(
        &self,
        scope: &OrgScope,
        sink_id: &str,
    ) -> Result<SinkDef, TenantError> {
        let org_id = scope.org_id().to_owned();
        let key = sink_key(&org_id, sink_id);
        let target = format!("org/{org_id}/sink/{sink_id}");
        self.mutate(
            scope.actor(),
            "sink.delete",
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                let rec: SinkRecord = t
                    .get(Table::Sinks, &key)?
                    .ok_or(TenantError::NotFound { what: "sink" })?;
                t.delete(Table::Sinks, key);
                t.delete_prefix(
                    Table::Sealed,
                    &keys::sealed_prefix(&org_id, &secret_app(&rec.sink_id)),
                )?;
                Ok((
                    SinkDef::from_record(rec, org.org_uid)?,
                    Some((org.org_id, org.org_uid)),
                ))
            },
        )
        .await
    }

    /// Audits an action that changes no tenancy record: an operator's command to a sink, or
    /// something the CDC pipeline did on its own (`Actor::system()`).
    pub async fn audit_event(
        &self,
        actor: &Actor,
        org_id: &str,
        action: &'static str,
        target: String,
        outcome: &'static str,
    ) -> Result<(), TenantError> {
        self.record_refusal(actor, Some(org_id.to_owned()), action, target, outcome)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(formations: &[&str], collections: &[&str]) -> SinkDef {
        SinkDef {
            org_id: "o".into(),
            org_uid: [1; 16],
            sink_id: "s".into(),
            sink_uid: [0; 16],
            spec: SinkSpec::File { name: "x".into() },
            enabled: true,
            formations: formations.iter().map(|s| s.to_string()).collect(),
            collections: collections.iter().map(|s| s.to_string()).collect(),
            rate_limit_bytes_per_sec: 0,
            start: SinkStart::Earliest,
            created_at_ms: 0,
        }
    }

    #[test]
    fn empty_filters_take_everything_and_lists_restrict() {
        assert!(def(&[], &[]).wants("a", "tracks"));
        assert!(def(&["a"], &[]).wants("a", "nodes"));
        assert!(!def(&["a"], &[]).wants("b", "nodes"));
        assert!(!def(&[], &["tracks"]).wants("a", "nodes"));
    }

    #[test]
    fn mqtt_urls_give_host_port_and_credentials() {
        let a = parse_mqtt_url("mqtt://h:1884").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.user), ("h", 1884, None));
        assert_eq!(parse_mqtt_url("mqtt://h").unwrap().port, 1883);
        let a = parse_mqtt_url("mqtt://u:p@h:1").unwrap();
        assert_eq!(a.user.as_deref(), Some("u"));
        assert_eq!(a.password.as_ref().map(|p| p.expose()), Some("p"));
        assert!(
            !format!("{a:?}").contains("\"p\""),
            "password never in Debug"
        );
        let t = parse_mqtt_url("mqtts://h").unwrap();
        assert_eq!((t.tls, t.port), (true, 8883));
        assert!(parse_mqtt_url("tcp://h").is_err());
        assert!(parse_mqtt_url("mqtt://h:x").is_err());
        assert!(parse_mqtt_url("mqtt://:1").is_err());
    }

    #[test]
    fn passwords_leave_stored_urls_and_come_back_for_connecting() {
        assert_eq!(
            split_password("nats://u:p@h:4222"),
            ("nats://u@h:4222".into(), Some("p".into()))
        );
        assert_eq!(split_password("mqtt://h:1"), ("mqtt://h:1".into(), None));
        assert_eq!(split_password("mqtt://u@h"), ("mqtt://u@h".into(), None));
        assert_eq!(with_password("nats://u@h:4222", "p"), "nats://u:p@h:4222");
    }

    #[test]
    fn nats_prefixes_are_checked_token_by_token() {
        let nats = |p: &str| SinkSpec::Nats {
            subject_prefix: p.into(),
            url: None,
            stream: None,
            tls_ca_pem: None,
        };
        assert!(nats("peat.cdc").validate().is_ok());
        for bad in ["", "a..b", ".a", "a.*", "a.>", "a b"] {
            assert!(nats(bad).validate().is_err(), "{bad}");
        }
    }
}
