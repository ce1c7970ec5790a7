//! Backup while the gateway ingests for two orgs, restore on a new data directory, and every
//! change acknowledged before the backup began is there, with every formation key; a restore
//! refuses a data directory in use or holding data, a damaged backup, a newer schema and a key
//! that cannot open it, touching nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Gateway, GatewayOpts, ADMIN, KEK_B};

/// Runs the gateway binary's `args` with `g`'s environment plus `env`.
fn cli(g: &Gateway, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = g.command();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_backup_taken_during_ingest_restores_every_acknowledged_change_and_key() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    let mut creds = Vec::new();
    for org in ["alpha", "bravo"] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
        let (s, c) = g
            .admin(
                Method::GET,
                &format!("/orgs/{org}/formations/mesh/credentials"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{c}");
        creds.push(c);
    }

    // Both orgs ingest without pause; each acknowledged batch is recorded.
    let acked: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::new();
    let mut writers = Vec::new();
    for org in ["alpha", "bravo"] {
        let (acked, stop, client, base) = (acked.clone(), stop.clone(), client.clone(), g.base());
        writers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ids: Vec<String> = (0..50).map(|i| format!("{org}-{round}-{i}")).collect();
                let body: Vec<Value> = ids
                    .iter()
                    .map(|d| json!({"collection": "tracks", "doc_id": d, "op": "upsert", "data": {"org": org}}))
                    .collect();
                let r = client
                    .post(format!("{base}/orgs/{org}/formations/mesh/changes"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 202 {
                    let mut a = acked.lock().unwrap();
                    for d in ids {
                        a.insert((org.to_owned(), d));
                    }
                }
                round += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before: BTreeSet<(String, String)> = acked.lock().unwrap().clone();
    assert!(before.len() >= 100, "ingest is running: {}", before.len());
    let out = g.data_dir().parent().unwrap().join("kit.pgbk");
    let (code, text) = cli(
        &g,
        &["backup", "--out", out.to_str().unwrap(), "--url", &g.base()],
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("state.redb") && text.contains("cdc.redb"),
        "{text}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let (_, audit) = g
        .admin(Method::GET, "/audit?action=gateway.backup", None)
        .await;
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        1,
        "audited: {audit}"
    );

    // Restore beside it, into a data directory of its own, and serve from it.
    let restored = g.data_dir().parent().unwrap().join("restored");
    let dir = restored.to_str().unwrap();
    let (code, text) = cli(
        &g,
        &["restore", "--in", out.to_str().unwrap()],
        &[("PEAT_GATEWAY_DATA_DIR", dir)],
    );
    assert_eq!(code, 0, "{text}");
    let g2 = Gateway::start(GatewayOpts::standard().with("PEAT_GATEWAY_DATA_DIR", dir)).await;
    for (i, org) in ["alpha", "bravo"].iter().enumerate() {
        let (s, c) = g2
            .admin(
                Method::GET,
                &format!("/orgs/{org}/formations/mesh/credentials"),
                None,
            )
            .await;
        assert_eq!((s, &c), (200, &creds[i]), "{org}'s formation key came back");
        let (s, b) = g2
            .admin(
                Method::POST,
                &format!("/orgs/{org}/sinks"),
                Some(json!({"sink_type": {"File": {"name": format!("{org}-all")}}})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    // Every change acknowledged before the backup began reaches the restored gateway's sinks.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let mut got = BTreeSet::new();
        for org in ["alpha", "bravo"] {
            let file = restored
                .join("sinks")
                .join(org)
                .join(format!("{org}-all.jsonl"));
            for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
                let e: Value = serde_json::from_str(line).unwrap();
                let doc = e["subject"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("tracks/")
                    .to_owned();
                assert_eq!(
                    e["data"]["org"], *org,
                    "{org}'s sink holds only {org}'s: {e}"
                );
                got.insert((org.to_string(), doc));
            }
        }
        if before.is_subset(&got) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged changes restored",
            before.intersection(&got).count(),
            before.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(delivered.len() >= before.len());
}

#[tokio::test]
async fn a_restore_refuses_what_it_cannot_do_safely_and_touches_nothing() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("alpha", "alpha").await;
    g.create_formation("alpha", "mesh").await;
    let out = g.data_dir().parent().unwrap().join("kit.pgbk");
    let o = out.to_str().unwrap().to_owned();
    let (code, text) = cli(&g, &["backup", "--out", &o, "--url", &g.base()], &[]);
    assert_eq!(code, 0, "{text}");

    // The gateway still runs on its data directory: refused even with --force.
    let (code, text) = cli(&g, &["restore", "--in", &o, "--force"], &[]);
    assert_ne!(code, 0);
    assert!(text.contains("a gateway is running"), "{text}");
    assert!(g.stop());
    // A data directory holding data needs --force.
    let (code, text) = cli(&g, &["restore", "--in", &o], &[]);
    assert_ne!(code, 0);
    assert!(text.contains("--force"), "{text}");

    let fresh = g.data_dir().parent().unwrap().join("fresh");
    let f = fresh.to_str().unwrap();
    // Another key cannot open it: refused, and the directory holds no database.
    let (code, text) = cli(
        &g,
        &["restore", "--in", &o],
        &[("PEAT_GATEWAY_DATA_DIR", f), ("PEAT_KEK", KEK_B)],
    );
    assert_ne!(code, 0);
    assert!(text.contains("cannot open this backup"), "{text}");
    assert!(
        !files(&fresh)
            .iter()
            .any(|n| n.ends_with(".redb") || n.starts_with(".restore")),
        "{:?}",
        files(&fresh)
    );

    // A damaged backup: the altered part is named; nothing written.
    let mut bytes = std::fs::read(&out).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    let damaged = out.with_extension("damaged");
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, text) = cli(
        &g,
        &["restore", "--in", damaged.to_str().unwrap()],
        &[("PEAT_GATEWAY_DATA_DIR", f)],
    );
    assert_ne!(code, 0);
    assert!(text.contains("does not match its hash"), "{text}");
    assert!(!files(&fresh).iter().any(|n| n.ends_with(".redb")));

    // From a newer schema: refused before anything is unpacked.
    let text_of = String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned();
    let start = text_of.find("\"state_schema\":").unwrap() + "\"state_schema\":".len();
    let end = start + text_of[start..].find(',').unwrap();
    let mut newer = std::fs::read(&out).unwrap();
    newer.splice(start..end, b"99".iter().copied());
    let newer_path = out.with_extension("newer");
    std::fs::write(&newer_path, &newer).unwrap();
    let (code, text) = cli(
        &g,
        &["restore", "--in", newer_path.to_str().unwrap()],
        &[("PEAT_GATEWAY_DATA_DIR", f)],
    );
    assert_ne!(code, 0);
    assert!(text.contains("newer gateway"), "{text}");

    // With --force on the stopped gateway's directory it works, and keeps the old files.
    let (code, text) = cli(&g, &["restore", "--in", &o, "--force"], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        files(&g.data_dir())
            .iter()
            .any(|n| n.starts_with(".pre-restore-")),
        "{text}"
    );
}
