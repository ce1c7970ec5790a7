//! `backup` (from the running gateway, over its API) and `restore` (into a data directory,
//! gateway stopped): a restore checks the backup's schema versions, every part's hash and that
//! the configured key opens its sealed records before it touches the data directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use peat_gateway::backup;
use peat_gateway::store::{Store, StoreOptions, OUTBOX, STATE};
use peat_gateway::tenant::{AdminAuth, Tenancy};

use super::Failure;

#[derive(Args)]
pub(crate) struct BackupArgs {
    /// Where to write the backup (written beside it first, then renamed into place).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The running gateway's address.
    #[arg(
        long,
        env = "PEAT_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// File holding the admin token (else PEAT_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The backup to restore.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Replace the data directory's databases (the old ones are kept in
    /// `.pre-restore-<time>/`). Never with a gateway running on it.
    #[arg(long)]
    force: bool,
}

fn token(args: &BackupArgs) -> anyhow::Result<String> {
    let raw = match &args.token_file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => std::env::var("PEAT_ADMIN_TOKEN")
            .context("give the admin token: --token-file FILE or PEAT_ADMIN_TOKEN")?,
    };
    Ok(raw.trim().to_owned())
}

pub(crate) fn backup(args: BackupArgs) -> Result<ExitCode, Failure> {
    let token = token(&args)?;
    let partial = args.out.with_extension("partial");
    let rt = super::runtime()?;
    rt.block_on(async {
        use tokio::io::AsyncWriteExt as _;
        let url = format!("{}/backup", args.url.trim_end_matches('/'));
        let mut res = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("asking {url} (is the gateway running there? --url)"))?;
        if !res.status().is_success() {
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            anyhow::bail!("the gateway refused the backup: HTTP {status}: {body}");
        }
        let mut f = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut got = 0u64;
        while let Some(chunk) = res.chunk().await.context("receiving the backup")? {
            f.write_all(&chunk).await.context("writing the backup")?;
            got += chunk.len() as u64;
        }
        f.sync_all().await.context("syncing the backup")?;
        eprintln!("received {got} bytes");
        Ok::<_, anyhow::Error>(())
    })?;
    let header =
        backup::verify(&partial).with_context(|| format!("checking {}", partial.display()))?;
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("moving the backup to {}", args.out.display()))?;
    println!(
        "backup {}: taken {}, state schema {}, outbox schema {}, KEK {}",
        args.out.display(),
        header.created_at,
        header.state_schema,
        header.outbox_schema,
        header.kek_id
    );
    for p in &header.parts {
        println!(
            "  {:<20} {:>12} bytes  sha256 {}",
            p.name, p.bytes, p.sha256
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn restore(flag: Option<&Path>, args: RestoreArgs) -> Result<ExitCode, Failure> {
    let cfg = super::admin::load_config(flag)?;
    let dir = cfg.data_dir.clone();
    let (header, _) = backup::open(&args.input).context("reading the backup")?;
    if header.state_schema > STATE.version() || header.outbox_schema > OUTBOX.version() {
        return Err(anyhow::anyhow!(
            "the backup was made by a newer gateway (state schema {}, outbox schema {}; this one reads up to {} and {}): restore it with that version or newer",
            header.state_schema, header.outbox_schema, STATE.version(), OUTBOX.version()
        )
        .into());
    }
    let live = ["state.redb", "cdc.redb"].map(|n| dir.join(n));
    if live.iter().any(|p| Store::in_use(p)) {
        return Err(anyhow::anyhow!(
            "a gateway is running on {}: stop it first (systemctl stop peat-gateway)",
            dir.display()
        )
        .into());
    }
    if live.iter().any(|p| p.exists()) && !args.force {
        return Err(anyhow::anyhow!(
            "{} already holds a gateway's data; --force replaces it (the old files are kept in .pre-restore-<time>/)",
            dir.display()
        )
        .into());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = peat_gateway::tenant::now_ms();
    let staging = dir.join(format!(".restore-{stamp}"));
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let checked = check_staged(&cfg, &args.input, &staging);
    let records = match checked {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
    };
    // Nothing of the data directory changed until here; now the old files move aside and the
    // checked ones take their place, each by a rename.
    let parts: Vec<String> = header.parts.iter().map(|p| p.name.clone()).collect();
    let aside = dir.join(format!(".pre-restore-{stamp}"));
    let mut moved = 0;
    for name in [
        "state.redb",
        "cdc.redb",
        "kek.tpm",
        "kek.tpm.next",
        "kek.tpm.previous",
    ] {
        let p = dir.join(name);
        if p.exists() {
            std::fs::create_dir_all(&aside).context("keeping the old files")?;
            std::fs::rename(&p, aside.join(name)).context("moving an old file aside")?;
            moved += 1;
        }
    }
    for name in &parts {
        std::fs::rename(staging.join(name), dir.join(name))
            .with_context(|| format!("moving {name} into {}", dir.display()))?;
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .context("syncing the data directory")?;
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "restored {} into {}: taken {}, {} sealed records opened under KEK {}",
        args.input.display(),
        dir.display(),
        header.created_at,
        records,
        header.kek_id
    );
    if moved > 0 {
        println!("the previous files are in {}", aside.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Extracts into `staging` (hashes checked) and proves the configured key opens the sealed
/// records there; returns how many it opened.
fn check_staged(
    cfg: &peat_gateway::config::Config,
    input: &Path,
    staging: &Path,
) -> anyhow::Result<usize> {
    backup::extract(input, staging).context("unpacking the backup")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let (keyring, _) = super::keyring::keyring(&cfg.key, staging)
            .await
            .context("opening the key provider against the backup's sealed KEK")?;
        let store = Store::open(&staging.join("state.redb"), &StoreOptions::default(), None)
            .context("opening the backup's state database")?;
        let tenancy = Tenancy::new(
            store.clone(),
            keyring,
            cfg.default_quotas,
            AdminAuth::Hash([0; 32]),
        );
        let opened = tenancy.verify_keys(16).await;
        store.shutdown().await;
        opened.map_err(|e| {
            anyhow::anyhow!(
                "the configured key cannot open this backup's sealed records ({e}); restore with the key it was made under, or import a recovery file first. The data directory was not touched"
            )
        })
    })
}
