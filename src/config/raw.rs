//! Stage 1 of the configuration: what was given, from the TOML file and then the
//! environment (which overrides it), with no checks beyond parsing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

/// Default config file, read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/peat-gateway/config.toml";
pub(crate) const MIN_ADMIN_TOKEN: usize = 16;

/// Quotas given for new orgs; absent fields keep the built-in defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    pub max_formations: Option<u32>,
    pub max_peers_per_formation: Option<u32>,
    pub max_documents_per_formation: Option<u32>,
    pub max_cdc_sinks: Option<u32>,
    pub max_enrollments_per_hour: Option<u32>,
    pub max_api_tokens: Option<u32>,
}

/// Settings as given. Field names are the config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen address of the API and UI (`PEAT_GATEWAY_BIND`).
    pub bind: Option<String>,
    /// Directory of `state.redb` (`PEAT_GATEWAY_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
    /// Bootstrap admin bearer token (`PEAT_ADMIN_TOKEN`).
    pub admin_token: Option<Secret>,
    /// Local key-encryption key, 64 hex characters (`PEAT_KEK`).
    pub kek: Option<Secret>,
    /// `local` or `plaintext` (`PEAT_KEY_PROVIDER`); implied by the other key settings.
    pub key_provider: Option<String>,
    /// TPM access, a TCTI string (`PEAT_TPM_TCTI`, default `device:/dev/tpmrm0`).
    pub tpm_tcti: Option<String>,
    /// PCRs the TPM-sealed KEK is bound to, e.g. `sha256:0,2,7` (`PEAT_TPM_PCRS`).
    pub tpm_pcrs: Option<String>,
    /// Auth value the TPM-sealed KEK needs (`PEAT_TPM_AUTH`).
    pub tpm_auth: Option<Secret>,
    /// PEM certificate chain of the API listener; turns on TLS (`PEAT_GATEWAY_TLS_CERT`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate (`PEAT_GATEWAY_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates client certificates are checked against (`PEAT_GATEWAY_TLS_CLIENT_CA`).
    pub tls_client_ca: Option<PathBuf>,
    /// `optional` (default) or `required` (`PEAT_GATEWAY_TLS_CLIENT_AUTH`).
    pub tls_client_auth: Option<String>,
    /// Client certificates as API callers: `cn:ops-*=acme/operator; email:root@kit=admin`
    /// (`PEAT_GATEWAY_TLS_CLIENT_ROLES`).
    pub tls_client_roles: Option<String>,
    /// A Unix socket to serve the API on as well, for local tools (`PEAT_GATEWAY_UNIX_SOCKET`).
    pub unix_socket: Option<PathBuf>,
    /// Its file mode, octal (`PEAT_GATEWAY_UNIX_SOCKET_MODE`, default 660).
    pub unix_socket_mode: Option<String>,
    /// Its owner as `uid:gid` (`PEAT_GATEWAY_UNIX_SOCKET_OWNER`).
    pub unix_socket_owner: Option<String>,
    /// Networks allowed to reach the TCP/TLS listener, comma-separated CIDRs
    /// (`PEAT_GATEWAY_ALLOW`); unset: every network.
    pub allow: Option<String>,
    /// Internal networks (CIDRs) and host names every org's sinks and identity providers may
    /// reach (`PEAT_EGRESS_ALLOW`); unset: the public internet only, plus per-org grants.
    pub egress_allow: Option<String>,
    /// Connections served at once (`PEAT_GATEWAY_MAX_CONNECTIONS`, default 256).
    pub max_connections: Option<u64>,
    /// Seconds a client has for the TLS handshake and each request's headers, and that a
    /// response may wait on a client that does not read (`PEAT_GATEWAY_HEADER_TIMEOUT_SECS`,
    /// default 10).
    pub header_timeout_secs: Option<u64>,
    /// Connections one source address may hold at once
    /// (`PEAT_GATEWAY_MAX_CONNECTIONS_PER_SOURCE`, default 64).
    pub max_connections_per_source: Option<u64>,
    /// Seconds a connection may pass with nothing read or written
    /// (`PEAT_GATEWAY_IDLE_TIMEOUT_SECS`, default 60).
    pub idle_timeout_secs: Option<u64>,
    /// Live event streams one caller (token or certificate) may hold at once
    /// (`PEAT_GATEWAY_STREAMS_PER_CALLER`, default 4).
    pub streams_per_caller: Option<u64>,
    /// Seconds between key-provider health probes; 0 turns them off (`PEAT_KEY_PROBE_SECS`).
    pub key_probe_secs: Option<u64>,
    /// Failed authentications allowed per source address and per token id and minute
    /// (`PEAT_AUTH_FAILURES_PER_MIN`).
    pub auth_failures_per_min: Option<u64>,
    /// Enrollment attempts allowed per source address and minute (`PEAT_ENROLL_RATE_PER_MIN`).
    pub enroll_rate_per_min: Option<u64>,
    /// Explicit development mode (`PEAT_DEV_MODE`).
    pub dev_mode: Option<bool>,
    /// A node link that is down turns `/ready` 503 (`PEAT_READY_REQUIRES_NODES`).
    pub ready_requires_nodes: Option<bool>,
    /// Audit records older than this many days are pruned (`PEAT_AUDIT_RETENTION_DAYS`).
    pub audit_retention_days: Option<u64>,
    /// At most this many audit records are kept (`PEAT_AUDIT_MAX_RECORDS`).
    pub audit_max_records: Option<u64>,
    /// `/metrics` and `/ready` detail (sink ids, org counts, KEK id, reasons) without a token
    /// (`PEAT_PUBLIC_DETAIL`); else to the admin only.
    pub public_detail: Option<bool>,
    /// Directory of an operator UI build served at `/_/` (`PEAT_UI_DIR`).
    pub ui_dir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `peat_gateway=debug` (`PEAT_LOG`, else `RUST_LOG`).
    pub log: Option<String>,
    /// Longest a request may take, seconds (`PEAT_GATEWAY_REQUEST_TIMEOUT_SECS`).
    pub request_timeout_secs: Option<u64>,
    /// Largest request body on admin routes, bytes (`PEAT_GATEWAY_MAX_BODY_BYTES`).
    pub max_body_bytes: Option<u64>,
    /// State database page cache, MiB (`PEAT_STORE_CACHE_MB`).
    pub store_cache_mb: Option<u64>,
    /// NATS server for the CDC sink (`PEAT_CDC_NATS_URL`).
    pub cdc_nats_url: Option<String>,
    /// Outbox byte quota, MiB (`PEAT_CDC_OUTBOX_MAX_MB`).
    pub cdc_outbox_max_mb: Option<u64>,
    /// Outbox file size below which it is never compacted, MiB (`PEAT_CDC_COMPACT_MIN_MB`).
    pub cdc_compact_min_mb: Option<u64>,
    /// What a full outbox does: `block` or `drop-oldest` (`PEAT_CDC_FULL_POLICY`).
    pub cdc_full_policy: Option<String>,
    /// Kafka brokers for the CDC sink (`PEAT_CDC_KAFKA_BROKERS`).
    pub cdc_kafka_brokers: Option<String>,
    /// AWS KMS key (`PEAT_KMS_KEY_ARN`).
    pub kms_key_arn: Option<String>,
    /// KMS endpoint, for an emulator or a private link (`PEAT_KMS_ENDPOINT`).
    pub kms_endpoint: Option<String>,
    /// Region; else the one in the ARN (`AWS_REGION`).
    pub aws_region: Option<String>,
    /// Credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<Secret>,
    pub aws_session_token: Option<Secret>,
    /// Vault address (`PEAT_VAULT_ADDR`).
    pub vault_addr: Option<String>,
    /// Vault token (`PEAT_VAULT_TOKEN`).
    pub vault_token: Option<Secret>,
    /// Vault Transit key name (`PEAT_VAULT_TRANSIT_KEY`).
    pub vault_transit_key: Option<String>,
    /// Vault Transit mount (`PEAT_VAULT_MOUNT`, default `transit`).
    pub vault_mount: Option<String>,
    /// Vault Enterprise / OpenBao namespace (`PEAT_VAULT_NAMESPACE`).
    pub vault_namespace: Option<String>,
    /// AppRole login (`PEAT_VAULT_ROLE_ID`, `PEAT_VAULT_SECRET_ID`).
    pub vault_role_id: Option<String>,
    pub vault_secret_id: Option<Secret>,
    /// PEM file of a private CA for an https Vault (`PEAT_VAULT_CACERT`).
    pub vault_cacert: Option<PathBuf>,
    /// Quotas of new orgs.
    pub quotas: Option<RawQuotas>,
    /// Sidecar bindings (`[[sources]]`, file only), applied at every start.
    pub sources: Option<Vec<SourceConfig>>,
}

