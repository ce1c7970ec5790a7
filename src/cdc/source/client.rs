//! Client of the peat-node sidecar: Connect unary calls and the `Subscribe` stream over HTTP.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wire::{
    frame, ConnectError, Decoder, DocumentChange, DocumentKey, EndOfStream, Frame,
    GetDocumentResponse, ListDocumentsRequest, ListDocumentsResponse, Status, SubscribeRequest,
    SERVICE,
};
use crate::secret::Secret;

const UNARY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest unary answer: a document list or a document (the node takes at most 4 MiB).
const MAX_UNARY_ANSWER: usize = 16 * 1024 * 1024;
const MAX_ERROR_ANSWER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the node at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the node answered {code}: {message}")]
    Node { code: String, message: String },
    #[error("the node's answer is malformed: {0}")]
    Malformed(String),
    #[error("the change stream ended without an end-of-stream frame (node restarted or cut off)")]
    Cut,
    #[error("the node at the endpoint is {got}, not the pinned node {expected}: refusing to capture from it (another node took the endpoint, or the node was started without --node-id {expected})")]
    WrongNode { expected: String, got: String },
}

/// How requests reach the sidecar: `http(s)://host:port`, or `unix:///path` (the node's
/// preferred kit setup) through the same client bound to the socket.
#[derive(Clone)]
struct Transport {
    base: String,
    unary: reqwest::Client,
    streaming: reqwest::Client,
}

/// A response body, read chunk by chunk.
struct Body(reqwest::Response);

impl Body {
    async fn chunk(&mut self) -> Result<Option<hyper::body::Bytes>, String> {
        self.0
            .chunk()
            .await
            .map_err(|e| crate::peer_read::chain(&e))
    }

    /// The whole body, refused once it passes `max` bytes.
    async fn all(mut self, max: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            if out.len() + c.len() > max {
                return Err(format!("the node's answer is larger than {max} bytes"));
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

/// TLS towards an `https://` sidecar front: the CA to trust and an optional client identity.
#[derive(Default)]
pub struct TlsSettings {
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<Secret>,
}

impl TlsSettings {
    fn rustls(&self) -> Result<rustls::ClientConfig, String> {
        let client = match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(c), Some(k)) => Some((c.as_str(), k.expose())),
            _ => None,
        };
        crate::tls::client_config(self.ca_pem.as_deref(), client)
    }
}

/// Talks to one sidecar endpoint: `http://host:port` or `unix:///path/to.sock`.
#[derive(Clone)]
pub struct SidecarClient {
    endpoint: String,
    token: Option<Secret>,
    transport: Transport,
}

impl SidecarClient {
    pub fn new(
        endpoint: &str,
        token: Option<Secret>,
        tls: TlsSettings,
    ) -> Result<Self, SourceError> {
        let tls_config = if endpoint.starts_with("https://") {
            Some(tls.rustls().map_err(|reason| SourceError::Unreachable {
                endpoint: crate::tenant::redact_endpoint(endpoint),
                reason,
            })?)
        } else {
            None
        };
        let unix = endpoint.strip_prefix("unix://");
        let build = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .tcp_keepalive(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none());
            if let Some(path) = unix {
                b = b.unix_socket(std::path::Path::new(path));
            }
            if let Some(cfg) = &tls_config {
                b = b.use_preconfigured_tls(cfg.clone());
            }
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.build().map_err(|e| SourceError::Unreachable {
                endpoint: crate::tenant::redact_endpoint(endpoint),
                reason: e.to_string(),
            })
        };
        let transport = Transport {
            base: match unix {
                Some(_) => "http://localhost".to_owned(),
                None => endpoint.trim_end_matches('/').to_owned(),
            },
            unary: build(Some(UNARY_TIMEOUT))?,
            // No read timeout on the stream: a quiet mesh sends nothing for long stretches.
            streaming: build(None)?,
        };
        Ok(Self {
            // Shown in errors and logs: never with credentials.
            endpoint: crate::tenant::redact_endpoint(endpoint),
            token,
            transport,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> SourceError {
        SourceError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        }
    }

    /// [`Self::unreachable`] with every cause of `e` (the root cause is what operators need).
    fn unreachable_chain(&self, e: &dyn std::error::Error) -> SourceError {
        let mut text = crate::peer_read::chain(e);
        // Client errors name the URL, credentials included: show it redacted.
        let base = &self.transport.base;
        text = text.replace(base.as_str(), &crate::tenant::redact_endpoint(base));
        self.unreachable(text)
    }

    /// One POST; `streaming` selects the client without a read timeout.
    async fn post(
        &self,
        method: &str,
        content_type: &str,
        body: Vec<u8>,
        streaming: bool,
    ) -> Result<(u16, Body), SourceError> {
        let bearer = self
            .token
            .as_ref()
            .map(|t| format!("Bearer {}", t.expose()));
        let t = &self.transport;
        let client = if streaming { &t.streaming } else { &t.unary };
        let mut r = client
            .post(format!("{}{SERVICE}{method}", t.base))
            .header("Content-Type", content_type)
            .header("Connect-Protocol-Version", "1");
        if !streaming {
            r = r.header("Connect-Timeout-Ms", UNARY_TIMEOUT.as_millis().to_string());
        }
        if let Some(b) = &bearer {
            r = r.header("Authorization", b);
        }
        let resp = r
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable_chain(&e))?;
        Ok((resp.status().as_u16(), Body(resp)))
    }

