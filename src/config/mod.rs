//! One configuration from an optional TOML file and the environment, validated once.
//!
//! Stage 1, [`RawConfig`]: what was given (file, then environment overrides), no checks.
//! Stage 2, [`Config::from_raw`]: every check runs and every failure is reported together;
//! `serve` refuses to start on any of them, `check-config` prints them all.
//!
//! Invariants:
//! - An incoherent setting is an error, never a fallback: an empty secret, a malformed KEK, a
//!   key provider this build lacks, dev-only behaviour outside dev mode.
//! - Secrets are held in [`Secret`]; `Debug` and `check-config` print them redacted.

mod keys;
pub mod private;
mod raw;
mod tls;
pub use self::tls::{parse_networks, CertRole, TlsPaths, UnixSocket};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::keys::select_key;
pub use self::keys::{parse_kek, parse_pcrs, KeyConfig, TpmConfig, DEFAULT_TPM_TCTI};
use self::raw::{err, MIN_ADMIN_TOKEN};
pub use self::raw::{
    load, ConfigError, Loaded, RawConfig, RawQuotas, SourceConfig, DEFAULT_CONFIG_FILE, ENV_VARS,
};
use crate::cdc::{FullPolicy, OutboxConfig};
pub use crate::secret::Secret;
use crate::tenant::Quotas;
/// Validated configuration.
#[derive(Debug)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Option<Secret>,
    pub key: KeyConfig,
    /// Key-provider health probe interval; `None` when turned off.
    pub key_probe: Option<Duration>,
    pub enroll_rate_per_min: std::num::NonZeroU32,
    pub auth_failures_per_min: std::num::NonZeroU32,
    /// TLS on the API listener; `None` is plain HTTP.
    pub tls: Option<crate::listen::TlsMaterial>,
    /// Where the TLS material was read from, for reloads.
    pub tls_paths: Option<TlsPaths>,
    /// A Unix socket served besides the TCP listener.
    pub unix_socket: Option<UnixSocket>,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub streams_per_caller: usize,
    /// Client certificates that act as API callers, first match wins.
    pub client_roles: Vec<CertRole>,
    /// Networks allowed on the TCP/TLS listener; empty: all.
    pub allow: Vec<ipnet::IpNet>,
    /// What every org's outbound connections may reach besides the public internet.
    pub egress_allow: crate::egress::Grant,
    pub dev_mode: bool,
    /// Health and metrics detail without a token.
    pub public_detail: bool,
    /// A node link that is down makes the gateway not ready.
    pub ready_requires_nodes: bool,
    /// What audit retention keeps.
    pub audit_retention: crate::tenant::AuditRetention,
    pub ui_dir: Option<PathBuf>,
    pub log_filter: String,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub store_cache_bytes: usize,
    pub cdc_nats_url: Option<String>,
    /// Default brokers for Kafka sinks (`host:port,…`).
    pub cdc_kafka_brokers: Option<String>,
    pub outbox: OutboxConfig,
    pub default_quotas: Quotas,
    pub sources: Vec<SourceConfig>,
    pub origin: BTreeMap<&'static str, String>,
}

impl Config {
    /// Runs every check; returns all failures at once.
    pub fn from_raw(loaded: Loaded) -> Result<Config, Vec<ConfigError>> {
        let Loaded {
            raw,
            origin,
            problems: mut errors,
        } = loaded;
        let name = |key: &'static str| -> String {
            origin
                .get(key)
                .and_then(|o| o.strip_prefix("env ").map(str::to_owned))
                .unwrap_or_else(|| key.to_owned())
        };

        let bind_s = raw.bind.as_deref().unwrap_or("0.0.0.0:8080");
        let bind = bind_s.parse::<SocketAddr>().map_err(|_| {
            errors.push(err(
                name("bind"),
                format!("'{bind_s}' is not an address:port (for example 0.0.0.0:8080 or 127.0.0.1:9000)"),
            ))
        });

        let data_dir = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data"));
        if let Err(m) = check_data_dir(&data_dir) {
            errors.push(err(name("data_dir"), m));
        }

