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
    /// Write the KEK wrapped under a passphrase (Argon2id + AES-256-GCM) to FILE, so a
    /// replacement board can re-seal it (`keys import-recovery`). Keep the file and the
    /// passphrase apart. The passphrase comes from --passphrase-file or PEAT_RECOVERY_PASSPHRASE.
    ExportRecovery {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Re-seal a KEK from a recovery file into this board's TPM (PEAT_KEY_PROVIDER=tpm).
    ImportRecovery {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Overwrite an existing kek.tpm (for example the failed board's copy).
        #[arg(long)]
        replace: bool,
    },
    /// Move every sealed record to a new KEK by re-wrapping its DEK (the data is not
    /// re-encrypted), with progress; the gateway must be stopped. TPM: a new KEK is drawn and
    /// sealed first, the files swapped last. Local: give the new KEK with --new-kek-file, then
    /// set PEAT_KEK to it. Safe to kill: run it again to finish.
    Rotate {
        /// Local provider: file holding the new KEK (64 hex characters).
        #[arg(long)]
        new_kek_file: Option<PathBuf>,
    },
    /// Print the key provider, its KEK id and, for the TPM, where the sealed KEK is and what
    /// it is bound to. Unseals to compute the KEK id.
    Status,
}

pub(crate) fn load_config(flag: Option<&Path>) -> Result<Config, Failure> {
    load_config_with_provider(flag, None)
}

/// As [`load_config`], with `provider` standing in for an unset PEAT_KEY_PROVIDER (a command
/// that names its provider, such as `keys init --provider tpm`).
fn load_config_with_provider(
    flag: Option<&Path>,
    provider: Option<&str>,
) -> Result<Config, Failure> {
    let file = config_file(flag);
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .or_else(|| (k == "PEAT_KEY_PROVIDER").then(|| provider.map(str::to_owned))?)
    };
    let loaded = config::load(file.as_deref(), env).map_err(Failure::Config)?;
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
                ChainReport::Intact { records, from_seq } => {
                    match from_seq {
                        None => println!("audit chain intact: {records} records verified"),
                        Some(s) => println!(
                            "audit chain intact: {records} records verified from the retention checkpoint (record {s} on; older ones were pruned)"
                        ),
                    }
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

#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    /// Count what would move; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// A local KEK (64 hex characters in a file) some records are sealed under.
    #[arg(long)]
    from_kek_file: Option<PathBuf>,
    /// Records stored unencrypted by a development setup (builds with the `dev` feature).
    #[arg(long)]
    from_plaintext: bool,
}

pub(crate) fn migrate_keys(flag: Option<&Path>, args: MigrateArgs) -> Result<ExitCode, Failure> {
    use std::sync::Arc;

    use peat_gateway::keys::{KeyProvider, Keyring, LocalKek};
    use peat_gateway::tenant::{Actor, AdminAuth};

    let cfg = load_config(flag)?;
    let rt = runtime()?;
    let store = open_store(&cfg.data_dir)?;
    let result = rt.block_on(async {
        let (current, _) = super::keyring::keyring(&cfg.key, &cfg.data_dir).await?;
        let mut previous: Vec<Arc<dyn KeyProvider>> = Vec::new();
        if let Some(f) = &args.from_kek_file {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let k =
                config::parse_kek(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            previous.push(Arc::new(LocalKek::new(k)));
        }
        if args.from_plaintext {
            #[cfg(feature = "dev")]
            previous.push(Arc::new(peat_gateway::keys::Plaintext));
            #[cfg(not(feature = "dev"))]
            anyhow::bail!("this build cannot have written plaintext records (no `dev` feature)");
        }
        let keyring = Keyring::with_previous(current.provider(), previous);
        let to = keyring.kek_id().to_owned();
        let tenancy = Tenancy::new(store.clone(), keyring, Default::default(), AdminAuth::Open);
        let report = tenancy
            .rewrap_all(args.dry_run, |done, total| {
                if done % 100 == 0 || done == total {
                    println!("  {done}/{total} records");
                }
            })
            .await?;
        if args.dry_run {
            println!(
                "dry run: {} of {} records would move to {to}; {} already there",
                report.rewrapped, report.total, report.already_current
            );
        } else {
            Tenancy::audit_key_operation(
                &store,
                &Actor::cli("migrate-keys"),
                "keys.migrate",
                format!("gateway/kek/{to}"),
            )
            .await?;
            println!(
                "moved {} of {} records to {to}; {} were already there",
                report.rewrapped, report.total, report.already_current
            );
        }
        Ok::<_, anyhow::Error>(())
    });
    rt.block_on(store.shutdown());
    result.map_err(|e| {
        Failure::Runtime(e.context("records sealed under a KEK not given here stay as they are; name it with --from-kek-file"))
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn rotate(cfg: &Config, store: &Store, new_kek_file: Option<&Path>) -> anyhow::Result<()> {
    use std::sync::Arc;

    use peat_gateway::config::KeyConfig;
    use peat_gateway::keys::{KeyProvider, Keyring, LocalKek};
    use peat_gateway::tenant::{Actor, AdminAuth};

    let (new, old): (LocalKek, LocalKek) = match (&cfg.key, new_kek_file) {
        (KeyConfig::Tpm(t), None) => super::keyring::tpm::begin_rotation(t, &cfg.data_dir).await?,
        (KeyConfig::Local(old), Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let k = config::parse_kek(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            (LocalKek::new(k), LocalKek::new(old.clone()))
        }
        (KeyConfig::Local(_), None) => anyhow::bail!(
            "give the new KEK with --new-kek-file FILE (make one with `peat-gateway keys generate-kek`)"
        ),
        (KeyConfig::Tpm(_), Some(_)) => anyhow::bail!("the TPM draws the new KEK itself; drop --new-kek-file"),
        (KeyConfig::Plaintext, _) => anyhow::bail!("the plaintext provider has no KEK to rotate"),
        (KeyConfig::AwsKms(_), _) => anyhow::bail!(
            "enable automatic rotation of the KMS key in AWS; old key material keeps decrypting, nothing to do here"
        ),
        (KeyConfig::Vault(_), _) => anyhow::bail!(
            "rotate the Transit key in Vault (`transit/keys/<key>/rotate`); Vault re-wraps on decrypt, nothing to do here"
        ),
    };
    let (from, to) = (old.kek_id().to_owned(), new.kek_id().to_owned());
    if from == to {
        anyhow::bail!("the new KEK is the current one");
    }
    let keyring = Keyring::with_previous(Arc::new(new), vec![Arc::new(old)]);
    let tenancy = Tenancy::new(store.clone(), keyring, Default::default(), AdminAuth::Open);
    println!("rotating {from} -> {to}");
    // Fault injection for the crash-safety tests: die as a power cut would, mid-rotation.
    let abort_after: Option<u64> = std::env::var("PEAT_TEST_ABORT_ROTATION_AFTER")
        .ok()
        .and_then(|v| v.parse().ok());
    let report = tenancy
        .rewrap_all(false, |done, total| {
            if done % 100 == 0 || done == total {
                println!("  {done}/{total} records");
            }
            if abort_after == Some(done) {
                std::process::abort();
            }
        })
        .await?;
    if let KeyConfig::Tpm(_) = &cfg.key {
        super::keyring::tpm::finish_rotation(&cfg.data_dir)?;
    }
    Tenancy::audit_key_operation(
        store,
        &Actor::cli("keys rotate"),
        "keys.rotate",
        format!("gateway/kek/{from}->{to}"),
    )
    .await?;
    println!(
        "done: {} re-wrapped, {} already under {to}",
        report.rewrapped, report.already_current
    );
    if let KeyConfig::Local(_) = &cfg.key {
        println!("now set PEAT_KEK to the new key before starting the gateway");
    }
    Ok(())
}

fn passphrase(file: Option<&Path>) -> Result<zeroize::Zeroizing<String>, Failure> {
    let p = match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => std::env::var("PEAT_RECOVERY_PASSPHRASE").map_err(|_| {
            Failure::Runtime(anyhow::anyhow!(
                "give the passphrase with --passphrase-file FILE or PEAT_RECOVERY_PASSPHRASE"
            ))
        })?,
    };
    Ok(zeroize::Zeroizing::new(
        p.trim_end_matches(['\n', '\r']).to_owned(),
    ))
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
            let cfg = load_config_with_provider(flag, Some("tpm"))?;
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
        KeysCmd::ExportRecovery {
            out,
            passphrase_file,
        } => {
            let cfg = load_config(flag)?;
            let pass = passphrase(passphrase_file.as_deref())?;
            let rt = runtime()?;
            let store = open_store(&cfg.data_dir)?;
            let (kek, id) = rt
                .block_on(super::keyring::raw_kek(&cfg.key, &cfg.data_dir))
                .map_err(Failure::Runtime)?;
            let text = peat_gateway::keys::recovery::export(&kek, &id, &pass)
                .map_err(|e| Failure::Runtime(anyhow::anyhow!("{e}")))?;
            super::write_new_private(&out, &text)
                .with_context(|| format!("writing {} (it must not exist yet)", out.display()))?;
            rt.block_on(Tenancy::audit_key_operation(
                &store,
                &peat_gateway::tenant::Actor::cli("keys export-recovery"),
                "keys.export-recovery",
                format!("gateway/kek/{id}"),
            ))
            .context("recording the export in the audit log")?;
            rt.block_on(store.shutdown());
            println!("wrote the recovery file for KEK {id} to {}", out.display());
            println!("keep it apart from the passphrase; `peat-gateway keys import-recovery --in {}` re-seals it", out.display());
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::ImportRecovery {
            input,
            passphrase_file,
            replace,
        } => {
            let cfg = load_config_with_provider(flag, Some("tpm"))?;
            let peat_gateway::config::KeyConfig::Tpm(t) = &cfg.key else {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "set PEAT_KEY_PROVIDER=tpm (and PEAT_TPM_TCTI) to re-seal into this board's TPM"
                )));
            };
            let pass = passphrase(passphrase_file.as_deref())?;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let (kek, was) = peat_gateway::keys::recovery::import(&text, &pass).map_err(|e| {
                Failure::Runtime(anyhow::anyhow!(
                    "cannot open the recovery file: {e} (wrong passphrase?)"
                ))
            })?;
            let rt = runtime()?;
            let store = open_store(&cfg.data_dir)?;
            let id = rt
                .block_on(super::keyring::tpm::reseal(t, &cfg.data_dir, kek, replace))
                .map_err(Failure::Runtime)?;
            rt.block_on(Tenancy::audit_key_operation(
                &store,
                &peat_gateway::tenant::Actor::cli("keys import-recovery"),
                "keys.import-recovery",
                format!("gateway/kek/{id}"),
            ))
            .context("recording the import in the audit log")?;
            rt.block_on(store.shutdown());
            println!("re-sealed KEK {was} into this TPM as {id}");
            if was.strip_prefix("tpm:") != id.strip_prefix("tpm:") {
                println!("note: the records were sealed under {was}; run `peat-gateway migrate-keys` to move them to the TPM provider");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Rotate { new_kek_file } => {
            let cfg = load_config(flag)?;
            let rt = runtime()?;
            let store = open_store(&cfg.data_dir)?;
            let result = rt.block_on(rotate(&cfg, &store, new_kek_file.as_deref()));
            rt.block_on(store.shutdown());
            result.map_err(Failure::Runtime)?;
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::Status => {
            let cfg = load_config(flag)?;
            let (keyring, _) = runtime()?
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
