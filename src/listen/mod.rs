//! The API's listeners and the loop that serves them: plain TCP, TLS (rustls) with an optional
//! or required client certificate, and a Unix socket for local tools, several at once. Each
//! connection is bounded (a connection limit, a deadline for the TLS handshake and for request
//! headers, deadlines on stalled writes and idle connections, a cap per source address, the
//! allow-list at accept, so slow, silent or non-reading clients cannot pile up), and shutdown
//! lets requests in flight finish.

mod admit;
mod deadline;

pub use admit::{canonical, Admission};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Who is on the other end: its address (none on the Unix socket) and, over TLS, the client
/// certificate it presented, already verified against the client CA.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// DER of the verified end-entity client certificate, when one was presented.
    pub client_cert: Option<Arc<Vec<u8>>>,
    /// Over TLS or the local Unix socket: fit for secrets in answers.
    pub secure: bool,
}

/// The listener's TLS material, read and checked at start-up (and again at each reload).
pub struct TlsMaterial {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
    pub client_ca_pem: Option<String>,
    pub require_client_cert: bool,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("require_client_cert", &self.require_client_cert)
            .finish_non_exhaustive()
    }
}

/// The server certificate's validity end, Unix seconds; errors name what is wrong.
pub fn cert_not_after(cert_pem: &str) -> Result<i64, String> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .ok_or("holds no PEM certificate")?
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("is not a valid X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

impl TlsMaterial {
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut cfg = crate::tls::server_config_for_listener(
            &self.cert_pem,
            &self.key_pem,
            self.client_ca_pem.as_deref(),
            self.require_client_cert,
        )?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// The TLS settings in use; replaced whole by a reload, read per connection.
#[derive(Clone)]
pub struct TlsState(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl TlsState {
    pub fn new(cfg: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(cfg)))
    }

    pub fn replace(&self, cfg: Arc<rustls::ServerConfig>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cfg;
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// One bound listener.
pub enum Bound {
    Tcp {
        listener: TcpListener,
        tls: Option<TlsState>,
    },
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

/// Bounds on every connection.
#[derive(Clone)]
pub struct Limits {
    /// Connections served at once across all listeners; further ones wait in the backlog.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake, for each request's headers, and for a write the
    /// client does not take.
    pub handshake_and_header_timeout: Duration,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout: Duration,
    /// The allow-list and the per-source cap, applied at accept on TCP listeners.
    pub admission: Admission,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            handshake_and_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            admission: Admission::new(Vec::new(), 64),
        }
    }
}

/// The connection's slot in the connection budget, in each request's extensions: a
/// long-lived stream gives it back (and takes one of the stream budget instead), so streams
/// never starve ordinary requests.
#[derive(Clone)]
pub struct ConnSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl ConnSlot {
    pub fn release(&self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

/// Binds a Unix socket at `path` with `mode` and, when given, owner `uid:gid`. A stale
/// socket file (nobody listening) is replaced; a live one is an error.
pub fn bind_unix(
    path: &std::path::Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", path.display()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("{} is in use by a running process", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing the stale {}: {e}", path.display()))?;
    }
    let l = UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {}: {e}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
            format!(
                "setting the owner of {} to {uid}:{gid}: {e}",
                path.display()
            )
        })?;
    }
    Ok(l)
}

type Io = Box<dyn IoStream>;
trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}

/// Serves `app` on every listener until `shutdown` resolves, then waits for requests in
/// flight (up to 10 s) and removes Unix socket files.
pub async fn serve(
    bound: Vec<Bound>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    let mut sockets = Vec::new();
    for b in bound {
        if let Bound::Unix { path, .. } = &b {
            sockets.push(path.clone());
        }
        loops.push(tokio::spawn(accept_loop(
            b,
            app.clone(),
            limits.clone(),
            permits.clone(),
            graceful.clone(),
            stop_rx.clone(),
        )));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    match Arc::try_unwrap(graceful) {
        Ok(g) => {
            if tokio::time::timeout(Duration::from_secs(10), g.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("requests still running after 10 s; closing them");
            }
        }
        Err(_) => tracing::warn!("connections still being set up at shutdown"),
    }
    for p in sockets {
        let _ = std::fs::remove_file(p);
    }
}

async fn accept_loop(
    bound: Bound,
    app: axum::Router,
    limits: Limits,
    permits: Arc<Semaphore>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let accepted: Result<Accepted, std::io::Error> = tokio::select! {
            r = accept(&bound, &limits.admission) => r,
            _ = stop.changed() => return,
        };
        let (io, peer, tls, held) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _held = held;
            let slot = ConnSlot(Arc::new(std::sync::Mutex::new(Some(permit))));
            let io: Io = Box::new(deadline::Deadlines::new(
                io,
                limits.handshake_and_header_timeout,
                limits.idle_timeout,
            ));
            let (io, peer) = match tls {
                None => (io, peer),
                Some(tls) => {
                    match tokio::time::timeout(
                        limits.handshake_and_header_timeout,
                        tls.acceptor().accept(io),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| Arc::new(c.as_ref().to_vec()));
                            (
                                Box::new(stream) as Io,
                                PeerInfo {
                                    client_cert,
                                    secure: true,
                                    ..peer
                                },
                            )
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = ?peer.addr, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = ?peer.addr, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer.clone()));
                    req.extensions_mut().insert(slot.clone());
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.handshake_and_header_timeout)
                .serve_connection(TokioIo::new(io), svc);
            let _ = watcher.watch(conn).await;
        });
    }
}

type Accepted = (Io, PeerInfo, Option<TlsState>, Option<admit::Held>);

/// The next admitted connection; refused ones are answered (plain TCP) or closed (TLS) here.
async fn accept(bound: &Bound, admission: &Admission) -> Result<Accepted, std::io::Error> {
    match bound {
        Bound::Tcp { listener, tls } => loop {
            let (s, addr) = listener.accept().await?;
            let held = match admission.admit(addr.ip()) {
                Ok(h) => h,
                Err(refusal) => {
                    tracing::debug!(peer = %addr, ?refusal, "connection refused at accept");
                    if tls.is_none() {
                        admission.answer(s, refusal);
                    }
                    continue;
                }
            };
            let _ = s.set_nodelay(true);
            return Ok((
                Box::new(s),
                PeerInfo {
                    addr: Some(addr),
                    client_cert: None,
                    secure: false,
                },
                tls.clone(),
                Some(held),
            ));
        },
        Bound::Unix { listener, .. } => {
            let (s, _) = listener.accept().await?;
            Ok((
                Box::new(s),
                PeerInfo {
                    addr: None,
                    client_cert: None,
                    secure: true,
                },
                None,
                None,
            ))
        }
    }
}
