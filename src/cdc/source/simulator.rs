//! **Test double** of a peat-node sidecar: an in-process Connect server over an in-memory
//! document map, for `demo` and the tests. It is derived from reading the node's source and
//! the behaviour recorded in reference/peat-wire.md §2, not from a running node, and
//! reproduces the quirks the gateway must survive:
//!
//! - snapshot only for named collections, overlapping the live stream, no end marker (§2.6.1);
//! - live events carry current state; a remote delete arrives as UPSERT without `jsonData`
//!   (§2.6.3); a local `DeleteDocument` gives DELETE plus UPSERT-without-data (§2.6.4);
//! - duplicate notifications on demand (§2.6.5);
//! - one 256-event broadcast for all subscribers that drops silently on lag (§2.6.6);
//! - deletes that are never announced, as on 0.1.0 nodes (§2.11), a restart with a new node
//!   identity, and streams that end without an end-of-stream frame when the node "dies";
//! - with [`Simulator::behave_as_0_1`], the 0.1.0 node of §2.11: no snapshot, JSON text kept
//!   byte for byte (numbers beyond 64 bits, `1.50`), non-object roots and empty ids accepted
//!   and listed, one DELETE frame for `DeleteDocument` (also of an id that never existed);
//!   frames of concurrent writers out of order ([`Simulator::concurrent_puts`]);
//! - a restart on the same data draws a new node id unless one was pinned (`--node-id`);
//! - a hung node (SIGSTOP): calls and streams stall without a word.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::{broadcast, watch};

use super::wire::{
    frame, ChangeType, ConnectError, Decoder, DocumentChange, DocumentKey, EndOfStream, Frame,
    GetDocumentResponse, ListDocumentsRequest, ListDocumentsResponse, PutDocumentRequest, Status,
    SubscribeRequest, FLAG_END,
};

/// The node-wide change broadcast's capacity (§2.6.6).
const BROADCAST: usize = 256;

struct Inner {
    docs: Mutex<BTreeMap<(String, String), String>>,
    tx: broadcast::Sender<DocumentChange>,
    identity: Mutex<(String, String)>,
    duplicates: AtomicBool,
    /// Bumped to end every open stream abruptly.
    generation: watch::Sender<u64>,
    subscribes: AtomicU64,
    /// When set, calls without `Authorization: Bearer <this>` get `unauthenticated` (as a
    /// token-checking front of the sidecar would answer).
    token: Mutex<Option<String>>,
    /// Behaves as the 0.1.0 node (§2.11) instead of 0.4.x.
    v0_1: AtomicBool,
    /// The `--node-id` the node was started with; `None` draws a new one at every restart.
    pinned_id: Mutex<Option<String>>,
    /// While true the node answers nothing (a stopped process).
    hung: watch::Sender<bool>,
}

impl Inner {
    fn notify(&self, c: DocumentChange) {
        let dup = self.duplicates.load(Ordering::Relaxed);
        let _ = self.tx.send(c.clone());
        if dup {
            let _ = self.tx.send(c);
        }
    }

    /// A write on this node or received by sync: stored, then announced with current state.
    pub fn put(&self, collection: &str, doc_id: &str, json: &str) {
        lock(&self.docs).insert((collection.into(), doc_id.into()), json.into());
        self.notify(DocumentChange {
            collection: collection.into(),
            doc_id: doc_id.into(),
            change_type: ChangeType::Upsert,
            json_data: Some(json.into()),
        });
    }

    /// A delete received from a peer: the re-read finds nothing, UPSERT without data.
    pub fn remote_delete(&self, collection: &str, doc_id: &str) {
        lock(&self.docs).remove(&(collection.into(), doc_id.into()));
        self.notify(DocumentChange {
            collection: collection.into(),
            doc_id: doc_id.into(),
            change_type: ChangeType::Upsert,
            json_data: None,
        });
    }

    /// `DeleteDocument` on this node: DELETE and UPSERT-without-data, in no fixed order (one
    /// DELETE only on 0.1.0, for an id that never existed too).
    pub fn local_delete(&self, collection: &str, doc_id: &str) {
        lock(&self.docs).remove(&(collection.into(), doc_id.into()));
        let del = DocumentChange {
            collection: collection.into(),
            doc_id: doc_id.into(),
            change_type: ChangeType::Delete,
            json_data: None,
        };
        if self.v0_1.load(Ordering::Relaxed) {
            self.notify(del);
            return;
        }
        let empty = DocumentChange {
            change_type: ChangeType::Upsert,
            ..del.clone()
        };
        let (first, second) = if random_unit() < 0.5 {
            (del, empty)
        } else {
            (empty, del)
        };
        self.notify(first);
        self.notify(second);
    }
}

