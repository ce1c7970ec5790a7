//! The auth matrix: every route × {no token, bad token, other org's token, each role, admin}.
//!
//! Routes come from `/openapi.json`, and every one must have a row in `expectation`, so a new
//! route cannot skip this test.

use reqwest::Method;
use serde_json::{json, Value};

use crate::error_code;
use crate::harness::{Gateway, GatewayOpts};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    BadToken,
    OtherOrg,
    Role(&'static str),
    Admin,
}

#[derive(Clone, Copy, Debug)]
enum Rule {
    Public,
    /// Device-facing and unauthenticated: every caller gets the same validation answer.
    Device,
    /// Admin only, not scoped to an org in the path.
    Gateway,
    /// Org-scoped; the listed roles may call it.
    Org(&'static [&'static str]),
    /// Org-scoped in the path, admin only (org deletion).
    OrgPathAdminOnly,
    /// Any valid token; the answer names the caller alone.
    AnyToken,
    /// Single sign-on steps: unauthenticated, the same refusal for everyone until a flow runs.
    SignIn,
    /// The caller's own sign-in session: any valid token, refused unless it is a session.
    OwnSession,
}

const READ: &[&str] = &["org-admin", "operator", "viewer"];
const MANAGE: &[&str] = &["org-admin"];
const OPERATE: &[&str] = &["org-admin", "operator"];
const INGEST: &[&str] = &["org-admin", "operator", "ingest"];

