//! Builds the key provider chosen by the configuration; the TPM unseals here, once, at
//! start-up, on a blocking thread.

use std::path::Path;
use std::sync::Arc;

use peat_gateway::config::KeyConfig;
use peat_gateway::keys::{KeyProvider, Keyring, LocalKek};

/// The KEK itself and its id, for a recovery export.
pub(crate) async fn raw_kek(
    key: &KeyConfig,
    data_dir: &Path,
) -> anyhow::Result<(zeroize::Zeroizing<[u8; 32]>, String)> {
    use peat_gateway::keys::ProviderKind;
    let (kek, kind) = match key {
        KeyConfig::Local(k) => (k.clone(), ProviderKind::Local),
        KeyConfig::Tpm(t) => (tpm::unsealed(t, data_dir).await?, ProviderKind::Tpm),
        KeyConfig::Plaintext => anyhow::bail!("the plaintext provider has no KEK to recover"),
        KeyConfig::Vault(_) => {
            anyhow::bail!("Vault holds the KEK; back it up with Vault's own tools")
        }
        KeyConfig::AwsKms(_) => anyhow::bail!("AWS KMS holds the KEK; it never leaves KMS"),
    };
    let id = KeyProvider::kek_id(&LocalKek::held_by(kek.clone(), kind)).to_owned();
    Ok((kek, id))
}

/// The keyring, and whether opening it created a new KEK (to be audited).
pub(crate) async fn keyring(key: &KeyConfig, data_dir: &Path) -> anyhow::Result<(Keyring, bool)> {
    let mut created = false;
    let provider: Arc<dyn KeyProvider> = match key {
        KeyConfig::Local(k) => Arc::new(LocalKek::new(k.clone())),
        KeyConfig::Tpm(t) => {
            let (k, previous, new) = tpm::open(t, data_dir).await?;
            created = new;
            let previous: Vec<Arc<dyn KeyProvider>> = previous
                .into_iter()
                .map(|p| Arc::new(p) as Arc<dyn KeyProvider>)
                .collect();
            return Ok((Keyring::with_previous(Arc::new(k), previous), created));
        }
        #[cfg(feature = "vault")]
        KeyConfig::Vault(v) => {
            let started = std::time::Instant::now();
            let p = peat_gateway::keys::VaultTransit::connect(v.clone()).await?;
            tracing::info!(addr = %v.addr, key = %v.key, ms = started.elapsed().as_millis() as u64, "Vault Transit reachable");
            Arc::new(p)
        }
        #[cfg(feature = "aws-kms")]
        KeyConfig::AwsKms(k) => {
            let started = std::time::Instant::now();
            let p = peat_gateway::keys::AwsKms::connect(k.clone()).await?;
            tracing::info!(key = %k.key_arn, ms = started.elapsed().as_millis() as u64, "AWS KMS key reachable");
            Arc::new(p)
        }
        // Refused with the feature's name when the configuration is read.
        #[cfg(not(feature = "vault"))]
        KeyConfig::Vault(_) => anyhow::bail!("the Vault key provider is not in this build"),
        #[cfg(not(feature = "aws-kms"))]
        KeyConfig::AwsKms(_) => anyhow::bail!("the AWS KMS key provider is not in this build"),
        #[cfg(feature = "dev")]
        KeyConfig::Plaintext => Arc::new(peat_gateway::keys::Plaintext),
        #[cfg(not(feature = "dev"))]
        KeyConfig::Plaintext => anyhow::bail!("the plaintext key provider is not in this build"),
    };
    Ok((Keyring::new(provider), created))
}

#[cfg(feature = "tpm")]
pub(crate) mod tpm {
    use std::path::Path;

    use anyhow::Context;
    use peat_gateway::config::TpmConfig;
    use peat_gateway::keys::tpm::{self, TpmSettings};
    use peat_gateway::keys::{LocalKek, ProviderKind};