/// A running simulated node. Dropping it stops the server.
pub struct Simulator {
    inner: Arc<Inner>,
    url: String,
    server: tokio::task::JoinHandle<()>,
    generator: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

impl Simulator {
    /// Serves on `bind` (use port 0 for an ephemeral port).
    pub async fn start(bind: SocketAddr) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let url = format!("http://{}", listener.local_addr()?);
        Ok(Self::serve(listener, url))
    }

    /// Serves on a Unix socket at `path`, as kits run the node.
    pub async fn start_unix(path: &std::path::Path) -> std::io::Result<Simulator> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        Ok(Self::serve(listener, format!("unix://{}", path.display())))
    }

    fn state() -> Arc<Inner> {
        let (tx, _) = broadcast::channel(BROADCAST);
        Arc::new(Inner {
            docs: Mutex::new(BTreeMap::new()),
            tx,
            identity: Mutex::new((format!("sim-{}", random_hex(3)), random_hex(32))),
            duplicates: AtomicBool::new(false),
            generation: watch::channel(0).0,
            subscribes: AtomicU64::new(0),
            token: Mutex::new(None),
            v0_1: AtomicBool::new(false),
            pinned_id: Mutex::new(None),
            hung: watch::channel(false).0,
        })
    }

    fn app(inner: &Arc<Inner>) -> Router {
        Router::new()
            .route("/peat.sidecar.v1.PeatSidecar/{method}", post(rpc))
            .with_state(inner.clone())
    }

    fn serve<L: axum::serve::Listener>(listener: L, url: String) -> Simulator
    where
        L::Addr: std::fmt::Debug,
    {
        let inner = Self::state();
        let app = Self::app(&inner);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Simulator {
            inner,
            url,
            server,
            generator: Mutex::new(None),
        }
    }

    /// Serves behind TLS, as a TLS front of the sidecar would; with `client_ca_pem`, only
    /// clients presenting a certificate from that CA get through (mTLS).
    pub async fn start_tls(
        bind: SocketAddr,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> std::io::Result<Simulator> {
        let config = crate::tls::server_config(cert_pem, key_pem, client_ca_pem)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let url = format!("https://{}", listener.local_addr()?);
        let inner = Self::state();
        let app = Self::app(&inner);
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client without an acceptable certificate fails here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(Simulator {
            inner,
            url,
            server,
            generator: Mutex::new(None),
        })
    }

    /// `http://127.0.0.1:<port>` or `unix:///path`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn node_id(&self) -> String {
        lock(&self.inner.identity).0.clone()
    }

    /// How many Subscribe calls were served (reconnections show here).
    pub fn subscribes(&self) -> u64 {
        self.inner.subscribes.load(Ordering::Relaxed)
    }

    /// A write on this node or received by sync: stored, then announced with current state.
    pub fn put(&self, collection: &str, doc_id: &str, json: &str) {
        self.inner.put(collection, doc_id, json);
    }

    /// Concurrent writers of one document, as 0.1.0 announces them (§2.11): the node keeps
    /// the last write, the frames arrive last write first.
    pub fn concurrent_puts(&self, collection: &str, doc_id: &str, writes: &[&str]) {
        let Some(last) = writes.last() else { return };
        lock(&self.inner.docs).insert((collection.into(), doc_id.into()), (*last).into());
        for json in writes.iter().rev() {
            self.inner.notify(DocumentChange {
                collection: collection.into(),
                doc_id: doc_id.into(),
                change_type: ChangeType::Upsert,
                json_data: Some((*json).into()),
            });
        }
    }

    /// The document's JSON text as the node holds it.
    pub fn document(&self, collection: &str, doc_id: &str) -> Option<String> {
        lock(&self.inner.docs)
            .get(&(collection.into(), doc_id.into()))
            .cloned()
    }

    /// A delete received from a peer: the re-read finds nothing, UPSERT without data.
    pub fn remote_delete(&self, collection: &str, doc_id: &str) {
        self.inner.remote_delete(collection, doc_id);
    }

    /// `DeleteDocument` on this node: DELETE and UPSERT-without-data, in no fixed order.
    pub fn local_delete(&self, collection: &str, doc_id: &str) {
        self.inner.local_delete(collection, doc_id);
    }

    /// A delete nobody announces (0.1.0 nodes never announce remote deletes).
    pub fn silent_delete(&self, collection: &str, doc_id: &str) {
        lock(&self.inner.docs).remove(&(collection.into(), doc_id.into()));
    }

    /// A write nobody announces (as if lost to subscriber lag).
    pub fn silent_put(&self, collection: &str, doc_id: &str, json: &str) {
        lock(&self.inner.docs).insert((collection.into(), doc_id.into()), json.into());
    }

    /// Require this bearer token on every call from now on.
    pub fn require_token(&self, token: &str) {
        *lock(&self.inner.token) = Some(token.to_owned());
    }

    /// Every notification twice from now on (or not).
    pub fn set_duplicates(&self, on: bool) {
        self.inner.duplicates.store(on, Ordering::Relaxed);
    }

    /// Ends every open stream without an end-of-stream frame, as a killed node does.
    pub fn cut_streams(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Behave as the 0.1.0 node of §2.11 from now on (or as 0.4.x again).
    pub fn behave_as_0_1(&self, on: bool) {
        self.inner.v0_1.store(on, Ordering::Relaxed);
    }

    /// The node was started with `--node-id <id>`: its id survives restarts.
    pub fn pin_node_id(&self, id: &str) {
        *lock(&self.inner.pinned_id) = Some(id.to_owned());
        lock(&self.inner.identity).0 = id.to_owned();
    }

    /// The node process restarts on the same data: streams end, and its id is new unless
    /// pinned (the endpoint address is random per start too, as on 0.1.0).
    pub fn restart(&self) {
        let id = lock(&self.inner.pinned_id)
            .clone()
            .unwrap_or_else(|| format!("sim-{}", random_hex(3)));
        *lock(&self.inner.identity) = (id, random_hex(32));
        self.cut_streams();
    }

    /// SIGSTOP (true) or SIGCONT (false): a stopped node accepts connections and answers
    /// nothing, open streams included.
    pub fn hang(&self, on: bool) {
        self.inner.hung.send_replace(on);
    }

    /// A different node now answers: new node id and endpoint, streams cut.
    pub fn restart_as_new_node(&self) {
        *lock(&self.inner.identity) = (format!("sim-{}", random_hex(3)), random_hex(32));
        self.cut_streams();
    }

    /// Realistic `tracks` and `nodes` updates, `per_sec` per second.
    pub fn generate(&self, per_sec: f64) {
        let me = self.inner.clone();
        let period = Duration::from_secs_f64(1.0 / per_sec.max(0.01));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                me.step(n);
            }
        });
        if let Some(old) = lock(&self.generator).replace(task) {
            old.abort();
        }
    }
}

