//! The operator UI in headless Chromium against the real gateway: sign-in, screens, errors as
//! the API states them, no console errors, nothing requested off loopback. Screenshots land
//! in `<target>/ui-screenshots/`.

use crate::harness::browser::{clean, shoot, sign_in, Browser};
use crate::harness::{Gateway, GatewayOpts, ADMIN};

#[tokio::test]
async fn an_operator_signs_in_sees_the_overview_creates_an_org_and_signs_out() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("alpha", "Alpha Company").await;
    let b = Browser::start().await;
    b.goto(&format!("{}/_/", g.base())).await;

    // A wrong token is refused with the API's own words, and nothing is kept.
    b.type_into("#token", "not-a-token\n").await;
    b.wait_text(".error", "unauthenticated (HTTP 401)", 10)
        .await;
    shoot(&b, "sign-in").await;

    b.type_into("#token", &format!("{ADMIN}\n")).await;
    b.wait_text("main", "READY", 10).await;
    let overview = b.wait_text("main", "Alpha Company", 10).await;
    assert!(
        overview.contains("keys") && overview.contains("store"),
        "{overview}"
    );
    b.wait_text("#alerts", "All clear", 10).await;
    b.wait_text("main", "Ingest and delivery", 10).await;
    let stored = b
        .exec(
            "return sessionStorage.length + ':' + location.href",
            serde_json::json!([]),
        )
        .await;
    assert!(
        !stored.as_str().unwrap_or_default().contains(ADMIN),
        "the token never appears in the URL"
    );
    shoot(&b, "overview").await;

    // Create an org from the Orgs screen; a duplicate shows the API's error.
    b.click("nav a[href='#/orgs']").await;
    b.type_into("#new-org", "bravo").await;
    b.type_into("#new-org-name", "Bravo Company\n").await;
    b.wait_text("main table", "bravo", 10).await;
    let (s, _) = g.admin(reqwest::Method::GET, "/orgs/bravo", None).await;
    assert_eq!(s, 200, "the org exists on the gateway");
    b.type_into("#new-org", "bravo").await;
    b.type_into("#new-org-name", "Again\n").await;
    b.wait_text(".error", "conflict", 10).await;
    shoot(&b, "orgs").await;

    b.click("nav a[href='#/about']").await;
    let about = b.wait_text("main", "features", 10).await;
    assert!(about.contains("ui"), "{about}");
    shoot(&b, "about").await;

    // The high-contrast theme is a toggle that says whether it is on.
    b.click("#theme").await;
    let hc = b
        .exec("return document.documentElement.classList.contains('hc') + ':' + document.getElementById('theme').getAttribute('aria-pressed')", serde_json::json!([]))
        .await;
    assert_eq!(hc, "true:true");
    shoot(&b, "about-high-contrast").await;

    clean(&b).await;

    b.click("#signout").await;
    b.wait("#token").await;
    let left = b
        .exec("return sessionStorage.length", serde_json::json!([]))
        .await;
    assert_eq!(left, 0, "sign-out forgets the token");
    assert_eq!(b.count("#nav:not([hidden])").await, 0);
}

