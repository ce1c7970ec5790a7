//! The operator UI at `/_/`: embedded (feature `ui`) or from `PEAT_UI_DIR`, with a
//! single-page-app fallback.

use reqwest::Method;

use crate::error_code;
use crate::harness::{Gateway, GatewayOpts};

#[tokio::test]
async fn ui_dir_is_served_under_underscore_with_spa_fallback_and_nothing_outside_it() {
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(ui.path().join("index.html"), "<title>peat</title>").unwrap();
    std::fs::create_dir(ui.path().join("assets")).unwrap();
    std::fs::write(ui.path().join("assets/app.js"), "console.log(1)").unwrap();
    let g =
        Gateway::start(GatewayOpts::standard().with("PEAT_UI_DIR", ui.path().to_str().unwrap()))
            .await;
    let client = reqwest::Client::new();
    let get = |p: &str| client.get(format!("{}{p}", g.base())).send();

    let r = get("/_/").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(r.text().await.unwrap(), "<title>peat</title>");

    let r = get("/_/assets/app.js").await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(r.text().await.unwrap(), "console.log(1)");

    let r = get("/_/formations/demo-mesh").await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "<title>peat</title>",
        "client-side route falls back"
    );

    for missing in [
        "/_/assets/nope.js",
        "/_/%2e%2e/data/state.redb",
        "/_/..%2fdata%2fstate.redb",
    ] {
        let (s, body) = g.call(Method::GET, missing, None, None).await;
        assert_eq!(s, 404, "{missing}");
        assert_eq!(error_code(&body), "not_found");
    }
}

#[cfg(not(feature = "ui"))]
#[tokio::test]
async fn without_the_ui_feature_or_ui_dir_there_is_no_ui_route() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    let (s, body) = g.call(Method::GET, "/_/", None, None).await;
    assert_eq!((s, error_code(&body)), (404, "not_found"));
}

#[cfg(feature = "ui")]
#[tokio::test]
async fn the_embedded_ui_is_served_with_csp_etags_gzip_and_caching() {
    use std::io::Read;
    let g = Gateway::start(GatewayOpts::standard()).await;
    // No automatic decompression: the test reads the wire as a browser would receive it.
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let url = |p: &str| format!("{}{p}", g.base());

    let r = client.get(url("/_/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(h.get("content-encoding").is_none(), "identity unless asked");
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.len() > 10,
        "strong ETag: {etag}"
    );
    let page = r.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains(" style="),
        "no inline script or style"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from the internet"
    );

    // Revalidation answers 304 with no body.
    let r = client
        .get(url("/_/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.unwrap().is_empty());

    // The page links its script by version; that URL is immutable, and gzip is chosen.
    let start = page.find("app.js?v=").expect("versioned script link");
    let link = &page[start..page[start..].find('"').map(|e| start + e).unwrap()];
    let r = client
        .get(url(&format!("/_/{link}")))
        .header("accept-encoding", "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let gz = r.bytes().await.unwrap();
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut plain)
        .unwrap();
    let identity = client.get(url("/_/app.js")).send().await.unwrap();
    assert_eq!(
        identity.headers()["cache-control"],
        "no-cache",
        "unversioned URL revalidates"
    );
    assert_eq!(
        plain,
        identity.text().await.unwrap(),
        "gzip variant is the same file"
    );

    // Client-side routes fall back to the page; missing assets and escapes stay 404.
    let r = client.get(url("/_/orgs/alpha")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), page);
    for missing in ["/_/nope.js", "/_/%2e%2e/data/state.redb"] {
        let (s, body) = g.call(Method::GET, missing, None, None).await;
        assert_eq!((s, error_code(&body)), (404, "not_found"), "{missing}");
    }

    // /about names what the build holds.
    let (s, about) = g.call(Method::GET, "/about", None, None).await;
    assert_eq!(s, 200);
    assert!(about["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "ui"));
    let ui_bytes = about["ui"]["embedded_gzip_bytes"].as_u64().unwrap();
    assert!(ui_bytes > 1000 && ui_bytes < 150 * 1024, "{ui_bytes}");
}

/// The UI's vendored files are exactly the packages `ui/package-lock.json` pins: the list in
/// `ui/web/vendor/SOURCES.txt` names each file's package, version and hash, and where
/// `scripts/setup` installed the packages, the copies equal their files byte for byte.
#[test]
fn vendored_ui_files_match_the_lockfile() {
    use sha2::Digest as _;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("package-lock.json")).unwrap())
            .unwrap();
    let sources = std::fs::read_to_string(root.join("web/vendor/SOURCES.txt")).unwrap();
    let mut checked = 0;
    for line in sources
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let [file, package, version, _license, sum] = f[..] else {
            panic!("malformed SOURCES.txt line: {line}");
        };
        let pinned = &lock["packages"][format!("node_modules/{package}")]["version"];
        assert_eq!(
            pinned, version,
            "{file}: SOURCES.txt and the lockfile disagree; run scripts/ui-vendor"
        );
        let bytes = std::fs::read(root.join("web/vendor").join(file)).unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            sum,
            "{file} was changed by hand; run scripts/ui-vendor"
        );
        let installed = root.join("node_modules").join(package);
        if installed.exists() {
            let main: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(installed.join("package.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                main["version"], version,
                "{package} installed is not the pinned version; run scripts/setup"
            );
            let upstream = std::fs::read(installed.join("dist").join(file)).unwrap();
            assert!(
                upstream == bytes,
                "{file} differs from {package} {version}; run scripts/ui-vendor"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "SOURCES.txt lists nothing");
}
