//! The API listeners' settings: TLS material and the Unix socket, read and checked at start-up.

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
) -> Option<super::UnixSocket> {
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
    Some(super::UnixSocket {
        path: path.clone(),
        mode,
        owner,
    })
}