impl Inner {
    /// One generator tick: mostly track movements, every tenth a node status.
    fn step(&self, n: u64) {
        if n % 10 == 0 {
            let id = format!("n-{}", n / 10 % 5);
            let doc = serde_json::json!({
                "id": id, "node_type": "sensor", "name": id, "status": 1 + (n / 10 % 3),
                "latitude": 34.05 + random_unit() / 100.0, "longitude": -117.2 + random_unit() / 100.0,
                "altitude_m": 410.0, "readiness": random_unit(), "capabilities": ["eo", "rf"],
                "unit_id": "alpha", "callsign": null
            });
            self.put("nodes", &id, &doc.to_string());
        } else {
            let id = format!("t-{}", n % 20);
            let doc = serde_json::json!({
                "id": id, "source_node": format!("n-{}", n % 5), "cell_id": null, "formation_id": null,
                "latitude": 34.0 + random_unit() / 10.0, "longitude": -117.0 - random_unit() / 10.0,
                "altitude_m": null, "cep_m": 5.0, "heading_deg": random_unit() * 360.0,
                "speed_mps": random_unit() * 20.0, "classification": "vehicle",
                "confidence": (random_unit() * 100.0).round() / 100.0, "category": 2
            });
            self.put("tracks", &id, &doc.to_string());
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(g) = lock(&self.generator).take() {
            g.abort();
        }
    }
}

fn connect_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&ConnectError {
            code: code.into(),
            message: message.into(),
        })
        .unwrap_or_default(),
    )
        .into_response()
}

fn json_ok<T: serde::Serialize>(v: &T) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

