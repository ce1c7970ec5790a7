//! CDC sink definitions: where an org's captured changes go. Delivery itself is `cdc/`'s.

use base64::Engine as _;
use zeroize::Zeroizing;

use super::orgs::{check_quota, load_org};
use super::service::Tenancy;
pub(crate) use super::sink_codec::decode_spec;
pub use super::sink_codec::SinkSecrets;
use super::sink_spec::validate_filter;
pub use super::sink_spec::{
    parse_mqtt_url, split_password, with_password, ContentMode, MqttAddr, SinkSpec,
    MQTT5_NOT_BUILT, SINK_TYPES,
};
use super::{now_ms, Actor, OrgScope, TenantError};
use crate::keys::{random_secret32, RecordIdentity};
use crate::store::{keys, Reader, SinkRecord, Table};

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
    pub content_mode: ContentMode,
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
            content_mode: ContentMode::from_byte(r.content_mode),
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
    pub content_mode: ContentMode,
}

impl NewSink {
    /// An enabled sink of every formation and collection, from the oldest retained event.
    pub fn everything(spec: SinkSpec) -> Self {
        Self {
            spec,
            secrets: SinkSecrets::default(),
            enabled: true,
            formations: vec![],
            collections: vec![],
            rate_limit_bytes_per_sec: 0,
            start: SinkStart::Earliest,
            content_mode: ContentMode::Structured,
        }
    }
}

/// Partial change; absent fields keep their value.
#[derive(Default)]
pub struct SinkPatch {
    pub enabled: Option<bool>,
    pub formations: Option<Vec<String>>,
    pub collections: Option<Vec<String>>,
    pub rate_limit_bytes_per_sec: Option<u64>,
    pub content_mode: Option<ContentMode>,
}

const SECRET_KIND: &str = "sink-secret";

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
        new.content_mode.check(&new.spec)?;
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
                        content_mode: new.content_mode.byte(),
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
                if let Some(m) = patch.content_mode {
                    rec.content_mode = m.byte();
                }
                let def = SinkDef::from_record(rec.clone(), org.org_uid)?;
                def.content_mode.check(&def.spec)?;
                t.put(Table::Sinks, key, &rec)?;
                Ok((def, Some((org.org_id, org.org_uid))))
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

    #[test]
    fn each_content_mode_keeps_its_name_and_stored_byte_and_batched_is_for_nats() {
        for m in [
            ContentMode::Structured,
            ContentMode::Binary,
            ContentMode::Batched,
        ] {
            assert_eq!(ContentMode::from_byte(m.byte()), m);
            assert_eq!(ContentMode::parse(m.name()).ok(), Some(m));
        }
        let nats = SinkSpec::Nats {
            subject_prefix: "p".into(),
            url: None,
            stream: None,
            tls_ca_pem: None,
        };
        assert!(ContentMode::Batched.check(&nats).is_ok());
        let file = SinkSpec::File { name: "x".into() };
        let e = ContentMode::Batched
            .check(&file)
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("batched is for NATS sinks"));
    }

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
            content_mode: ContentMode::Structured,
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