    fn settings(t: &TpmConfig) -> TpmSettings {
        TpmSettings {
            tcti: t.tcti.clone(),
            pcrs: t.pcrs.clone(),
            auth: t
                .auth
                .as_ref()
                .map(|a| TpmSettings::auth_from_secret(a.expose())),
        }
    }

    /// Unseals the KEK, or on first start generates and seals one. A rotation cut short
    /// leaves `kek.tpm.next` or `kek.tpm.prev` beside it: those KEKs open records too.
    pub(crate) async fn open(
        t: &TpmConfig,
        data_dir: &Path,
    ) -> anyhow::Result<(LocalKek, Vec<LocalKek>, bool)> {
        let (s, dir) = (settings(t), data_dir.to_path_buf());
        let started = std::time::Instant::now();
        let (kek, previous, created) = tokio::task::spawn_blocking(move || {
            let (cur, next, prev) = (
                tpm::sealed_path(&dir),
                dir.join(tpm::NEXT_FILE),
                dir.join(tpm::PREV_FILE),
            );
            if !cur.exists() && !next.exists() {
                return tpm::init(&s, &dir).map(|k| (k, vec![], true));
            }
            // Killed between the two renames of a rotation: the next KEK is the current one.
            let current_path = if cur.exists() { cur } else { next.clone() };
            let kek = tpm::unseal_file(&s, &current_path)?;
            let mut previous = Vec::new();
            for p in [next, prev] {
                if p != current_path && p.exists() {
                    previous.push(tpm::unseal_file(&s, &p)?);
                }
            }
            Ok((kek, previous, false))
        })
        .await
        .context("TPM task")??;
        if created {
            tracing::warn!(
                file = %tpm::sealed_path(data_dir).display(),
                "generated a new KEK in the TPM and sealed it; export a recovery copy now with `peat-gateway keys export-recovery`"
            );
        }
        if !previous.is_empty() {
            tracing::warn!("a KEK rotation was cut short; records open under both KEKs; finish it with `peat-gateway keys rotate`");
        }
        tracing::info!(
            tcti = %t.tcti,
            pcrs = ?t.pcrs,
            ms = started.elapsed().as_millis() as u64,
            "KEK unsealed from the TPM"
        );
        let held = |k| LocalKek::held_by(k, ProviderKind::Tpm);
        Ok((held(kek), previous.into_iter().map(held).collect(), created))
    }

    /// Seals a fresh TPM-generated KEK as `kek.tpm.next` (or reuses the one a cut-short
    /// rotation left) and returns (new, current) for re-wrapping.
    pub(crate) async fn begin_rotation(
        t: &TpmConfig,
        data_dir: &Path,
    ) -> anyhow::Result<(LocalKek, LocalKek)> {
        let (s, dir) = (settings(t), data_dir.to_path_buf());
        let (new, old) = tokio::task::spawn_blocking(move || {
            let next = dir.join(tpm::NEXT_FILE);
            if !next.exists() {
                let k = tpm::generate(&s)?;
                tpm::seal_file(&s, &next, &k)?;
            }
            Ok::<_, peat_gateway::keys::KeyError>((
                tpm::unseal_file(&s, &next)?,
                tpm::unseal(&s, &dir)?,
            ))
        })
        .await
        .context("TPM task")??;
        Ok((
            LocalKek::held_by(new, ProviderKind::Tpm),
            LocalKek::held_by(old, ProviderKind::Tpm),
        ))
    }

    /// After every record is re-wrapped: `kek.tpm` → `kek.tpm.prev`, `kek.tpm.next` →
    /// `kek.tpm`, then the old one goes. Each step leaves a state `open` understands.
    pub(crate) fn finish_rotation(data_dir: &Path) -> anyhow::Result<()> {
        let (cur, next, prev) = (
            tpm::sealed_path(data_dir),
            data_dir.join(tpm::NEXT_FILE),
            data_dir.join(tpm::PREV_FILE),
        );
        std::fs::rename(&cur, &prev).context("keeping the old sealed KEK aside")?;
        std::fs::rename(&next, &cur).context("installing the new sealed KEK")?;
        std::fs::File::open(data_dir)?.sync_all()?;
        std::fs::remove_file(&prev).context("removing the old sealed KEK")?;
        Ok(())
    }

