//! Bad input answers 4xx JSON and changes nothing.

use reqwest::Method;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::gateway::split;
use crate::harness::{Gateway, GatewayOpts, ADMIN};

async fn snapshot(g: &Gateway) -> Value {
    let (_, orgs) = g.admin(Method::GET, "/orgs", None).await;
    let (_, formations) = g.admin(Method::GET, "/orgs/acme/formations", None).await;
    let (_, tokens) = g.admin(Method::GET, "/orgs/acme/api-tokens", None).await;
    json!({"orgs": orgs, "formations": formations, "tokens": tokens})
}

#[tokio::test]
async fn malformed_requests_get_json_4xx_and_leave_state_unchanged() {
    let g =
        Gateway::start(GatewayOpts::standard().with("PEAT_GATEWAY_MAX_BODY_BYTES", "2048")).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh-1").await;
    let before = snapshot(&g).await;

    let raw = |method: Method, path: &str, ctype: Option<&str>, body: Vec<u8>| {
        let mut r = g.req(method, path, Some(ADMIN)).body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        r
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "syntax error",
            raw(Method::POST, "/orgs", json_ct, b"{\"org_id\":".to_vec()),
            400,
            "bad_request",
        ),
        (
            "no content type",
            raw(
                Method::POST,
                "/orgs",
                None,
                br#"{"org_id":"x","display_name":"x"}"#.to_vec(),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "text content type",
            raw(
                Method::POST,
                "/orgs",
                Some("text/plain"),
                br#"{"org_id":"x","display_name":"x"}"#.to_vec(),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "oversize body",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                format!(
                    r#"{{"org_id":"x","display_name":"{}"}}"#,
                    "a".repeat(10_000)
                )
                .into_bytes(),
            ),
            413,
            "payload_too_large",
        ),
        (
            "missing field",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                br#"{"org_id":"x"}"#.to_vec(),
            ),
            422,
            "invalid_body",
        ),
        (
            "unknown field",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                br#"{"org_id":"x","display_name":"x","admin":true}"#.to_vec(),
            ),
            422,
            "invalid_body",
        ),
        (
            "wrong type",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                br#"{"org_id":7,"display_name":"x"}"#.to_vec(),
            ),
            422,
            "invalid_body",
        ),
        (
            "dotted org id",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                br#"{"org_id":"acme.evil","display_name":"x"}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "reserved org id",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                br#"{"org_id":"_org","display_name":"x"}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "long org id",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                format!(r#"{{"org_id":"{}","display_name":"x"}}"#, "a".repeat(129)).into_bytes(),
            ),
            422,
            "invalid_field",
        ),
        (
            "blank display name",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                br#"{"org_id":"x","display_name":"  "}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "quota too large",
            raw(
                Method::POST,
                "/orgs",
                json_ct,
                br#"{"org_id":"x","display_name":"x","quotas":{"max_formations":4000000000}}"#
                    .to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "bad policy",
            raw(
                Method::POST,
                "/orgs/acme/formations",
                json_ct,
                br#"{"app_id":"m2","enrollment_policy":"Lax"}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "bad app id",
            raw(
                Method::POST,
                "/orgs/acme/formations",
                json_ct,
                br#"{"app_id":"m 2"}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "duplicate formation",
            raw(
                Method::POST,
                "/orgs/acme/formations",
                json_ct,
                br#"{"app_id":"mesh-1"}"#.to_vec(),
            ),
            409,
            "conflict",
        ),
        (
            "bad role",
            raw(
                Method::POST,
                "/orgs/acme/api-tokens",
                json_ct,
                br#"{"name":"t","role":"root"}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "expired token request",
            raw(
                Method::POST,
                "/orgs/acme/api-tokens",
                json_ct,
                br#"{"name":"t","role":"viewer","expires_at":1}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
        (
            "bad path id",
            raw(Method::GET, "/orgs/acme.evil", None, vec![]),
            404,
            "not_found",
        ),
        (
            "bad nested path id",
            raw(Method::DELETE, "/orgs/acme/formations/..%2Fx", None, vec![]),
            404,
            "not_found",
        ),
        (
            "bad query",
            raw(Method::GET, "/orgs?limit=lots", None, vec![]),
            400,
            "bad_request",
        ),
        (
            "unknown query key",
            raw(Method::GET, "/orgs?sort=desc", None, vec![]),
            400,
            "bad_request",
        ),
        (
            "unknown route",
            raw(Method::GET, "/nope", None, vec![]),
            404,
            "not_found",
        ),
        (
            "wrong method",
            raw(Method::PUT, "/orgs", json_ct, b"{}".to_vec()),
            405,
            "method_not_allowed",
        ),
        (
            "patch empty name",
            raw(
                Method::PATCH,
                "/orgs/acme",
                json_ct,
                br#"{"display_name":""}"#.to_vec(),
            ),
            422,
            "invalid_field",
        ),
    ];
    for (label, req, want_status, want_code) in cases {
        let (s, body) = split(req.send().await.unwrap()).await;
        assert_eq!(s, want_status, "{label}: {body}");
        assert_eq!(error_code(&body), want_code, "{label}");
    }
    assert_eq!(
        snapshot(&g).await,
        before,
        "state changed after refused input"
    );
}
