//! The API listeners' settings: TLS material and the Unix socket, read and checked at start-up.

use std::path::PathBuf;

use super::raw::{err, ConfigError, RawConfig, ENV_VARS};

/// The listener's TLS files, read and checked; every incoherent combination is an error that
/// names the setting to fix. Never falls back to plain HTTP when TLS was asked for.
pub(super) fn listener_tls(
    raw: &RawConfig,
    name: &dyn Fn(&'static str) -> String,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::listen::TlsMaterial> {
    let read = |key: &'static str, p: &std::path::Path, errors: &mut Vec<ConfigError>| {
        match std::fs::read_to_string(p) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(err(name(key), format!("cannot read {}: {e}", p.display())));
                None
            }
        }
    };
    // An unset setting has no origin to name: say the environment variable.
    let unset = |key: &'static str| -> String {
        ENV_VARS
            .iter()
            .find(|(_, k)| *k == key)
            .map_or_else(|| key.to_owned(), |(e, _)| (*e).to_owned())
    };
    let auth = raw.tls_client_auth.as_deref().unwrap_or("optional");
    let require = match auth {
        "optional" => false,
        "required" => true,
        _ => {
            errors.push(err(name("tls_client_auth"), "must be optional or required"));
            false
        }
    };
    match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => {
            if raw.tls_client_ca.is_some() {
                errors.push(err(
                    name("tls_client_ca"),
                    format!(
                        "client certificates need TLS: set {} and {} too, or unset it",
                        unset("tls_cert"),
                        unset("tls_key")
                    ),
                ));
            }
            if raw.tls_client_auth.is_some() {
                errors.push(err(
                    name("tls_client_auth"),
                    "set only with TLS and a client CA",
                ));
            }
            None
        }
        (Some(_), None) => {
            errors.push(err(
                unset("tls_key"),
                format!("unset while {} is set: give the certificate's private key (PEM), or unset both for plain HTTP", name("tls_cert")),
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(err(
                unset("tls_cert"),
                format!("unset while {} is set: give the certificate chain (PEM), or unset both for plain HTTP", name("tls_key")),
            ));
            None
        }
        (Some(cert), Some(key)) => {
            let cert_pem = read("tls_cert", cert, errors)?;
            let key_pem = zeroize::Zeroizing::new(read("tls_key", key, errors)?);
            let client_ca_pem = match &raw.tls_client_ca {
                Some(p) => Some(read("tls_client_ca", p, errors)?),
                None => None,
            };
            if require && client_ca_pem.is_none() {
                errors.push(err(
                    name("tls_client_auth"),
                    format!(
                        "required client certificates need {}",
                        unset("tls_client_ca")
                    ),
                ));
                return None;
            }
            match crate::listen::cert_not_after(&cert_pem) {
                Err(e) => {
                    errors.push(err(name("tls_cert"), format!("{} {e}", cert.display())));
                    return None;
                }
                Ok(end) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                    if end <= now {
                        errors.push(err(
                            name("tls_cert"),
                            format!(
                                "{}: the certificate expired ({} s ago); renew it",
                                cert.display(),
                                now - end
                            ),
                        ));
                        return None;
                    }
                }
            }
            let m = crate::listen::TlsMaterial {
                cert_pem,
                key_pem,
                client_ca_pem,
                require_client_cert: require,
            };
            if let Err(e) = m.server_config() {
                let key_name = if e.contains("private key") {
                    "tls_key"
                } else if e.contains("client CA") {
                    "tls_client_ca"
                } else {
                    "tls_cert"
                };
                errors.push(err(name(key_name), e));
                return None;
            }
            Some(m)
        }
    }
}

