//! What `demo` adds to an ordinary start: its KEK beside its data, a fresh admin token, org
//! `demo` with formation `demo-mesh` bound to the simulated node, a file sink and the broker
//! sinks asked for, and the guide printed once it serves.

use std::path::Path;

use anyhow::Context;
use peat_gateway::mesh::MembershipPolicy;
use peat_gateway::tenant::{
    Actor, Need, NewFormation, NewOrg, NewSink, NewSource, Principal, SinkSpec, Tenancy,
    TenantError,
};

/// The demo's KEK lives beside its data: fine for a demo, never for a kit.
pub(super) fn demo_kek(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("demo.kek");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    let k = peat_gateway::keys::random_secret32()?;
    let hexed = hex::encode(k.as_ref());
    super::write_new_private(&path, &hexed)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hexed)
}

/// Demo seeding: a fresh admin token, org `demo`, formation `demo-mesh` bound to the
/// simulated node at `node_url`, and a file sink.
pub(super) struct Seed {
    pub(super) node_url: String,
    pub(super) nats_url: Option<String>,
    pub(super) mqtt_url: Option<String>,
    pub(super) redis_url: Option<String>,
    pub(super) kafka_brokers: Option<String>,
}

pub(super) async fn seed_demo(t: &Tenancy) -> Result<(), TenantError> {
    let actor = Actor::cli("demo");
    match t
        .create_org(
            &actor,
            NewOrg {
                org_id: "demo".into(),
                display_name: "Demo organization".into(),
                quotas: Default::default(),
            },
        )
        .await
    {
        Ok(_) | Err(TenantError::Conflict { .. }) => {}
        Err(e) => return Err(e),
    }
    let scope = Principal::Admin { dev_open: false }.scope("demo", Need::Manage, "seed")?;
    match t
        .create_formation(
            &scope,
            NewFormation {
                app_id: "demo-mesh".into(),
                policy: Some(MembershipPolicy::Controlled),
                genesis: None,
            },
        )
        .await
    {
        Ok(_) | Err(TenantError::Conflict { .. }) => {}
        Err(e) => return Err(e),
    }
    if t.list_sinks(&scope).await?.is_empty() {
        t.create_sink(
            &scope,
            NewSink::everything(SinkSpec::File {
                name: "events".into(),
            }),
        )
        .await?;
    }
    Ok(())
}

/// NATS and MQTT sinks for the demo org when their URLs are given, once.
pub(super) async fn demo_broker_sinks(t: &Tenancy, seed: &Seed) -> Result<(), TenantError> {
    let scope = Principal::Admin { dev_open: false }.scope("demo", Need::Manage, "seed")?;
    let existing: Vec<&'static str> = t
        .list_sinks(&scope)
        .await?
        .iter()
        .map(|d| d.spec.kind())
        .collect();
    let mut wanted = Vec::new();
    if let Some(url) = &seed.nats_url {
        wanted.push(SinkSpec::Nats {
            subject_prefix: "peat".into(),
            url: Some(url.clone()),
            stream: None,
            tls_ca_pem: None,
        });
    }
    if let Some(url) = &seed.mqtt_url {
        wanted.push(SinkSpec::Mqtt {
            url: url.clone(),
            topic_prefix: "peat".into(),
            tls_ca_pem: None,
        });
    }
    if let Some(url) = &seed.redis_url {
        wanted.push(SinkSpec::RedisStreams {
            url: url.clone(),
            stream: "peat-{org}-{app}".into(),
            maxlen: Some(100_000),
            tls_ca_pem: None,
        });
    }
    if let Some(brokers) = &seed.kafka_brokers {
        wanted.push(SinkSpec::Kafka {
            topic: "peat-demo".into(),
            brokers: Some(brokers.clone()),
            tls: false,
            tls_ca_pem: None,
            sasl_mechanism: None,
            sasl_username: None,
            compression: None,
            batch_size: None,
        });
    }
    for spec in wanted.into_iter().filter(|s| !existing.contains(&s.kind())) {
        t.create_sink(&scope, NewSink::everything(spec)).await?;
    }
    Ok(())
}

pub(super) async fn bind_demo_source(t: &Tenancy, node_url: &str) -> Result<(), TenantError> {
    let scope = Principal::Admin { dev_open: false }.scope("demo", Need::Manage, "seed")?;
    t.put_source(
        &scope,
        "demo-mesh",
        NewSource {
            endpoint: node_url.to_owned(),
            collections: vec!["tracks".into(), "nodes".into()],
            token: None,
            reconcile_secs: 60,
            full_policy: None,
            tls_ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            node_id: None,
        },
    )
    .await?;
    Ok(())
}

pub(super) fn print_demo_guide(addr: &str, data_dir: &Path) {
    println!("peat-gateway demo is running at http://{addr}  (Ctrl-C stops it)");
    println!("  readiness:    curl -s http://{addr}/ready");
    println!("  metrics:      curl -s http://{addr}/metrics");
    println!("  API document: curl -s http://{addr}/openapi.json");
    println!("  formations:   curl -s -H \"Authorization: Bearer $TOKEN\" http://{addr}/orgs/demo/formations");
    println!(
        "  audit log:    curl -s -H \"Authorization: Bearer $TOKEN\" http://{addr}/orgs/demo/audit"
    );
    println!("  send changes: curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\");
    println!("                  -d '[{{\"collection\":\"tracks\",\"doc_id\":\"t-1\",\"op\":\"upsert\",\"data\":{{\"lat\":1.5}}}}]' \\");
    println!("                  http://{addr}/orgs/demo/formations/demo-mesh/changes");
    println!(
        "  sink status:  curl -s -H \"Authorization: Bearer $TOKEN\" http://{addr}/orgs/demo/sinks"
    );
    println!(
        "  events land in {} (one CloudEvent per line)",
        data_dir
            .join("sinks")
            .join("demo")
            .join("events.jsonl")
            .display()
    );
    println!();
}
