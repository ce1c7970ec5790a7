//! Peers that answer with endless bodies (a hostile or broken sidecar, identity provider):
//! the gateway stops reading at its cap, says so, and stays small.

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, GatewayOpts};

/// 256 MiB of zeros, streamed, with the given status.
fn flood(status: StatusCode) -> impl IntoResponse {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let stream =
        futures_util::stream::iter((0..4096).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    (status, Body::from_stream(stream))
}

async fn flooding_server() -> u16 {
    let app = axum::Router::new()
        .fallback(|| async { flood(StatusCode::INTERNAL_SERVER_ERROR) })
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(|| async { flood(StatusCode::OK) }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    port
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn endless_answers_from_a_sidecar_or_an_identity_provider_are_cut_at_the_cap() {
    let port = flooding_server().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    crate::cdc::setup(&g).await;
    crate::source::bind_endpoint(&g, &format!("http://127.0.0.1:{port}")).await;
    let err = crate::source::source_error(&g).await;
    assert!(err.contains("larger than"), "{err}");

    let (s, idp) = g
        .admin(
            Method::POST,
            "/orgs/acme/idps",
            Some(json!({"issuer": format!("http://127.0.0.1:{port}"), "audience": "gw"})),
        )
        .await;
    assert_eq!(s, 201, "{idp}");
    let id = idp["idp_id"].as_str().unwrap();
    let (_, r) = g
        .admin(Method::POST, &format!("/orgs/acme/idps/{id}/refresh"), None)
        .await;
    assert!(r.to_string().contains("larger than"), "{r}");
    let rss = rss_kib(g.pid());
    assert!(
        rss < 96 * 1024,
        "the gateway buffered a flood: RSS {rss} KiB"
    );
}
