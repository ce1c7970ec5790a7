//! Secrets at rest and in output: sealed genesis, the reference vectors over HTTP, wrong KEK.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::gateway::files_under;
use crate::harness::{Gateway, GatewayOpts, ADMIN, KEK_A, KEK_B};

fn genesis_a() -> Value {
    let v: Value = serde_json::from_str(include_str!("../vectors/peat-mesh-0.6.0.json")).unwrap();
    v["genesis"][0].clone()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every representation of a secret that must never be found on disk or in output.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        B64.encode(secret).into_bytes(),
    ]
}

fn assert_nowhere_in_data_dir(g: &Gateway, label: &str, secret: &[u8]) {
    let files = files_under(&g.data_dir());
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for form in forms(secret) {
            assert!(!contains(&bytes, &form), "{label} found in {}", f.display());
        }
    }
}

#[tokio::test]
async fn adopted_genesis_a_yields_the_reference_credentials_byte_for_byte() {
    let v = genesis_a();
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    let genesis = hex::decode(v["genesis_encoded_hex"].as_str().unwrap()).unwrap();
    let (s, f) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "TEST", "genesis": B64.encode(&genesis)})),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    assert_eq!(f["mesh_id"], v["mesh_id"]);
    assert_eq!(f["authority_public_key"], v["authority_public_key_hex"]);
    assert_eq!(f["enrollment_policy"], "Controlled");
    assert_eq!(f["adopted"], true);

    let (s, c) = g
        .admin(Method::GET, "/orgs/acme/formations/TEST/credentials", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(c["mesh_id"], "0B6CA76F");
    assert_eq!(c["formation_secret"], v["formation_secret_base64"]);
    assert_eq!(c["authority_public_key"], v["authority_public_key_hex"]);
    let creds = B64.decode(c["credentials"].as_str().unwrap()).unwrap();
    assert_eq!(hex::encode(creds), v["credentials_encoded_hex"]);
    assert!(
        !c.to_string()
            .contains(v["inputs"]["mesh_seed_hex"].as_str().unwrap()),
        "the genesis itself is never exported"
    );
}

#[tokio::test]
async fn with_a_kek_no_seed_or_formation_secret_is_readable_in_the_data_dir() {
    let v = genesis_a();
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    let genesis = hex::decode(v["genesis_encoded_hex"].as_str().unwrap()).unwrap();
    g.admin(
        Method::POST,
        "/orgs/acme/formations",
        Some(json!({"app_id": "TEST", "genesis": B64.encode(&genesis)})),
    )
    .await;
    g.create_formation("acme", "fresh").await;
    let (_, fresh) = g
        .admin(Method::GET, "/orgs/acme/formations/fresh/credentials", None)
        .await;
    let fresh_secret = B64
        .decode(fresh["formation_secret"].as_str().unwrap())
        .unwrap();
    let (_, tok) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "t", "role": "viewer"})),
        )
        .await;
    assert!(g.stop(), "clean stop");

    let hexd = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
    assert_nowhere_in_data_dir(&g, "genesis encoding", &genesis);
    assert_nowhere_in_data_dir(
        &g,
        "mesh seed",
        &hex::decode(v["inputs"]["mesh_seed_hex"].as_str().unwrap()).unwrap(),
    );
    assert_nowhere_in_data_dir(&g, "authority seed", &hexd("authority_secret_seed_hex"));
    assert_nowhere_in_data_dir(&g, "formation secret A", &hexd("formation_secret_hex"));
    assert_nowhere_in_data_dir(&g, "generated formation secret", &fresh_secret);
    assert_nowhere_in_data_dir(&g, "API token", tok["token"].as_str().unwrap().as_bytes());
    assert_nowhere_in_data_dir(&g, "admin token", ADMIN.as_bytes());
    assert_nowhere_in_data_dir(&g, "KEK", &hex::decode(KEK_A).unwrap());

    let out = g.all_output();
    for (label, s) in [
        ("admin token", ADMIN.to_owned()),
        ("KEK", KEK_A.to_owned()),
        ("API token", tok["token"].as_str().unwrap().to_owned()),
        (
            "formation secret",
            fresh["formation_secret"].as_str().unwrap().to_owned(),
        ),
    ] {
        assert!(!out.contains(&s), "{label} appears in the gateway's output");
    }
}