/// One `[[sources]]` entry: a formation captured from a peat-node sidecar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub org: String,
    pub app: String,
    /// `unix:///run/peat-node/sidecar.sock` or `http://127.0.0.1:50051`.
    pub endpoint: String,
    pub collections: Vec<String>,
    pub token: Option<Secret>,
    pub reconcile_secs: Option<u64>,
    pub full_policy: Option<String>,
    pub tls_ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<Secret>,
    /// The id the node is started with (`--node-id`), pinned and checked on every connect.
    pub node_id: Option<String>,
}

/// Environment variable → config key. The one table of names operators use.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("PEAT_GATEWAY_BIND", "bind"),
    ("PEAT_GATEWAY_DATA_DIR", "data_dir"),
    ("PEAT_ADMIN_TOKEN", "admin_token"),
    ("PEAT_KEK", "kek"),
    ("PEAT_KEY_PROVIDER", "key_provider"),
    ("PEAT_TPM_TCTI", "tpm_tcti"),
    ("PEAT_TPM_PCRS", "tpm_pcrs"),
    ("PEAT_TPM_AUTH", "tpm_auth"),
    ("PEAT_KEY_PROBE_SECS", "key_probe_secs"),
    ("PEAT_GATEWAY_TLS_CERT", "tls_cert"),
    ("PEAT_GATEWAY_TLS_KEY", "tls_key"),
    ("PEAT_GATEWAY_TLS_CLIENT_CA", "tls_client_ca"),
    ("PEAT_GATEWAY_TLS_CLIENT_AUTH", "tls_client_auth"),
    ("PEAT_GATEWAY_TLS_CLIENT_ROLES", "tls_client_roles"),
    ("PEAT_GATEWAY_UNIX_SOCKET", "unix_socket"),
    ("PEAT_GATEWAY_UNIX_SOCKET_MODE", "unix_socket_mode"),
    ("PEAT_GATEWAY_UNIX_SOCKET_OWNER", "unix_socket_owner"),
    ("PEAT_GATEWAY_MAX_CONNECTIONS", "max_connections"),
    ("PEAT_GATEWAY_ALLOW", "allow"),
    ("PEAT_EGRESS_ALLOW", "egress_allow"),
    ("PEAT_GATEWAY_HEADER_TIMEOUT_SECS", "header_timeout_secs"),
    (
        "PEAT_GATEWAY_MAX_CONNECTIONS_PER_SOURCE",
        "max_connections_per_source",
    ),
    ("PEAT_GATEWAY_IDLE_TIMEOUT_SECS", "idle_timeout_secs"),
    ("PEAT_GATEWAY_STREAMS_PER_CALLER", "streams_per_caller"),
    ("PEAT_ENROLL_RATE_PER_MIN", "enroll_rate_per_min"),
    ("PEAT_AUTH_FAILURES_PER_MIN", "auth_failures_per_min"),
    ("PEAT_DEV_MODE", "dev_mode"),
    ("PEAT_PUBLIC_DETAIL", "public_detail"),
    ("PEAT_READY_REQUIRES_NODES", "ready_requires_nodes"),
    ("PEAT_AUDIT_RETENTION_DAYS", "audit_retention_days"),
    ("PEAT_AUDIT_MAX_RECORDS", "audit_max_records"),
    ("PEAT_UI_DIR", "ui_dir"),
    ("PEAT_LOG", "log"),
    ("PEAT_GATEWAY_REQUEST_TIMEOUT_SECS", "request_timeout_secs"),
    ("PEAT_GATEWAY_MAX_BODY_BYTES", "max_body_bytes"),
    ("PEAT_STORE_CACHE_MB", "store_cache_mb"),
    ("PEAT_CDC_NATS_URL", "cdc_nats_url"),
    ("PEAT_CDC_OUTBOX_MAX_MB", "cdc_outbox_max_mb"),
    ("PEAT_CDC_FULL_POLICY", "cdc_full_policy"),
    ("PEAT_CDC_COMPACT_MIN_MB", "cdc_compact_min_mb"),
    ("PEAT_CDC_KAFKA_BROKERS", "cdc_kafka_brokers"),
    ("PEAT_KMS_KEY_ARN", "kms_key_arn"),
    ("PEAT_KMS_ENDPOINT", "kms_endpoint"),
    ("AWS_REGION", "aws_region"),
    ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
    ("AWS_SESSION_TOKEN", "aws_session_token"),
    ("PEAT_VAULT_ADDR", "vault_addr"),
    ("PEAT_VAULT_TOKEN", "vault_token"),
    ("PEAT_VAULT_TRANSIT_KEY", "vault_transit_key"),
    ("PEAT_VAULT_MOUNT", "vault_mount"),
    ("PEAT_VAULT_NAMESPACE", "vault_namespace"),
    ("PEAT_VAULT_ROLE_ID", "vault_role_id"),
    ("PEAT_VAULT_SECRET_ID", "vault_secret_id"),
    ("PEAT_VAULT_CACERT", "vault_cacert"),
];

