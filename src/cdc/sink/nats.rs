//! NATS JetStream: pipelined publishes with `Nats-Msg-Id` = event id, acknowledged by the
//! stream. The stream is verified (or created) before the first publish and never overwritten.
//!
//! Subject: `<prefix>.<org>.<app>.<collection token>.<doc token>`, where a token keeps
//! `[A-Za-z0-9_-]` and writes every other byte as `~HH` (hex), so `.`, `*`, `>`, `~`,
//! whitespace and non-ASCII are reversible and never split or widen a subject.
//!
//! Batched mode: a delivery batch is one message (more when it would pass the server's
//! `max_payload`) on `<prefix>.<org>.batch`, a JSON array of structured CloudEvents in LSN
//! order, `Nats-Msg-Id` = `<first event id>-<last lsn>`: a retry of the same batch is deduped
//! by the stream; a batch cut differently after a restart is not, and receivers dedupe by the
//! events' ids, as with webhooks.

use std::time::Duration;

use async_nats::header::HeaderName;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_nats::HeaderMap;

use super::token::token;
use super::{DeliverFuture, Delivery, Sink, SinkError};
use crate::cdc::ce_binary::percent_encoded;

/// How long a publish may wait for the stream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect attempts while the broker is away come at most this far apart, so a returning
/// link is found within it (a refused connect on a LAN costs next to nothing).
const RECONNECT_EVERY: Duration = Duration::from_millis(250);
/// Dedupe window of a stream the gateway creates; receivers dedupe by event id beyond it.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How the sink authenticates and trusts the server, beyond the URL.
#[derive(Clone, Default)]
pub struct NatsAuth {
    /// A `.creds` file, parsed when the sink is built.
    pub creds: Option<super::nats_auth::UserCreds>,
    pub nkey_seed: Option<String>,
    pub tls_ca_pem: Option<String>,
    /// Client certificate chain and key (PEM) presented to the server.
    pub client: Option<(String, zeroize::Zeroizing<String>)>,
}

impl NatsAuth {
    fn client(&self) -> Option<(&str, &str)> {
        self.client.as_ref().map(|(c, k)| (c.as_str(), k.as_str()))
    }

    fn tls(&self) -> Option<Result<rustls::ClientConfig, String>> {
        (self.tls_ca_pem.is_some() || self.client.is_some())
            .then(|| crate::tls::client_config(self.tls_ca_pem.as_deref(), self.client()))
    }
}

pub struct NatsSink {
    url: String,
    egress: crate::egress::Egress,
    auth: NatsAuth,
    prefix: String,
    org: String,
    stream: String,
    js: Option<jetstream::Context>,
    stream_checked: bool,
    batched: bool,
}

impl NatsSink {
    pub fn new(
        url: String,
        egress: crate::egress::Egress,
        prefix: String,
        org: String,
        stream: Option<String>,
        batched: bool,
        auth: NatsAuth,
    ) -> Result<Self, String> {
        if let Some(r) = auth.tls() {
            r?;
        }
        let stream =
            stream.unwrap_or_else(|| format!("peat-{}-{}", token(&org), prefix.replace('.', "_")));
        Ok(Self {
            url,
            egress,
            auth,
            prefix,
            org,
            stream,
            js: None,
            stream_checked: false,
            batched,
        })
    }

    fn filter(&self) -> String {
        format!("{}.{}.>", self.prefix, self.org)
    }

