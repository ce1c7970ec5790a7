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

/// The key provider in use and its KEK id (a hash, not the key).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub provider: String,
    pub kek_id: String,
}

/// An enrollment outcome: `approved`, `pending`, `denied`, `revoked`, `rate_limited`, `invalid`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnrollLabels {
    pub decision: String,
}

/// A sink by its random id and type; never the org's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink_id: String,
    pub sink_type: String,
}

/// An org, for the admin's per-org outbox figures (shown to the admin only).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrgLabels {
    pub org: String,
}

/// A bound formation's capture (shown to the admin only).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub org: String,
    pub app: String,
}

/// A capture figure split by a reason or outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceKindLabels {
    pub org: String,
    pub app: String,
    pub kind: String,
}

/// The capture families, filled from each loop's health at scrape time.
struct SourceFamilies {
    connected: Family<SourceLabels, Gauge>,
    connects: Family<SourceLabels, Gauge>,
    frames: Family<SourceLabels, Gauge>,
    appended: Family<SourceLabels, Gauge>,
    unchanged: Family<SourceLabels, Gauge>,
    refused: Family<SourceKindLabels, Gauge>,
    reconciliations: Family<SourceKindLabels, Gauge>,
    since_last_frame: Family<SourceLabels, Gauge>,
}