fn expectation(method: &str, path: &str) -> Rule {
    match (method, path) {
        (_, "/health" | "/ready" | "/metrics" | "/openapi.json" | "/about") => Rule::Public,
        ("get", "/whoami") => Rule::AnyToken,
        (_, "/sso/start" | "/sso/callback" | "/sso/session") => Rule::SignIn,
        ("delete", "/session") => Rule::OwnSession,
        ("get", "/orgs/{org_id}/sessions") => Rule::Org(MANAGE),
        ("delete", "/orgs/{org_id}/sessions/{session_id}") => Rule::Org(MANAGE),
        ("post", "/orgs/{org_id}/formations/{app_id}/source/reconcile") => Rule::Org(OPERATE),
        ("get", "/orgs/{org_id}/audit/verify") => Rule::Org(MANAGE),
        ("get", "/audit/verify") => Rule::Gateway,
        ("get", "/activity") => Rule::Gateway,
        ("get", "/backup") => Rule::Gateway,
        ("get", "/orgs/{org_id}/activity") => Rule::Org(READ),
        (
            _,
            "/orgs/{org_id}/formations/{app_id}/enroll"
            | "/orgs/{org_id}/formations/{app_id}/renew"
            | "/orgs/{org_id}/formations/{app_id}/enroll/{enrollment_id}",
        ) => Rule::Device,
        ("post", "/orgs/{org_id}/tokens") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/network") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/source-grants") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/egress") => Rule::Org(READ),
        ("put", "/orgs/{org_id}/egress") => Rule::OrgPathAdminOnly,
        ("put", "/orgs/{org_id}/source-grants") => Rule::OrgPathAdminOnly,
        ("put", "/orgs/{org_id}/network") => Rule::Org(MANAGE),
        ("post", "/orgs/{org_id}/idps" | "/orgs/{org_id}/idps/{idp_id}/refresh") => {
            Rule::Org(MANAGE)
        }
        ("patch" | "delete", "/orgs/{org_id}/idps/{idp_id}") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/idps" | "/orgs/{org_id}/idps/{idp_id}") => Rule::Org(READ),
        ("post", "/orgs/{org_id}/policy-rules") => Rule::Org(MANAGE),
        ("delete", "/orgs/{org_id}/policy-rules/{rule_id}") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/policy-rules") => Rule::Org(READ),
        ("post", "/orgs/{org_id}/policy-rules/evaluate") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/identity-settings") => Rule::Org(READ),
        ("put", "/orgs/{org_id}/identity-settings") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/formations/{app_id}/tokens") => Rule::Org(MANAGE),
        ("get" | "delete", "/orgs/{org_id}/tokens/{token_id}") => Rule::Org(MANAGE),
        ("post", "/orgs/{org_id}/tokens/{token_id}/revoke") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/formations/{app_id}/enrollment-settings") => Rule::Org(READ),
        ("put", "/orgs/{org_id}/formations/{app_id}/enrollment-settings") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/enrollments") => Rule::Org(READ),
        (
            "post",
            "/orgs/{org_id}/enrollments/{enrollment_id}/approve"
            | "/orgs/{org_id}/enrollments/{enrollment_id}/deny",
        ) => Rule::Org(OPERATE),
        (
            "get",
            "/orgs/{org_id}/formations/{app_id}/certificates"
            | "/orgs/{org_id}/formations/{app_id}/certificates/{fingerprint}"
            | "/orgs/{org_id}/formations/{app_id}/revocations",
        ) => Rule::Org(READ),
        ("post", "/orgs/{org_id}/formations/{app_id}/certificates/{fingerprint}/revoke") => {
            Rule::Org(OPERATE)
        }
        ("post", "/orgs/{org_id}/formations/{app_id}/certificates/publish") => Rule::Org(OPERATE),
        ("post", "/orgs") => Rule::Gateway,
        ("get", "/audit") => Rule::Gateway,
        ("get", "/orgs") => Rule::Org(READ),
        ("get", "/orgs/{org_id}") => Rule::Org(READ),
        ("patch", "/orgs/{org_id}") => Rule::Org(MANAGE),
        ("delete", "/orgs/{org_id}") => Rule::OrgPathAdminOnly,
        ("post", "/orgs/{org_id}/formations") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/formations") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/formations/{app_id}") => Rule::Org(READ),
        ("delete", "/orgs/{org_id}/formations/{app_id}") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/formations/{app_id}/credentials") => Rule::Org(MANAGE),
        ("post", "/orgs/{org_id}/api-tokens") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/api-tokens") => Rule::Org(MANAGE),
        ("delete", "/orgs/{org_id}/api-tokens/{token_id}") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/audit") => Rule::Org(MANAGE),
        ("post", "/orgs/{org_id}/formations/{app_id}/changes") => Rule::Org(INGEST),
        ("post", "/orgs/{org_id}/sinks") => Rule::Org(MANAGE),
        ("put" | "delete", "/orgs/{org_id}/formations/{app_id}/source") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/formations/{app_id}/source") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/events/stream") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/outbox") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/sinks") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/sinks/{sink_id}") => Rule::Org(READ),
        ("patch", "/orgs/{org_id}/sinks/{sink_id}") => Rule::Org(OPERATE),
        ("delete", "/orgs/{org_id}/sinks/{sink_id}") => Rule::Org(MANAGE),
        ("get", "/orgs/{org_id}/sinks/{sink_id}/status") => Rule::Org(READ),
        ("get", "/orgs/{org_id}/sinks/{sink_id}/dead-letters") => Rule::Org(READ),
        (
            "post",
            "/orgs/{org_id}/sinks/{sink_id}/retry"
            | "/orgs/{org_id}/sinks/{sink_id}/skip"
            | "/orgs/{org_id}/sinks/{sink_id}/test"
            | "/orgs/{org_id}/sinks/{sink_id}/dead-letters",
        ) => Rule::Org(OPERATE),
        other => panic!("route {other:?} has no row in the auth matrix; add one"),
    }
}