        let dev_mode = raw.dev_mode.unwrap_or(false);
        let public_detail = raw.public_detail.unwrap_or(false);
        let audit_days = raw.audit_retention_days.unwrap_or(365);
        if audit_days > 36_500 {
            errors.push(err(
                name("audit_retention_days"),
                "must be at most 36500 (0 keeps records whatever their age)",
            ));
        }
        let audit_max = raw.audit_max_records.unwrap_or(1_000_000);
        if !(1_000..=100_000_000).contains(&audit_max) {
            errors.push(err(
                name("audit_max_records"),
                "must be between 1000 and 100000000",
            ));
        }

        if let Some(t) = &raw.admin_token {
            if t.expose().trim().len() < MIN_ADMIN_TOKEN {
                errors.push(err(
                    name("admin_token"),
                    format!("must be at least {MIN_ADMIN_TOKEN} characters; unset it to have one generated at first start"),
                ));
            }
        }

        let key = select_key(&raw, dev_mode, &name).map_err(|mut e| errors.append(&mut e));

        if let Some(dir) = &raw.ui_dir {
            if !dir.is_dir() {
                errors.push(err(
                    name("ui_dir"),
                    format!(
                        "{} is not a directory; point it at the UI build or unset it",
                        dir.display()
                    ),
                ));
            }
        }

