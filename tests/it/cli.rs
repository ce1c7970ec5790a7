//! The command line as operators use it: check-config, the generated admin token, rotation,
//! audit verification, and fail-closed start-up.

use std::process::Command;

use reqwest::Method;

use crate::harness::gateway::BIN;
use crate::harness::{Gateway, GatewayOpts, ADMIN, KEK_A};

fn run(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.env_clear().current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_tokens_in(s: &str) -> Vec<String> {
    s.split_whitespace()
        .filter(|w| w.starts_with("pga_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn check_config_prints_effective_settings_with_secrets_redacted() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        &["check-config"],
        &[
            ("PEAT_KEK", KEK_A),
            ("PEAT_ADMIN_TOKEN", ADMIN),
            ("PEAT_GATEWAY_DATA_DIR", "data"),
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("bind") && out.contains("0.0.0.0:8080") && out.contains("(default)"),
        "{out}"
    );
    assert!(out.contains("env PEAT_GATEWAY_DATA_DIR"), "{out}");
    assert!(out.contains("[redacted]"));
    assert!(
        !out.contains(KEK_A) && !out.contains(ADMIN),
        "secret printed:\n{out}"
    );
}

#[test]
fn invalid_configuration_exits_2_and_lists_every_problem() {
    let d = tempfile::tempdir().unwrap();
    for args in [&["check-config"][..], &["serve"][..], &[][..]] {
        let (code, _, err) = run(
            args,
            &[
                ("PEAT_KEK", "1234"),
                ("PEAT_GATEWAY_BIND", "localhost"),
                ("PEAT_ADMIN_TOKEN", ""),
            ],
            d.path(),
        );
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("3 problems"), "{err}");
        assert!(
            err.contains("PEAT_KEK: must be exactly 64 hex characters"),
            "{err}"
        );
        assert!(
            err.contains("PEAT_GATEWAY_BIND: 'localhost' is not an address:port"),
            "{err}"
        );
        assert!(err.contains("PEAT_ADMIN_TOKEN: is set but empty"), "{err}");
    }
    let (code, _, err) = run(&["serve"], &[], d.path());
    assert_eq!(code, 2);
    assert!(err.contains("peat-gateway keys generate-kek"), "{err}");
}

#[test]
fn help_teaches_the_settings_and_generate_kek_gives_a_usable_key() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, _) = run(&["--help"], &[], d.path());
    assert_eq!(code, 0);
    for s in [
        "PEAT_KEK",
        "PEAT_ADMIN_TOKEN",
        "PEAT_GATEWAY_DATA_DIR",
        "demo",
        "Exit codes",
        // The whole job: capture and the authority, and every key provider.
        "Change capture",
        "Formation authority",
        "tpm | vault | aws-kms | local",
        "credential:NAME",
    ] {
        assert!(out.contains(s), "--help lacks {s}");
    }
    let (code, out, _) = run(&["keys", "generate-kek"], &[], d.path());
    assert_eq!(code, 0);
    let k = out.trim();
    assert_eq!(k.len(), 64);
    assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
    let (_, out2, _) = run(&["keys", "generate-kek"], &[], d.path());
    assert_ne!(out2.trim(), k);
}

