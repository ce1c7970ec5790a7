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
//! Where the webhook may point is the org's egress policy (`crate::egress`): internal
//! addresses only when the gateway admin granted them, the name resolved once per connection
//! and the connection made to the checked address.

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
    egress: crate::egress::Egress,
    client: reqwest::Client,
}

/// Checks a URL's shape and, against `egress`, its literal host; names are checked when
/// resolved.
pub fn check_url(url: &str, egress: &crate::egress::Egress) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be http:// or https://".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials; the gateway signs each request instead".into());
    }
    match u.host() {
        None => return Err("has no host".into()),
        Some(h) => egress.check_literal(&h)?,
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
        egress: crate::egress::Egress,
        key: Zeroizing<Vec<u8>>,
        tls_ca_pem: Option<&str>,
        client: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let url = check_url(url, &egress).map_err(|e| format!("webhook url {e}"))?;
        let mut b = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(crate::egress::Resolver(egress.clone())))
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
            egress,
            client,
        })
    }

    /// A literal address is checked against the policy as it is now; names are checked by
    /// the resolver when the connection is made.
    fn guard(&self) -> Result<(), SinkError> {
        match self.url.host() {
            Some(h) => self.egress.check_literal(&h).map_err(SinkError::Transient),
            None => Ok(()),
        }
    }

    async fn post(&self, batch: &[Delivery]) -> Outcome {
        if batch.is_empty() {
            return Outcome::Ok;
        }
        let body = super::batch_array(batch);
        let id = super::batch_id(batch);
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
                // Without the query: it may carry the receiver's own credentials.
                return Outcome::Retry(SinkError::Transient(format!(
                    "POST {}: {}",
                    self.target(),
                    crate::peer_read::chain(&e).replace(self.url.as_str(), &self.target())
                )));
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Ok;
        }
        let reason = format!("{} answered {status}", self.target());
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
        self.guard()?;
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
    fn internal_targets_are_refused_unless_the_admin_granted_them() {
        let p = crate::egress::Policies::default();
        let e = p.for_org("acme");
        let bad = [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/x",
            "http://[::ffff:169.254.169.254]/",
            "http://100.100.100.200/",
            "http://127.0.0.1:9/hook",
            "http://10.0.0.5/hook",
        ];
        for b in bad {
            assert!(check_url(b, &e).is_err(), "{b}");
        }
        assert!(check_url("https://example.com/hook", &e).is_ok());
        assert!(check_url("https://u:p@example.com/", &e).is_err());
        assert!(check_url("ftp://example.com/", &e).is_err());
        p.set(
            "acme",
            crate::egress::Grant {
                networks: vec!["127.0.0.0/8".parse().unwrap()],
                hosts: vec![],
            },
        );
        assert!(check_url("http://127.0.0.1:9/hook", &e).is_ok());
        assert!(check_url("http://10.0.0.5/hook", &e).is_err());
    }
}