/// A body that passes auth but fails validation, so allowed callers change nothing.
fn harmless_body(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/orgs") => Some(json!({"org_id": "", "display_name": "x"})),
        // No org of that name: the same answer as an org without single sign-on.
        ("post", "/sso/start") => Some(json!({"org_id": "ghost"})),
        ("patch", "/orgs/{org_id}/sinks/{sink_id}") => Some(json!({"enabled": true})),
        ("post", "/orgs/{org_id}/sinks/{sink_id}/dead-letters") => Some(json!({"action": "nope"})),
        ("patch", "/orgs/{org_id}/idps/{idp_id}") => Some(json!({"enabled": true})),
        ("patch", _) => Some(json!({"display_name": ""})),
        ("post", "/orgs/{org_id}/sinks") => {
            Some(json!({"sink_type": {"File": {"name": "bad name"}}}))
        }
        ("post", "/orgs/{org_id}/formations/{app_id}/changes") => Some(json!([])),
        ("put", "/orgs/{org_id}/formations/{app_id}/source") => {
            Some(json!({"endpoint": "ftp://x", "collections": ["a"]}))
        }
        ("post", "/orgs/{org_id}/formations") => Some(json!({"app_id": "bad id"})),
        ("post", "/orgs/{org_id}/api-tokens") => Some(json!({"name": "", "role": "viewer"})),
        ("post", "/orgs/{org_id}/tokens") => Some(json!({"app_id": "mesh-a", "max_uses": 0})),
        ("put", "/orgs/{org_id}/network") => Some(json!({"allow": ["not a network"]})),
        ("put", "/orgs/{org_id}/source-grants") => Some(json!({"endpoints": ["ftp://x"]})),
        ("put", "/orgs/{org_id}/egress") => Some(json!({"networks": ["not a network"]})),
        ("post", "/orgs/{org_id}/idps") => {
            Some(json!({"issuer": "http://idp.example", "audience": "a"}))
        }
        ("post", "/orgs/{org_id}/policy-rules") => Some(json!({"conditions": []})),
        ("post", "/orgs/{org_id}/policy-rules/evaluate") => Some(json!({"claims": {}})),
        ("put", "/orgs/{org_id}/identity-settings") => Some(json!({"no_match": "maybe"})),
        (
            "post",
            "/orgs/{org_id}/enrollments/{enrollment_id}/deny"
            | "/orgs/{org_id}/formations/{app_id}/certificates/{fingerprint}/revoke",
        ) => Some(json!({"reason": "x"})),
        ("put", "/orgs/{org_id}/formations/{app_id}/enrollment-settings") => {
            Some(json!({"validity_secs": 1}))
        }
        _ => None,
    }
}

