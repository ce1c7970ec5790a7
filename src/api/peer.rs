//! The caller's connection as an extractor: its address and its verified client certificate
//! (see `listen::PeerInfo`, which the serving loop attaches to every request).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

pub use crate::listen::PeerInfo;

/// `None` fields when the listener does not know (a Unix socket has no address).
pub(crate) struct Peer {
    pub ip: Option<IpAddr>,
    pub client_cert: Option<Arc<Vec<u8>>>,
    /// TLS or the Unix socket.
    pub secure: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<ConnectInfo<PeerInfo>>();
        Ok(Peer {
            ip: info.and_then(|c| c.0.addr).map(|a| a.ip()),
            client_cert: info.and_then(|c| c.0.client_cert.clone()),
            secure: info.is_some_and(|c| c.0.secure),
        })
    }
}
