//! Offline administration: `check-config`, `admin-token rotate`, `audit verify`, `keys …`.
//!
//! Commands that open the state database need the gateway stopped: redb locks the file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use peat_gateway::config::{self, Config};
use peat_gateway::store::{Store, StoreOptions};
use peat_gateway::tenant::{ChainReport, Tenancy};

use super::{config_file, runtime, Failure};

#[derive(Subcommand)]
pub(crate) enum AdminTokenCmd {
    /// Replace the stored bootstrap admin token and print the new one (gateway stopped).
    Rotate,
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the whole hash chain; report the first broken link (gateway stopped).
    Verify,
}

#[derive(Subcommand)]
pub(crate) enum KeysCmd {
    /// Print a new random 256-bit key as 64 hex characters, for PEAT_KEK.
    GenerateKek,
    /// Generate a KEK inside the TPM and seal it into the data dir (`kek.tpm`), bound to
    /// PEAT_TPM_PCRS when set. Serving with PEAT_KEY_PROVIDER=tpm does the same at first start.
    Init {
        /// The provider to initialize; only `tpm` holds a KEK of its own.
        #[arg(long, default_value = "tpm")]
        provider: String,
    },
    /// Print the key provider, its KEK id and, for the TPM, where the sealed KEK is and what
    /// it is bound to. Unseals to compute the KEK id.
    Status,
}

pub(crate) fn load_config(flag: Option<&Path>) -> Result<Config, Failure> {
    let file = config_file(flag);
    let loaded =
        config::load(file.as_deref(), |k| std::env::var(k).ok()).map_err(Failure::Config)?;
    Config::from_raw(loaded).map_err(Failure::Config)
}

/// The data directory alone, for commands that need no key.
fn data_dir(flag: Option<&Path>) -> Result<PathBuf, Failure> {
    let file = config_file(flag);
    let loaded =
        config::load(file.as_deref(), |k| std::env::var(k).ok()).map_err(Failure::Config)?;
    Ok(loaded
        .raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from("./data")))
}

fn open_store(dir: &Path) -> Result<Store, Failure> {
    let path = dir.join("state.redb");
    if !path.exists() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "no state database at {} (check PEAT_GATEWAY_DATA_DIR)",
            path.display()
        )));
    }
    Store::open(&path, &StoreOptions::default(), None)
        .with_context(|| format!("opening {}", path.display()))
        .map_err(Failure::Runtime)
}

pub(crate) fn check_config(flag: Option<&Path>) -> Result<ExitCode, Failure> {
    let cfg = load_config(flag)?;
    println!("configuration is valid; effective settings:");
    for (key, value, origin) in cfg.describe() {
        println!("  {key:<22} = {value:<48} ({origin})");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn admin_token(flag: Option<&Path>, cmd: AdminTokenCmd) -> Result<ExitCode, Failure> {
    match cmd {
        AdminTokenCmd::Rotate => {
            let dir = data_dir(flag)?;
            let rt = runtime()?;
            let store = open_store(&dir)?;
            let token = rt
                .block_on(Tenancy::rotate_admin_token(&store))
                .context("storing the new admin token")?;
            rt.block_on(store.shutdown());
            println!("{}", token.as_str());
            eprintln!("The previous admin token no longer works. Only this token's hash is stored: keep it safe.");
            if std::env::var_os("PEAT_ADMIN_TOKEN").is_some() {
                eprintln!("note: PEAT_ADMIN_TOKEN is set in this environment; while it is set, the gateway uses it instead of the stored token.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn audit(flag: Option<&Path>, cmd: AuditCmd) -> Result<ExitCode, Failure> {
    match cmd {
        AuditCmd::Verify => {
            let dir = data_dir(flag)?;
            let rt = runtime()?;
            let store = open_store(&dir)?;
            let report = Tenancy::verify_audit_chain_blocking(&store, |n| {
                eprintln!("  verified {n} records…")
            })
            .context("reading the audit log")?;
            rt.block_on(store.shutdown());
            match report {
                ChainReport::Intact { records } => {
                    println!("audit chain intact: {records} records verified");
                    Ok(ExitCode::SUCCESS)
                }
                ChainReport::Broken {
                    seq,
                    reason,
                    checked,
                } => {
                    println!("audit chain BROKEN at record {seq}: {reason} ({checked} records before it verified)");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

pub(crate) fn keys(flag: Option<&Path>, cmd: KeysCmd) -> Result<ExitCode, Failure> {
    match cmd {
        KeysCmd::GenerateKek => {
            let k =
                peat_gateway::keys::random_secret32().context("reading the OS random generator")?;
            println!("{}", hex::encode(k.as_ref()));
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Init { provider } => {
            if provider != "tpm" {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "only the tpm provider is initialized here; the local provider takes its KEK from PEAT_KEK (see `keys generate-kek`)"
                )));
            }
            let cfg = load_config(flag)?;
            let peat_gateway::config::KeyConfig::Tpm(t) = &cfg.key else {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "set PEAT_KEY_PROVIDER=tpm (and PEAT_TPM_TCTI, PEAT_TPM_PCRS as needed) to initialize the TPM provider"
                )));
            };
            let id = runtime()?
                .block_on(super::keyring::tpm::init(t, &cfg.data_dir))
                .map_err(Failure::Runtime)?;
            println!("sealed a new KEK in the TPM: {id}");
            println!("  file: {}", cfg.data_dir.join("kek.tpm").display());
            println!("  PCRs: {:?}", t.pcrs);
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Status => {
            let cfg = load_config(flag)?;
            let keyring = runtime()?
                .block_on(super::keyring::keyring(&cfg.key, &cfg.data_dir))
                .map_err(Failure::Runtime)?;
            println!("provider: {}", keyring.provider_kind());
            println!("KEK id:   {}", keyring.kek_id());
            if let peat_gateway::config::KeyConfig::Tpm(t) = &cfg.key {
                println!("TPM:      {}", t.tcti);
                println!("sealed:   {}", cfg.data_dir.join("kek.tpm").display());
                println!(
                    "PCRs:     {}",
                    if t.pcrs.is_empty() {
                        "none".to_owned()
                    } else {
                        format!("sha256:{:?}", t.pcrs)
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