    async fn unary<Q: Serialize, A: DeserializeOwned + Default>(
        &self,
        method: &str,
        req: &Q,
    ) -> Result<A, SourceError> {
        let body = serde_json::to_vec(req).map_err(|e| SourceError::Malformed(e.to_string()))?;
        // One retry: a pooled connection the node closed fails on first use.
        let mut attempt = 0;
        let (status, bytes) = loop {
            attempt += 1;
            let call = async {
                let (status, b) = self
                    .post(method, "application/json", body.clone(), false)
                    .await?;
                // An error answer is small; a document is at most the node's request limit.
                let max = if (200..300).contains(&status) {
                    MAX_UNARY_ANSWER
                } else {
                    MAX_ERROR_ANSWER
                };
                let bytes = b.all(max).await.map_err(|e| self.unreachable(e))?;
                Ok::<_, SourceError>((status, bytes))
            };
            match tokio::time::timeout(UNARY_TIMEOUT, call).await {
                Ok(Ok(r)) => break r,
                Ok(Err(SourceError::Unreachable { .. })) if attempt < 2 => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(self.unreachable(format!("{method} timed out"))),
            }
        };
        if !(200..300).contains(&status) {
            let err: ConnectError = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(SourceError::Node {
                code: if err.code.is_empty() {
                    status.to_string()
                } else {
                    err.code
                },
                message: err.message,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(A::default());
        }
        serde_json::from_slice(&bytes).map_err(|e| SourceError::Malformed(format!("{method}: {e}")))
    }

    pub async fn status(&self) -> Result<Status, SourceError> {
        self.unary("GetStatus", &serde_json::json!({})).await
    }

    pub async fn list(&self, collection: &str) -> Result<Vec<String>, SourceError> {
        let r: ListDocumentsResponse = self
            .unary(
                "ListDocuments",
                &ListDocumentsRequest {
                    collection: collection.into(),
                },
            )
            .await?;
        Ok(r.doc_ids)
    }

    /// The document's JSON text, or `None` when the node has no such document.
    pub async fn get(&self, collection: &str, doc_id: &str) -> Result<Option<String>, SourceError> {
        let r: GetDocumentResponse = self
            .unary(
                "GetDocument",
                &DocumentKey {
                    collection: collection.into(),
                    doc_id: doc_id.into(),
                },
            )
            .await?;
        Ok(r.json_data)
    }

    /// Writes a document on the node (replacing it); `json` must be a JSON object's text.
    pub async fn put(&self, collection: &str, doc_id: &str, json: &str) -> Result<(), SourceError> {
        let _: serde_json::Value = self
            .unary(
                "PutDocument",
                &super::wire::PutDocumentRequest {
                    collection: collection.into(),
                    doc_id: doc_id.into(),
                    json_data: json.into(),
                },
            )
            .await?;
        Ok(())
    }

    pub async fn subscribe(&self, collections: &[String]) -> Result<ChangeStream, SourceError> {
        let req = SubscribeRequest {
            collections: collections.to_vec(),
        };
        let body = frame(
            0,
            &serde_json::to_vec(&req).map_err(|e| SourceError::Malformed(e.to_string()))?,
        );
        // The stream itself has no read deadline, but its answer must start in time.
        let (status, resp) = tokio::time::timeout(
            UNARY_TIMEOUT,
            self.post("Subscribe", "application/connect+json", body, true),
        )
        .await
        .map_err(|_| self.unreachable("Subscribe: no answer in time"))??;
        if !(200..300).contains(&status) {
            let bytes = tokio::time::timeout(UNARY_TIMEOUT, resp.all(MAX_ERROR_ANSWER))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let err: ConnectError = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(SourceError::Node {
                code: if err.code.is_empty() {
                    status.to_string()
                } else {
                    err.code
                },
                message: err.message,
            });
        }
        Ok(ChangeStream {
            resp,
            decoder: Decoder::default(),
            ready: Vec::new(),
            skipped: 0,
        })
    }
}

/// The open `Subscribe` body.
pub struct ChangeStream {
    resp: Body,
    decoder: Decoder,
    ready: Vec<DocumentChange>,
    /// Frames dropped as oversize, compressed or unparsable.
    pub skipped: u64,
}

impl ChangeStream {
    /// The changes of the next chunk (at least one); `Ok(None)` after a clean end-of-stream.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<DocumentChange>>, SourceError> {
        loop {
            if !self.ready.is_empty() {
                return Ok(Some(std::mem::take(&mut self.ready)));
            }
            let chunk = match self.resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Err(SourceError::Cut),
                Err(reason) => {
                    return Err(SourceError::Unreachable {
                        endpoint: "change stream".into(),
                        reason,
                    })
                }
            };
            for f in self.decoder.push(&chunk) {
                match f {
                    Frame::Message(p) => match serde_json::from_slice::<DocumentChange>(&p) {
                        Ok(c) => self.ready.push(c),
                        Err(_) => self.skipped += 1,
                    },
                    Frame::Skipped(_) => self.skipped += 1,
                    Frame::End(p) => {
                        let end: EndOfStream = serde_json::from_slice(&p).unwrap_or_default();
                        return match end.error {
                            Some(e) => Err(SourceError::Node {
                                code: e.code,
                                message: e.message,
                            }),
                            None if self.ready.is_empty() => Ok(None),
                            None => Ok(Some(std::mem::take(&mut self.ready))),
                        };
                    }
                }
            }
        }
    }
}
