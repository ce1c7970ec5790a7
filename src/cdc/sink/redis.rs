//! Redis Streams: one `XADD <stream> [MAXLEN ~ n] * id <event id> event <CloudEvent JSON>` per
//! event, a batch written as one pipeline; the batch counts as delivered when every reply is
//! an entry id. The stream name may use `{org}` and `{app}`. At least once: after any error
//! the connection is dropped and the batch is sent again, so a receiver dedupes by the `id`
//! field (the CloudEvent id). A reply that is an error other than a passing condition (a key
//! of another type, a stream the server refuses to write) is a permanent refusal of that
//! event.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::resp::{encode, Conn, Reply};
use super::{DeliverFuture, Delivery, Sink, SinkError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a batch's replies.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Where and how to connect, from `redis://[user@]host[:port][/db]` or `rediss://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub user: Option<String>,
    pub db: Option<u32>,
}

/// Parses a stored URL (its password, if any, is kept apart).
pub fn parse_url(url: &str) -> Result<RedisAddr, String> {
    let u = url::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    let tls = match u.scheme() {
        "redis" => false,
        "rediss" => true,
        _ => return Err("must start with redis:// or rediss://".into()),
    };
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let db = match u.path().trim_start_matches('/') {
        "" => None,
        d => Some(
            d.parse()
                .map_err(|_| "names a database that is not a number")?,
        ),
    };
    Ok(RedisAddr {
        host,
        port: u.port().unwrap_or(6379),
        tls,
        user: (!u.username().is_empty()).then(|| u.username().to_owned()),
        db,
    })
}

pub struct RedisSink {
    addr: RedisAddr,
    password: Option<zeroize::Zeroizing<String>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    egress: crate::egress::Egress,
    stream: String,
    maxlen: Option<u64>,
    conn: Option<Conn<Box<dyn Io>>>,
}

impl RedisSink {
    pub fn new(
        url: &str,
        password: Option<String>,
        stream: String,
        maxlen: Option<u64>,
        egress: crate::egress::Egress,
        tls_ca_pem: Option<&str>,
        client: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let addr = parse_url(url).map_err(|e| format!("Redis url {e}"))?;
        if client.is_some() && !addr.tls {
            return Err("a client certificate needs a rediss:// URL".into());
        }
        let tls = if addr.tls {
            Some(Arc::new(crate::tls::client_config(tls_ca_pem, client)?))
        } else {
            None
        };
        Ok(Self {
            addr,
            password: password.map(zeroize::Zeroizing::new),
            tls,
            egress,
            stream,
            maxlen,
            conn: None,
        })
    }

    /// The stream an event goes to.
    fn stream_of(&self, d: &Delivery) -> String {
        self.stream
            .replace("{org}", &d.event.org_id)
            .replace("{app}", &d.event.app_id)
    }

    async fn connect(&self) -> Result<Conn<Box<dyn Io>>, SinkError> {
        let a = &self.addr;
        let host = self
            .egress
            .pinned_host(&a.host, a.port, a.tls)
            .await
            .map_err(SinkError::Transient)?;
        let target = format!("{}:{}", host.trim_matches(['[', ']']), a.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&target))
            .await
            .map_err(|_| SinkError::Transient(format!("connecting to {target}: timed out")))?
            .map_err(|e| SinkError::Transient(format!("connecting to {target}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(a.host.clone())
                    .map_err(|e| SinkError::Transient(format!("TLS name {}: {e}", a.host)))?;
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| SinkError::Transient("TLS handshake timed out".into()))?
                .map_err(|e| SinkError::Transient(format!("TLS handshake: {e}")))?;
                Box::new(tls)
            }
        };
        let mut conn = Conn::new(io);
        let expect_ok = |what: &str, r: std::io::Result<Reply>| match r {
            Ok(Reply::Simple(_)) => Ok(()),
            Ok(Reply::Error(e)) => Err(SinkError::Transient(format!("{what}: {e}"))),
            Ok(other) => Err(SinkError::Transient(format!(
                "{what}: unexpected {other:?}"
            ))),
            Err(e) => Err(SinkError::Transient(format!("{what}: {e}"))),
        };
        if let Some(p) = &self.password {
            let r = match &a.user {
                Some(u) => conn.command(&[b"AUTH", u.as_bytes(), p.as_bytes()]).await,
                None => conn.command(&[b"AUTH", p.as_bytes()]).await,
            };
            expect_ok("AUTH", r)?;
        }
        if let Some(db) = a.db {
            let db = db.to_string();
            expect_ok("SELECT", conn.command(&[b"SELECT", db.as_bytes()]).await)?;
        }
        Ok(conn)
    }

    async fn publish(&mut self, batch: &[Delivery]) -> Result<(), SinkError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let mut out = Vec::with_capacity(batch.iter().map(|d| d.body.len() + 96).sum());
        let maxlen = self.maxlen.map(|n| n.to_string());
        for d in batch {
            let stream = self.stream_of(d);
            let mut args: Vec<&[u8]> = vec![b"XADD", stream.as_bytes()];
            if let Some(n) = &maxlen {
                args.extend_from_slice(&[b"MAXLEN", b"~", n.as_bytes()]);
            }
            args.extend_from_slice(&[b"*", b"id", d.id.as_bytes(), b"event", &d.body]);
            encode(&mut out, &args);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SinkError::Transient("no Redis connection".into()))?;
        let exchange = async {
            conn.send(&out)
                .await
                .map_err(|e| SinkError::Transient(format!("sending to Redis: {e}")))?;
            for (i, _) in batch.iter().enumerate() {
                match conn.reply().await {
                    Ok(Reply::Bulk(Some(_))) => {}
                    Ok(Reply::Error(e)) if passing(&e) => {
                        return Err(SinkError::Transient(format!("Redis: {e}")))
                    }
                    Ok(Reply::Error(e)) => {
                        return Err(SinkError::Rejected {
                            index: i,
                            reason: format!("Redis refused the entry: {e}"),
                        })
                    }
                    Ok(other) => {
                        return Err(SinkError::Transient(format!(
                            "Redis answered XADD with {other:?}"
                        )))
                    }
                    Err(e) => return Err(SinkError::Transient(format!("Redis: {e}"))),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(ACK_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Transient(format!(
                "Redis did not answer {} XADDs within {ACK_TIMEOUT:?}",
                batch.len()
            ))),
        }
    }
}

/// Errors a later attempt may not meet (memory, loading, replicas, auth being set up).
fn passing(e: &str) -> bool {
    [
        "OOM",
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "NOREPLICAS",
        "MASTERDOWN",
        "NOAUTH",
        "WRONGPASS",
        "READONLY",
    ]
    .iter()
    .any(|p| e.starts_with(p))
}

impl Sink for RedisSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let r = self.publish(batch).await;
            if r.is_err() {
                // Replies of the failed pipeline may still be in flight: start clean.
                self.conn = None;
            }
            r
        })
    }

    fn target(&self) -> String {
        format!(
            "{}://{}{}:{} stream {}",
            if self.addr.tls { "rediss" } else { "redis" },
            self.addr
                .user
                .as_ref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            self.addr.host,
            self.addr.port,
            self.stream
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_tls_user_and_database() {
        let a = parse_url("redis://h").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls, a.user, a.db),
            ("h", 6379, false, None, None)
        );
        let a = parse_url("rediss://gw@h:7000/3").unwrap();
        assert_eq!(
            (a.port, a.tls, a.user.as_deref(), a.db),
            (7000, true, Some("gw"), Some(3))
        );
        for bad in ["http://h", "redis://", "redis://h/x", "nats://h"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
