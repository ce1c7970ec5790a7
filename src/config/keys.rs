//! Which key provider holds the KEK, and its settings: part of stage 2 of the configuration.

use std::fmt;

use zeroize::Zeroizing;

use super::raw::err;
use super::{ConfigError, RawConfig};
use crate::secret::Secret;

/// The key provider chosen, with its key material.
pub enum KeyConfig {
    Local(Zeroizing<[u8; 32]>),
    /// The KEK sealed in a TPM 2.0, unsealed at start-up.
    Tpm(TpmConfig),
    /// The KEK held by Vault / OpenBao Transit.
    Vault(crate::keys::VaultSettings),
    /// The KEK held by AWS KMS.
    AwsKms(crate::keys::KmsSettings),
    /// Development only: stored secrets are readable by anyone with the disk.
    Plaintext,
}

/// Where the TPM is, which PCRs the KEK is bound to, and its auth value if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmConfig {
    pub tcti: String,
    pub pcrs: Vec<u8>,
    /// The auth value the sealed KEK needs (`PEAT_TPM_AUTH`).
    pub auth: Option<crate::secret::Secret>,
}

/// The kernel's TPM resource manager.
pub const DEFAULT_TPM_TCTI: &str = "device:/dev/tpmrm0";

/// Parses `sha256:0,2,7` (the bank is optional and must be sha256); empty for none.
pub fn parse_pcrs(s: &str) -> Result<Vec<u8>, String> {
    let list = match s.split_once(':') {
        Some(("sha256", l)) => l,
        Some((bank, _)) => {
            return Err(format!(
                "bank '{bank}' is not supported; use sha256:<indices>"
            ))
        }
        None => s,
    };
    if list.trim().is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for p in list.split(',') {
        let n: u8 = p
            .trim()
            .parse()
            .map_err(|_| format!("'{p}' is not a PCR index (use e.g. sha256:0,2,7)"))?;
        if n > 23 {
            return Err(format!("PCR {n} does not exist (0 to 23)"));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyConfig::Local(_) => f.write_str("Local([redacted])"),
            KeyConfig::Tpm(t) => write!(f, "Tpm({t:?})"),
            KeyConfig::Vault(v) => write!(f, "Vault({} {}/{})", v.addr, v.mount, v.key),
            KeyConfig::AwsKms(k) => write!(f, "AwsKms({})", k.key_arn),
            KeyConfig::Plaintext => f.write_str("Plaintext"),
        }
    }
}