#[tokio::test]
async fn a_viewer_sees_no_mutating_control_and_an_ingest_token_is_told_it_cannot_use_the_ui() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("alpha", "Alpha Company").await;
    g.create_org("bravo", "Bravo Company").await;
    let (s, b) = g
        .admin(
            reqwest::Method::POST,
            "/orgs/alpha/sinks",
            Some(serde_json::json!({"sink_type": {"File": {"name": "alpha-events"}}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let viewer = g.org_token("alpha", "viewer").await;
    let ingest = g.org_token("alpha", "ingest").await;
    let b = Browser::start().await;
    b.goto(&format!("{}/_/", g.base())).await;

    b.type_into("#token", &format!("{ingest}\n")).await;
    b.wait_text(".error", "cannot use the UI", 10).await;
    assert_eq!(
        b.count("#nav:not([hidden])").await,
        0,
        "no screens for ingest"
    );
    let kept = b
        .exec("return sessionStorage.length", serde_json::json!([]))
        .await;
    assert_eq!(kept, 0, "the refused token is not kept");
    shoot(&b, "sign-in-ingest-refused").await;

    b.type_into("#token", &format!("{viewer}\n")).await;
    b.wait_text("#who", "alpha · viewer", 10).await;
    b.wait_text("main", "Alpha Company", 10).await;
    for screen in [
        "#/overview",
        "#/orgs",
        "#/orgs/alpha",
        "#/orgs/alpha/sinks",
        "#/orgs/alpha/enrollment",
        "#/orgs/alpha/identity",
        "#/about",
    ] {
        b.goto(&format!("{}/_/{screen}", g.base())).await;
        b.wait("main h1").await;
        match screen {
            "#/orgs/alpha" => drop(b.wait_text("#sources h2", "updated", 10).await),
            "#/orgs/alpha/sinks" => drop(b.wait("#sinks table").await),
            "#/orgs/alpha/identity" => drop(b.wait_text("main", "Claim rules", 10).await),
            _ => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let text = b.text("main").await;
        assert!(
            !text.contains("Bravo"),
            "{screen} shows another org: {text}"
        );
        // `.view` marks controls that only show more (sink details).
        let controls = b
            .count("main form, main button:not(.view), main input, main select, main textarea")
            .await;
        assert_eq!(
            controls, 0,
            "{screen} offers a viewer {controls} mutating controls: {text}"
        );
    }
    shoot(&b, "orgs-viewer").await;
    clean(&b).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn the_sinks_screen_shows_a_backlog_grow_while_the_broker_is_down_and_drain_when_it_returns()
{
    use serde_json::json;
    let mut broker = crate::harness::service::redis(&[]).await;
    let url = broker.url("redis");
    let g = Gateway::start(GatewayOpts::standard()).await;
    let mut sinks = Vec::new();
    for org in ["alpha", "bravo"] {
        g.create_org(org, org).await;
        g.create_formation(org, "mesh").await;
        let (s, b) = g
            .admin(
                reqwest::Method::POST,
                &format!("/orgs/{org}/sinks"),
                Some(json!({"sink_type": {"RedisStreams": {"url": url, "stream": org}}})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        sinks.push(b["sink_id"].as_str().unwrap().to_owned());
    }
    let ingest = |org: &'static str, n: usize| {
        let docs = (0..n)
            .map(|i| (format!("d{i}"), json!({"org": org})))
            .collect();
        g.upsert(org, "mesh", "tracks", docs)
    };

    let b = Browser::start().await;
    b.goto(&format!("{}/_/", g.base())).await;
    b.type_into("#token", &format!("{ADMIN}\n")).await;
    b.wait_text("main", "READY", 10).await;
    b.goto(&format!("{}/_/#/orgs/alpha/sinks", g.base())).await;
    let row = format!("tr[data-sink='{}']", sinks[0]);
    b.wait(&row).await;
    assert_eq!(
        b.count(&format!("tr[data-sink='{}']", sinks[1])).await,
        0,
        "alpha's screen lists no sink of bravo"
    );

    broker.kill();
    ingest("alpha", 20).await;
    ingest("bravo", 5).await;
    b.wait_text(&format!("{row} .sink-backlog"), "20 events", 30)
        .await;
    b.wait_text(&format!("{row} .sink-state"), "disconnected", 60)
        .await;
    shoot(&b, "sinks-broker-down").await;
    // The overview says it at a glance: the alert, the backlog and its drain.
    b.goto(&format!("{}/_/#/overview", g.base())).await;
    let alerts = b.wait_text("#alerts", "cannot reach its target", 20).await;
    assert!(alerts.contains("alpha"), "{alerts}");
    b.wait_text(
        &format!("li[data-sink='{}']", sinks[0]),
        "backlog 20 events",
        10,
    )
    .await;
    shoot(&b, "overview-alerts").await;
    b.goto(&format!("{}/_/#/orgs/alpha/sinks", g.base())).await;
    b.wait(&row).await;

    broker.start_again().await;
    b.wait_text(&format!("{row} .sink-state"), "idle", 90).await;
    let backlog = b.text(&format!("{row} .sink-backlog")).await;
    assert!(backlog.starts_with("0 events"), "drained: {backlog}");
    shoot(&b, "sinks-drained").await;

    // Pause and resume from the screen; the gateway's definition follows.
    b.click(&format!("{row} button")).await;
    b.wait_text(&format!("{row} .sink-state"), "paused", 15)
        .await;
    let (_, def) = g
        .admin(
            reqwest::Method::GET,
            &format!("/orgs/alpha/sinks/{}", sinks[0]),
            None,
        )
        .await;
    assert_eq!(def["enabled"], false);
    b.click(&format!("{row} button")).await;
    b.wait_text(&format!("{row} .sink-state"), "idle", 15).await;
    clean(&b).await;
}

#[tokio::test]
async fn an_org_admin_issues_a_token_shown_once_revokes_it_and_reads_the_audit() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("alpha", "Alpha Company").await;
    g.create_org("bravo", "Bravo Company").await;
    let bravo_token = g.org_token("bravo", "viewer").await;
    let org_admin = g.org_token("alpha", "org-admin").await;
    let b = Browser::start().await;
    sign_in(&b, &g, &org_admin, "alpha · org-admin").await;
    b.goto(&format!("{}/_/#/orgs/alpha/tokens", g.base())).await;
    b.wait("#tok-name").await;
    assert!(!b.text("main").await.contains("bravo"), "no token of bravo");

    b.type_into("#tok-name", "field laptop").await;
    b.exec(
        "document.getElementById('tok-role').value = 'operator'",
        serde_json::json!([]),
    )
    .await;
    b.click("form button[type=submit]").await;
    b.wait(".once #secret").await;
    let secret = b.value("#secret").await;
    let (s, me) = g
        .call(reqwest::Method::GET, "/whoami", Some(&secret), None)
        .await;
    assert_eq!((s, me["role"].as_str()), (200, Some("operator")), "{me}");
    shoot(&b, "tokens-created-once").await;

    // Leaving the screen forgets the secret: it is never shown again.
    b.goto(&format!("{}/_/#/orgs/alpha", g.base())).await;
    // The org's screen replaced the tokens screen before going back (else the old one is read).
    b.wait("#new-app").await;
    b.goto(&format!("{}/_/#/orgs/alpha/tokens", g.base())).await;
    b.wait_text("main table", "field laptop", 10).await;
    assert!(!b.text("body").await.contains(&secret));
    assert_eq!(b.count("#secret").await, 0);

    let row = format!("tr[data-token='{}']", me["token_id"].as_str().unwrap());
    b.click(&format!("{row} button")).await;
    b.accept_dialog().await;
    b.wait_text("#live", "revoked", 10).await;
    let (s, _) = g
        .call(reqwest::Method::GET, "/whoami", Some(&secret), None)
        .await;
    assert_eq!(s, 401, "the revoked token no longer works");
    assert_eq!(b.count(&row).await, 0);

    b.click("nav.tabs a[href$='/audit']").await;
    let log = b.wait_text("main table", "api-token.create", 10).await;
    assert!(
        log.contains("api-token.revoke") || log.contains("api-token.delete"),
        "{log}"
    );
    b.wait_text("#chain", "CHAIN INTACT", 10).await;
    b.type_into("#audit-action", "api-token.rev\n").await;
    b.wait_text("main", "matching entries among", 10).await;
    let filtered = b.text("main table tbody").await;
    assert!(!filtered.contains("api-token.create"), "{filtered}");
    assert!(filtered.contains("api-token.revoke"), "{filtered}");
    shoot(&b, "audit").await;
    // bravo's token still works: nothing of bravo was touched.
    let (s, _) = g
        .call(reqwest::Method::GET, "/whoami", Some(&bravo_token), None)
        .await;
    assert_eq!(s, 200);
    clean(&b).await;
}

#[tokio::test]
async fn formations_are_created_exported_as_a_file_and_deleted_only_when_the_name_is_typed() {
    let g = Gateway::start(GatewayOpts::standard()).await;
    g.create_org("alpha", "Alpha Company").await;
    g.create_org("bravo", "Bravo Company").await;
    g.create_formation("bravo", "bravo-mesh").await;
    let org_admin = g.org_token("alpha", "org-admin").await;
    let b = Browser::start().await;
    sign_in(&b, &g, &org_admin, "alpha · org-admin").await;
    b.goto(&format!("{}/_/#/orgs/alpha", g.base())).await;
    b.type_into("#new-app", "field-mesh\n").await;
    let row = "tr[data-formation='field-mesh']";
    b.wait(row).await;
    let (s, f) = g
        .admin(
            reqwest::Method::GET,
            "/orgs/alpha/formations/field-mesh",
            None,
        )
        .await;
    assert_eq!(
        (s, f["enrollment_policy"].as_str()),
        (200, Some("Controlled")),
        "{f}"
    );
    assert!(b.text(row).await.contains(f["mesh_id"].as_str().unwrap()));
    assert!(
        !b.text("main").await.contains("bravo-mesh"),
        "another org's formation"
    );
    shoot(&b, "formations").await;

    b.click(&format!("{row} button.export")).await;
    let file = b.downloaded("alpha-field-mesh-credentials.json").await;
    let creds: serde_json::Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(creds["mesh_id"], f["mesh_id"]);
    assert!(creds["formation_secret"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    // The same credentials as a QR code: read back from the screen, they are the file's.
    b.click(&format!("{row} button.show-qr")).await;
    b.scroll_to(".qr").await;
    let scanned: serde_json::Value = serde_json::from_str(&b.read_qr(".qr").await).unwrap();
    assert_eq!(scanned, creds, "the QR code holds the exported credentials");
    shoot(&b, "formation-credentials-qr").await;
    b.click(".qr-box button").await;
    assert_eq!(b.count(".qr").await, 0, "hidden");

    // A wrong name deletes nothing; the right one deletes.
    for (typed, shown, status) in [("field", ".error", 200), ("field-mesh", "#live", 404)] {
        b.click(&format!("{row} button.danger")).await;
        b.answer_prompt(typed).await;
        let said = if status == 200 {
            "nothing was deleted"
        } else {
            "deleted"
        };
        b.wait_text(shown, said, 10).await;
        let (s, _) = g
            .admin(
                reqwest::Method::GET,
                "/orgs/alpha/formations/field-mesh",
                None,
            )
            .await;
        assert_eq!(s, status, "after typing {typed:?}");
    }
    let (_, audit) = g
        .admin(reqwest::Method::GET, "/orgs/alpha/audit?limit=100", None)
        .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.iter().any(|a| a.contains("credentials")),
        "the export is audited: {actions:?}"
    );
    clean(&b).await;
}

#[tokio::test]
async fn an_operator_approves_and_denies_enrollments_and_revokes_a_certificate() {
    use crate::enroll::{boot_token, device, enroll_json, formation, request, ENROLL};
    use peat_gateway::mesh::MeshTier;
    let (g, mesh_id, _) = formation("Strict", &[]).await;
    g.create_org("bravo", "Bravo Company").await;
    g.create_formation("bravo", "bravo-mesh").await;
    let token = boot_token(&g, serde_json::json!({"app_id": "mesh", "tier": "Edge"})).await;
    for (n, node) in [(0x61, "alice"), (0x62, "bob")] {
        let r = request(&device(n), &mesh_id, node, MeshTier::Edge, &token);
        let (s, body) = enroll_json(&g, ENROLL, &r).await;
        assert_eq!(s, 202, "{body}");
    }
    let operator = g.org_token("acme", "operator").await;
    let b = Browser::start().await;
    sign_in(&b, &g, &operator, "acme · operator").await;
    b.goto(&format!("{}/_/#/orgs/acme/enrollment", g.base()))
        .await;
    b.wait_text("main", "Pending approvals (2)", 10).await;
    assert!(!b.text("main").await.contains("bravo-mesh"));
    shoot(&b, "enrollment-pending").await;

    // A request made while the screen is open appears on it by itself.
    b.wait_text("main .livebadge", "live", 10).await;
    let r = request(&device(0x63), &mesh_id, "carol", MeshTier::Edge, &token);
    let (s, body) = enroll_json(&g, ENROLL, &r).await;
    assert_eq!(s, 202, "{body}");
    b.wait_text("#pending", "Pending approvals (3)", 10).await;
    assert!(b.text("#pending").await.contains("carol"));

    let pending = |node: &'static str| {
        let g = &g;
        async move {
            let (_, list) = g
                .admin(reqwest::Method::GET, "/orgs/acme/enrollments", None)
                .await;
            list["enrollments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["node_id"] == node)
                .cloned()
                .unwrap()
        }
    };
    let alice = pending("alice").await;
    let bob = pending("bob").await;
    let row = |p: &serde_json::Value| {
        format!(
            "tr[data-enrollment='{}']",
            p["enrollment_id"].as_str().unwrap()
        )
    };

    b.click(&format!("{} button.approve", row(&alice))).await;
    b.wait_text("#live", "alice approved", 10).await;
    assert_eq!(pending("alice").await["status"], "approved");

    b.click(&format!("{} button.deny", row(&bob))).await;
    b.answer_prompt("not one of ours").await;
    b.wait_text("#live", "bob denied", 10).await;
    let bob = pending("bob").await;
    assert_eq!(
        (bob["status"].as_str(), bob["reason"].as_str()),
        (Some("denied"), Some("not one of ours"))
    );
    b.wait_text("main", "Pending approvals (1)", 10).await;

    let cert = format!(
        "tr[data-cert='{}']",
        pending("alice").await["fingerprint"].as_str().unwrap()
    );
    b.wait_text(&format!("{cert} .cert-state"), "valid", 10)
        .await;
    b.click(&format!("{cert} button")).await;
    b.answer_prompt("device lost").await;
    b.wait_text(&format!("{cert} .cert-state"), "revoked", 10)
        .await;
    let (_, certs) = g
        .admin(
            reqwest::Method::GET,
            "/orgs/acme/formations/mesh/certificates",
            None,
        )
        .await;
    assert_eq!(certs["certificates"][0]["state"], "revoked", "{certs}");
    assert_eq!(
        certs["certificates"][0]["revocation"]["reason"],
        "device lost"
    );
    shoot(&b, "enrollment-certificates").await;
    clean(&b).await;
}

#[tokio::test]
async fn a_bootstrap_token_made_in_the_ui_admits_a_device_until_it_is_revoked() {
    use crate::enroll::{device, enroll_json, formation, request, ENROLL};
    use peat_gateway::mesh::MeshTier;
    let (g, mesh_id, _) = formation("Controlled", &[]).await;
    let org_admin = g.org_token("acme", "org-admin").await;
    let b = Browser::start().await;
    sign_in(&b, &g, &org_admin, "acme · org-admin").await;
    b.goto(&format!("{}/_/#/orgs/acme/enrollment", g.base()))
        .await;
    b.type_into("#boot-label", "kit 7").await;
    b.type_into("#boot-uses", "2").await;
    b.click("form button[type=submit]").await;
    b.wait(".once #secret").await;
    let secret = b.value("#secret").await;
    shoot(&b, "bootstrap-token-once").await;

    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x71), &mesh_id, "radio-1", MeshTier::Edge, &secret),
    )
    .await;
    assert!(
        s == 200 || s == 201,
        "the token from the screen admits a device: {s} {body}"
    );

    b.goto(&format!("{}/_/#/orgs/acme", g.base())).await;
    b.goto(&format!("{}/_/#/orgs/acme/enrollment", g.base()))
        .await;
    b.wait_text("main", "1 of 2", 10).await;
    assert!(!b.text("body").await.contains(&secret), "shown once");
    b.click("tr[data-boot] button.danger").await;
    b.accept_dialog().await;
    b.wait_text("tr[data-boot] .boot-state", "revoked", 10)
        .await;
    let (s, body) = enroll_json(
        &g,
        ENROLL,
        &request(&device(0x72), &mesh_id, "radio-2", MeshTier::Edge, &secret),
    )
    .await;
    assert!(
        (400..500).contains(&s),
        "a revoked token admits nobody: {s} {body}"
    );
    clean(&b).await;
}
