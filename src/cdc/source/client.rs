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
}

/// Talks to one sidecar endpoint (`http://host:port`).
#[derive(Clone)]
pub struct SidecarClient {
    base: String,
    token: Option<Secret>,
    unary: reqwest::Client,
    streaming: reqwest::Client,
}

impl SidecarClient {
    pub fn new(endpoint: &str, token: Option<Secret>) -> Result<Self, SourceError> {
        let build = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .tcp_keepalive(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none());
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.build().map_err(|e| SourceError::Unreachable {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })
        };
        Ok(Self {
            base: endpoint.trim_end_matches('/').to_owned(),
            token,
            unary: build(Some(UNARY_TIMEOUT))?,
            // No read timeout on the stream: a quiet mesh sends nothing for long stretches.
            streaming: build(None)?,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: &str,
        content_type: &str,
    ) -> reqwest::RequestBuilder {
        let mut r = client
            .post(format!("{}{SERVICE}{method}", self.base))
            .header("Content-Type", content_type)
            .header("Connect-Protocol-Version", "1");
        if let Some(t) = &self.token {
            r = r.bearer_auth(t.expose());
        }
        r
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> SourceError {
        SourceError::Unreachable {
            endpoint: self.base.clone(),
            reason: e.to_string(),
        }
    }

    async fn unary<Q: Serialize, A: DeserializeOwned + Default>(
        &self,
        method: &str,
        req: &Q,
    ) -> Result<A, SourceError> {
        let body = serde_json::to_vec(req).map_err(|e| SourceError::Malformed(e.to_string()))?;
        // One retry: a pooled connection the node closed fails on first use.
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let r = self
                .request(&self.unary, method, "application/json")
                .header("Connect-Timeout-Ms", UNARY_TIMEOUT.as_millis().to_string())
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(r) => break r,
                Err(e) if attempt < 2 && !e.is_timeout() => continue,
                Err(e) => return Err(self.unreachable(e)),
            }
        };
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
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

    pub async fn subscribe(&self, collections: &[String]) -> Result<ChangeStream, SourceError> {
        let req = SubscribeRequest {
            collections: collections.to_vec(),
        };
        let body = frame(
            0,
            &serde_json::to_vec(&req).map_err(|e| SourceError::Malformed(e.to_string()))?,
        );
        let resp = self
            .request(&self.streaming, "Subscribe", "application/connect+json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let err: ConnectError = resp.json().await.unwrap_or_default();
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
    resp: reqwest::Response,
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
                Err(e) => {
                    return Err(SourceError::Unreachable {
                        endpoint: "change stream".into(),
                        reason: e.to_string(),
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
