//! Prometheus metrics of the whole gateway, exposed as text at `GET /metrics`.
//!
//! Labels carry route templates and status codes, never org names, ids or secrets.

use std::fmt::Write as _;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub store_commit_seconds: Histogram,
    pub store_commit_ops: Histogram,
    pub orgs: Gauge,
    pub formations: Gauge,
    pub ready: Gauge,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("peat_gateway");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        let store_commit_seconds = latency_buckets();
        let store_commit_ops = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        let orgs = Gauge::default();
        let formations = Gauge::default();
        let ready = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            http_duration.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "State store group-commit latency, fsync included",
            store_commit_seconds.clone(),
        );
        registry.register(
            "store_commit_operations",
            "Operations per state store group commit",
            store_commit_ops.clone(),
        );
        registry.register("orgs", "Organizations", orgs.clone());
        registry.register(
            "formations",
            "Formations across all organizations",
            formations.clone(),
        );
        registry.register(
            "ready",
            "1 when the gateway is ready to serve, else 0",
            ready.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            store_commit_seconds,
            store_commit_ops,
            orgs,
            formations,
            ready,
        }
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