    /// The TPM's KEK in clear memory, for a recovery export.
    pub(crate) async fn unsealed(
        t: &TpmConfig,
        data_dir: &Path,
    ) -> anyhow::Result<zeroize::Zeroizing<[u8; 32]>> {
        let (s, dir) = (settings(t), data_dir.to_path_buf());
        Ok(tokio::task::spawn_blocking(move || tpm::unseal(&s, &dir))
            .await
            .context("TPM task")??)
    }

    /// Seals a recovered KEK into this board's TPM.
    pub(crate) async fn reseal(
        t: &TpmConfig,
        data_dir: &Path,
        kek: zeroize::Zeroizing<[u8; 32]>,
        replace: bool,
    ) -> anyhow::Result<String> {
        if tpm::is_initialized(data_dir) && !replace {
            anyhow::bail!(
                "{} already holds a sealed KEK; pass --replace to overwrite it (only when it is the old board's)",
                tpm::sealed_path(data_dir).display()
            );
        }
        let (s, dir) = (settings(t), data_dir.to_path_buf());
        let k = kek.clone();
        tokio::task::spawn_blocking(move || tpm::seal(&s, &dir, &k))
            .await
            .context("TPM task")??;
        Ok(
            peat_gateway::keys::KeyProvider::kek_id(&LocalKek::held_by(kek, ProviderKind::Tpm))
                .to_owned(),
        )
    }

    /// `keys init --provider tpm`: seals a new KEK; refuses when one is already sealed.
    pub(crate) async fn init(t: &TpmConfig, data_dir: &Path) -> anyhow::Result<String> {
        if tpm::is_initialized(data_dir) {
            anyhow::bail!(
                "a KEK is already sealed in {}; keys are rotated with `peat-gateway keys rotate`, not re-initialized",
                tpm::sealed_path(data_dir).display()
            );
        }
        let (k, _, _) = open(t, data_dir).await?;
        Ok(peat_gateway::keys::KeyProvider::kek_id(&k).to_owned())
    }
}

#[cfg(not(feature = "tpm"))]
pub(crate) mod tpm {
    const NOT_BUILT: &str =
        "the TPM key provider is not compiled into this binary (cargo feature `tpm`)";
    use std::path::Path;

    use peat_gateway::config::TpmConfig;
    use peat_gateway::keys::LocalKek;

    pub(crate) async fn open(
        _: &TpmConfig,
        _: &Path,
    ) -> anyhow::Result<(LocalKek, Vec<LocalKek>, bool)> {
        anyhow::bail!(NOT_BUILT)
    }

    pub(crate) async fn begin_rotation(
        _: &TpmConfig,
        _: &Path,
    ) -> anyhow::Result<(LocalKek, LocalKek)> {
        anyhow::bail!(NOT_BUILT)
    }

    pub(crate) fn finish_rotation(_: &Path) -> anyhow::Result<()> {
        anyhow::bail!(NOT_BUILT)
    }

    pub(crate) async fn init(_: &TpmConfig, _: &Path) -> anyhow::Result<String> {
        anyhow::bail!(NOT_BUILT)
    }

    pub(crate) async fn unsealed(
        _: &TpmConfig,
        _: &Path,
    ) -> anyhow::Result<zeroize::Zeroizing<[u8; 32]>> {
        anyhow::bail!(NOT_BUILT)
    }

    pub(crate) async fn reseal(
        _: &TpmConfig,
        _: &Path,
        _: zeroize::Zeroizing<[u8; 32]>,
        _: bool,
    ) -> anyhow::Result<String> {
        anyhow::bail!(NOT_BUILT)
    }
}