#[tokio::test]
async fn every_route_answers_each_caller_as_the_role_table_says_without_leaking() {
    // Hundreds of deliberate failures from one address: the failure limit is tested elsewhere.
    let g =
        Gateway::start(GatewayOpts::standard().with("PEAT_AUTH_FAILURES_PER_MIN", "100000")).await;
    for org in ["org-a", "org-b"] {
        g.admin(
            Method::POST,
            "/orgs",
            Some(json!({"org_id": org, "display_name": org})),
        )
        .await;
    }
    g.create_formation("org-a", "mesh-a").await;
    let (s, b) = g
        .admin(
            Method::PUT,
            "/orgs/org-a/formations/mesh-a/source",
            Some(json!({"endpoint": "http://127.0.0.1:9", "collections": ["tracks"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, fa) = g
        .admin(Method::GET, "/orgs/org-a/formations/mesh-a", None)
        .await;
    let secret_mesh_id = fa["mesh_id"].as_str().unwrap().to_owned();

    let mut callers: Vec<(Who, Option<String>)> = vec![
        (Who::Nobody, None),
        (Who::BadToken, Some("pgt_0123456789abcdef_forged".into())),
        (Who::BadToken, Some("not-a-token-at-all".into())),
        (Who::OtherOrg, Some(g.org_token("org-b", "org-admin").await)),
        (Who::Admin, Some(crate::harness::ADMIN.into())),
    ];
    for role in ["org-admin", "operator", "viewer", "ingest"] {
        callers.push((Who::Role(role), Some(g.org_token("org-a", role).await)));
    }

    let (_, doc) = g.call(Method::GET, "/openapi.json", None, None).await;
    let paths = doc["paths"].as_object().expect("openapi paths");
    let mut checked = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let rule = expectation(method, path);
            for (who, tok) in &callers {
                // The admin acts on a ghost org for destructive calls, so the matrix stays intact.
                let org = if *who == Who::Admin && method == "delete" {
                    "ghost"
                } else {
                    "org-a"
                };
                let concrete = path
                    .replace("{org_id}", org)
                    .replace(
                        "{app_id}",
                        if method == "delete" {
                            "ghost"
                        } else {
                            "mesh-a"
                        },
                    )
                    .replace("{token_id}", "0000000000000000")
                    .replace("{sink_id}", "0000000000000000")
                    .replace("{enrollment_id}", "00000000000000000000000000000000")
                    .replace("{fingerprint}", &"0".repeat(64))
                    .replace("{idp_id}", "0000000000000000")
                    .replace("{rule_id}", "0000000000000000")
                    .replace("{session_id}", "0000000000000000");
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let (status, body) = g
                    .call(m, &concrete, tok.as_deref(), harmless_body(method, path))
                    .await;
                let ctx = format!("{method} {concrete} as {who:?}: {status} {body}");
                match (rule, who) {
                    (Rule::Public, _) => assert_eq!(status, 200, "{ctx}"),
                    (Rule::Device, _) => assert!([404, 415].contains(&status), "{ctx}"),
                    (Rule::SignIn, _) => {
                        assert!([303, 404].contains(&status), "{ctx}");
                        if status == 404 {
                            let code = error_code(&body);
                            assert!(
                                ["sso_not_configured", "no_sign_in_waiting"].contains(&code),
                                "{ctx}"
                            );
                        }
                    }
                    (_, Who::Nobody | Who::BadToken) => {
                        assert_eq!(status, 401, "{ctx}");
                        assert_eq!(error_code(&body), "unauthenticated", "{ctx}");
                    }
                    (Rule::OwnSession, _) => {
                        assert_eq!((status, error_code(&body)), (409, "not_a_session"), "{ctx}")
                    }
                    (_, Who::Admin) => assert!(![401, 403].contains(&status), "{ctx}"),
                    (Rule::Gateway, _) => assert_eq!(status, 403, "{ctx}"),
                    (Rule::AnyToken, Who::Role(r)) => {
                        assert_eq!(status, 200, "{ctx}");
                        assert_eq!(
                            (body["org_id"].as_str(), body["role"].as_str()),
                            (Some("org-a"), Some(*r)),
                            "{ctx}"
                        );
                        assert_eq!(body["ui"], *r != "ingest", "{ctx}");
                    }
                    (Rule::AnyToken, Who::OtherOrg) => {
                        assert_eq!(status, 200, "{ctx}");
                        assert_eq!(body["org_id"], "org-b", "{ctx}");
                    }
                    (Rule::Org(_) | Rule::OrgPathAdminOnly, Who::OtherOrg) if path != "/orgs" => {
                        assert_eq!(status, 404, "{ctx}");
                        assert_eq!(error_code(&body), "not_found", "{ctx}");
                    }
                    (Rule::Org(_), Who::OtherOrg) => {
                        assert_eq!(status, 200, "{ctx}");
                        assert_eq!(body.as_array().unwrap().len(), 1, "{ctx}");
                        assert_eq!(body[0]["org_id"], "org-b", "{ctx}");
                    }
                    (Rule::OrgPathAdminOnly, Who::Role(_)) => assert_eq!(status, 403, "{ctx}"),
                    (Rule::Org(allowed), Who::Role(r)) if allowed.contains(r) => {
                        assert!(status != 401 && status != 403, "{ctx}");
                        if status == 404 {
                            assert!(
                                concrete.contains("ghost") || concrete.contains("0000"),
                                "{ctx}"
                            );
                        }
                    }
                    (Rule::Org(_), Who::Role(_)) => {
                        assert_eq!(status, 403, "{ctx}");
                        assert_eq!(error_code(&body), "forbidden", "{ctx}");
                    }
                    (rule, who) => panic!("no expectation for {rule:?} × {who:?}"),
                }
                if matches!(who, Who::OtherOrg | Who::Nobody | Who::BadToken) {
                    let text = body.to_string().replace("org-admin", "");
                    assert!(
                        !text.contains("org-a") && !text.contains(&secret_mesh_id),
                        "leak: {ctx}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15 * 9, "only {checked} cases ran");

    let (s, _) = g
        .admin(Method::GET, "/orgs/org-a/formations/mesh-a", None)
        .await;
    assert_eq!(s, 200, "the matrix changed nothing");
    let org_admin = &callers
        .iter()
        .find(|(w, _)| *w == Who::Role("org-admin"))
        .unwrap()
        .1;
    let (s, body) = g
        .call(
            Method::PATCH,
            "/orgs/org-a",
            org_admin.as_deref(),
            Some(json!({"quotas": {"max_formations": 99}})),
        )
        .await;
    assert_eq!(
        (s, error_code(&body)),
        (403, "forbidden"),
        "quotas are the gateway admin's"
    );
    let (_, audit) = g
        .admin(Method::GET, "/orgs/org-a/audit?limit=1000", None)
        .await;
    let refusals = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "forbidden")
        .count();
    assert!(refusals > 10, "refusals are audited ({refusals})");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let (_, t) = g
        .admin(
            Method::POST,
            "/orgs/acme/api-tokens",
            Some(json!({"name": "short", "role": "viewer", "expires_at": soon})),
        )
        .await;
    let tok = t["token"].as_str().unwrap();
    let (s, _) = g.call(Method::GET, "/orgs/acme", Some(tok), None).await;
    assert_eq!(s, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let (s, _) = g.call(Method::GET, "/orgs/acme", Some(tok), None).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn repeated_authentication_failures_get_429_then_recover_and_are_audited() {
    let g = Gateway::start(GatewayOpts::standard().with("PEAT_AUTH_FAILURES_PER_MIN", "60")).await;
    let mut statuses = Vec::new();
    for _ in 0..61 {
        let (s, _) = g
            .call(
                Method::GET,
                "/orgs",
                Some("pgt_0123456789abcdef_guess"),
                None,
            )
            .await;
        statuses.push(s);
    }
    assert!(statuses[..60].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        statuses[60], 401,
        "the failure that exhausts the budget still answers 401"
    );
    let r = g
        .req(Method::GET, "/orgs", Some(crate::harness::ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        429,
        "the source is blocked, whatever it presents"
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");

    // The budget refills (one failure a second here): the admin gets in again.
    tokio::time::sleep(std::time::Duration::from_millis(wait * 1000 + 100)).await;
    let (s, _) = g.admin(Method::GET, "/orgs", None).await;
    assert_eq!(s, 200);
    let (_, audit) = g.admin(Method::GET, "/audit?limit=1000", None).await;
    let text = audit.to_string();
    assert!(
        text.contains("auth.failure") && text.contains("source:127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("guess"),
        "the presented token is never recorded"
    );
    let m = g.metrics().await;
    assert!(m.contains("auth_failures_total 61"), "{m}");
    assert!(m.contains("auth_blocked_total 1"), "{m}");
}

#[tokio::test]
async fn allow_lists_refuse_other_networks_globally_and_per_org() {
    // Globally: only 10.0.0.0/8 may connect, and the test runs on 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let g = Gateway::start(
        GatewayOpts::standard()
            .with("PEAT_GATEWAY_ALLOW", "10.0.0.0/8,127.0.0.1")
            .with("PEAT_GATEWAY_UNIX_SOCKET", sock.to_str().unwrap()),
    )
    .await;
    let (s, _) = g.admin(Method::GET, "/orgs", None).await;
    assert_eq!(s, 200, "127.0.0.1 is listed");
    drop(g);
    let g = Gateway::start(GatewayOpts::standard().with("PEAT_GATEWAY_ALLOW", "10.0.0.0/8")).await;
    let (s, b) = g.admin(Method::GET, "/orgs", None).await;
    assert_eq!((s, error_code(&b)), (403, "forbidden_source"));
    let bad = g
        .command()
        .arg("check-config")
        .env("PEAT_GATEWAY_ALLOW", "10.0.0.0/33")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("PEAT_GATEWAY_ALLOW: '10.0.0.0/33' is not a network"));
    drop(g);

    // Per org: the org's tokens and its enrollment route only from its networks.
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    let viewer = g.org_token("acme", "viewer").await;
    let (s, _) = g.call(Method::GET, "/orgs/acme", Some(&viewer), None).await;
    assert_eq!(s, 200);
    let (s, n) = g
        .admin(
            Method::PUT,
            "/orgs/acme/network",
            Some(json!({"allow": ["10.20.0.0/16"]})),
        )
        .await;
    assert_eq!((s, n["allow"][0].as_str()), (200, Some("10.20.0.0/16")));
    let (s, b) = g.call(Method::GET, "/orgs/acme", Some(&viewer), None).await;
    assert_eq!((s, error_code(&b)), (403, "forbidden_source"));
    let (s, b) = g
        .call(
            Method::POST,
            "/orgs/acme/formations/mesh/enroll",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!((s, error_code(&b)), (403, "forbidden_source"));
    let (s, _) = g.admin(Method::GET, "/orgs/acme", None).await;
    assert_eq!(s, 200, "the gateway admin is bound by the global list only");
    let (s, _) = g
        .admin(
            Method::PUT,
            "/orgs/acme/network",
            Some(json!({"allow": []})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = g.call(Method::GET, "/orgs/acme", Some(&viewer), None).await;
    assert_eq!(s, 200, "an empty list allows every network again");
    let (_, audit) = g.admin(Method::GET, "/orgs/acme/audit", None).await;
    assert!(audit.to_string().contains("org.network.update"));
}

#[tokio::test]
async fn guessing_at_a_token_id_does_not_lock_out_its_holder() {
    let g = Gateway::start(GatewayOpts::standard().with("PEAT_AUTH_FAILURES_PER_MIN", "5")).await;
    g.create_org("acme", "Acme").await;
    let tok = g.org_token("acme", "viewer").await;
    // pgt_<id>_<secret>: the id is no secret; someone elsewhere guesses secrets for it.
    let id = tok.rsplit_once('_').unwrap().0.to_owned();
    let guesser = reqwest::Client::builder()
        .local_address(Some("127.0.0.9".parse().unwrap()))
        .build()
        .unwrap();
    let mut last = 0;
    for i in 0..12 {
        last = guesser
            .get(format!("{}/orgs/acme", g.base()))
            .bearer_auth(format!("{id}_wrongsecret{i}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429, "the guesser is stopped");
    let (s, b) = g.call(Method::GET, "/orgs/acme", Some(&tok), None).await;
    assert_eq!(s, 200, "the holder of the right secret still gets in: {b}");
}

#[tokio::test]
async fn health_and_metrics_detail_is_for_the_admin_unless_made_public() {
    for public in [false, true] {
        let mut opts = GatewayOpts::standard();
        if public {
            opts = opts.with("PEAT_PUBLIC_DETAIL", "1");
        }
        let g = Gateway::start(opts).await;
        crate::cdc::setup(&g).await;
        let sink = crate::cdc::file_sink(&g, "all", json!({})).await;
        let (s, anon) = g.call(Method::GET, "/ready", None, None).await;
        assert_eq!((s, anon["ready"].as_bool()), (200, Some(true)), "{anon}");
        let (_, admin) = g.admin(Method::GET, "/ready", None).await;
        assert!(admin["checks"]["keys"]["kek_id"].is_string(), "{admin}");
        assert_eq!(
            anon["checks"]["keys"]["kek_id"].is_string(),
            public,
            "public {public}: {anon}"
        );
        let anon_m = g.public_metrics().await;
        assert!(anon_m.contains("peat_gateway_http_requests_total"));
        for detail in [sink.as_str(), "peat_gateway_orgs ", "kek_id"] {
            assert_eq!(anon_m.contains(detail), public, "public {public}: {detail}");
        }
        let m = g.metrics().await;
        assert!(
            m.contains(&sink) && m.contains("kek_id"),
            "the admin sees all"
        );
    }
}
