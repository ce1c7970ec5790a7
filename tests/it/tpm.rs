//! The KEK sealed in a TPM: real swtpm instances on loopback ports of their own.

use std::time::Instant;

use peat_gateway::keys::tpm::{self, TpmSettings};

use crate::harness::service;

#[tokio::test]
async fn seal_and_unseal_survive_a_tpm_restart_and_refuse_changed_pcrs() {
    let mut sw = service::swtpm().await;
    let dir = tempfile::tempdir().unwrap();
    let plain = TpmSettings {
        tcti: sw.tcti(),
        pcrs: vec![],
        auth: None,
    };
    let t = Instant::now();
    let kek = tokio::task::spawn_blocking({
        let (p, d) = (plain.clone(), dir.path().to_path_buf());
        move || tpm::init(&p, &d)
    })
    .await
    .unwrap()
    .unwrap();
    let seal_ms = t.elapsed().as_millis();
    assert!(tpm::is_initialized(dir.path()));
    let file = std::fs::read(dir.path().join(tpm::SEALED_FILE)).unwrap();
    assert!(
        !file.windows(32).any(|w| w == kek.as_ref()),
        "the file does not hold the KEK"
    );

    sw.restart().await;
    let t = Instant::now();
    let again = tokio::task::spawn_blocking({
        let (p, d) = (plain.clone(), dir.path().to_path_buf());
        move || tpm::unseal(&p, &d)
    })
    .await
    .unwrap()
    .unwrap();
    eprintln!(
        "swtpm: init+seal {seal_ms} ms, unseal after a TPM restart {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(*again, *kek);

    // Bound to PCR 16 (the debug PCR anyone may extend): extending it refuses the unseal.
    let dir16 = tempfile::tempdir().unwrap();
    let bound = TpmSettings {
        tcti: sw.tcti(),
        pcrs: vec![16],
        auth: None,
    };
    let k16 = tpm::init(&bound, dir16.path()).unwrap();
    assert_eq!(*tpm::unseal(&bound, dir16.path()).unwrap(), *k16);
    let st = std::process::Command::new("tpm2_pcrextend")
        .env("TPM2TOOLS_TCTI", sw.tcti())
        .arg("16:sha256=0000000000000000000000000000000000000000000000000000000000000001")
        .status()
        .unwrap();
    assert!(st.success());
    let err = tpm::unseal(&bound, dir16.path()).unwrap_err().to_string();
    assert!(
        err.contains("PCR values differ") && err.contains("import-recovery"),
        "{err}"
    );
    // A different PCR list in the settings is refused before the TPM is asked.
    let other = TpmSettings {
        tcti: sw.tcti(),
        pcrs: vec![7],
        auth: None,
    };
    assert!(tpm::unseal(&other, dir16.path())
        .unwrap_err()
        .to_string()
        .contains("sealed to PCRs [16]"));

    // No TPM there: said plainly.
    sw.kill();
    let err = tpm::unseal(&plain, dir.path()).unwrap_err().to_string();
    assert!(err.contains("reach the TPM"), "{err}");
}

#[tokio::test]
async fn the_gateway_seals_its_kek_in_the_tpm_at_first_start_and_unseals_it_at_every_start() {
    use reqwest::Method;

    use crate::harness::{Gateway, GatewayOpts};

    let mut sw = service::swtpm().await;
    let opts = GatewayOpts::standard()
        .without("PEAT_KEK")
        .with("PEAT_KEY_PROVIDER", "tpm")
        .with("PEAT_TPM_TCTI", &sw.tcti());
    let mut g = Gateway::start(opts.clone()).await;
    assert!(g.data_dir().join("kek.tpm").exists());
    assert!(g.all_output().contains("generated a new KEK in the TPM"));
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    let (s, creds) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(s, 200);
    let (_, ready) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(ready["checks"]["keys"]["provider"], "tpm", "{ready}");
    assert!(ready["checks"]["keys"]["kek_id"]
        .as_str()
        .unwrap()
        .starts_with("tpm:"));

    // The TPM restarts (its state kept), then the gateway: the same formation keys open.
    sw.restart().await;
    g.restart_with(opts.clone()).await;
    let (s, again) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["formation_secret"], creds["formation_secret"]);

    let status = g.command().args(["keys", "status"]).output().unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(g.stop());
    let status = g.command().args(["keys", "status"]).output().unwrap();
    let out2 = String::from_utf8_lossy(&status.stdout);
    assert!(
        out2.contains("provider: tpm") && out2.contains("KEK id:   tpm:"),
        "{out}{out2}"
    );
    assert_eq!(
        ready["checks"]["keys"]["kek_id"].as_str().unwrap(),
        out2.lines()
            .find_map(|l| l.strip_prefix("KEK id:   "))
            .unwrap()
    );

    // No TPM: start-up stops and says what to check; nothing changes.
    sw.kill();
    let out = g.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reach the TPM") && err.contains("PEAT_TPM_TCTI"),
        "{err}"
    );
}

