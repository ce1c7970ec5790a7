//! Command-line interface. `anyhow` lives here and nowhere in the library.

mod admin;
mod backup;
mod demo;
mod gateway;
mod keyring;
mod malloc;
mod pages;
mod reload;
mod service;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const ABOUT: &str =
    "Edge gateway for Peat meshes: durable change capture to enterprise sinks, formation authority";

const LONG_ABOUT: &str = "\
peat-gateway runs beside a Peat mesh node on an ARM gateway and does two jobs:

  Change capture. It follows the node's document changes (bound per formation to the node's
  sidecar), keeps them durably in an outbox on local flash while the backhaul is down, and
  forwards them to each organization's sinks (NATS JetStream, MQTT, webhooks, Redis Streams,
  Kafka, files) when the link returns: an acknowledged change is never lost.

  Formation authority. Each organization's formations keep their Peat genesis keys sealed
  under a key-encryption key (TPM 2.0, Vault, AWS KMS or a local key); devices enroll with
  proof of possession through bootstrap tokens, OpenID tokens (verified offline from cached
  keys) or client certificates, and receive Peat mesh certificates.

Around both: multi-org tenancy with org-scoped API tokens, a hash-chained audit log, an
admin REST API (/openapi.json) with Prometheus metrics, and an operator web UI at /_/.

With no subcommand it runs `serve`. Try `peat-gateway demo` for a self-contained run.";

const AFTER_HELP: &str = "\
Configuration comes from an optional TOML file (--config, else /etc/peat-gateway/config.toml
when present) and the environment, which overrides the file:

  PEAT_GATEWAY_BIND        listen address                 (default 0.0.0.0:8080)
  PEAT_GATEWAY_DATA_DIR    state directory                (default ./data)
  PEAT_ADMIN_TOKEN         bootstrap admin bearer token   (unset: generated at first start)
  PEAT_KEY_PROVIDER        tpm | vault | aws-kms | local  (plaintext in dev builds only)
  PEAT_KEK                 local key-encryption key, 64 hex characters (implies local)
  PEAT_CDC_NATS_URL        default NATS server for sinks that name none
  PEAT_DEV_MODE            1 allows an open admin API and the plaintext provider (dev builds)
  PEAT_LOG                 log filter, e.g. info or peat_gateway=debug (else RUST_LOG)
  Secrets accept file:/path or credential:NAME (systemd LoadCredential=).
  See README.md for every setting.

Examples:
  peat-gateway demo                              # everything on embedded defaults
  peat-gateway keys generate-kek                 # make a KEK for PEAT_KEK
  PEAT_KEK=<64 hex> peat-gateway                 # serve; prints the admin token once
  PEAT_KEY_PROVIDER=tpm peat-gateway keys init   # seal a new KEK in the TPM
  PEAT_KEK=<64 hex> peat-gateway check-config    # show the effective settings
  peat-gateway audit verify                      # walk the audit hash chain (gateway stopped)

Under systemd (Type=notify) it reports READY, a STATUS line and watchdog pings.
Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.";

#[derive(Parser)]
#[command(name = "peat-gateway", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = AFTER_HELP)]
struct Cli {
    /// TOML configuration file (environment variables override it).
    #[arg(long, global = true, env = "PEAT_GATEWAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the admin API (the default). Stops cleanly on SIGTERM or Ctrl-C.
    Serve,
    /// Run on embedded defaults: a demo data dir, a generated local KEK, a demo org and
    /// formation. Prints where to look and a fresh admin token.
    Demo(gateway::DemoArgs),
    /// Validate the configuration and print the effective settings, secrets redacted.
    CheckConfig,
    /// Manage the bootstrap admin token.
    AdminToken {
        #[command(subcommand)]
        cmd: admin::AdminTokenCmd,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        cmd: admin::AuditCmd,
    },
    /// Key-encryption key tools.
    Keys {
        #[command(subcommand)]
        cmd: admin::KeysCmd,
    },
    /// Move every sealed record under the configured key provider (gateway stopped): from a
    /// previous local KEK (--from-kek-file) to the TPM, for example, or, in development builds,
    /// encrypt records a plaintext setup wrote (--from-plaintext). Reports counts; --dry-run
    /// only counts.
    MigrateKeys(admin::MigrateArgs),
    /// Take a consistent backup of the running gateway (both stores and the TPM-sealed KEK
    /// file) through its API, without stopping it. Needs the admin token.
    Backup(backup::BackupArgs),
    /// Restore a backup into the data directory (gateway stopped). Refuses a backup from a
    /// newer schema or one the configured key cannot open, and a data directory that holds
    /// data unless --force (the old files are kept aside).
    Restore(backup::RestoreArgs),
}

/// How a command ended; mapped to the documented exit codes.
pub(crate) enum Failure {
    Config(Vec<peat_gateway::config::ConfigError>),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

pub(crate) fn main() -> ExitCode {
    malloc::limit_arenas();
    // Every file the gateway creates (databases, sealed KEK, sink files) is its own alone.
    peat_gateway::config::private::private_umask();
    let cli = Cli::parse();
    let result = match cli.cmd.unwrap_or(Cmd::Serve) {
        Cmd::Serve => gateway::serve(cli.config.as_deref()),
        Cmd::Demo(args) => gateway::demo(cli.config.as_deref(), args),
        Cmd::CheckConfig => admin::check_config(cli.config.as_deref()),
        Cmd::AdminToken { cmd } => admin::admin_token(cli.config.as_deref(), cmd),
        Cmd::Audit { cmd } => admin::audit(cli.config.as_deref(), cmd),
        Cmd::Keys { cmd } => admin::keys(cli.config.as_deref(), cmd),
        Cmd::MigrateKeys(args) => admin::migrate_keys(cli.config.as_deref(), args),
        Cmd::Backup(args) => backup::backup(args),
        Cmd::Restore(args) => backup::restore(cli.config.as_deref(), args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Config(errors)) => {
            eprintln!(
                "peat-gateway: the configuration is invalid ({} problem{}):",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            for e in errors {
                eprintln!("  - {e}");
            }
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("peat-gateway: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Log lines go to stderr, with colour only on a terminal (the journal gets plain text). The
/// filter was checked with the configuration (`config::log_filter`).
pub(crate) fn init_logging(filter: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let targets = peat_gateway::config::log_filter(filter).unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(targets)
        .try_init();
}

/// The config file to read: `--config`, else the default path when it exists.
pub(crate) fn config_file(flag: Option<&std::path::Path>) -> Option<PathBuf> {
    match flag {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = PathBuf::from(peat_gateway::config::DEFAULT_CONFIG_FILE);
            p.exists().then_some(p)
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Store reads and file work: short jobs on a 2-core box. Tokio's default of 512
        // threads lets a burst of readers pin hundreds of stacks; idle ones leave after 10 s.
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

/// Writes a new file readable by its owner only, synced; refuses to overwrite.
pub(crate) fn write_new_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}