#[tokio::test]
async fn a_wrong_kek_stops_start_up_with_both_key_ids_and_changes_nothing() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh-1").await;
    let (_, audit_before) = g
        .admin(Method::GET, "/orgs/acme/audit?limit=1000", None)
        .await;
    let (_, formation_before) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh-1", None)
        .await;
    assert!(g.stop());
    // redb rewrites its own header on every clean close, so files other than the databases
    // are compared byte for byte and the databases by their contents.
    let others: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&g.data_dir())
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "redb"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();

    let out = g
        .command()
        .env("PEAT_KEK", KEK_B)
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the stored formation keys"),
        "{err}"
    );
    assert!(err.contains("sealed under KEK local:"), "{err}");
    assert!(err.contains("check PEAT_KEK"), "{err}");
    assert!(!err.contains(KEK_B));
    assert!(
        !err.contains("repairing"),
        "the refused start left the database open: {err}"
    );

    for (p, b) in others {
        assert!(std::fs::read(&p).unwrap() == b, "{} changed", p.display());
    }
    g.restart_with(GatewayOpts::standard()).await;
    assert!(
        !g.all_output().contains("repairing"),
        "clean close after the refused start"
    );
    let (_, audit_after) = g
        .admin(Method::GET, "/orgs/acme/audit?limit=1000", None)
        .await;
    assert_eq!(audit_after, audit_before, "the refused start wrote nothing");
    let (_, formation_after) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh-1", None)
        .await;
    assert_eq!(formation_after, formation_before);
    let (s, _) = g
        .admin(
            Method::GET,
            "/orgs/acme/formations/mesh-1/credentials",
            None,
        )
        .await;
    assert_eq!(s, 200, "the right KEK still opens everything");
}

#[tokio::test]
async fn adoption_refuses_malformed_or_mismatched_genesis_and_stores_nothing() {
    let v = genesis_a();
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    let genesis = hex::decode(v["genesis_encoded_hex"].as_str().unwrap()).unwrap();
    let cases = [
        json!({"app_id": "OTHER", "genesis": B64.encode(&genesis)}),
        json!({"app_id": "TEST", "genesis": B64.encode(&genesis), "enrollment_policy": "Open"}),
        json!({"app_id": "TEST", "genesis": B64.encode(&genesis[..40])}),
        json!({"app_id": "TEST", "genesis": B64.encode([genesis.as_slice(), &[0]].concat())}),
        json!({"app_id": "TEST", "genesis": "not base64!"}),
    ];
    for body in cases {
        let (s, b) = g
            .admin(Method::POST, "/orgs/acme/formations", Some(body.clone()))
            .await;
        assert_eq!((s, error_code(&b)), (422, "invalid_field"), "{body}");
    }
    let (_, list) = g.admin(Method::GET, "/orgs/acme/formations", None).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn a_local_kek_rotates_to_a_new_key_file() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh-1").await;
    let (_, creds) = g
        .admin(
            Method::GET,
            "/orgs/acme/formations/mesh-1/credentials",
            None,
        )
        .await;
    assert!(g.stop());
    let out = g.command().args(["keys", "rotate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--new-kek-file"));
    let f = g.dir.path().join("new.kek");
    std::fs::write(&f, KEK_B).unwrap();
    let out = g
        .command()
        .args(["keys", "rotate", "--new-kek-file", f.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 re-wrapped") && text.contains("set PEAT_KEK"),
        "{text}"
    );
    let out = g.command().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the old KEK no longer opens the records"
    );
    g.restart_with(GatewayOpts::standard().with("PEAT_KEK", KEK_B))
        .await;
    let (_, again) = g
        .admin(
            Method::GET,
            "/orgs/acme/formations/mesh-1/credentials",
            None,
        )
        .await;
    assert_eq!(again["formation_secret"], creds["formation_secret"]);
}