fn content_type(h: &HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Waits while the node is stopped.
async fn while_hung(inner: &Inner) {
    let mut rx = inner.hung.subscribe();
    let _ = rx.wait_for(|hung| !*hung).await;
}

async fn rpc(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    while_hung(&inner).await;
    let want = lock(&inner.token).clone();
    if let Some(want) = want {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(want.as_str()) {
            return connect_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "bearer token required",
            );
        }
    }
    if method == "Subscribe" {
        if content_type(&headers) != "application/connect+json" {
            return connect_error(
                StatusCode::NOT_IMPLEMENTED,
                "unimplemented",
                "streaming RPC needs application/connect+json",
            );
        }
        return subscribe(inner, &body);
    }
    if content_type(&headers) != "application/json" {
        return connect_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_argument",
            "expected application/json",
        );
    }
    let bad = |e: serde_json::Error| {
        connect_error(StatusCode::BAD_REQUEST, "invalid_argument", &e.to_string())
    };
    match method.as_str() {
        "GetStatus" => {
            let (node_id, endpoint_addr) = lock(&inner.identity).clone();
            json_ok(&Status {
                node_id,
                endpoint_addr,
                sync_active: true,
                connected_peers: 1,
                phase: "NODE_PHASE_SYNCING".into(),
            })
        }
        "ListDocuments" => match serde_json::from_slice::<ListDocumentsRequest>(&body) {
            Ok(r) => {
                let doc_ids = lock(&inner.docs)
                    .keys()
                    .filter(|(c, _)| *c == r.collection)
                    .map(|(_, d)| d.clone())
                    .collect();
                json_ok(&ListDocumentsResponse { doc_ids })
            }
            Err(e) => bad(e),
        },
        "GetDocument" => match serde_json::from_slice::<DocumentKey>(&body) {
            Ok(k) => json_ok(&GetDocumentResponse {
                json_data: lock(&inner.docs).get(&(k.collection, k.doc_id)).cloned(),
            }),
            Err(e) => bad(e),
        },
        "PutDocument" => match serde_json::from_slice::<PutDocumentRequest>(&body) {
            Ok(p) => {
                let v0_1 = inner.v0_1.load(Ordering::Relaxed);
                // 0.4.x maps JSON objects to Automerge; 0.1.0 stores any JSON text verbatim.
                if serde_json::from_str::<serde_json::Value>(&p.json_data)
                    .map_or(true, |v| !v.is_object() && !v0_1)
                {
                    return connect_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "jsonData is not a JSON object",
                    );
                }
                lock(&inner.docs).insert(
                    (p.collection.clone(), p.doc_id.clone()),
                    p.json_data.clone(),
                );
                let _ = inner.tx.send(DocumentChange {
                    collection: p.collection,
                    doc_id: p.doc_id,
                    change_type: ChangeType::Upsert,
                    json_data: Some(p.json_data),
                });
                json_ok(&serde_json::json!({}))
            }
            Err(e) => bad(e),
        },
        "DeleteDocument" => match serde_json::from_slice::<DocumentKey>(&body) {
            Ok(k) => {
                inner.local_delete(&k.collection, &k.doc_id);
                json_ok(&serde_json::json!({}))
            }
            Err(e) => bad(e),
        },
        _ => connect_error(StatusCode::NOT_FOUND, "unimplemented", "no such method"),
    }
}

fn subscribe(inner: Arc<Inner>, body: &[u8]) -> Response {
    inner.subscribes.fetch_add(1, Ordering::Relaxed);
    let mut d = Decoder::default();
    let req = match d.push(body).first() {
        Some(Frame::Message(p)) => serde_json::from_slice::<SubscribeRequest>(p).ok(),
        _ => None,
    };
    let Some(req) = req else {
        let end = EndOfStream {
            error: Some(ConnectError {
                code: "invalid_argument".into(),
                message: "malformed request envelope".into(),
            }),
        };
        let bytes = frame(FLAG_END, &serde_json::to_vec(&end).unwrap_or_default());
        return ([(header::CONTENT_TYPE, "application/connect+json")], bytes).into_response();
    };
    // Register on the broadcast first: the snapshot and the live stream overlap.
    let rx = inner.tx.subscribe();
    let snapshot: Vec<Vec<u8>> = if req.collections.is_empty() || inner.v0_1.load(Ordering::Relaxed)
    {
        vec![]
    } else {
        lock(&inner.docs)
            .iter()
            .filter(|((c, _), _)| req.collections.contains(c))
            .map(|((c, id), json)| {
                let ch = DocumentChange {
                    collection: c.clone(),
                    doc_id: id.clone(),
                    change_type: ChangeType::Upsert,
                    json_data: Some(json.clone()),
                };
                frame(0, &serde_json::to_vec(&ch).unwrap_or_default())
            })
            .collect()
    };
    let gen_rx = inner.generation.subscribe();
    let node = inner.clone();
    let state = (snapshot.into_iter(), rx, gen_rx, req.collections);
    let stream =
        futures_util::stream::unfold(state, move |(mut snap, mut rx, mut gen_rx, cols)| {
            let node = node.clone();
            async move {
                while_hung(&node).await;
                if let Some(f) = snap.next() {
                    return Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(f)),
                        (snap, rx, gen_rx, cols),
                    ));
                }
                loop {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(c) if cols.is_empty() || cols.contains(&c.collection) => {
                                let f = frame(0, &serde_json::to_vec(&c).unwrap_or_default());
                                return Some((Ok(Bytes::from(f)), (snap, rx, gen_rx, cols)));
                            }
                            Ok(_) => {}
                            // Lag: events are gone and nothing on the wire says so.
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        // The node went away: the body ends with no end-of-stream frame.
                        _ = gen_rx.changed() => return None,
                    }
                }
            }
        });
    (
        [(header::CONTENT_TYPE, "application/connect+json")],
        Body::from_stream(stream),
    )
        .into_response()
}