        if raw.cdc_nats_url.is_some() && !cfg!(feature = "nats") {
            errors.push(err(
                name("cdc_nats_url"),
                "the NATS sink is not built into this binary (cargo feature nats); unset it",
            ));
        } else if let Some(url) = &raw.cdc_nats_url {
            if !["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                errors.push(err(
                    name("cdc_nats_url"),
                    format!("'{url}' must start with nats:// or tls:// (for example nats://127.0.0.1:4222)"),
                ));
            }
        }
        if let Some(list) = &raw.cdc_kafka_brokers {
            #[cfg(feature = "kafka")]
            if let Err(e) = crate::cdc::sink::kafka::parse_brokers(list) {
                errors.push(err(name("cdc_kafka_brokers"), e));
            }
            #[cfg(not(feature = "kafka"))]
            {
                let _ = list;
                errors.push(err(
                    name("cdc_kafka_brokers"),
                    "the Kafka sink is not built into this binary (cargo feature kafka); unset it",
                ));
            }
        }

        if let Some(f) = &raw.log {
            if let Err(m) = log_filter(f) {
                errors.push(err(name("log"), m));
            }
        }
        let timeout_s = raw.request_timeout_secs.unwrap_or(30);
        if !(1..=3600).contains(&timeout_s) {
            errors.push(err(
                name("request_timeout_secs"),
                "must be between 1 and 3600",
            ));
        }
        let probe_s = raw.key_probe_secs.unwrap_or(30);
        if probe_s > 86_400 {
            errors.push(err(
                name("key_probe_secs"),
                "must be between 0 (off) and 86400",
            ));
        }
        let enroll_rate = raw.enroll_rate_per_min.unwrap_or(30);
        // Up to 100,000 a second: a whole site's devices may enroll from behind one NAT.
        if !(1..=6_000_000).contains(&enroll_rate) {
            errors.push(err(
                name("enroll_rate_per_min"),
                "must be between 1 and 6000000",
            ));
        }
        let tls = tls::listener_tls(&raw, &name, &mut errors);
        let tls_paths = match (&raw.tls_cert, &raw.tls_key) {
            (Some(c), Some(k)) if tls.is_some() => Some(TlsPaths {
                cert: c.clone(),
                key: k.clone(),
                client_ca: raw.tls_client_ca.clone(),
            }),
            _ => None,
        };
        let unix_socket = tls::unix_socket(&raw, &name, &mut errors);
        let client_roles = tls::client_roles(&raw, &name, &mut errors);
        let allow = match raw.allow.as_deref() {
            None => Vec::new(),
            Some(list) => match parse_networks(list) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(err(name("allow"), e));
                    Vec::new()
                }
            },
        };
        let mut egress_allow = crate::egress::Grant::default();
        for item in raw
            .egress_allow
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if let Ok(n) = item.parse::<ipnet::IpNet>() {
                egress_allow.networks.push(n);
            } else if let Ok(ip) = item.parse::<std::net::IpAddr>() {
                egress_allow.networks.push(ipnet::IpNet::from(ip));
            } else if item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                egress_allow.hosts.push(item.to_ascii_lowercase());
            } else {
                errors.push(err(
                    name("egress_allow"),
                    format!("'{item}' is not a network (10.0.0.0/8), an address or a host name"),
                ));
            }
        }
        let header_timeout = raw.header_timeout_secs.unwrap_or(10);
        if !(1..=300).contains(&header_timeout) {
            errors.push(err(
                name("header_timeout_secs"),
                "must be between 1 and 300",
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(256);
        if !(1..=65_536).contains(&max_connections) {
            errors.push(err(name("max_connections"), "must be between 1 and 65536"));
        }
        let per_source = raw.max_connections_per_source.unwrap_or(64);
        if !(1..=65_536).contains(&per_source) {
            errors.push(err(
                name("max_connections_per_source"),
                "must be between 1 and 65536",
            ));
        }
        let idle = raw.idle_timeout_secs.unwrap_or(60);
        if !(5..=3600).contains(&idle) {
            errors.push(err(name("idle_timeout_secs"), "must be between 5 and 3600"));
        }
        let streams = raw.streams_per_caller.unwrap_or(4);
        if !(1..=1024).contains(&streams) {
            errors.push(err(
                name("streams_per_caller"),
                "must be between 1 and 1024",
            ));
        }
        let auth_failures = raw.auth_failures_per_min.unwrap_or(10);
        if !(1..=100_000).contains(&auth_failures) {
            errors.push(err(
                name("auth_failures_per_min"),
                "must be between 1 and 100000",
            ));
        }
        let max_body = raw.max_body_bytes.unwrap_or(64 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_body) {
            errors.push(err(
                name("max_body_bytes"),
                "must be between 1024 and 67108864",
            ));
        }
        let cache_mb = raw.store_cache_mb.unwrap_or(4);
        if !(1..=1024).contains(&cache_mb) {
            errors.push(err(name("store_cache_mb"), "must be between 1 and 1024"));
        }

        let outbox_mb = raw.cdc_outbox_max_mb.unwrap_or(512);
        if !(1..=1024 * 1024).contains(&outbox_mb) {
            errors.push(err(
                name("cdc_outbox_max_mb"),
                "must be between 1 and 1048576 (MiB)",
            ));
        }
        let compact_mb = raw.cdc_compact_min_mb.unwrap_or(64);
        if !(1..=1024 * 1024).contains(&compact_mb) {
            errors.push(err(
                name("cdc_compact_min_mb"),
                "must be between 1 and 1048576 (MiB)",
            ));
        }
        let policy = match raw.cdc_full_policy.as_deref() {
            None | Some("block") => FullPolicy::Block,
            Some("drop-oldest") => FullPolicy::DropOldest,
            Some(other) => {
                errors.push(err(
                    name("cdc_full_policy"),
                    format!("'{other}' is not a policy; use block (refuse new changes, lose nothing) or drop-oldest"),
                ));
                FullPolicy::Block
            }
        };

        let mut quotas = Quotas::default();
        if let Some(q) = &raw.quotas {
            let set = |dst: &mut u32, v: Option<u32>| {
                if let Some(v) = v {
                    *dst = v;
                }
            };
            set(&mut quotas.max_formations, q.max_formations);
            set(
                &mut quotas.max_peers_per_formation,
                q.max_peers_per_formation,
            );
            set(
                &mut quotas.max_documents_per_formation,
                q.max_documents_per_formation,
            );
            set(&mut quotas.max_cdc_sinks, q.max_cdc_sinks);
            set(
                &mut quotas.max_enrollments_per_hour,
                q.max_enrollments_per_hour,
            );
            set(&mut quotas.max_api_tokens, q.max_api_tokens);
        }

        match (bind, key) {
            (Ok(bind), Ok(key)) if errors.is_empty() => Ok(Config {
                bind,
                data_dir,
                admin_token: raw.admin_token,
                key,
                key_probe: (probe_s > 0).then(|| Duration::from_secs(probe_s)),
                tls,
                tls_paths,
                unix_socket,
                max_connections: usize::try_from(max_connections).unwrap_or(256),
                max_connections_per_source: usize::try_from(per_source).unwrap_or(64),
                header_timeout: Duration::from_secs(header_timeout),
                idle_timeout: Duration::from_secs(idle),
                streams_per_caller: usize::try_from(streams).unwrap_or(4),
                allow,
                egress_allow,
                client_roles,
                auth_failures_per_min: u32::try_from(auth_failures)
                    .ok()
                    .and_then(std::num::NonZeroU32::new)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                enroll_rate_per_min: u32::try_from(enroll_rate)
                    .ok()
                    .and_then(std::num::NonZeroU32::new)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                dev_mode,
                public_detail,
                ready_requires_nodes: raw.ready_requires_nodes.unwrap_or(false),
                audit_retention: crate::tenant::AuditRetention {
                    max_age_ms: audit_days * 86_400_000,
                    max_records: audit_max,
                },
                ui_dir: raw.ui_dir,
                log_filter: raw.log.unwrap_or_else(|| "info".into()),
                request_timeout: Duration::from_secs(timeout_s),
                max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
                store_cache_bytes: usize::try_from(cache_mb * 1024 * 1024).unwrap_or(usize::MAX),
                cdc_nats_url: raw.cdc_nats_url,
                cdc_kafka_brokers: raw.cdc_kafka_brokers,
                outbox: OutboxConfig {
                    quota_bytes: outbox_mb * 1024 * 1024,
                    policy,
                    compact_min_bytes: compact_mb * 1024 * 1024,
                },
                default_quotas: quotas,
                sources: raw.sources.unwrap_or_default(),
                origin,
            }),
            _ => Err(errors),
        }
    }

    /// Effective settings as `(key, value, origin)` rows, secrets redacted.
    pub fn describe(&self) -> Vec<(&'static str, String, String)> {
        let o = |k: &'static str| {
            self.origin
                .get(k)
                .cloned()
                .unwrap_or_else(|| "default".into())
        };
        let opt = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("(unset)".into(), |p| p.display().to_string())
        };
        vec![
            ("bind", self.bind.to_string(), o("bind")),
            (
                "data_dir",
                self.data_dir.display().to_string(),
                o("data_dir"),
            ),
            (
                "admin_token",
                match (&self.admin_token, self.dev_mode) {
                    (Some(_), _) => "[redacted]".into(),
                    (None, true) => "(unset: dev mode, admin API open)".into(),
                    (None, false) => "(unset: generated at first start, hash stored)".into(),
                },
                o("admin_token"),
            ),
            (
                "key_provider",
                match &self.key {
                    KeyConfig::Local(_) => "local (KEK [redacted])".into(),
                    KeyConfig::Tpm(t) => format!(
                        "tpm ({}, PCRs {:?}, auth value {})",
                        t.tcti,
                        t.pcrs,
                        if t.auth.is_some() {
                            "[redacted]"
                        } else {
                            "none"
                        }
                    ),
                    KeyConfig::Vault(v) => format!(
                        "vault ({} {}/{}, credentials [redacted])",
                        v.addr, v.mount, v.key
                    ),
                    KeyConfig::AwsKms(k) => format!(
                        "aws-kms ({} via {}, credentials [redacted])",
                        k.key_arn, k.endpoint
                    ),
                    KeyConfig::Plaintext => "plaintext (DEV ONLY: secrets unencrypted)".into(),
                },
                o("key_provider").replace("default", "implied"),
            ),
            (
                "key_probe_secs",
                self.key_probe
                    .map_or("0 (off)".into(), |d| d.as_secs().to_string()),
                o("key_probe_secs"),
            ),
            (
                "unix_socket",
                self.unix_socket.as_ref().map_or("(none)".into(), |u| {
                    format!(
                        "{} mode {:o}{}",
                        u.path.display(),
                        u.mode,
                        u.owner
                            .map_or(String::new(), |(a, b)| format!(" owner {a}:{b}"))
                    )
                }),
                o("unix_socket"),
            ),
            (
                "allow",
                if self.allow.is_empty() {
                    "(every network)".into()
                } else {
                    self.allow
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
                o("allow"),
            ),
            (
                "egress_allow",
                {
                    let g = &self.egress_allow;
                    let mut v: Vec<String> = g.networks.iter().map(ToString::to_string).collect();
                    v.extend(g.hosts.iter().cloned());
                    if v.is_empty() {
                        "(public internet only)".into()
                    } else {
                        v.join(",")
                    }
                },
                o("egress_allow"),
            ),
            (
                "max_connections",
                self.max_connections.to_string(),
                o("max_connections"),
            ),
            (
                "header_timeout_secs",
                self.header_timeout.as_secs().to_string(),
                o("header_timeout_secs"),
            ),
            (
                "max_connections_per_source",
                self.max_connections_per_source.to_string(),
                o("max_connections_per_source"),
            ),
            (
                "idle_timeout_secs",
                self.idle_timeout.as_secs().to_string(),
                o("idle_timeout_secs"),
            ),
            (
                "streams_per_caller",
                self.streams_per_caller.to_string(),
                o("streams_per_caller"),
            ),
            (
                "auth_failures_per_min",
                self.auth_failures_per_min.to_string(),
                o("auth_failures_per_min"),
            ),
            (
                "enroll_rate_per_min",
                self.enroll_rate_per_min.to_string(),
                o("enroll_rate_per_min"),
            ),
            (
                "tls",
                match &self.tls {
                    None => "off (plain HTTP)".into(),
                    Some(t) => format!(
                        "on (client certificates: {})",
                        match (&t.client_ca_pem, t.require_client_cert) {
                            (None, _) => "not asked for",
                            (Some(_), false) => "checked when presented",
                            (Some(_), true) => "required",
                        }
                    ),
                },
                o("tls_cert"),
            ),
            ("dev_mode", self.dev_mode.to_string(), o("dev_mode")),
            (
                "public_detail",
                self.public_detail.to_string(),
                o("public_detail"),
            ),
            (
                "ready_requires_nodes",
                self.ready_requires_nodes.to_string(),
                o("ready_requires_nodes"),
            ),
            (
                "audit_retention_days",
                (self.audit_retention.max_age_ms / 86_400_000).to_string(),
                o("audit_retention_days"),
            ),
            (
                "audit_max_records",
                self.audit_retention.max_records.to_string(),
                o("audit_max_records"),
            ),
            ("ui_dir", opt(&self.ui_dir), o("ui_dir")),
            ("log", self.log_filter.clone(), o("log")),
            (
                "request_timeout_secs",
                self.request_timeout.as_secs().to_string(),
                o("request_timeout_secs"),
            ),
            (
                "max_body_bytes",
                self.max_body_bytes.to_string(),
                o("max_body_bytes"),
            ),
            (
                "store_cache_mb",
                (self.store_cache_bytes / (1024 * 1024)).to_string(),
                o("store_cache_mb"),
            ),
            (
                "cdc_outbox_max_mb",
                (self.outbox.quota_bytes / (1024 * 1024)).to_string(),
                o("cdc_outbox_max_mb"),
            ),
            (
                "sources",
                self.sources
                    .iter()
                    .map(|s| format!("{}/{} <- {} {:?}", s.org, s.app, s.endpoint, s.collections))
                    .collect::<Vec<_>>()
                    .join("; "),
                o("sources"),
            ),
            (
                "cdc_compact_min_mb",
                (self.outbox.compact_min_bytes / (1024 * 1024)).to_string(),
                o("cdc_compact_min_mb"),
            ),
            (
                "cdc_full_policy",
                self.outbox.policy.name().to_owned(),
                o("cdc_full_policy"),
            ),
            (
                "cdc_nats_url",
                self.cdc_nats_url
                    .clone()
                    .unwrap_or_else(|| "(unset)".into()),
                o("cdc_nats_url"),
            ),
            ("quotas", format!("{:?}", self.default_quotas), o("quotas")),
        ]
    }
}

/// Creates the data directory if needed (private), refuses one others may write, and
/// proves it is writable.
fn check_data_dir(dir: &Path) -> Result<(), String> {
    private::ensure_private_dir(dir)?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            format!(
                "{} is not writable ({e}); fix its permissions or choose another directory",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests;

/// A log filter: a level (`info`), and `target=level` pairs (`warn,peat_gateway::cdc=debug`).
/// Span and field filters are not taken (their matcher is a regex engine the binary does not
/// carry).
pub fn log_filter(s: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    s.parse().map_err(|e| {
        format!(
            "'{s}' is not a log filter ({e}); give a level (error, warn, info, debug, trace) \
             and target=level pairs, e.g. warn,peat_gateway=debug"
        )
    })
}