/// The sealed genesis of `acme/mesh`, read from (or written into) a stopped gateway's state.
async fn sealed_genesis(g: &Gateway, replace: Option<Vec<u8>>) -> Vec<u8> {
    let key = peat_gateway::store::keys::sealed("acme", "mesh", "genesis");
    raw_row(g, peat_gateway::store::Table::Sealed, key, replace).await
}

/// One row of a stopped gateway's state, read or replaced (what someone holding the data
/// dir can do).
async fn raw_row(
    g: &Gateway,
    table: peat_gateway::store::Table,
    key: Vec<u8>,
    replace: Option<Vec<u8>>,
) -> Vec<u8> {
    let dir = g.data_dir();
    tokio::task::spawn_blocking(move || raw_row_in(&dir, table, key, replace))
        .await
        .unwrap()
}

fn raw_row_in(
    dir: &std::path::Path,
    table: peat_gateway::store::Table,
    key: Vec<u8>,
    replace: Option<Vec<u8>>,
) -> Vec<u8> {
    use peat_gateway::store::{Store, StoreError, StoreOptions};
    let store = Store::open(&dir.join("state.redb"), &StoreOptions::default(), None).unwrap();
    let out = match replace {
        Some(bytes) => store
            .write_blocking(move |t| -> Result<Vec<u8>, StoreError> {
                t.put_raw(table, key, bytes.clone());
                Ok(bytes)
            })
            .unwrap(),
        None => store
            .read_blocking(move |r| {
                use peat_gateway::store::Reader as _;
                r.get_raw(table, &key)
            })
            .unwrap()
            .unwrap(),
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.shutdown());
    out
}

#[tokio::test]
async fn a_formation_recreated_under_the_same_name_cannot_open_its_predecessors_keys() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    assert!(g.stop());
    let predecessor = sealed_genesis(&g, None).await;
    g.restart().await;
    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh", None)
        .await;
    assert_eq!(s, 204);
    g.create_formation("acme", "mesh").await;
    assert!(g.stop());
    // Someone with the data dir puts the predecessor's sealed genesis back under the name.
    sealed_genesis(&g, Some(predecessor)).await;
    let out = g.command().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the swapped record does not open for the new formation: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

async fn create_controlled(g: &Gateway) -> String {
    let (s, f) = g
        .admin(
            Method::POST,
            "/orgs/acme/formations",
            Some(json!({"app_id": "mesh", "enrollment_policy": "Controlled"})),
        )
        .await;
    assert_eq!(s, 201, "{f}");
    f["mesh_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_bootstrap_token_admits_to_no_formation_recreated_under_its_name() {
    use peat_gateway::mesh::MeshTier;
    use peat_gateway::store::Table;
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    create_controlled(&g).await;
    let (s, t) = g
        .admin(
            Method::POST,
            "/orgs/acme/tokens",
            Some(json!({"app_id": "mesh"})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let token = t["token"].as_str().unwrap().to_owned();
    let id = token[4..20].to_owned();
    assert!(g.stop());
    let old = raw_row(&g, Table::BootTokens, id.as_bytes().to_vec(), None).await;
    g.restart().await;
    let (s, _) = g
        .admin(Method::DELETE, "/orgs/acme/formations/mesh", None)
        .await;
    assert_eq!(s, 204);
    let mesh_id = create_controlled(&g).await;
    assert!(g.stop());
    // The predecessor's token row put back under the same names.
    raw_row(&g, Table::BootTokens, id.as_bytes().to_vec(), Some(old)).await;
    g.restart().await;
    let req = crate::enroll::request(
        &crate::enroll::device(0x55),
        &mesh_id,
        "n",
        MeshTier::Edge,
        &token,
    );
    let (s, b) = crate::enroll::enroll_json(&g, crate::enroll::ENROLL, &req).await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (403, Some("invalid bootstrap token")),
        "{b}"
    );
}