    fn subject(&self, d: &Delivery) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            self.prefix,
            self.org,
            d.event.app_id,
            token(&d.event.collection),
            token(&d.event.doc_id)
        )
    }

    async fn context(&mut self) -> Result<jetstream::Context, SinkError> {
        if let Some(js) = &self.js {
            return Ok(js.clone());
        }
        let (mut opts, addr) = connect_options(&self.url);
        let addr = self.pin(&addr).await?;
        if let Some(creds) = &self.auth.creds {
            opts = super::nats_auth::with_creds(opts, creds);
        }
        if let Some(seed) = &self.auth.nkey_seed {
            opts = opts.nkey(seed.clone());
        }
        if let Some(cfg) = self.auth.tls() {
            opts = opts
                .require_tls(true)
                .tls_client_config(cfg.map_err(SinkError::Transient)?);
        }
        let shown = crate::secret::redact_url(&self.url);
        let client = opts
            .connection_timeout(CONNECT_TIMEOUT)
            // Servers the broker advertises would bypass the egress check.
            .ignore_discovered_servers()
            .reconnect_delay_callback(|attempts| {
                RECONNECT_EVERY.min(Duration::from_millis(50).saturating_mul(attempts as u32))
            })
            .name("peat-gateway")
            .connect(addr.as_str())
            .await
            .map_err(|e| SinkError::Transient(format!("connecting to {shown}: {e}")))?;
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT);
        self.js = Some(js.clone());
        Ok(js)
    }

    /// The URL with its host replaced by an address the org's egress policy allows (the
    /// name itself over TLS).
    async fn pin(&self, addr: &str) -> Result<String, SinkError> {
        let Ok(mut u) = url::Url::parse(addr) else {
            return Ok(addr.to_owned());
        };
        let host = u.host_str().unwrap_or_default().to_owned();
        let tls = u.scheme() == "tls" || self.auth.tls().is_some();
        let pinned = self
            .egress
            .pinned_host(&host, u.port().unwrap_or(4222), tls)
            .await
            .map_err(SinkError::Transient)?;
        if pinned != host && u.set_host(Some(&pinned)).is_err() {
            return Ok(addr.to_owned());
        }
        Ok(u.to_string())
    }

    /// Creates the stream when absent; refuses to use one that does not take our subjects.
    async fn ensure_stream(&mut self, js: &jetstream::Context) -> Result<(), SinkError> {
        if self.stream_checked {
            return Ok(());
        }
        let filter = self.filter();
        match js.get_stream(&self.stream).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| {
                    SinkError::Transient(format!("reading stream {}: {e}", self.stream))
                })?;
                if !info.config.subjects.iter().any(|x| covers(x, &filter)) {
                    return Err(SinkError::Transient(format!(
                        "stream {} exists with subjects {:?}, which do not take {filter}; \
                         add the subject to the stream or name another stream in the sink",
                        self.stream, info.config.subjects
                    )));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j) if j.code() == 404
                ) =>
            {
                js.create_stream(stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![filter],
                    duplicate_window: DUPLICATE_WINDOW,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    SinkError::Transient(format!("creating stream {}: {e}", self.stream))
                })?;
                tracing::info!(stream = %self.stream, "created JetStream stream for a CDC sink");
            }
            Err(e) => {
                return Err(SinkError::Transient(format!(
                    "looking up stream {}: {e}",
                    self.stream
                )))
            }
        }
        self.stream_checked = true;
        Ok(())
    }

    async fn publish(&mut self, batch: &[Delivery]) -> Result<(), SinkError> {
        let js = self.context().await?;
        self.ensure_stream(&js).await?;
        // Pipelined: send every message, then collect acknowledgements in order. Each ack
        // carries the batch index of its message's first event. A message refused before it
        // is sent is reported only once every message before it is acknowledged.
        let mut acks = Vec::with_capacity(batch.len());
        let mut refused = None;
        if self.batched {
            let limit = js.client().server_info().max_payload;
            let subject = format!("{}.{}.batch", self.prefix, self.org);
            for chunk in chunks(batch, limit) {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                };
                let mut h = HeaderMap::new();
                h.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    super::batch_id(&batch[chunk.clone()]),
                );
                h.insert(CONTENT_TYPE, "application/cloudevents-batch+json");
                match js
                    .publish_with_headers(
                        subject.clone(),
                        h,
                        super::batch_array(&batch[chunk.clone()]).into(),
                    )
                    .await
                {
                    Ok(ack) => acks.push((chunk.start, ack)),
                    Err(e) => {
                        refused = Some(classify(chunk.start, e.kind(), &e.to_string()));
                        break;
                    }
                }
            }
        } else {
            for (i, d) in batch.iter().enumerate() {
                match js
                    .publish_with_headers(self.subject(d), headers(d), d.body.clone())
                    .await
                {
                    Ok(ack) => acks.push((i, ack)),
                    Err(e) => {
                        refused = Some(classify(i, e.kind(), &e.to_string()));
                        break;
                    }
                }
            }
        }
        for (i, ack) in acks {
            ack.await.map_err(|e| {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.stream_checked = false;
                }
                classify(i, e.kind(), &e.to_string())
            })?;
        }
        refused.map_or(Ok(()), Err)
    }
}

/// The message headers: the dedupe id, then the content type of the mode (structured), or
/// the event's attributes as `ce-` headers with `datacontenttype` as the content type (binary).
/// Names are static (no allocation per message).
fn headers(d: &Delivery) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, d.id.as_str());
    match &d.attributes {
        None => h.insert(CONTENT_TYPE, "application/cloudevents+json"),
        Some(attrs) => {
            for (attr, value) in attrs {
                h.insert(
                    HeaderName::from_static(attr.nats),
                    percent_encoded(value).into_owned(),
                );
            }
        }
    }
    h
}

const CONTENT_TYPE: HeaderName = HeaderName::from_static("Content-Type");

/// Room kept in a batch message for its subject and headers under the server's limit.
const BATCH_OVERHEAD: usize = 1024;

