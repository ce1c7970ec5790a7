//! The README's route table is the router's: compared against `/openapi.json`.

use std::collections::BTreeSet;

use reqwest::Method;

use crate::harness::{Gateway, GatewayOpts};

#[tokio::test]
async fn readme_route_table_matches_the_served_openapi_document() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let method = cells.get(1)?.trim_matches('`');
            let path = cells.get(2)?.trim_matches('`');
            (["GET", "POST", "PATCH", "DELETE", "PUT"].contains(&method) && path.starts_with('/'))
                .then(|| format!("{method} {path}"))
        })
        .collect();
    let g = Gateway::start(GatewayOpts::standard()).await;
    let (_, doc) = g.call(Method::GET, "/openapi.json", None, None).await;
    let served: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {p}", m.to_uppercase()))
        })
        .collect();
    assert_eq!(documented, served, "README route table and router differ");
}
