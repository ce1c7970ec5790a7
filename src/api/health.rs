//! Liveness, readiness, metrics and the API document (all public).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::book::{Access, Doc, RouteBook};
use super::AppState;

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    let public = |summary| Doc {
        summary,
        access: Access::Public,
        body: None,
        ok: 200,
    };
    book.get("/health", health, public("Liveness: the process answers"))
        .get(
            "/ready",
            ready,
            public("Readiness with reasons: state store and key provider"),
        )
        .get(
            "/metrics",
            metrics,
            public("Prometheus metrics in text format"),
        )
        .get(
            "/about",
            about,
            public("Version, build, cargo features compiled in and the embedded UI's size"),
        )
        .get(
            "/openapi.json",
            openapi,
            public("This API's OpenAPI 3.1 document"),
        )
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn about(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Json<Value> {
    let features: Vec<&str> = [
        ("tpm", cfg!(feature = "tpm")),
        ("tpm-sim", cfg!(feature = "tpm-sim")),
        ("nats", cfg!(feature = "nats")),
        ("mqtt", cfg!(feature = "mqtt")),
        ("mqtt5", cfg!(feature = "mqtt5")),
        ("webhook", cfg!(feature = "webhook")),
        ("oidc", cfg!(feature = "oidc")),
        ("redis", cfg!(feature = "redis")),
        ("kafka", cfg!(feature = "kafka")),
        ("vault", cfg!(feature = "vault")),
        ("aws-kms", cfg!(feature = "aws-kms")),
        ("ui", cfg!(feature = "ui")),
        ("dev", cfg!(feature = "dev")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    let (ui_files, ui_bytes) = super::ui::embedded_payload();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        // Set by image builds (Yocto, Nix) to name the source they built.
        "build": option_env!("PEAT_GATEWAY_BUILD_ID"),
        "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        "features": features,
        "sink_types": super::sink_body::BUILT_TYPES,
        "ui": {"embedded_files": ui_files, "embedded_gzip_bytes": ui_bytes},
        // Gateway-wide figures: the admin's (or everyone's with PEAT_PUBLIC_DETAIL).
        "data_dir": if s.detail_for(&headers).await {
            json!({"state_bytes": s.tenancy.store().file_bytes(),
                "outbox_bytes": s.cdc.outbox().file_bytes(),
                "free_bytes": s.tenancy.store().free_bytes()})
        } else {
            Value::Null
        },
    }))
}

/// 200 when every check passes, else 503; the body names each check and why it failed.
async fn ready(State(s): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    // A latched store reopens here too once space is back, not only at the next write.
    let _ = s.tenancy.store().try_recover().await;
    s.cdc.outbox().try_recover().await;
    let problems: Vec<String> = [
        ("state store", s.tenancy.store().write_problem()),
        ("outbox", s.cdc.outbox().write_problem()),
    ]
    .into_iter()
    .filter_map(|(what, p)| p.map(|p| format!("{what}: {p}")))
    .collect();
    let store_ok = problems.is_empty();
    let probe = s.keys.health.report();
    // A provider not yet probed counts as ready: start-up already opened records with it.
    let keys_ok = s.keys.problem.is_none() && probe.ok != Some(false);
    let links = s.sources.all_health();
    let wrong = links.iter().filter(|(_, h)| h.wrong_node.is_some()).count();
    let connected = links.iter().filter(|(_, h)| h.connected).count();
    let down = links
        .iter()
        .filter(|(d, h)| d.granted && !h.connected)
        .count();
    let sources_ok = wrong == 0 && !(s.ready_requires_nodes && down > 0);
    let now = crate::tenant::now_ms();
    let detail: Vec<Value> = links
        .iter()
        .map(|(d, h)| {
            json!({"org": d.org_id, "app": d.app_id, "state": h.state(d), "node_id": h.node_id,
                "pinned_node_id": d.node_id, "reconcile_secs": d.reconcile_secs,
                "seconds_since_last_frame": h.last_event_ms.map(|t| now.saturating_sub(t) / 1000),
                "refused_documents": h.refused_total(), "last_error": h.last_error})
        })
        .collect();
    let reason = if wrong > 0 {
        Some(format!("{wrong} source(s) answer with another node id than the pinned one; capture from them is refused (see each formation's source status)"))
    } else if !sources_ok {
        Some(format!(
            "{down} node link(s) down (PEAT_READY_REQUIRES_NODES is set)"
        ))
    } else {
        None
    };
    let ok = store_ok && keys_ok && sources_ok;
    s.metrics.ready.set(i64::from(ok));
    let body = json!({
        "ready": ok,
        "checks": {
            "store": {
                "ok": store_ok,
                "reason": if store_ok { Value::Null } else { json!(problems.join("; ")) },
            },
            "keys": {
                "ok": keys_ok,
                "provider": s.keys.provider,
                "kek_id": s.keys.kek_id,
                "records_checked": s.keys.records_checked,
                "reason": s.keys.problem.clone().or_else(|| {
                    probe.error.as_ref().map(|e| format!("the key provider failed its last probe: {e}"))
                }),
                "probe": {
                    "ok": probe.ok,
                    "checked_at": probe.checked_at_ms.map(crate::cdc::rfc3339_ms),
                    "round_trip_ms": probe.round_trip_ms,
                    "consecutive_failures": probe.consecutive_failures,
                },
            },
            "sources": {
                "ok": sources_ok,
                "bound": links.len(),
                "connected": connected,
                "wrong_node": wrong,
                "down": down,
                "requires_nodes": s.ready_requires_nodes,
                "reason": reason,
                "links": detail,
            },
        }
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if s.detail_for(&headers).await {
        return (status, Json(body));
    }
    // Without the admin token: which checks pass, nothing that names or counts anything.
    let mut checks = serde_json::Map::new();
    if let Some(all) = body["checks"].as_object() {
        for (k, v) in all {
            checks.insert(k.clone(), json!({"ok": v["ok"]}));
        }
    }
    (
        status,
        Json(json!({"ready": ok, "checks": checks,
            "detail": "send the admin token (or set PEAT_PUBLIC_DETAIL) for reasons and figures"})),
    )
}

/// Metric families that name or count tenants, sinks or keys: shown to the admin only unless
/// the operator made them public.
const DETAIL_FAMILIES: &[&str] = &[
    "peat_gateway_sink_",
    "peat_gateway_outbox_org_",
    "peat_gateway_orgs",
    "peat_gateway_formations",
    "peat_gateway_key_provider_info",
    "peat_gateway_source",
];

fn without_detail(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let name = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            !DETAIL_FAMILIES.iter().any(|f| name.starts_with(f))
        })
        .flat_map(|l| [l, "\n"])
        .collect()
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    s.metrics.observe_cdc(&s.cdc);
    s.metrics.observe_sources(&s.sources);
    s.metrics
        .tls_not_after
        .set(s.activity.tls_not_after().unwrap_or(0));
    if let Ok((orgs, formations)) = s.tenancy.counts().await {
        s.metrics.orgs.set(i64::try_from(orgs).unwrap_or(i64::MAX));
        s.metrics
            .formations
            .set(i64::try_from(formations).unwrap_or(i64::MAX));
    }
    s.metrics.ready.set(i64::from(
        !s.tenancy.store().is_poisoned()
            && !s.cdc.outbox().is_poisoned()
            && s.keys.problem.is_none()
            && s.keys.health.report().ok != Some(false),
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        if s.detail_for(&headers).await {
            s.metrics.render()
        } else {
            without_detail(&s.metrics.render())
        },
    )
}

async fn openapi(State(s): State<AppState>) -> Json<Value> {
    Json(s.openapi.render())
}
