//! Crash safety of the state store: SIGKILL during writes leaves only whole operations.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, GatewayOpts};

#[tokio::test]
async fn sigkill_during_formation_creation_leaves_every_acknowledged_formation_whole() {
    let mut g = Gateway::start(GatewayOpts::standard()).await;
    g.admin(
        Method::POST,
        "/orgs",
        Some(json!({"org_id": "acme", "display_name": "Acme", "quotas": {"max_formations": 1000}})),
    )
    .await;
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..40 {
            let req = g
                .req(
                    Method::POST,
                    "/orgs/acme/formations",
                    Some(crate::harness::ADMIN),
                )
                .json(&json!({"app_id": format!("r{round}-m{i}")}));
            pending.spawn(async move { (i, req.send().await.map(|r| r.status().as_u16())) });
        }
        tokio::time::sleep(std::time::Duration::from_millis(15 + round * 10)).await;
        g.kill();
        while let Some(Ok((i, res))) = pending.join_next().await {
            if let Ok(201) = res {
                acknowledged.push(format!("r{round}-m{i}"));
            }
        }
        g.restart_with(g.opts.clone()).await;
    }
    let (_, list) = g
        .admin(Method::GET, "/orgs/acme/formations?limit=1000", None)
        .await;
    let present: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["app_id"].as_str().unwrap().to_owned())
        .collect();
    for a in &acknowledged {
        assert!(present.contains(a), "acknowledged formation {a} lost");
    }
    for p in &present {
        let (s, _) = g
            .admin(
                Method::GET,
                &format!("/orgs/acme/formations/{p}/credentials"),
                None,
            )
            .await;
        assert_eq!(s, 200, "formation {p} survived without its genesis");
    }
    let (_, ready) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(ready["ready"], true);
}