#[tokio::test]
async fn without_a_configured_token_one_is_generated_printed_once_and_rotatable() {
    let mut g = Gateway::start(GatewayOpts::standard().without("PEAT_ADMIN_TOKEN")).await;
    let first = admin_tokens_in(&g.stdout(1));
    assert_eq!(first.len(), 1, "printed exactly once:\n{}", g.stdout(1));
    let token = first[0].clone();
    let (s, _) = g.call(Method::GET, "/orgs", None, None).await;
    assert_eq!(s, 401, "fail closed: nothing open without the token");
    let (s, _) = g.call(Method::GET, "/orgs", Some(&token), None).await;
    assert_eq!(s, 200);

    g.restart().await;
    assert!(
        admin_tokens_in(&g.stdout(2)).is_empty(),
        "not printed again"
    );
    let (s, _) = g.call(Method::GET, "/orgs", Some(&token), None).await;
    assert_eq!(s, 200, "the stored hash survives restart");

    let data = g.data_dir().display().to_string();
    let (code, _, err) = run(
        &["admin-token", "rotate"],
        &[("PEAT_GATEWAY_DATA_DIR", &data)],
        g.dir.path(),
    );
    assert_eq!(code, 1, "rotation while serving must refuse");
    assert!(
        err.contains("in use by another peat-gateway process"),
        "{err}"
    );

    assert!(g.stop());
    let (code, out, err) = run(
        &["admin-token", "rotate"],
        &[("PEAT_GATEWAY_DATA_DIR", &data)],
        g.dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let rotated = out.trim().to_owned();
    assert!(rotated.starts_with("pga_") && rotated != token);

    g.restart_with(g.opts.clone()).await;
    let (s, _) = g.call(Method::GET, "/orgs", Some(&token), None).await;
    assert_eq!(s, 401, "the old token is dead");
    let (s, _) = g.call(Method::GET, "/orgs", Some(&rotated), None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn audit_verify_reports_an_intact_chain_after_activity() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "m1").await;
    g.admin(Method::DELETE, "/orgs/acme/formations/m1", None)
        .await;
    assert!(g.stop());
    let data = g.data_dir().display().to_string();
    let (code, out, err) = run(
        &["audit", "verify"],
        &[("PEAT_GATEWAY_DATA_DIR", &data)],
        g.dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "audit chain intact: 3 records verified");

    let (code, _, err) = run(
        &["audit", "verify"],
        &[("PEAT_GATEWAY_DATA_DIR", "/nonexistent")],
        g.dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no state database at /nonexistent/state.redb"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_logs_it() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    assert!(g.stop(), "exit status 0 on SIGTERM");
    let err = g.stderr(1);
    assert!(
        err.contains("SIGTERM received") && err.contains("stopped cleanly"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_come_from_files_and_systemd_credentials_never_from_the_environment_text() {
    let d = tempfile::tempdir().unwrap();
    let creds = d.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("peat-admin"), format!("{ADMIN}\n")).unwrap();
    let kek_file = d.path().join("kek");
    std::fs::write(&kek_file, format!("{KEK_A}\n")).unwrap();
    let kek_ref = format!("file:{}", kek_file.display());
    let creds_dir = creds.display().to_string();
    let opts = GatewayOpts::standard()
        .with("PEAT_KEK", &kek_ref)
        .with("PEAT_ADMIN_TOKEN", "credential:peat-admin")
        .with("CREDENTIALS_DIRECTORY", &creds_dir);
    let g = Gateway::start(opts).await;
    // The token read from the credential authenticates; the KEK from the file seals.
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    let (code, out, err) = run(
        &["check-config"],
        &[
            ("PEAT_KEK", &kek_ref),
            ("PEAT_ADMIN_TOKEN", "credential:peat-admin"),
            ("CREDENTIALS_DIRECTORY", &creds_dir),
            ("PEAT_GATEWAY_DATA_DIR", "data"),
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(KEK_A) && !out.contains(ADMIN), "{out}");

    // Each broken reference names its setting and what is wrong.
    let empty = d.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let empty_ref = format!("file:{}", empty.display());
    for (env, want) in [
        (
            vec![("PEAT_KEK", "file:/nonexistent/kek")],
            "PEAT_KEK: cannot read /nonexistent/kek",
        ),
        (vec![("PEAT_KEK", empty_ref.as_str())], "is empty"),
        (
            vec![
                ("PEAT_KEK", KEK_A),
                ("PEAT_ADMIN_TOKEN", "credential:peat-admin"),
            ],
            "CREDENTIALS_DIRECTORY is not set",
        ),
        (
            vec![
                ("PEAT_KEK", KEK_A),
                ("PEAT_ADMIN_TOKEN", "credential:../x"),
                ("CREDENTIALS_DIRECTORY", creds_dir.as_str()),
            ],
            "bare credential name",
        ),
    ] {
        let (code, _, err) = run(&["check-config"], &env, d.path());
        assert_eq!(code, 2, "{env:?}: {err}");
        assert!(err.contains(want), "{env:?}: wanted '{want}' in {err}");
    }
}

/// Modes of the data dir and everything in it, except sockets.
fn modes(dir: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = vec![(
        dir.display().to_string(),
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
    )];
    for p in crate::harness::gateway::files_under(dir) {
        out.push((
            p.display().to_string(),
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        ));
    }
    out
}

#[tokio::test]
async fn the_data_dir_and_every_file_in_it_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    crate::cdc::setup(&g).await;
    crate::cdc::file_sink(&g, "all", serde_json::json!({})).await;
    crate::cdc::ingest(&g, serde_json::json!([crate::cdc::upsert("a", 1)])).await;
    crate::cdc::wait_for(&g, "all", 1).await;
    let dir = g.data_dir();
    let all = modes(&dir);
    assert!(all.len() >= 4, "{all:?}");
    for (p, m) in &all {
        assert_eq!(
            m & 0o077,
            0,
            "{p} is {m:o}: group and others must have nothing"
        );
    }
    g.stop();
    // Loosened by hand (a copy, a restore with another umask): tightened at start, logged.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("state.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    g.restart().await;
    for (p, m) in modes(&dir) {
        assert_eq!(m & 0o077, 0, "{p} is {m:o} after restart");
    }
    assert!(g
        .stderr(g.runs())
        .contains("tightened a data file's permissions"));
    g.stop();
    // Writable by others: refused, saying what to check and do.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = g.command().arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("writable by other users") && err.contains("chmod 700"),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}
