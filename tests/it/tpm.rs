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
