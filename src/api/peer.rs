//! Who is on the other end of a connection: its address and, over TLS, the client
//! certificate it presented (already verified against the configured client CA).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;

use crate::listen::TlsListener;

#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// DER of the verified client certificate (end entity), when one was presented.
    pub client_cert: Option<Arc<Vec<u8>>>,
}

impl Connected<IncomingStream<'_, TcpListener>> for PeerInfo {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Self {
        Self {
            addr: *s.remote_addr(),
            client_cert: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerInfo {
    fn connect_info(s: IncomingStream<'_, TlsListener>) -> Self {
        let client_cert = s
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Arc::new(c.as_ref().to_vec()));
        Self {
            addr: *s.remote_addr(),
            client_cert,
        }
    }
}

/// The peer as an extractor; `None` fields when the listener does not know (tests, sockets).
pub(crate) struct Peer {
    pub ip: Option<IpAddr>,
    pub client_cert: Option<Arc<Vec<u8>>>,
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<ConnectInfo<PeerInfo>>();
        Ok(Peer {
            ip: info.map(|c| c.0.addr.ip()),
            client_cert: info.and_then(|c| c.0.client_cert.clone()),
        })
    }
}
