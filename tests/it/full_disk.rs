//! The data directory on a small file system of the test's own (a tmpfs it mounts): when the
//! disk fills, writes are refused with 507 and nothing of them is acknowledged, reads go on,
//! `/ready` says why; when space returns writes resume without a restart, and after a restart
//! every acknowledged event of both orgs is there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::{Gateway, GatewayOpts};

/// A tmpfs of `mib` MiB mounted on a fresh directory; unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u32) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs needs root (CAP_SYS_ADMIN), as on the CI machine: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn changes(org: &str, round: u32) -> Value {
    let pad = "x".repeat(1500);
    Value::Array(
        (0..50)
            .map(|i| {
                json!({"collection": "tracks", "doc_id": format!("{org}-{round}-{i}"),
                "op": "upsert", "data": {"pad": pad}})
            })
            .collect(),
    )
}

async fn ingest(g: &Gateway, org: &str, round: u32) -> (u16, Value) {
    g.admin(
        Method::POST,
        &format!("/orgs/{org}/formations/mesh/changes"),
        Some(changes(org, round)),
    )
    .await
}

async fn held(g: &Gateway, org: &str) -> u64 {
    let (s, b) = g
        .admin(Method::GET, &format!("/orgs/{org}/outbox"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    b["events"].as_u64().unwrap()
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_507_keeps_reads_and_resumes_when_space_returns() {
    let fs = SmallFs::mount(12);
    let data: PathBuf = fs.path().join("data");
    let mut g = Gateway::start(
        GatewayOpts::standard().with("PEAT_GATEWAY_DATA_DIR", data.to_str().unwrap()),
    )
    .await;
    for org in ["alpha", "bravo"] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
    }
    // Leave a little room: the outbox fills it within a few requests.
    let filler = fs.path().join("filler");
    let room = 3u64 << 20;
    let fill = fs.free().saturating_sub(room);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();

    let mut acked = [0u64, 0u64];
    let mut refused = None;
    for round in 0..200 {
        for (k, org) in ["alpha", "bravo"].into_iter().enumerate() {
            let (s, b) = ingest(&g, org, round).await;
            match s {
                202 => acked[k] += 50,
                _ => {
                    refused = Some((s, b));
                    break;
                }
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let (s, b) = refused.expect("the disk never filled");
    assert_eq!((s, error_code(&b)), (507, "insufficient_storage"), "{b}");
    assert!(acked[0] > 0 && acked[1] > 0, "{acked:?}");

    // Nothing more is acknowledged while full; reads are served and /ready says why.
    for org in ["alpha", "bravo"] {
        let (s, b) = ingest(&g, org, 999).await;
        assert_eq!((s, error_code(&b)), (507, "insufficient_storage"), "{b}");
    }
    assert_eq!(held(&g, "alpha").await, acked[0]);
    assert_eq!(held(&g, "bravo").await, acked[1]);
    let (s, b) = g
        .admin(Method::GET, "/orgs/alpha/formations/mesh", None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, ready) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(s, 503, "{ready}");
    assert_eq!(ready["checks"]["store"]["ok"], false, "{ready}");
    let reason = ready["checks"]["store"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("outbox") && reason.contains("full"),
        "{reason}"
    );

    // Space returns: the gateway comes back by itself, with no write asking (a monitor
    // polling /ready is enough: the outbox file is reopened), and writes are taken again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let ready = loop {
        let (s, ready) = g.admin(Method::GET, "/ready", None).await;
        if s == 200 || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        ready["ready"], true,
        "not ready after space was freed: {ready}"
    );
    for (k, org) in ["alpha", "bravo"].into_iter().enumerate() {
        let (s, b) = ingest(&g, org, 1000).await;
        assert_eq!(s, 202, "{b}");
        acked[k] += 50;
    }

    // After a restart the files open cleanly and hold exactly what was acknowledged.
    g.restart().await;
    assert_eq!(held(&g, "alpha").await, acked[0]);
    assert_eq!(held(&g, "bravo").await, acked[1]);
    let (s, b) = ingest(&g, "bravo", 1001).await;
    assert_eq!(s, 202, "{b}");
    g.kill();
}