/// One problem with the configuration, phrased as what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

pub(crate) fn err(setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        message: message.into(),
    }
}

/// Loaded settings plus where each came from.
pub struct Loaded {
    pub raw: RawConfig,
    pub origin: BTreeMap<&'static str, String>,
    /// Environment values that could not be applied; reported with the rest.
    pub problems: Vec<ConfigError>,
}

/// Reads the file (if any) and overlays the environment. Fails only on unreadable or
/// unparsable input; values are checked by [`Config::from_raw`].
pub fn load(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<ConfigError>> {
    let mut origin = BTreeMap::new();
    let mut raw = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                vec![err(
                    format!("config file {}", path.display()),
                    format!("cannot be read ({e})"),
                )]
            })?;
            let raw: RawConfig = toml::from_str(&text).map_err(|e| {
                vec![err(
                    format!("config file {}", path.display()),
                    format!("is not valid: {}", e.message()),
                )]
            })?;
            let table: toml::Table = toml::from_str(&text).unwrap_or_default();
            for (_, key) in ENV_VARS {
                if table.contains_key(*key) {
                    origin.insert(*key, format!("file {}", path.display()));
                }
            }
            raw
        }
        None => RawConfig::default(),
    };
    let mut errors = Vec::new();
    for (var, key) in ENV_VARS {
        let Some(value) = env(var) else { continue };
        origin.insert(*key, format!("env {var}"));
        if value.is_empty() {
            errors.push(err(*var, "is set but empty; unset it or give a value"));
            continue;
        }
        if let Err(message) = set_from_env(&mut raw, key, value) {
            errors.push(err(*var, message));
        }
    }
    resolve_secret_refs(&mut raw, &origin, &env, &mut errors);
    if let Some(v) = env("RUST_LOG").filter(|_| raw.log.is_none()) {
        origin.insert("log", "env RUST_LOG".into());
        raw.log = Some(v);
    }
    Ok(Loaded {
        raw,
        origin,
        problems: errors,
    })
}

