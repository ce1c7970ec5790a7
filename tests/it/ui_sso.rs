//! Single sign-on to the UI against the real OpenID provider (panva/oidc-provider), in
//! headless Chromium: the org-admin writes the claim rules and tries them in the tester, an
//! operator signs in through the provider and gets the role the rules name, a banned person
//! is refused, sign-out ends the session on the gateway, and with the provider down the
//! token still lets an operator in.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::browser::{api_refusal, quiet, shoot, sign_in, Browser};
use crate::harness::service::{oidc, Service};
use crate::harness::{Gateway, GatewayOpts};

/// A client of the provider for this gateway's callback (open dynamic registration).
async fn register_client(idp: &Service, g: &Gateway) -> (String, String) {
    let r: Value = reqwest::Client::new()
        .post(format!("{}/reg", idp.url("http")))
        .json(&json!({
            "redirect_uris": [format!("{}/sso/callback", g.base())],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["client_id"].as_str().unwrap_or_else(|| panic!("{r}"));
    (
        id.to_owned(),
        r["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// The provider as `org`'s identity provider, with this gateway's client.
async fn add_provider(idp: &Service, g: &Gateway, org: &str) {
    let (client_id, client_secret) = register_client(idp, g).await;
    let (s, p) = g
        .admin(
            Method::POST,
            &format!("/orgs/{org}/idps"),
            Some(
                json!({"issuer": idp.url("http"), "audience": "urn:peat:gateway",
                "client_id": client_id, "client_secret": client_secret}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{p}");
}

/// From the sign-in screen through the provider's login (and consent) back to the gateway.
async fn sso(b: &Browser, g: &Gateway, idp: &Service, org: &str, login: &str) {
    b.type_into("#sso-org", org).await;
    b.click("#sso").await;
    let until = Instant::now() + Duration::from_secs(30);
    let mut left = false;
    loop {
        let url = b.url().await;
        left |= url.starts_with(&idp.url("http"));
        if left && url.starts_with(&g.base()) && url.contains("/_/") {
            return;
        }
        if b.count("input[name=login]").await > 0 {
            b.type_into("input[name=login]", login).await;
            b.type_into("input[name=password]", "any").await;
            b.click("button.login-submit").await;
        } else if b.count("button.login-submit").await > 0 {
            // The provider's consent page.
            b.click("button.login-submit").await;
        }
        assert!(Instant::now() < until, "the sign-in never came back: {url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn single_sign_on_gives_the_role_the_claim_rules_name_and_tokens_stay_the_way_in() {
    let mut idp = oidc().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("alpha", "Alpha Company").await;
    g.create_org("bravo", "Bravo Company").await;
    add_provider(&idp, &g, "alpha").await;
    let (s, r) = g
        .admin(
            Method::POST,
            "/orgs/alpha/policy-rules",
            Some(json!({"priority": 5, "effect": "deny",
                "conditions": [{"claim": "groups", "op": "contains", "value": "banned"}]})),
        )
        .await;
    assert_eq!(s, 201, "{r}");

    // The org-admin adds the operators' rule from the identity screen and tries it.
    let org_admin = g.org_token("alpha", "org-admin").await;
    let b = Browser::start().await;
    sign_in(&b, &g, &org_admin, "alpha · org-admin").await;
    b.goto(&format!("{}/_/#/orgs/alpha/identity", g.base()))
        .await;
    b.wait_text("main", "Claim rules", 10).await;
    b.type_into("#rule-claim", "groups").await;
    b.type_into("#rule-value", "kit-operators").await;
    b.exec(
        "document.getElementById('rule-role').value = 'operator'",
        json!([]),
    )
    .await;
    b.type_into("#rule-note", "kit operators").await;
    b.click("form.rule button[type=submit]").await;
    b.wait_text(
        "section[aria-label='Claim rules'] tbody",
        "kit operators",
        10,
    )
    .await;
    let roles = b
        .exec(
            "return [...document.querySelectorAll('.rule-role')].map(e => e.textContent)",
            json!([]),
        )
        .await;
    assert_eq!(
        roles,
        json!(["no sign-in", "operator"]),
        "deny first, then the new rule"
    );
    b.type_into(
        "#eval-input",
        r#"{"sub": "ana", "groups": ["kit-operators"]}"#,
    )
    .await;
    b.click("section[aria-label='Rule tester'] button[type=submit]")
        .await;
    b.wait_text(".eval-signin", "signs in as operator", 10)
        .await;
    b.type_into(
        "#eval-input",
        r#"{"sub": "eve", "groups": ["kit-operators", "banned"]}"#,
    )
    .await;
    b.click("section[aria-label='Rule tester'] button[type=submit]")
        .await;
    b.wait_text(".eval-signin", "cannot sign in", 10).await;
    b.scroll_to("section[aria-label='Claim rules']").await;
    shoot(&b, "identity-rules").await;
    b.scroll_to("#eval-result").await;
    shoot(&b, "identity-tester").await;
    b.click("#signout").await;
    b.wait("#sso-org").await;
    shoot(&b, "sign-in-sso").await;
    quiet(&b).await;

    // Ana signs in through the provider: operator of alpha, as the rule says.
    sso(&b, &g, &idp, "alpha", "ana").await;
    b.wait_text("#who", "alpha · operator", 20).await;
    b.wait_text("#live", "Signed in as ana@kit.lan", 10).await;
    let held = b
        .exec(
            "return sessionStorage.getItem('peat-gateway.token')",
            json!([]),
        )
        .await;
    let session_token = held.as_str().unwrap().to_owned();
    assert!(session_token.starts_with("pgs_"), "{session_token}");
    assert!(!b.url().await.contains("pgs_"), "never in a URL");
    let cookies = b.exec("return document.cookie", json!([])).await;
    assert_eq!(cookies, "", "no script-readable cookie");
    let (s, me) = g
        .call(Method::GET, "/whoami", Some(&session_token), None)
        .await;
    assert_eq!((s, me["role"].as_str()), (200, Some("operator")), "{me}");
    let (_, sessions) = g.admin(Method::GET, "/orgs/alpha/sessions", None).await;
    assert_eq!(
        sessions["sessions"][0]["subject"], "ana@kit.lan",
        "{sessions}"
    );
    // The session is alpha's alone.
    let (s, _) = g
        .call(Method::GET, "/orgs/bravo", Some(&session_token), None)
        .await;
    assert_eq!(s, 404);
    b.goto(&format!("{}/_/#/orgs/alpha/sinks", g.base())).await;
    b.wait("#sinks").await;
    assert_eq!(
        b.count("form.create-sink").await,
        0,
        "an operator creates no sinks"
    );
    shoot(&b, "signed-in-by-sso").await;

    // Sign-out ends the session on the gateway, not only in the tab.
    b.click("#signout").await;
    b.wait("#sso-org").await;
    let (s, _) = g
        .call(Method::GET, "/whoami", Some(&session_token), None)
        .await;
    assert_eq!(s, 401, "the session ended with the sign-out");

    // Mallory's claims match the deny rule: refused with the rule's words, and audited.
    sso(&b, &g, &idp, "alpha", "mallory").await;
    b.wait_text(".error", "denies this identity", 20).await;
    assert_eq!(b.count("#nav:not([hidden])").await, 0);
    let (_, audit) = g
        .admin(
            Method::GET,
            "/orgs/alpha/audit?action=session.sign-in&limit=10",
            None,
        )
        .await;
    let outcomes: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert!(outcomes.contains(&"ok"), "{audit}");
    assert!(outcomes.iter().any(|o| o.starts_with("refused")), "{audit}");

    // An org without single sign-on says so; bravo is not found any differently.
    b.type_into("#sso-org", "bravo").await;
    b.click("#sso").await;
    b.wait_text(".error", "sso_not_configured", 10).await;

    // The provider is down: single sign-on says so, the token is the way in.
    idp.kill();
    b.type_into("#sso-org", "alpha").await;
    b.click("#sso").await;
    b.wait_text(".error", "idp_unreachable", 20).await;
    shoot(&b, "sign-in-idp-down").await;
    let operator = g.org_token("alpha", "operator").await;
    b.type_into("#token", &format!("{operator}\n")).await;
    b.wait_text("#who", "alpha · operator", 10).await;

    // The provider's development login page asks for web fonts (blocked: every name resolves
    // to nothing here); that is its page, not ours. The 503 is the refusal the screen showed.
    let theirs = |e: &String| e.contains("fonts.googleapis.com");
    let errors: Vec<String> = b
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !theirs(e) && !api_refusal(e))
        .filter(|e| {
            !e.contains(
                "/sso/start - Failed to load resource: the server responded with a status of 503",
            )
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let off: Vec<String> = b
        .requested_urls()
        .await
        .into_iter()
        .filter(|u| u.starts_with("http") && !u.starts_with("http://127.0.0.1:") && !theirs(u))
        .collect();
    assert!(off.is_empty(), "requests off loopback: {off:?}");
}

/// The provider refuses a code it never issued: the gateway opens no session, the browser is
/// told why in the provider's words, and the refusal is audited against the org.
#[tokio::test]
async fn a_code_the_provider_refuses_opens_no_session_and_says_why() {
    let idp = oidc().await;
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("alpha", "Alpha Company").await;
    add_provider(&idp, &g, "alpha").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{}/sso/start", g.base()))
        .json(&json!({"org_id": "alpha"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let url: Value = r.json().await.unwrap();
    let url = reqwest::Url::parse(url["authorize_url"].as_str().unwrap()).unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let r = http
        .get(format!("{}/sso/callback", g.base()))
        .query(&[("state", state.as_str()), ("code", "never-issued")])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .post(format!("{}/sso/session", g.base()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("exchanging the code") && msg.contains("invalid_grant"),
        "{body}"
    );
    let (_, audit) = g.admin(Method::GET, "/orgs/alpha/audit", None).await;
    assert!(
        audit
            .to_string()
            .contains("refused: the identity provider refused: exchanging the code"),
        "{audit}"
    );
}
