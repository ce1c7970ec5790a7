//! `PEAT_UI_DIR`: the operator UI served at `/_/`, with a single-page-app fallback.

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

#[tokio::test]
async fn without_ui_dir_there_is_no_ui_route() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    let (s, body) = g.call(Method::GET, "/_/", None, None).await;
    assert_eq!((s, error_code(&body)), (404, "not_found"));
}