/// The Unix socket setting: a path whose directory exists, an octal mode, an owner `uid:gid`.
pub(super) fn unix_socket(
    raw: &RawConfig,
    name: &dyn Fn(&'static str) -> String,
    errors: &mut Vec<ConfigError>,
) -> Option<UnixSocket> {
    let Some(path) = &raw.unix_socket else {
        for key in ["unix_socket_mode", "unix_socket_owner"] {
            let set = match key {
                "unix_socket_mode" => raw.unix_socket_mode.is_some(),
                _ => raw.unix_socket_owner.is_some(),
            };
            if set {
                errors.push(err(name(key), "set only with PEAT_GATEWAY_UNIX_SOCKET"));
            }
        }
        return None;
    };
    if !path.is_absolute() || path.parent().is_none_or(|d| !d.is_dir()) {
        errors.push(err(
            name("unix_socket"),
            format!(
                "{} must be an absolute path in an existing directory",
                path.display()
            ),
        ));
        return None;
    }
    let mode = match u32::from_str_radix(raw.unix_socket_mode.as_deref().unwrap_or("660"), 8) {
        Ok(m) if m <= 0o777 && m & 0o007 == 0 => m,
        Ok(_) => {
            errors.push(err(
                name("unix_socket_mode"),
                "must be octal like 660 and give nothing to others (the socket is the admin API)",
            ));
            return None;
        }
        Err(_) => {
            errors.push(err(name("unix_socket_mode"), "must be octal, like 660"));
            return None;
        }
    };
    let owner = match raw.unix_socket_owner.as_deref() {
        None => None,
        Some(o) => match o
            .split_once(':')
            .map(|(u, g)| (u.parse::<u32>(), g.parse::<u32>()))
        {
            Some((Ok(u), Ok(g))) => Some((u, g)),
            _ => {
                errors.push(err(
                    name("unix_socket_owner"),
                    "must be numeric uid:gid, like 0:994",
                ));
                return None;
            }
        },
    };
    Some(UnixSocket {
        path: path.clone(),
        mode,
        owner,
    })
}

/// One mapping from a client certificate to an API caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRole {
    /// `cn`, `ou`, `email` or `dns`.
    pub field: String,
    /// Exact, or a prefix when it ends with `*`.
    pub pattern: String,
    /// `None`: the gateway admin; else (org, role name).
    pub grant: Option<(String, String)>,
}

impl CertRole {
    pub fn matches(&self, value: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => value == self.pattern,
        }
    }
}

/// `cn:ops-*=acme/operator; email:root@kit.example=admin`, checked; needs a client CA.
pub(super) fn client_roles(
    raw: &RawConfig,
    name: &dyn Fn(&'static str) -> String,
    errors: &mut Vec<ConfigError>,
) -> Vec<CertRole> {
    let Some(text) = raw.tls_client_roles.as_deref() else {
        return Vec::new();
    };
    if raw.tls_client_ca.is_none() {
        errors.push(err(
            name("tls_client_roles"),
            "client certificates are only checked with PEAT_GATEWAY_TLS_CLIENT_CA; set it (and TLS) or unset this",
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once('=').and_then(|(matcher, grant)| {
            let (field, pattern) = matcher.trim().split_once(':')?;
            let field = field.trim().to_ascii_lowercase();
            if !["cn", "ou", "email", "dns"].contains(&field.as_str()) || pattern.trim().is_empty()
            {
                return None;
            }
            let grant = match grant.trim() {
                "admin" => None,
                g => {
                    let (org, role) = g.split_once('/')?;
                    if crate::tenant::Role::from_name(role.trim()).is_none()
                        || crate::tenant::validate_id("org", org.trim()).is_err()
                    {
                        return None;
                    }
                    Some((org.trim().to_owned(), role.trim().to_owned()))
                }
            };
            Some(CertRole {
                field,
                pattern: pattern.trim().to_owned(),
                grant,
            })
        });
        match parsed {
            Some(r) => out.push(r),
            None => errors.push(err(
                name("tls_client_roles"),
                format!("'{entry}' is not `cn|ou|email|dns:<value or prefix*>=admin` or `=<org>/<role>` (roles: org-admin, operator, viewer, ingest)"),
            )),
        }
    }
    out
}

/// Comma-separated networks (`10.0.0.0/8`) or addresses (`192.168.1.5`, taken as one host).
pub fn parse_networks(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("'{s}' is not a network (10.0.0.0/8) or an address"))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err("lists no network; unset it to allow every network".into())
            } else {
                Ok(v)
            }
        })
}

/// The files of the listener's TLS material.
#[derive(Debug, Clone, Default)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The Unix socket listener: path, file mode, optional `uid:gid` owner.
#[derive(Debug, Clone)]
pub struct UnixSocket {
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
}
