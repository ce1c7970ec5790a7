//! How to reach the TPM (`PEAT_TPM_TCTI`), parsed and checked when the configuration loads, so
//! a typo stops start-up by name instead of surfacing as a TPM error later.

use std::fmt;

/// A TCTI the gateway can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tcti {
    /// A TPM character device, e.g. `/dev/tpmrm0` (the kernel's resource manager).
    Device(String),
    /// The TPM2 access broker (tpm2-abrmd) on the system bus.
    Tabrmd,
    /// The software TPM (swtpm) on a TCP port.
    Swtpm { host: String, port: u16 },
    /// The Microsoft simulator protocol on a TCP port.
    Mssim { host: String, port: u16 },
}

const HELP: &str = "use device:/dev/tpmrm0, tabrmd, or swtpm:host=…,port=… for the simulator";

impl Tcti {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, conf) = s.split_once(':').unwrap_or((s, ""));
        match name {
            "device" if conf.starts_with('/') => Ok(Self::Device(conf.to_owned())),
            "device" => Err(format!(
                "'{s}': give the device's absolute path, e.g. device:/dev/tpmrm0"
            )),
            "tabrmd" if conf.is_empty() => Ok(Self::Tabrmd),
            "tabrmd" => Err(format!(
                "'{s}': tabrmd takes no options here (it is reached on the system bus)"
            )),
            "swtpm" | "mssim" => {
                let (host, port) = network(conf).map_err(|m| format!("'{s}': {m}"))?;
                Ok(if name == "swtpm" {
                    Self::Swtpm { host, port }
                } else {
                    Self::Mssim { host, port }
                })
            }
            _ => Err(format!("'{s}' is not a TCTI; {HELP}")),
        }
    }

    /// [`Self::parse`], refused as well when this build cannot open it ([`Self::built`]): what
    /// the configuration and the TPM provider both check.
    pub fn usable(s: &str) -> Result<Self, String> {
        let t = Self::parse(s)?;
        t.built()?;
        Ok(t)
    }

    /// Whether this build can open it: the simulators need the `tpm-sim` feature.
    pub fn built(&self) -> Result<(), String> {
        match self {
            Self::Swtpm { .. } | Self::Mssim { .. } if !cfg!(feature = "tpm-sim") => Err(format!(
                "the TPM simulator TCTIs are not compiled into this binary (cargo feature `tpm-sim`); \
                 a kit reaches its TPM with device:/dev/tpmrm0 or tabrmd, use those or a build with \
                 `tpm-sim` (`--features full`) for {self}"
            )),
            _ => Ok(()),
        }
    }
}

/// `host=…,port=…` in any order, each optional (localhost, 2321 as libtss2 has them).
fn network(conf: &str) -> Result<(String, u16), String> {
    let (mut host, mut port) = ("localhost".to_owned(), 2321);
    for part in conf.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("host", h)) if valid_host(h) => host = h.to_owned(),
            Some(("host", h)) => return Err(format!("'{h}' is not a host name or IP address")),
            Some(("port", p)) => {
                port = p
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("'{p}' is not a port (1–65535)"))?
            }
            _ => return Err(format!("'{part}' is not host=… or port=…")),
        }
    }
    Ok((host, port))
}

fn valid_host(h: &str) -> bool {
    h.parse::<std::net::IpAddr>().is_ok()
        || (!h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

impl fmt::Display for Tcti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(p) => write!(f, "device:{p}"),
            Self::Tabrmd => f.write_str("tabrmd"),
            Self::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
            Self::Mssim { host, port } => write!(f, "mssim:host={host},port={port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tctis_parse_as_libtss2_reads_them() {
        let sw = |host: &str, port| Tcti::Swtpm {
            host: host.into(),
            port,
        };
        for (s, want) in [
            ("device:/dev/tpmrm0", Tcti::Device("/dev/tpmrm0".into())),
            ("tabrmd", Tcti::Tabrmd),
            ("tabrmd:", Tcti::Tabrmd),
            ("swtpm:host=127.0.0.1,port=2400", sw("127.0.0.1", 2400)),
            ("swtpm:port=2400,host=tpm.local", sw("tpm.local", 2400)),
            ("swtpm:", sw("localhost", 2321)),
            ("swtpm", sw("localhost", 2321)),
            (
                "mssim:host=::1",
                Tcti::Mssim {
                    host: "::1".into(),
                    port: 2321,
                },
            ),
        ] {
            assert_eq!(Tcti::parse(s), Ok(want.clone()), "{s}");
            assert_eq!(Tcti::parse(&want.to_string()), Ok(want), "{s} written back");
        }
    }

    #[test]
    fn a_malformed_tcti_is_refused_saying_what_is_wrong() {
        for (s, says) in [
            ("", "is not a TCTI"),
            ("/dev/tpmrm0", "is not a TCTI"),
            ("device:", "absolute path"),
            ("device:tpm0", "absolute path"),
            ("tabrmd:bus_type=session", "takes no options"),
            ("swtpm:host=127.0.0.1,port=abc", "'abc' is not a port"),
            ("swtpm:port=0", "'0' is not a port"),
            ("swtpm:port=70000", "is not a port"),
            ("swtpm:host=-bad-", "not a host name"),
            ("swtpm:host=", "not a host name"),
            ("swtpm:hots=x", "'hots=x' is not host="),
        ] {
            let err = Tcti::parse(s).err().unwrap_or_default();
            assert!(err.contains(says), "{s}: {err}");
        }
    }

    #[test]
    fn a_build_without_tpm_sim_refuses_only_the_simulators() {
        assert_eq!(Tcti::Device("/dev/tpmrm0".into()).built(), Ok(()));
        assert_eq!(Tcti::Tabrmd.built(), Ok(()));
        for t in ["swtpm:port=2321", "mssim:port=2321"] {
            let r = Tcti::parse(t).unwrap().built();
            assert_eq!(r.is_ok(), cfg!(feature = "tpm-sim"), "{t}: {r:?}");
            if let Err(m) = r {
                assert!(m.contains("`tpm-sim`"), "{m}");
            }
        }
    }
}
