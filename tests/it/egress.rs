//! Outbound connections go only where the gateway admin allows: an org-admin cannot point a
//! sink or an identity provider at loopback, the kit's private networks or cloud metadata.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::service::nats;
use crate::harness::{Gateway, GatewayOpts};

async fn receiver() -> (u16, Arc<Mutex<usize>>) {
    let hits: Arc<Mutex<usize>> = Arc::default();
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            *h.lock().unwrap() += 1;
            axum::http::StatusCode::OK
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, hits)
}

async fn status_of(g: &Gateway, tok: &str, sink: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = g
            .call(
                Method::GET,
                &format!("/orgs/acme/sinks/{sink}/status"),
                Some(tok),
                None,
            )
            .await;
        if ok(&st) || Instant::now() > deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sinks_and_identity_providers_reach_internal_addresses_only_when_granted() {
    let (port, hits) = receiver().await;
    let broker = nats().await;
    let g = Gateway::start(GatewayOpts::standard().without("PEAT_EGRESS_ALLOW")).await;
    crate::cdc::setup(&g).await;
    let (_, t) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "oa", "role": "org-admin"})),
        )
        .await;
    let tok = t["token"].as_str().unwrap().to_owned();
    let create = |spec: Value| {
        let (g, tok) = (&g, tok.clone());
        async move {
            g.call(
                Method::POST,
                "/orgs/acme/sinks",
                Some(&tok),
                Some(json!({"sink_type": spec})),
            )
            .await
        }
    };
    // Literal internal addresses are refused at creation, allow_private or not.
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
    ] {
        let (s, b) = create(json!({"Webhook": {"url": url, "allow_private": true}})).await;
        assert_eq!((s, error_code(&b)), (403, "not_granted"), "{url}: {b}");
    }
    let (s, b) = create(json!({"Nats": {"subject_prefix": "p", "url": broker.url("nats")}})).await;
    assert_eq!((s, error_code(&b)), (403, "not_granted"), "{b}");

    // A name that resolves to loopback is refused when connecting, and nothing is sent.
    let (s, b) =
        create(json!({"Webhook": {"url": format!("http://localhost:{port}/hook?key=q-s3cret")}}))
            .await;
    assert_eq!(s, 201, "{b}");
    let hook = b["sink_id"].as_str().unwrap().to_owned();
    let nats_url = broker.url("nats").replace("127.0.0.1", "localhost");
    let (s, b) = create(json!({"Nats": {"subject_prefix": "p", "url": nats_url}})).await;
    assert_eq!(s, 201, "{b}");
    let nats_sink = b["sink_id"].as_str().unwrap().to_owned();
    crate::cdc::ingest(&g, json!([crate::cdc::upsert("a", 1)])).await;
    for sink in [&hook, &nats_sink] {
        let st = status_of(&g, &tok, sink, |st| {
            st["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("egress policy"))
        })
        .await;
        assert!(
            st["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("egress policy"),
            "{st}"
        );
    }
    let (_, r) = g
        .call(
            Method::POST,
            &format!("/orgs/acme/sinks/{hook}/test"),
            Some(&tok),
            None,
        )
        .await;
    assert!(r.to_string().contains("egress policy"), "{r}");
    assert_eq!(
        *hits.lock().unwrap(),
        0,
        "nothing reached the loopback receiver"
    );

    // An identity provider on loopback is refused the same way.
    let (s, idp) = g
        .call(
            Method::POST,
            "/orgs/acme/idps",
            Some(&tok),
            Some(json!({"issuer": format!("http://127.0.0.1:{port}"), "audience": "gw"})),
        )
        .await;
    assert_eq!(s, 201, "{idp}");
    let id = idp["idp_id"].as_str().unwrap();
    let (_, r) = g
        .call(
            Method::POST,
            &format!("/orgs/acme/idps/{id}/refresh"),
            Some(&tok),
            None,
        )
        .await;
    assert!(r.to_string().contains("egress policy"), "{r}");

    // Only the gateway admin grants; then the same sinks deliver.
    let (s, _) = g
        .call(
            Method::PUT,
            "/orgs/acme/egress",
            Some(&tok),
            Some(json!({"networks": ["127.0.0.0/8"]})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/acme/egress",
            Some(json!({"networks": ["127.0.0.0/8"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let st = status_of(&g, &tok, &hook, |st| st["backlog_events"] == 0).await;
    assert_eq!(st["backlog_events"], 0, "{st}");
    assert!(*hits.lock().unwrap() >= 1);
    let st = status_of(&g, &tok, &nats_sink, |st| st["backlog_events"] == 0).await;
    assert_eq!(st["backlog_events"], 0, "{st}");
}