impl SourceFamilies {
    fn register(r: &mut Registry) -> Self {
        fn fam<L, M>(r: &mut Registry, name: &str, help: &str) -> Family<L, M>
        where
            L: Clone
                + std::hash::Hash
                + Eq
                + EncodeLabelSet
                + std::fmt::Debug
                + Send
                + Sync
                + 'static,
            M: Default
                + prometheus_client::metrics::TypedMetric
                + prometheus_client::encoding::EncodeMetric
                + Send
                + Sync
                + std::fmt::Debug
                + 'static,
        {
            let f = Family::<L, M>::default();
            r.register(name, help, f.clone());
            f
        }
        Self {
            connected: fam(r, "source_connected", "1 while the node link is up, else 0"),
            connects: fam(
                r,
                "source_connects",
                "Connections made to the node since start",
            ),
            frames: fam(r, "source_frames", "Change frames received from the node"),
            appended: fam(
                r,
                "source_appended_events",
                "Events the node's changes appended",
            ),
            unchanged: fam(
                r,
                "source_unchanged_changes",
                "Node changes that repeated the captured state",
            ),
            refused: fam(
                r,
                "source_refused_documents",
                "Documents not captured, by reason",
            ),
            reconciliations: fam(
                r,
                "source_reconciliations",
                "Reconciliations with the node, by outcome",
            ),
            since_last_frame: fam(
                r,
                "source_seconds_since_last_frame",
                "Seconds since the node last sent a change",
            ),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    sources: SourceFamilies,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub store_commit_seconds: Histogram,
    pub store_commit_ops: Histogram,
    pub orgs: Gauge,
    pub formations: Gauge,
    pub ready: Gauge,
    pub key_provider: Family<KeyLabels, Gauge>,
    pub key_records_checked: Gauge,
    pub key_provider_up: Gauge,
    pub enroll_decisions: Family<EnrollLabels, Counter>,
    pub auth_failures: Counter,
    pub refused_sources: Counter,
    pub tls_reloads: Counter,
    pub tls_reload_failures: Counter,
    /// When the listener certificate in use ends (Unix seconds); 0 without TLS.
    pub tls_not_after: Gauge,
    pub auth_blocked: Counter,
    pub key_probe_failures: Counter,
    pub cdc_appended: Counter,
    pub cdc_unchanged: Counter,
    pub outbox_bytes: Gauge,
    pub outbox_org_bytes: Family<OrgLabels, Gauge>,
    pub outbox_org_events: Family<OrgLabels, Gauge>,
    pub outbox_org_share_bytes: Gauge,
    pub outbox_quota_bytes: Gauge,
    pub outbox_head_lsn: Gauge,
    pub outbox_dropped: Gauge,
    pub outbox_file_bytes: Gauge,
    pub outbox_commit_seconds: Histogram,
    pub outbox_commit_ops: Histogram,
    pub sink_backlog: Family<SinkLabels, Gauge>,
    pub sink_delivered: Family<SinkLabels, Gauge>,
    pub sink_retries: Family<SinkLabels, Gauge>,
    pub sink_dead_letters: Family<SinkLabels, Gauge>,
    pub sink_up: Family<SinkLabels, Gauge>,
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
        let key_provider = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "key_provider_info",
            "1 for the key provider and KEK the gateway seals with",
            key_provider.clone(),
        );
        let key_records_checked = Gauge::default();
        registry.register(
            "key_records_checked",
            "Sealed records opened at start-up to prove the KEK",
            key_records_checked.clone(),
        );
        let key_provider_up = Gauge::default();
        registry.register(
            "key_provider_up",
            "1 when the last key-provider probe (wrap + unwrap) succeeded, else 0",
            key_provider_up.clone(),
        );
        let enroll_decisions = Family::<EnrollLabels, Counter>::default();
        registry.register(
            "enroll_decisions",
            "Enrollment and renewal answers by decision (failed attempts included)",
            enroll_decisions.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests refused for a missing, malformed or wrong token",
            auth_failures.clone(),
        );
        let tls_reloads = Counter::default();
        registry.register(
            "tls_reloads",
            "Listener certificate reloads that took effect",
            tls_reloads.clone(),
        );
        let tls_reload_failures = Counter::default();
        registry.register(
            "tls_reload_failures",
            "Listener certificate reloads refused (the previous material stayed in use)",
            tls_reload_failures.clone(),
        );
        let tls_not_after = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the listener certificate in use ends (Unix seconds); 0 without TLS",
            tls_not_after.clone(),
        );
        let refused_sources = Counter::default();
        registry.register(
            "refused_sources",
            "Requests refused because their address is not on an allow-list",
            refused_sources.clone(),
        );
        let auth_blocked = Counter::default();
        registry.register(
            "auth_blocked",
            "Requests answered 429 because their source or token id failed too often",
            auth_blocked.clone(),
        );
        let key_probe_failures = Counter::default();
        registry.register(
            "key_probe_failures",
            "Key-provider probes that failed or timed out",
            key_probe_failures.clone(),
        );
        let cdc_appended = Counter::default();
        let cdc_unchanged = Counter::default();
        registry.register(
            "cdc_appended_events",
            "Changes appended to the outbox as events",
            cdc_appended.clone(),
        );
        registry.register(
            "cdc_unchanged_changes",
            "Changes that matched the last captured state (duplicates, no-ops)",
            cdc_unchanged.clone(),
        );
        let g = |r: &mut Registry, name: &str, help: &str| {
            let x = Gauge::default();
            r.register(name, help, x.clone());
            x
        };
        let outbox_bytes = g(
            &mut registry,
            "outbox_bytes",
            "Bytes of events held in the outbox",
        );
        let outbox_quota_bytes = g(&mut registry, "outbox_quota_bytes", "Outbox byte quota");
        let outbox_head_lsn = g(
            &mut registry,
            "outbox_head_lsn",
            "Highest committed log sequence number",
        );
        let outbox_dropped = g(
            &mut registry,
            "outbox_dropped_events",
            "Events removed unsent by the drop-oldest policy since the outbox was created",
        );
        let outbox_file_bytes = g(
            &mut registry,
            "outbox_file_bytes",
            "Size of cdc.redb on disk",
        );
        let outbox_commit_seconds = latency_buckets();
        let outbox_commit_ops =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        registry.register(
            "outbox_commit_duration_seconds",
            "Outbox group-commit latency, fsync included",
            outbox_commit_seconds.clone(),
        );
        registry.register(
            "outbox_commit_operations",
            "Appends and cursor updates per outbox group commit",
            outbox_commit_ops.clone(),
        );
        let outbox_org_bytes = Family::<OrgLabels, Gauge>::default();
        registry.register(
            "outbox_org_bytes",
            "Bytes each org's events hold in the outbox",
            outbox_org_bytes.clone(),
        );
        let outbox_org_events = Family::<OrgLabels, Gauge>::default();
        registry.register(
            "outbox_org_events",
            "Events each org holds in the outbox",
            outbox_org_events.clone(),
        );
        let outbox_org_share_bytes = Gauge::default();
        registry.register(
            "outbox_org_share_bytes",
            "Each org's share of the outbox quota",
            outbox_org_share_bytes.clone(),
        );
        let sources = SourceFamilies::register(&mut registry);
        let fam = |r: &mut Registry, name: &str, help: &str| {
            let x = Family::<SinkLabels, Gauge>::default();
            r.register(name, help, x.clone());
            x
        };
        let sink_backlog = fam(
            &mut registry,
            "sink_backlog_events",
            "Events after the sink's cursor",
        );
        let sink_delivered = fam(
            &mut registry,
            "sink_delivered_events",
            "Events acknowledged by the sink since start",
        );
        let sink_retries = fam(
            &mut registry,
            "sink_retries",
            "Delivery attempts that failed transiently since start",
        );
        let sink_dead_letters = fam(
            &mut registry,
            "sink_dead_letters",
            "Events parked for the sink since start",
        );
        let sink_up = fam(
            &mut registry,
            "sink_up",
            "1 when the sink delivers or is caught up, else 0",
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
            key_provider,
            key_records_checked,
            key_provider_up,
            enroll_decisions,
            auth_failures,
            refused_sources,
            tls_reloads,
            tls_reload_failures,
            tls_not_after,
            auth_blocked,
            key_probe_failures,
            cdc_appended,
            cdc_unchanged,
            sources,
            outbox_bytes,
            outbox_org_bytes,
            outbox_org_events,
            outbox_org_share_bytes,
            outbox_quota_bytes,
            outbox_head_lsn,
            outbox_dropped,
            outbox_file_bytes,
            outbox_commit_seconds,
            outbox_commit_ops,
            sink_backlog,
            sink_delivered,
            sink_retries,
            sink_dead_letters,
            sink_up,
        }
    }

    pub fn ingested(&self, r: &crate::cdc::AppendReport) {
        let n = r
            .outcomes
            .iter()
            .filter(|o| matches!(o, crate::cdc::Appended::Event(_)))
            .count() as u64;
        self.cdc_appended.inc_by(n);
        self.cdc_unchanged.inc_by(r.outcomes.len() as u64 - n);
    }

    /// Copies the CDC pipeline's current figures into the gauges.
    pub fn observe_cdc(&self, d: &crate::cdc::Dispatcher) {
        let st = d.outbox().stats();
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.outbox_bytes, st.bytes);
        set(&self.outbox_org_share_bytes, d.outbox().org_share());
        for (uid, org) in d.org_names() {
            let fill = d.outbox().org_fill(&uid);
            let l = OrgLabels { org };
            set(&self.outbox_org_bytes.get_or_create(&l), fill.bytes);
            set(&self.outbox_org_events.get_or_create(&l), fill.events);
        }
        set(&self.outbox_quota_bytes, st.quota_bytes);
        set(&self.outbox_head_lsn, st.head_lsn);
        set(&self.outbox_dropped, st.dropped);
        set(&self.outbox_file_bytes, d.outbox().file_bytes());
        for (def, status) in d.all_status() {
            let l = SinkLabels {
                sink_id: def.sink_id.clone(),
                sink_type: def.spec.kind().to_owned(),
            };
            // A loop still reading its cursor keeps the last figure.
            if let Some(b) = d.backlog(&def, &status) {
                set(&self.sink_backlog.get_or_create(&l), b);
            }
            set(&self.sink_delivered.get_or_create(&l), status.delivered);
            set(&self.sink_retries.get_or_create(&l), status.retried);
            set(
                &self.sink_dead_letters.get_or_create(&l),
                status.dead_lettered,
            );
            let up = matches!(
                status.state,
                crate::cdc::SinkState::Idle | crate::cdc::SinkState::Delivering
            );
            self.sink_up.get_or_create(&l).set(i64::from(up));
        }
    }

    /// Copies every capture loop's health into the gauges.
    pub fn observe_sources(&self, s: &crate::cdc::source::Sources) {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        let now = crate::tenant::now_ms();
        let f = &self.sources;
        for (def, h) in s.all_health() {
            let l = SourceLabels {
                org: def.org_id.clone(),
                app: def.app_id.clone(),
            };
            set(&f.connected.get_or_create(&l), u64::from(h.connected));
            set(&f.connects.get_or_create(&l), h.connects);
            set(&f.frames.get_or_create(&l), h.frames);
            set(&f.appended.get_or_create(&l), h.appended);
            set(&f.unchanged.get_or_create(&l), h.unchanged);
            if let Some(t) = h.last_event_ms {
                set(
                    &f.since_last_frame.get_or_create(&l),
                    now.saturating_sub(t) / 1000,
                );
            }
            let kind = |k: &str| SourceKindLabels {
                org: def.org_id.clone(),
                app: def.app_id.clone(),
                kind: k.to_owned(),
            };
            for (reason, n) in &h.refused {
                set(&f.refused.get_or_create(&kind(reason)), *n);
            }
            for (outcome, n) in &h.reconciliations {
                set(&f.reconciliations.get_or_create(&kind(outcome)), *n);
            }
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