fn set_from_env(raw: &mut RawConfig, key: &str, v: String) -> Result<(), String> {
    let num = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("'{v}' is not a whole number"))
    };
    match key {
        "bind" => raw.bind = Some(v),
        "data_dir" => raw.data_dir = Some(v.into()),
        "admin_token" => raw.admin_token = Some(Secret::new(v)),
        "kek" => raw.kek = Some(Secret::new(v)),
        "key_provider" => raw.key_provider = Some(v),
        "tpm_tcti" => raw.tpm_tcti = Some(v),
        "tpm_pcrs" => raw.tpm_pcrs = Some(v),
        "tpm_auth" => raw.tpm_auth = Some(Secret::new(v)),
        "key_probe_secs" => raw.key_probe_secs = Some(num(&v)?),
        "tls_cert" => raw.tls_cert = Some(v.into()),
        "tls_key" => raw.tls_key = Some(v.into()),
        "tls_client_ca" => raw.tls_client_ca = Some(v.into()),
        "tls_client_auth" => raw.tls_client_auth = Some(v),
        "tls_client_roles" => raw.tls_client_roles = Some(v),
        "unix_socket" => raw.unix_socket = Some(v.into()),
        "unix_socket_mode" => raw.unix_socket_mode = Some(v),
        "unix_socket_owner" => raw.unix_socket_owner = Some(v),
        "max_connections" => raw.max_connections = Some(num(&v)?),
        "allow" => raw.allow = Some(v),
        "egress_allow" => raw.egress_allow = Some(v),
        "header_timeout_secs" => raw.header_timeout_secs = Some(num(&v)?),
        "max_connections_per_source" => raw.max_connections_per_source = Some(num(&v)?),
        "idle_timeout_secs" => raw.idle_timeout_secs = Some(num(&v)?),
        "streams_per_caller" => raw.streams_per_caller = Some(num(&v)?),
        "enroll_rate_per_min" => raw.enroll_rate_per_min = Some(num(&v)?),
        "auth_failures_per_min" => raw.auth_failures_per_min = Some(num(&v)?),
        "dev_mode" => raw.dev_mode = Some(boolean(&v)?),
        "public_detail" => raw.public_detail = Some(boolean(&v)?),
        "ready_requires_nodes" => raw.ready_requires_nodes = Some(boolean(&v)?),
        "audit_retention_days" => raw.audit_retention_days = Some(num(&v)?),
        "audit_max_records" => raw.audit_max_records = Some(num(&v)?),
        "ui_dir" => raw.ui_dir = Some(v.into()),
        "log" => raw.log = Some(v),
        "request_timeout_secs" => raw.request_timeout_secs = Some(num(&v)?),
        "max_body_bytes" => raw.max_body_bytes = Some(num(&v)?),
        "store_cache_mb" => raw.store_cache_mb = Some(num(&v)?),
        "cdc_nats_url" => raw.cdc_nats_url = Some(v),
        "cdc_outbox_max_mb" => raw.cdc_outbox_max_mb = Some(num(&v)?),
        "cdc_full_policy" => raw.cdc_full_policy = Some(v),
        "cdc_compact_min_mb" => raw.cdc_compact_min_mb = Some(num(&v)?),
        "cdc_kafka_brokers" => raw.cdc_kafka_brokers = Some(v),
        "kms_key_arn" => raw.kms_key_arn = Some(v),
        "kms_endpoint" => raw.kms_endpoint = Some(v),
        "aws_region" => raw.aws_region = Some(v),
        "aws_access_key_id" => raw.aws_access_key_id = Some(v),
        "aws_secret_access_key" => raw.aws_secret_access_key = Some(Secret::new(v)),
        "aws_session_token" => raw.aws_session_token = Some(Secret::new(v)),
        "vault_addr" => raw.vault_addr = Some(v),
        "vault_token" => raw.vault_token = Some(Secret::new(v)),
        "vault_transit_key" => raw.vault_transit_key = Some(v),
        "vault_mount" => raw.vault_mount = Some(v),
        "vault_namespace" => raw.vault_namespace = Some(v),
        "vault_role_id" => raw.vault_role_id = Some(v),
        "vault_secret_id" => raw.vault_secret_id = Some(Secret::new(v)),
        "vault_cacert" => raw.vault_cacert = Some(v.into()),
        _ => return Err("unknown setting".into()),
    }
    Ok(())
}

