//! Unit tests of the parent module.

use super::*;

#[test]
fn pcr_lists_parse_and_refuse_nonsense() {
    assert_eq!(parse_pcrs("sha256:7,0,2,2").unwrap(), vec![0, 2, 7]);
    assert_eq!(parse_pcrs("16").unwrap(), vec![16]);
    assert_eq!(parse_pcrs("").unwrap(), Vec::<u8>::new());
    assert!(parse_pcrs("sha256:24").is_err());
    assert!(parse_pcrs("sha256:a").is_err());
    assert!(parse_pcrs("sha1:0").is_err());
}

#[test]
fn the_tpm_provider_takes_its_tcti_and_pcrs_and_refuses_bad_ones() {
    let d = tempfile::tempdir().unwrap();
    let c = from_env(
        &[
            ("PEAT_KEY_PROVIDER", "tpm"),
            ("PEAT_TPM_PCRS", "sha256:0,7"),
        ],
        d.path(),
    );
    if cfg!(feature = "tpm") {
        match c.map(|c| c.key) {
            Ok(KeyConfig::Tpm(t)) => {
                assert_eq!((t.tcti.as_str(), t.pcrs), (DEFAULT_TPM_TCTI, vec![0, 7]))
            }
            other => panic!("{other:?}"),
        }
        let m = messages(from_env(
            &[
                ("PEAT_KEY_PROVIDER", "tpm"),
                ("PEAT_TPM_TCTI", "carrier-pigeon"),
                ("PEAT_TPM_PCRS", "x"),
            ],
            d.path(),
        ));
        assert!(
            m.iter().any(|s| s.starts_with("PEAT_TPM_PCRS"))
                || m.iter().any(|s| s.starts_with("PEAT_TPM_TCTI")),
            "{m:?}"
        );
    } else {
        assert!(messages(c)[0].contains("not compiled into this binary"));
    }
}
use std::collections::HashMap;

const KEK: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn from_env(vars: &[(&str, &str)], dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("PEAT_GATEWAY_DATA_DIR".into())
        .or_insert_with(|| dir.display().to_string());
    Config::from_raw(load(None, |k| map.get(k).cloned())?)
}

fn messages(r: Result<Config, Vec<ConfigError>>) -> Vec<String> {
    match r {
        Ok(_) => panic!("config was accepted"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults_with_a_kek_are_accepted() {
    let d = tempfile::tempdir().unwrap();
    let c = from_env(&[("PEAT_KEK", KEK)], d.path()).unwrap();
    assert_eq!(c.bind.to_string(), "0.0.0.0:8080");
    assert!(matches!(c.key, KeyConfig::Local(_)));
    assert!(!c.dev_mode);
    assert!(!format!("{c:?}").contains("00112233"));
}

#[test]
fn every_problem_is_reported_at_once_with_what_to_fix() {
    let d = tempfile::tempdir().unwrap();
    let m = messages(from_env(
        &[
            ("PEAT_KEK", "abc"),
            ("PEAT_GATEWAY_BIND", "nowhere"),
            ("PEAT_ADMIN_TOKEN", "short"),
            ("PEAT_CDC_NATS_URL", "http://x"),
        ],
        d.path(),
    ));
    assert_eq!(m.len(), 4, "{m:#?}");
    assert!(m
        .iter()
        .any(|s| s.starts_with("PEAT_KEK: must be exactly 64 hex")));
    assert!(m
        .iter()
        .any(|s| s.starts_with("PEAT_GATEWAY_BIND: 'nowhere' is not an address:port")));
    assert!(m
        .iter()
        .any(|s| s.starts_with("PEAT_ADMIN_TOKEN: must be at least 16")));
    assert!(m.iter().any(|s| s.starts_with("PEAT_CDC_NATS_URL:")));
}

#[test]
fn no_key_provider_outside_dev_mode_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = messages(from_env(&[], d.path()));
    assert!(m[0].contains("generate-kek"), "{m:?}");
}

#[test]
fn empty_secret_is_refused_not_ignored() {
    let d = tempfile::tempdir().unwrap();
    let m = messages(from_env(
        &[("PEAT_KEK", KEK), ("PEAT_ADMIN_TOKEN", "")],
        d.path(),
    ));
    assert_eq!(
        m,
        ["PEAT_ADMIN_TOKEN: is set but empty; unset it or give a value"]
    );
}

#[test]
fn plaintext_outside_dev_mode_and_incomplete_providers_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = messages(from_env(&[("PEAT_KEY_PROVIDER", "plaintext")], d.path()));
    assert!(m[0].contains("PEAT_DEV_MODE=1"), "{m:?}");
    // Builds without these providers refuse them by name (the test below).
    if cfg!(feature = "aws-kms") {
        let m = messages(from_env(&[("PEAT_KMS_KEY_ARN", "not-an-arn")], d.path()));
        assert!(
            m.iter()
                .any(|s| s.starts_with("PEAT_KMS_KEY_ARN: the aws-kms provider needs")),
            "{m:?}"
        );
        assert!(m.iter().any(|s| s.contains("AWS_ACCESS_KEY_ID")), "{m:?}");
    }
    if cfg!(feature = "vault") {
        let m = messages(from_env(&[("PEAT_VAULT_ADDR", "vault.kit")], d.path()));
        assert!(m.iter().any(|s| s.starts_with("PEAT_VAULT_ADDR")), "{m:?}");
    }
    let m = messages(from_env(&[("PEAT_KEY_PROVIDER", "hsm")], d.path()));
    assert!(m[0].contains("'hsm' is not a key provider"));
}

#[test]
fn unwritable_data_dir_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let m = messages(from_env(
        &[
            ("PEAT_KEK", KEK),
            ("PEAT_GATEWAY_DATA_DIR", file.to_str().unwrap()),
        ],
        d.path(),
    ));
    assert!(m[0].starts_with("PEAT_GATEWAY_DATA_DIR:"), "{m:?}");
}