pub(super) fn select_key(
    raw: &RawConfig,
    dev_mode: bool,
    name: &dyn Fn(&'static str) -> String,
) -> Result<KeyConfig, Vec<ConfigError>> {
    let provider = match raw.key_provider.as_deref() {
        Some(p) => p.to_owned(),
        None if raw.kms_key_arn.is_some() => "aws-kms".into(),
        None if raw.vault_addr.is_some() => "vault".into(),
        None if raw.kek.is_some() => "local".into(),
        None if dev_mode => "plaintext".into(),
        None => {
            return Err(vec![err(
                "PEAT_KEK",
                "no key provider is configured, so formation keys could not be stored encrypted; \
                 set PEAT_KEK to 64 hex characters (generate one with `peat-gateway keys generate-kek`), \
                 or set PEAT_DEV_MODE=1 on a development machine",
            )])
        }
    };
    match provider.as_str() {
        "local" => {
            let Some(kek) = &raw.kek else {
                return Err(vec![err(
                    name("kek"),
                    "the local key provider needs PEAT_KEK (64 hex characters; generate with `peat-gateway keys generate-kek`)",
                )]);
            };
            parse_kek(kek.expose())
                .map(KeyConfig::Local)
                .map_err(|m| vec![err(name("kek"), m)])
        }
        "plaintext" => {
            if !dev_mode {
                return Err(vec![err(
                    name("key_provider"),
                    "plaintext stores formation keys unencrypted and is allowed only with PEAT_DEV_MODE=1",
                )]);
            }
            if cfg!(feature = "dev") {
                Ok(KeyConfig::Plaintext)
            } else {
                Err(vec![err(
                    name("key_provider"),
                    "the plaintext key provider is only in development builds (cargo feature `dev`); set PEAT_KEK instead",
                )])
            }
        }
        "tpm" => {
            if !cfg!(feature = "tpm") {
                return Err(vec![err(
                    name("key_provider"),
                    "the TPM key provider is not compiled into this binary (cargo feature `tpm`); use a build with it, or the local provider (PEAT_KEK)",
                )]);
            }
            let pcrs = parse_pcrs(raw.tpm_pcrs.as_deref().unwrap_or(""))
                .map_err(|m| vec![err(name("tpm_pcrs"), m)])?;
            let tcti = raw
                .tpm_tcti
                .clone()
                .unwrap_or_else(|| DEFAULT_TPM_TCTI.into());
            crate::keys::tcti::Tcti::usable(&tcti).map_err(|m| vec![err(name("tpm_tcti"), m)])?;
            let auth = raw.tpm_auth.clone();
            if auth.as_ref().is_some_and(|a| a.expose().len() < 8) {
                return Err(vec![err(
                    name("tpm_auth"),
                    "must be at least 8 characters (the TPM's lockout limits guesses, not length)",
                )]);
            }
            Ok(KeyConfig::Tpm(TpmConfig { tcti, pcrs, auth }))
        }
        "vault" if !cfg!(feature = "vault") => Err(vec![err(
            name("key_provider"),
            "the Vault key provider is not compiled into this binary (cargo feature `vault`); use a build with it (`--features full`), or the tpm or local provider",
        )]),
        "aws-kms" if !cfg!(feature = "aws-kms") => Err(vec![err(
            name("key_provider"),
            "the AWS KMS key provider is not compiled into this binary (cargo feature `aws-kms`); use a build with it (`--features full`), or the tpm or local provider",
        )]),
        "vault" => vault_settings(raw, name).map(KeyConfig::Vault),
        "aws-kms" => kms_settings(raw, name).map(KeyConfig::AwsKms),
        other => Err(vec![err(
            name("key_provider"),
            format!("'{other}' is not a key provider; use tpm, vault, aws-kms, local or plaintext"),
        )]),
    }
}

fn kms_settings(
    raw: &RawConfig,
    name: &dyn Fn(&'static str) -> String,
) -> Result<crate::keys::KmsSettings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let arn = raw.kms_key_arn.clone().unwrap_or_default();
    let region = raw
        .aws_region
        .clone()
        .or_else(|| crate::keys::kms::region_of_arn(&arn).map(str::to_owned));
    if crate::keys::kms::region_of_arn(&arn).is_none() {
        errors.push(err(
            name("kms_key_arn"),
            "the aws-kms provider needs PEAT_KMS_KEY_ARN as arn:aws:kms:<region>:<account>:key/<id>",
        ));
    }
    if raw.aws_access_key_id.is_none() || raw.aws_secret_access_key.is_none() {
        errors.push(err(
            name("aws_access_key_id"),
            "the aws-kms provider needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
    let endpoint = raw.kms_endpoint.clone().unwrap_or_else(|| {
        format!(
            "https://kms.{}.amazonaws.com",
            region.as_deref().unwrap_or("us-east-1")
        )
    });
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
        errors.push(err(name("kms_endpoint"), "must be an http(s):// URL"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(crate::keys::KmsSettings {
        key_arn: arn,
        region: region.unwrap_or_default(),
        endpoint,
        access_key_id: raw.aws_access_key_id.clone().unwrap_or_default(),
        secret_access_key: raw
            .aws_secret_access_key
            .clone()
            .unwrap_or_else(|| Secret::new(String::new())),
        session_token: raw.aws_session_token.clone(),
    })
}

fn vault_settings(
    raw: &RawConfig,
    name: &dyn Fn(&'static str) -> String,
) -> Result<crate::keys::VaultSettings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let addr = raw.vault_addr.clone().unwrap_or_default();
    if !(addr.starts_with("http://") || addr.starts_with("https://")) {
        errors.push(err(
            name("vault_addr"),
            "the vault provider needs PEAT_VAULT_ADDR (http:// or https://, e.g. https://vault.kit:8200)",
        ));
    }
    let approle = raw.vault_role_id.is_some() && raw.vault_secret_id.is_some();
    if raw.vault_token.is_none() && !approle {
        errors.push(err(
            name("vault_token"),
            "the vault provider needs PEAT_VAULT_TOKEN, or PEAT_VAULT_ROLE_ID with PEAT_VAULT_SECRET_ID",
        ));
    }
    let ca_pem = match &raw.vault_cacert {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                errors.push(err(
                    name("vault_cacert"),
                    format!("{} is not a PEM certificate", p.display()),
                ));
                None
            }
            Err(e) => {
                errors.push(err(
                    name("vault_cacert"),
                    format!("cannot read {}: {e}", p.display()),
                ));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(crate::keys::VaultSettings {
        addr,
        token: raw.vault_token.clone(),
        role_id: raw.vault_role_id.clone(),
        secret_id: raw.vault_secret_id.clone(),
        mount: raw.vault_mount.clone().unwrap_or_else(|| "transit".into()),
        key: raw
            .vault_transit_key
            .clone()
            .unwrap_or_else(|| "peat-gateway".into()),
        namespace: raw.vault_namespace.clone(),
        ca_pem,
    })
}

/// Parses 64 hex characters into a 256-bit key.
pub fn parse_kek(s: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(format!(
            "must be exactly 64 hex characters (a 256-bit key), got {} characters",
            s.len()
        ));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(s, out.as_mut())
        .map_err(|_| "must contain only hex characters 0-9 and a-f".to_owned())?;
    Ok(out)
}
