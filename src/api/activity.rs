//! `/activity` and `/orgs/{org_id}/activity`: what the overview shows at a glance. Ingest and
//! delivery rates over the last minutes (sampled here every few seconds, per org), alerts
//! worth an operator's eye (stalled or disconnected sinks, dead letters, node links down,
//! refused documents, a failing key provider, a TLS reload refused or a certificate near its
//! end), and the listener certificate's expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::book::{doc, Access, RouteBook};
use super::extract::{Caller, Ids};
use super::{ApiError, AppState};
use crate::cdc::{rfc3339_ms, SinkState};
use crate::tenant::{now_ms, Need};

const EVERY: Duration = Duration::from_secs(5);
/// Six minutes of samples.
const KEEP: usize = 72;
/// A certificate this close to its end is an alert.
const TLS_WARN_SECS: i64 = 30 * 86_400;

#[derive(Clone, Copy)]
struct Sample {
    at_ms: u64,
    /// Events the org ever appended (its outbox sequence).
    appended: u64,
    /// Events its sinks delivered since start, summed.
    delivered: u64,
}

#[derive(Default)]
struct Inner {
    rates: HashMap<[u8; 16], VecDeque<Sample>>,
    /// When the previous sample was taken.
    last_at: Option<u64>,
    tls_not_after: Option<i64>,
    /// When and why the last TLS reload was refused.
    tls_reload_error: Option<(u64, String)>,
}

/// Rates and gateway events kept for the overview. Cheap to clone.
#[derive(Clone, Default)]
pub struct Activity(Arc<Mutex<Inner>>);

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The listener certificate in use ends at `not_after` (Unix seconds).
    pub fn tls_loaded(&self, not_after: Option<i64>) {
        let mut i = self.lock();
        i.tls_not_after = not_after;
        i.tls_reload_error = None;
    }

    /// The listener certificate's end (Unix seconds), when serving TLS.
    pub fn tls_not_after(&self) -> Option<i64> {
        self.lock().tls_not_after
    }

    pub fn tls_reload_refused(&self, why: String) {
        self.lock().tls_reload_error = Some((now_ms(), why));
    }

    fn sample(&self, s: &AppState) {
        let outbox = s.cdc.outbox();
        let mut delivered: HashMap<[u8; 16], u64> = HashMap::new();
        for (def, st) in s.cdc.all_status() {
            *delivered.entry(def.org_uid).or_default() += st.delivered;
        }
        let now = now_ms();
        let mut i = self.lock();
        let known = outbox.known_orgs();
        i.rates.retain(|uid, _| known.contains(uid));
        let last_at = i.last_at.replace(now);
        for uid in known {
            let ring = i.rates.entry(uid).or_insert_with(|| {
                // An org first seen now held nothing at the previous sample: all its events
                // arrived since.
                last_at
                    .map(|at_ms| Sample {
                        at_ms,
                        appended: 0,
                        delivered: 0,
                    })
                    .into_iter()
                    .collect()
            });
            ring.push_back(Sample {
                at_ms: now,
                appended: outbox.org_fill(&uid).seq,
                delivered: delivered.get(&uid).copied().unwrap_or(0),
            });
            while ring.len() > KEEP {
                ring.pop_front();
            }
        }
    }

    /// Per-interval rates of the given orgs (all when `None`), summed, oldest first.
    fn rates(&self, org: Option<&[u8; 16]>) -> Vec<Value> {
        let i = self.lock();
        let rings: Vec<&VecDeque<Sample>> = match org {
            Some(uid) => i.rates.get(uid).into_iter().collect(),
            None => i.rates.values().collect(),
        };
        let Some(len) = rings.iter().map(|r| r.len()).max() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for k in 1..len {
            let (mut inn, mut del, mut at, mut secs) = (0u64, 0u64, 0u64, 0f64);
            for r in &rings {
                // Rings of orgs that appeared later are aligned on their newest samples.
                let off = len - r.len();
                if k < off + 1 {
                    continue;
                }
                let (a, b) = (r[k - off - 1], r[k - off]);
                inn += b.appended.saturating_sub(a.appended);
                // A restart resets delivery counts: no negative rates.
                del += b.delivered.saturating_sub(a.delivered);
                at = at.max(b.at_ms);
                secs = secs.max(b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0);
            }
            if secs > 0.0 {
                out.push(
                    json!({"at": rfc3339_ms(at), "ingested_per_sec": inn as f64 / secs,
                    "delivered_per_sec": del as f64 / secs}),
                );
            }
        }
        out
    }
}