/// Reads `file:/path` and `credential:NAME` (a systemd credential in `$CREDENTIALS_DIRECTORY`)
/// references in the secret settings, so secrets need not sit in the environment or the
/// config file. One trailing newline is dropped; an unreadable or empty source is an error
/// naming the setting, never an empty secret.
fn resolve_secret_refs(
    raw: &mut RawConfig,
    origin: &BTreeMap<&'static str, String>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    let name = |key: &'static str| -> String {
        origin
            .get(key)
            .and_then(|o| o.strip_prefix("env ").map(str::to_owned))
            .unwrap_or_else(|| key.to_owned())
    };
    let creds = env("CREDENTIALS_DIRECTORY");
    let mut resolve = |key: &'static str, slot: &mut Option<Secret>| {
        let Some(v) = slot.as_ref() else { return };
        let path = if let Some(p) = v.expose().strip_prefix("file:") {
            std::path::PathBuf::from(p)
        } else if let Some(c) = v.expose().strip_prefix("credential:") {
            match &creds {
                Some(dir) if !c.is_empty() && !c.contains('/') => Path::new(dir).join(c),
                Some(_) => {
                    errors.push(err(
                        name(key),
                        "credential:NAME takes a bare credential name",
                    ));
                    return;
                }
                None => {
                    errors.push(err(
                        name(key),
                        "refers to a systemd credential but CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)",
                    ));
                    return;
                }
            }
        } else {
            return;
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                if value.is_empty() {
                    errors.push(err(name(key), format!("{} is empty", path.display())));
                } else {
                    *slot = Some(Secret::new(value.to_owned()));
                }
            }
            Err(e) => errors.push(err(
                name(key),
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    };
    resolve("admin_token", &mut raw.admin_token);
    resolve("kek", &mut raw.kek);
    resolve("tpm_auth", &mut raw.tpm_auth);
    resolve("aws_secret_access_key", &mut raw.aws_secret_access_key);
    resolve("aws_session_token", &mut raw.aws_session_token);
    resolve("vault_token", &mut raw.vault_token);
    resolve("vault_secret_id", &mut raw.vault_secret_id);
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean (use 1 or 0)")),
    }
}