#[test]
fn environment_overrides_the_file_and_unknown_file_keys_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("c.toml");
    std::fs::write(
        &f,
        format!("bind = \"127.0.0.1:1\"\nkek = \"{KEK}\"\n[quotas]\nmax_formations = 3\n"),
    )
    .unwrap();
    let env = |k: &str| match k {
        "PEAT_GATEWAY_BIND" => Some("127.0.0.1:2".to_string()),
        "PEAT_GATEWAY_DATA_DIR" => Some(d.path().display().to_string()),
        _ => None,
    };
    let c = Config::from_raw(load(Some(&f), env).unwrap()).unwrap();
    assert_eq!(c.bind.port(), 2);
    assert_eq!(c.default_quotas.max_formations, 3);
    assert!(c.origin["kek"].starts_with("file "));
    std::fs::write(&f, "bnid = \"x\"\n").unwrap();
    let e = load(Some(&f), |_| None).err().unwrap();
    assert!(e[0].message.contains("unknown field"), "{e:?}");
}

#[test]
fn a_build_without_a_provider_or_sink_refuses_its_configuration_by_feature_name() {
    let d = tempfile::tempdir().unwrap();
    type Vars<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Vars, bool, &str); 4] = [
        (
            &[
                ("PEAT_KEY_PROVIDER", "vault"),
                ("PEAT_VAULT_ADDR", "http://127.0.0.1:8200"),
                ("PEAT_VAULT_TOKEN", "s.token"),
            ],
            cfg!(feature = "vault"),
            "cargo feature `vault`",
        ),
        (
            &[
                ("PEAT_KEY_PROVIDER", "aws-kms"),
                (
                    "PEAT_KMS_KEY_ARN",
                    "arn:aws:kms:eu-west-1:111122223333:key/k",
                ),
            ],
            cfg!(feature = "aws-kms"),
            "cargo feature `aws-kms`",
        ),
        (
            &[
                ("PEAT_KEK", KEK),
                ("PEAT_CDC_NATS_URL", "nats://127.0.0.1:4222"),
            ],
            cfg!(feature = "nats"),
            "cargo feature nats",
        ),
        // A build without `tpm` refuses the provider itself (above).
        (
            &[
                ("PEAT_KEY_PROVIDER", "tpm"),
                ("PEAT_TPM_TCTI", "swtpm:host=127.0.0.1,port=2321"),
            ],
            cfg!(feature = "tpm-sim") || !cfg!(feature = "tpm"),
            "cargo feature `tpm-sim`",
        ),
    ];
    for (vars, built, words) in cases {
        let m: Vec<String> = match from_env(vars, d.path()) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        };
        let refused = m.iter().any(|s| s.contains(words));
        assert_eq!(refused, !built, "{vars:?}: {m:?}");
    }
}

#[test]
fn a_log_filter_is_checked_at_start_up() {
    let d = tempfile::tempdir().unwrap();
    for ok in [
        "info",
        "warn,peat_gateway=debug",
        "peat_gateway::cdc=trace,error",
    ] {
        let c = from_env(&[("PEAT_KEK", KEK), ("PEAT_LOG", ok)], d.path());
        assert_eq!(c.map(|c| c.log_filter).ok().as_deref(), Some(ok));
    }
    for bad in ["peat_gateway=loud", "info,[span{x=1}]=debug"] {
        let m = messages(from_env(&[("PEAT_KEK", KEK), ("PEAT_LOG", bad)], d.path()));
        assert!(
            m.iter()
                .any(|s| s.starts_with("PEAT_LOG") && s.contains("is not a log filter")),
            "{bad}: {m:?}"
        );
    }
}