/// The batch cut into runs whose JSON arrays stay under `max_payload`; an event too large
/// alone is refused by its index (parked, as the server would refuse it).
fn chunks(
    batch: &[Delivery],
    max_payload: usize,
) -> impl Iterator<Item = Result<std::ops::Range<usize>, SinkError>> + '_ {
    let room = max_payload.saturating_sub(BATCH_OVERHEAD);
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= batch.len() {
            return None;
        }
        // `[`, `]` and a comma per event.
        let mut size = 1;
        let mut end = start;
        while let Some(d) = batch.get(end) {
            if size + d.body.len() + 1 > room && end > start {
                break;
            }
            size += d.body.len() + 1;
            end += 1;
        }
        let run = start..end;
        start = end;
        if size > room {
            return Some(Err(SinkError::Rejected {
                index: run.start,
                reason: format!(
                    "the event is {} bytes, over the server's max_payload of {max_payload}",
                    batch[run.start].body.len()
                ),
            }));
        }
        Some(Ok(run))
    })
}

fn classify(index: usize, kind: PublishErrorKind, text: &str) -> SinkError {
    match kind {
        // The server refused this message itself (for example over max_payload).
        PublishErrorKind::Other if text.contains("maximum payload") => SinkError::Rejected {
            index,
            reason: text.to_owned(),
        },
        _ => SinkError::Transient(format!("publish: {text}")),
    }
}

/// Whether stream subject `have` takes every subject under `want` (`a.b.>`).
fn covers(have: &str, want: &str) -> bool {
    let h: Vec<&str> = have.split('.').collect();
    let w: Vec<&str> = want.split('.').collect();
    for (i, t) in h.iter().enumerate() {
        match *t {
            ">" => return true,
            "*" if w.get(i).is_some_and(|x| *x != ">") => {}
            x if w.get(i) == Some(&x) => {}
            _ => return false,
        }
    }
    h.len() == w.len()
}

impl Sink for NatsSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let r = self.publish(batch).await;
            if let Err(SinkError::Transient(_)) = &r {
                // A fresh stream check after an outage catches a stream deleted meanwhile.
                self.stream_checked = false;
            }
            r
        })
    }

    fn link_up(&self) -> bool {
        self.js.as_ref().is_some_and(|js| {
            js.client().connection_state() == async_nats::connection::State::Connected
        })
    }

    fn target(&self) -> String {
        format!(
            "{} stream {} subjects {}",
            crate::secret::redact_url(&self.url),
            self.stream,
            self.filter()
        )
    }
}

/// Credentials from the URL's user part (`user:password` or a lone token), and the URL
/// without them.
fn connect_options(url: &str) -> (async_nats::ConnectOptions, String) {
    let Ok(mut u) = url::Url::parse(url) else {
        return (async_nats::ConnectOptions::new(), url.to_owned());
    };
    let user = u.username().to_owned();
    let pass = u.password().map(str::to_owned);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let opts = match (user.is_empty(), pass) {
        (false, Some(p)) => async_nats::ConnectOptions::with_user_and_password(user, p),
        (false, None) => async_nats::ConnectOptions::with_token(user),
        (true, _) => async_nats::ConnectOptions::new(),
    };
    (opts, u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subject_coverage() {
        assert!(covers("peat.acme.>", "peat.acme.>"));
        assert!(covers(">", "peat.acme.>"));
        assert!(covers("peat.>", "peat.acme.>"));
        assert!(covers("peat.*.>", "peat.acme.>"));
        assert!(!covers("peat.other.>", "peat.acme.>"));
        assert!(!covers("peat.acme.x", "peat.acme.>"));
    }

    fn deliveries(sizes: &[usize]) -> Vec<Delivery> {
        let event = crate::cdc::ce_json::test_record("d", None, false, 0);
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| Delivery {
                lsn: i as u64 + 1,
                id: format!("gw:{}", i + 1),
                event: event.clone(),
                body: vec![b'x'; *n].into(),
                attributes: None,
            })
            .collect()
    }

    #[test]
    fn a_batch_is_cut_where_its_array_would_pass_max_payload() {
        let limit = BATCH_OVERHEAD + 100;
        // Arrays of 1 + (n + 1) per event bytes: 40 + 40 fit (83), a third does not (124).
        let b = deliveries(&[40, 40, 40, 97, 10]);
        let runs: Vec<_> = chunks(&b, limit).map(Result::unwrap).collect();
        assert_eq!(runs, vec![0..2, 2..3, 3..4, 4..5]);
        for r in &runs {
            let a = super::super::batch_array(&b[r.clone()]);
            assert!(a.len() <= 100, "{r:?}: {}", a.len());
            assert_eq!((a[0], a[a.len() - 1]), (b'[', b']'));
        }
        assert_eq!(
            chunks(&b, 1 << 20).count(),
            1,
            "all in one under a large limit"
        );
        assert_eq!(super::super::batch_array(&deliveries(&[1, 2])), b"[x,xx]");
    }

    #[test]
    fn an_event_over_max_payload_alone_is_refused_by_its_index() {
        let b = deliveries(&[10, 200, 10]);
        let mut it = chunks(&b, BATCH_OVERHEAD + 100);
        assert_eq!(it.next(), Some(Ok(0..1)));
        match it.next() {
            Some(Err(SinkError::Rejected { index, reason })) => {
                assert_eq!(index, 1);
                assert!(reason.contains("200 bytes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