#[tokio::test]
async fn a_replacement_board_recovers_the_kek_from_the_recovery_file() {
    use reqwest::Method;

    use crate::harness::{Gateway, GatewayOpts};

    let old_tpm = service::swtpm().await;
    let on = |sw: &service::Service| {
        GatewayOpts::standard()
            .without("PEAT_KEK")
            .with("PEAT_KEY_PROVIDER", "tpm")
            .with("PEAT_TPM_TCTI", &sw.tcti())
            .with("PEAT_TPM_PCRS", "sha256:16")
    };
    let mut g = Gateway::start(on(&old_tpm)).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    let (_, creds) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert!(g.stop());

    let safe = tempfile::tempdir().unwrap();
    let file = safe.path().join("kek.recovery");
    let pass = safe.path().join("pass");
    std::fs::write(&pass, "a long enough passphrase\n").unwrap();
    let out = g
        .command()
        .args([
            "keys",
            "export-recovery",
            "--out",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The board dies; a new one has a fresh TPM. Its kek.tpm copy is the old board's.
    drop(old_tpm);
    let new_tpm = service::swtpm().await;
    g.opts = on(&new_tpm);
    let out = g.command().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the old seal does not open in another TPM"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("another TPM"));

    let wrong = safe.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase at all").unwrap();
    let import = |p: &std::path::Path, replace: bool| {
        let mut c = g.command();
        c.args([
            "keys",
            "import-recovery",
            "--in",
            file.to_str().unwrap(),
            "--passphrase-file",
            p.to_str().unwrap(),
        ]);
        if replace {
            c.arg("--replace");
        }
        c.output().unwrap()
    };
    let out = import(&wrong, true);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    let out = import(&pass, false);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an existing kek.tpm is not overwritten without --replace"
    );
    let out = import(&pass, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    g.restart_with(on(&new_tpm)).await;
    let (s, again) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        again["formation_secret"], creds["formation_secret"],
        "the formations survived the board"
    );
}

#[tokio::test]
async fn rotation_rewraps_every_record_survives_a_kill_midway_and_resumes() {
    use reqwest::Method;
    use serde_json::json;

    use crate::harness::{Gateway, GatewayOpts};

    let sw = service::swtpm().await;
    let opts = GatewayOpts::standard()
        .without("PEAT_KEK")
        .with("PEAT_KEY_PROVIDER", "tpm")
        .with("PEAT_TPM_TCTI", &sw.tcti());
    let mut g = Gateway::start(opts.clone()).await;
    g.create_org("acme", "Acme").await;
    let mut secrets = Vec::new();
    for i in 0..6 {
        g.admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": format!("m{i}")})),
        )
        .await;
        let (_, c) = g
            .admin(
                Method::GET,
                &format!("/orgs/acme/formations/m{i}/credentials"),
                None,
            )
            .await;
        secrets.push(c["formation_secret"].clone());
    }
    let kek_id = |g: &Gateway| {
        let out = g.command().args(["keys", "status"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("KEK id:   ").map(str::to_owned))
            .unwrap()
    };
    let before = kek_id(&g);
    assert!(g.stop());

    // Killed after three of six records: both KEKs are on disk, every record opens.
    let out = g
        .command()
        .args(["keys", "rotate"])
        .env("PEAT_TEST_ABORT_ROTATION_AFTER", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(g.data_dir().join("kek.tpm.next").exists());
    g.restart_with(opts.clone()).await;
    assert!(g.all_output().contains("rotation was cut short"));
    for (i, s) in secrets.iter().enumerate() {
        let (st, c) = g
            .admin(
                Method::GET,
                &format!("/orgs/acme/formations/m{i}/credentials"),
                None,
            )
            .await;
        assert_eq!(
            (st, &c["formation_secret"]),
            (200, s),
            "m{i} after the kill"
        );
    }
    assert!(g.stop());

    // Run again: finishes, swaps the files, the KEK id changes, everything still opens.
    let out = g.command().args(["keys", "rotate"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("6/6 records") && text.contains("already under"),
        "{text}"
    );
    assert!(
        !g.data_dir().join("kek.tpm.next").exists() && !g.data_dir().join("kek.tpm.prev").exists()
    );
    let after = kek_id(&g);
    assert_ne!(before, after);
    g.restart_with(opts).await;
    assert!(!g.stderr(g.runs()).contains("rotation was cut short"));
    for (i, s) in secrets.iter().enumerate() {
        let (_, c) = g
            .admin(
                Method::GET,
                &format!("/orgs/acme/formations/m{i}/credentials"),
                None,
            )
            .await;
        assert_eq!(&c["formation_secret"], s, "m{i} after the rotation");
    }
    let (_, ready) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(ready["checks"]["keys"]["kek_id"], after.as_str());
    let (_, audit) = g.admin(Method::GET, "/audit", None).await;
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "keys.rotate"));
}

#[tokio::test]
async fn migrate_keys_moves_local_records_into_the_tpm() {
    use reqwest::Method;

    use crate::harness::{Gateway, GatewayOpts, KEK_A};

    let sw = service::swtpm().await;
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    let (_, creds) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert!(g.stop());

    let tpm = GatewayOpts::standard()
        .without("PEAT_KEK")
        .with("PEAT_KEY_PROVIDER", "tpm")
        .with("PEAT_TPM_TCTI", &sw.tcti());
    g.opts = tpm.clone();
    let old = g.dir.path().join("old.kek");
    std::fs::write(&old, KEK_A).unwrap();
    let run = |args: &[&str]| {
        let out = g.command().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&[
        "migrate-keys",
        "--dry-run",
        "--from-kek-file",
        old.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("dry run: 1 of 1 records would move to tpm:"),
        "{text}"
    );
    let (code, text) = run(&["migrate-keys"]);
    assert_eq!(
        code,
        Some(1),
        "records under a KEK not named stay put: {text}"
    );
    assert!(text.contains("--from-kek-file"), "{text}");
    let (code, text) = run(&["migrate-keys", "--from-kek-file", old.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("moved 1 of 1 records to tpm:"), "{text}");

    g.restart_with(tpm).await;
    let (s, again) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(
        (s, &again["formation_secret"]),
        (200, &creds["formation_secret"])
    );
}

#[tokio::test]
async fn an_auth_value_guards_the_seal_and_wrong_guesses_end_in_a_lockout_message() {
    let sw = service::swtpm().await;
    let dir = tempfile::tempdir().unwrap();
    let with = |secret: &str, pcrs: Vec<u8>| TpmSettings {
        tcti: sw.tcti(),
        pcrs,
        auth: Some(TpmSettings::auth_from_secret(secret)),
    };
    // PCR policy and auth value together.
    let both = with("correct horse battery", vec![16]);
    let kek = tpm::init(&both, dir.path()).unwrap();
    assert_eq!(*tpm::unseal(&both, dir.path()).unwrap(), *kek);
    let none = TpmSettings {
        tcti: sw.tcti(),
        pcrs: vec![16],
        auth: None,
    };
    let err = tpm::unseal(&none, dir.path()).unwrap_err().to_string();
    assert!(err.contains("set PEAT_TPM_AUTH"), "{err}");

    // Auth value only: wrong guesses are refused, then the TPM locks out.
    let dir2 = tempfile::tempdir().unwrap();
    let good = with("correct horse battery", vec![]);
    let kek2 = tpm::init(&good, dir2.path()).unwrap();
    assert_eq!(*tpm::unseal(&good, dir2.path()).unwrap(), *kek2);
    let wrong = with("wrong guess 123", vec![]);
    let first = tpm::unseal(&wrong, dir2.path()).unwrap_err().to_string();
    assert!(
        first.contains("wrong auth value") && first.contains("PEAT_TPM_AUTH"),
        "{first}"
    );
    let mut locked = None;
    for _ in 0..40 {
        let e = tpm::unseal(&wrong, dir2.path()).unwrap_err().to_string();
        if e.contains("dictionary-attack lockout") {
            locked = Some(e);
            break;
        }
    }
    let locked = locked.expect("the TPM locks out after repeated wrong auth values");
    assert!(locked.contains("tpm2_dictionarylockout"), "{locked}");
    // Locked out, even the right value waits: said so, not "wrong value".
    let e = tpm::unseal(&good, dir2.path()).unwrap_err().to_string();
    assert!(e.contains("dictionary-attack lockout"), "{e}");
}

#[tokio::test]
async fn the_kek_never_crosses_the_tpm_bus_in_clear() {
    let sw = service::swtpm_traced().await;
    for (pcrs, auth) in [
        (vec![], None),
        (vec![16u8], None),
        (vec![], Some("an auth value 1")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let settings = TpmSettings {
            tcti: sw.tcti(),
            pcrs: pcrs.clone(),
            auth: auth.map(TpmSettings::auth_from_secret),
        };
        let (s, d) = (settings.clone(), dir.path().to_path_buf());
        let kek = tokio::task::spawn_blocking(move || {
            let kek = tpm::init(&s, &d).unwrap();
            assert_eq!(*tpm::unseal(&s, &d).unwrap(), *kek);
            kek
        })
        .await
        .unwrap();
        let bus = sw.bus_messages();
        assert!(
            bus.len() > 10,
            "the trace holds the exchange: {}",
            bus.len()
        );
        let seen = bus.iter().any(|m| m.windows(32).any(|w| w == kek.as_ref()));
        assert!(
            !seen,
            "PCRs {pcrs:?}, auth {}: the KEK crossed the TPM bus in clear (drawn, sealed or unsealed)",
            auth.is_some()
        );
    }
}
