//! Webhooks: a batch of CloudEvents per POST (`application/cloudevents-batch+json`), signed
//! in the Standard Webhooks style:
//!
//! - `webhook-id`: `<first event id>-<last lsn>`, the same on every retry of the same batch;
//! - `webhook-timestamp`: Unix seconds of this attempt;
//! - `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")), where
//!   the key is the secret shown once at sink creation (`whsec_<base64 key>`).
//!
//! 2xx acknowledges the batch. 408, 429 and 5xx are retried, honouring `Retry-After`. Another
//! 4xx means the receiver refuses something in the batch: the events are then sent one by one
//! to find which, and that one stalls the sink for an operator. Redirects are not followed.
//! Addresses that resolve to link-local or cloud-metadata ranges are refused unless the sink
//! allows private targets.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use zeroize::Zeroizing;

use super::{DeliverFuture, Delivery, Sink, SinkError};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub struct WebhookSink {
    url: reqwest::Url,
    key: Zeroizing<Vec<u8>>,
    allow_private: bool,
    client: reqwest::Client,
}

/// Why an address is refused as a webhook target, if it is.
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if o[0] == 169 && o[1] == 254 {
                Some("link-local (169.254.0.0/16, where cloud metadata services live)")
            } else if o == [100, 100, 100, 200] {
                Some("a cloud metadata address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                forbidden_address(IpAddr::V4(v4))
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if s == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                Some("a cloud metadata address")
            } else {
                None
            }
        }
    }
}

/// Checks a URL's literal host at configuration time; names are checked when resolved.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be http:// or https://".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials; the gateway signs each request instead".into());
    }
    match u.host() {
        None => return Err("has no host".into()),
        Some(url::Host::Ipv4(ip)) if !allow_private => {
            if let Some(why) = forbidden_address(IpAddr::V4(ip)) {
                return Err(format!("points at {why}; set allow_private to permit it"));
            }
        }
        Some(url::Host::Ipv6(ip)) if !allow_private => {
            if let Some(why) = forbidden_address(IpAddr::V6(ip)) {
                return Err(format!("points at {why}; set allow_private to permit it"));
            }
        }
        Some(_) => {}
    }
    Ok(u)
}

/// `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

enum Outcome {
    Ok,
    Retry(SinkError),
    Refused(String),
}

impl WebhookSink {
    pub fn new(
        url: &str,
        allow_private: bool,
        key: Zeroizing<Vec<u8>>,
        tls_ca_pem: Option<&str>,
        client: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let url = check_url(url, allow_private).map_err(|e| format!("webhook url {e}"))?;
        let mut b = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("peat-gateway/", env!("CARGO_PKG_VERSION")));
        if tls_ca_pem.is_some() || client.is_some() {
            // One rustls setup for every TLS client: the private CA (or the web roots) and the
            // client certificate, never verification turned off.
            b = b.use_preconfigured_tls(crate::tls::client_config(tls_ca_pem, client)?);
        }
        let client = b
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            url,
            key,
            allow_private,
            client,
        })
    }

    async fn guard(&self) -> Result<(), SinkError> {
        if self.allow_private {
            return Ok(());
        }
        let host = self
            .url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']']);
        let port = self.url.port_or_known_default().unwrap_or(443);
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| SinkError::Transient(format!("resolving {host}: {e}")))?;
        for a in addrs {
            if let Some(why) = forbidden_address(a.ip()) {
                return Err(SinkError::Transient(format!(
                    "{host} resolves to {}, {why}; refused (set allow_private to permit it)",
                    a.ip()
                )));
            }
        }
        Ok(())
    }

    async fn post(&self, batch: &[Delivery]) -> Outcome {
        let mut body =
            Vec::with_capacity(batch.iter().map(|d| d.body.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, d) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&d.body);
        }
        body.push(b']');
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Outcome::Ok;
        };
        let id = format!("{}-{}", first.id, last.lsn);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sig = signature(&self.key, &id, ts, &body);
        let resp = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/cloudevents-batch+json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry(SinkError::Transient(format!("POST {}: {e}", self.url)))
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Ok;
        }
        let reason = format!("{} answered {status}", self.url);
        if status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
        {
            let after = resp.headers().get(RETRY_AFTER).and_then(retry_after);
            return Outcome::Retry(match after {
                Some(d) => SinkError::Busy {
                    retry_after: d.min(MAX_RETRY_AFTER),
                    reason,
                },
                None => SinkError::Transient(reason),
            });
        }
        Outcome::Refused(reason)
    }

    async fn deliver_batch(&self, batch: &[Delivery]) -> Result<(), SinkError> {
        self.guard().await?;
        match self.post(batch).await {
            Outcome::Ok => Ok(()),
            Outcome::Retry(e) => Err(e),
            Outcome::Refused(reason) if batch.len() == 1 => {
                Err(SinkError::Rejected { index: 0, reason })
            }
            // One of them is refused: find which, delivering the others before it.
            Outcome::Refused(_) => {
                for (i, d) in batch.iter().enumerate() {
                    match self.post(std::slice::from_ref(d)).await {
                        Outcome::Ok => {}
                        Outcome::Retry(e) => return Err(e),
                        Outcome::Refused(reason) => {
                            return Err(SinkError::Rejected { index: i, reason })
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// `Retry-After` as seconds (HTTP dates are treated as "soon").
fn retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    Some(
        s.parse::<u64>()
            .map_or(Duration::from_secs(1), Duration::from_secs),
    )
}

impl Sink for WebhookSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> DeliverFuture<'a> {
        Box::pin(self.deliver_batch(batch))
    }

    fn target(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // From the Standard Webhooks specification's reference test.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn metadata_and_link_local_targets_are_refused_unless_allowed() {
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/x",
            "http://[::ffff:169.254.169.254]/",
            "http://100.100.100.200/",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
            assert!(check_url(bad, true).is_ok(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9/hook", false).is_ok());
        assert!(check_url("https://u:p@example.com/", false).is_err());
        assert!(check_url("ftp://example.com/", false).is_err());
    }
}