/// Samples every org's counts until `stop`.
pub async fn sample(s: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => s.activity.sample(&s),
            _ = stop.changed() => return,
        }
    }
}

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.get(
        "/activity",
        gateway,
        doc(
            "The gateway at a glance: ingest and delivery rates of the last minutes (every org), alerts, the listener certificate's expiry",
            Access::GatewayAdmin,
            None,
            200,
        ),
    )
    .get(
        "/orgs/{org_id}/activity",
        org,
        doc(
            "The org at a glance: its ingest and delivery rates of the last minutes and its alerts",
            Access::Org(Need::Read),
            None,
            200,
        ),
    )
}

fn alert(level: &str, org: &str, text: String, at_ms: Option<u64>) -> Value {
    json!({"level": level, "org_id": org, "text": text, "at": at_ms.map(rfc3339_ms)})
}

/// Alerts of the org `only` (all orgs when `None`), worst first.
fn alerts(s: &AppState, only: Option<&str>) -> Vec<Value> {
    let mine = |org: &str| only.is_none_or(|o| o == org);
    let mut out = Vec::new();
    for (def, st) in s.cdc.all_status() {
        if !mine(&def.org_id) {
            continue;
        }
        let why = st.last_error.clone().unwrap_or_default();
        match st.state {
            SinkState::Stalled => out.push(alert(
                "bad",
                &def.org_id,
                format!("sink {} stalled on a refused event: {why}", def.sink_id),
                None,
            )),
            SinkState::Failed => out.push(alert(
                "bad",
                &def.org_id,
                format!("sink {} failed: {why}", def.sink_id),
                None,
            )),
            SinkState::Disconnected => out.push(alert(
                "warn",
                &def.org_id,
                format!("sink {} cannot reach its target: {why}", def.sink_id),
                None,
            )),
            _ => {}
        }
        if st.dead_lettered > 0 {
            out.push(alert(
                "warn",
                &def.org_id,
                format!(
                    "{} dead letters parked on sink {}",
                    st.dead_lettered, def.sink_id
                ),
                None,
            ));
        }
    }
    for (def, h) in s.sources.all_health() {
        if !mine(&def.org_id) {
            continue;
        }
        let state = h.state(&def);
        if state != "connected" {
            let why = h.last_error.clone().unwrap_or_default();
            out.push(alert(
                "bad",
                &def.org_id,
                format!("node link of {} is {state}: {why}", def.app_id),
                None,
            ));
        }
        for r in h.refused_docs.iter().rev().take(3) {
            out.push(alert(
                "warn",
                &def.org_id,
                format!(
                    "node document {}/{} of {} refused: {}",
                    r.collection, r.doc_id, def.app_id, r.reason
                ),
                Some(r.at_ms),
            ));
        }
    }
    out.sort_by_key(|a| a["level"] != "bad");
    out
}

async fn gateway(State(s): State<AppState>, Caller(p): Caller) -> Result<Json<Value>, ApiError> {
    s.tenancy
        .authorize_admin(&p, "read the gateway's activity")
        .await?;
    let mut list = Vec::new();
    let probe = s.keys.health.report();
    if probe.ok == Some(false) {
        list.push(alert(
            "bad",
            "",
            format!(
                "the key provider ({}) fails its probe: {}",
                s.keys.provider,
                probe.error.unwrap_or_default()
            ),
            probe.checked_at_ms,
        ));
    }
    let (not_after, reload_error) = {
        let i = s.activity.lock();
        (i.tls_not_after, i.tls_reload_error.clone())
    };
    let now_s = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
    if let Some(end) = not_after {
        if end - now_s < TLS_WARN_SECS {
            list.push(alert("warn", "", format!("the listener certificate ends in {} days; replace the files (reloaded without a restart)", (end - now_s) / 86_400), None));
        }
    }
    if let Some((at, why)) = &reload_error {
        list.push(alert(
            "bad",
            "",
            format!("a TLS reload was refused (the previous certificate stays in use): {why}"),
            Some(*at),
        ));
    }
    list.extend(alerts(&s, None));
    Ok(Json(json!({
        "rates": s.activity.rates(None),
        "alerts": list,
        "tls": not_after.map(|end| json!({"not_after": rfc3339_ms(u64::try_from(end).unwrap_or(0) * 1000),
            "days_left": (end - now_s) / 86_400})),
    })))
}

async fn org(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<Json<Value>, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "read the org's activity")
        .await?;
    let o = s.tenancy.get_org(&scope).await?;
    Ok(Json(json!({
        "rates": s.activity.rates(Some(&o.org_uid)),
        "alerts": alerts(&s, Some(scope.org_id())),
    })))
}
