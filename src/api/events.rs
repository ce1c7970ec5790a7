//! `GET /orgs/{org_id}/events/stream`: server-sent events of the org's captured changes and
//! its sinks' state changes. Resumable: `Last-Event-ID` (`<gateway-id>:<lsn>` or a bare LSN)
//! continues after that event while the outbox still holds it; a `gap` event says when it
//! no longer does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde_json::json;

use super::book::{Access, Doc, RouteBook};
use super::extract::{Caller, Ids};
use super::{ApiError, AppState};
use crate::cdc::cloud_event;
use crate::identity::EnrollEvent;
use crate::tenant::Need;

const PAGE: usize = 256;
const SINK_POLL: Duration = Duration::from_secs(1);

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.get(
        "/orgs/{org_id}/events/stream",
        stream,
        Doc {
            summary: "Live server-sent events: `cdc` (CloudEvents), `sink` (state changes), `enrollment` (decisions and approvals), `gap`; resumable with Last-Event-ID",
            access: Access::Org(Need::Read),
            body: None,
            ok: 200,
        },
    )
}

/// The LSN in a `Last-Event-ID`.
fn resume_lsn(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get("last-event-id")?.to_str().ok()?;
    v.rsplit(':').next()?.parse().ok()
}

struct Cursor {
    s: AppState,
    /// Held for the stream's life; given back when it ends.
    _slot: super::streams::StreamSlot,
    org: String,
    org_uid: [u8; 16],
    after: u64,
    /// The org seq of the last event sent; `None` until known (a resume point not held).
    seq: Option<u64>,
    head: tokio::sync::watch::Receiver<u64>,
    queue: std::collections::VecDeque<Event>,
    sinks: HashMap<String, &'static str>,
    tick: tokio::time::Interval,
    enrollments: tokio::sync::broadcast::Receiver<EnrollEvent>,
}

impl Cursor {
    fn sink_changes(&mut self) {
        for (def, st) in self.s.cdc.all_status() {
            if def.org_id != self.org {
                continue;
            }
            let name = st.state.name();
            if self.sinks.insert(def.sink_id.clone(), name) != Some(name) {
                let data = json!({"sink_id": def.sink_id, "state": name, "cursor_lsn": st.cursor,
                    "last_error": st.last_error});
                self.queue
                    .push_back(Event::default().event("sink").data(data.to_string()));
            }
        }
    }

    fn enrollment(&mut self, e: Result<EnrollEvent, tokio::sync::broadcast::error::RecvError>) {
        use tokio::sync::broadcast::error::RecvError;
        match e {
            Ok(e) if e.org_id == self.org => {
                let data = serde_json::to_string(&e).unwrap_or_default();
                self.queue
                    .push_back(Event::default().event("enrollment").data(data));
            }
            Ok(_) | Err(RecvError::Closed) => {}
            Err(RecvError::Lagged(n)) => {
                let data = json!({"missed_enrollment_events": n,
                    "reason": "this listener fell behind; see /orgs/{org}/audit for every decision"});
                self.queue
                    .push_back(Event::default().event("gap").data(data.to_string()));
            }
        }
    }

    /// Reads the org's own events only; a jump in the org's seq is a gap.
    async fn fill(&mut self) -> Result<(), ()> {
        let outbox = self.s.cdc.outbox();
        let page = outbox
            .read_org_after(self.org_uid, self.after, PAGE)
            .await
            .map_err(|_| ())?;
        if let Some((first, _, _, seq)) = page.first() {
            let missed = match self.seq {
                Some(last) => *seq > last + 1,
                None => self.after > 0 && *seq > 1,
            };
            if missed {
                let data = json!({"from_lsn": self.after + 1, "to_lsn": first - 1,
                    "reason": "no longer in the outbox (delivered to every sink, or dropped)"});
                self.queue
                    .push_back(Event::default().event("gap").data(data.to_string()));
            }
        }
        for (lsn, ev, _, seq) in page {
            self.after = lsn;
            self.seq = Some(seq);
            if ev.org_uid != self.org_uid {
                continue;
            }
            let ce = cloud_event(outbox.gateway_id(), lsn, &ev);
            self.queue.push_back(
                Event::default()
                    .event("cdc")
                    .id(format!("{}:{lsn}", outbox.gateway_id()))
                    .data(String::from_utf8_lossy(&ce.to_bytes())),
            );
        }
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some((Ok(e), self));
            }
            if *self.head.borrow() > self.after
                && self.s.cdc.outbox().org_fill(&self.org_uid).seq > self.seq.unwrap_or(0)
            {
                let before = self.after;
                self.fill().await.ok()?;
                if self.after != before {
                    continue;
                }
            }
            tokio::select! {
                r = self.head.changed() => r.ok()?,
                _ = self.tick.tick() => self.sink_changes(),
                e = self.enrollments.recv() => self.enrollment(e),
            }
        }
    }
}

async fn stream(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    conn: Option<axum::Extension<crate::listen::ConnSlot>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "watch events").await?;
    // The org must exist; its absence answers 404 like every org route.
    let org = s.tenancy.get_org(&scope).await?;
    let slot = s
        .streams
        .take(&p.actor().id)
        .map_err(|why| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", why))?;
    if let Some(axum::Extension(c)) = conn {
        c.release();
    }
    let outbox = s.cdc.outbox().clone();
    let s_events = s.authority.events().clone();
    let head = outbox.watch();
    let (after, seq) = match resume_lsn(&headers) {
        Some(0) => (0, Some(0)),
        Some(lsn) => (lsn, outbox.org_resume_seq(org.org_uid, lsn).await?),
        None => (outbox.head(), Some(outbox.org_fill(&org.org_uid).seq)),
    };
    let cursor = Cursor {
        _slot: slot,
        org: scope.org_id().to_owned(),
        org_uid: org.org_uid,
        s,
        after,
        seq,
        head,
        queue: Default::default(),
        sinks: HashMap::new(),
        tick: tokio::time::interval(SINK_POLL),
        enrollments: s_events.subscribe(),
    };
    let events = futures_util::stream::unfold(cursor, Cursor::next);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
