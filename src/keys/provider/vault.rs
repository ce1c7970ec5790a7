//! `vault` provider: Vault or OpenBao Transit holds the KEK; the gateway sends each DEK to
//! `encrypt`/`decrypt` with the record identity as `associated_data`, so a wrapped DEK
//! cannot be replayed onto another record. The KEK never leaves the server.
//!
//! Wrapped DEK = the Transit ciphertext text (`vault:vN:…`).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{BoxFuture, KeyProvider, ProviderKind};
use crate::keys::KeyError;
use crate::secret::Secret;

/// How to reach and authenticate to the Transit engine.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub addr: String,
    pub token: Option<Secret>,
    pub role_id: Option<String>,
    pub secret_id: Option<Secret>,
    pub mount: String,
    pub key: String,
    pub namespace: Option<String>,
    /// PEM of a private CA for `https://` addresses.
    pub ca_pem: Option<String>,
}

pub struct VaultTransit {
    http: reqwest::Client,
    settings: VaultSettings,
    token: Secret,
    kek_id: String,
}

fn remote(what: &'static str) -> impl Fn(String) -> KeyError {
    move |detail| KeyError::Remote { what, detail }
}

impl VaultTransit {
    /// Logs in (token, or AppRole) and checks that the Transit key exists.
    pub async fn connect(settings: VaultSettings) -> Result<Self, KeyError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &settings.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| remote("read the Vault CA certificate")(e.to_string()))?;
            b = b.add_root_certificate(cert);
        }
        let http = b
            .build()
            .map_err(|e| remote("build the Vault client")(e.to_string()))?;
        let token = match (&settings.token, &settings.role_id, &settings.secret_id) {
            (Some(t), _, _) => t.clone(),
            (None, Some(role), Some(secret)) => {
                let v = send(
                    &http,
                    &settings,
                    None,
                    "auth/approle/login",
                    json!({"role_id": role, "secret_id": secret.expose()}),
                )
                .await
                .map_err(remote("log in to Vault with AppRole (check PEAT_VAULT_ROLE_ID and PEAT_VAULT_SECRET_ID)"))?;
                let t = v["auth"]["client_token"].as_str().ok_or_else(|| {
                    remote("log in to Vault with AppRole")("no client_token in the answer".into())
                })?;
                Secret::new(t.to_owned())
            }
            _ => {
                return Err(KeyError::Remote {
                    what: "authenticate to Vault",
                    detail: "set PEAT_VAULT_TOKEN, or PEAT_VAULT_ROLE_ID and PEAT_VAULT_SECRET_ID"
                        .into(),
                })
            }
        };
        let host = reqwest::Url::parse(&settings.addr)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let kek_id = format!("vault:{}/{}/{}", host, settings.mount, settings.key);
        let me = Self {
            http,
            settings,
            token,
            kek_id,
        };
        let path = format!("{}/keys/{}", me.settings.mount, me.settings.key);
        me.get(&path)
            .await
            .map_err(remote("find the Transit key (check PEAT_VAULT_TRANSIT_KEY and that the transit engine is mounted)"))?;
        Ok(me)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let mut r = self
            .http
            .get(format!(
                "{}/v1/{path}",
                self.settings.addr.trim_end_matches('/')
            ))
            .header("X-Vault-Token", self.token.expose());
        if let Some(ns) = &self.settings.namespace {
            r = r.header("X-Vault-Namespace", ns);
        }
        answer(r.send().await.map_err(|e| e.to_string())?).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        send(&self.http, &self.settings, Some(&self.token), path, body).await
    }
}

async fn send(
    http: &reqwest::Client,
    s: &VaultSettings,
    token: Option<&Secret>,
    path: &str,
    body: Value,
) -> Result<Value, String> {
    let mut r = http
        .post(format!("{}/v1/{path}", s.addr.trim_end_matches('/')))
        .json(&body);
    if let Some(t) = token {
        r = r.header("X-Vault-Token", t.expose());
    }
    if let Some(ns) = &s.namespace {
        r = r.header("X-Vault-Namespace", ns);
    }
    answer(r.send().await.map_err(|e| e.to_string())?).await
}

/// Largest answer read from the key service.
const MAX_ANSWER: usize = 1024 * 1024;

/// The JSON body of a 2xx, or Vault's `errors` list as the reason.
async fn answer(resp: reqwest::Response) -> Result<Value, String> {
    let status = resp.status();
    let v: Value = crate::peer_read::json_or_null(resp, MAX_ANSWER).await;
    if status.is_success() {
        return Ok(v);
    }
    let errors = v["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    Err(format!("HTTP {status}: {errors}"))
}

impl KeyProvider for VaultTransit {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Vault
    }

    fn kek_id(&self) -> &str {
        &self.kek_id
    }

    fn wrap<'a>(
        &'a self,
        dek: &'a [u8; 32],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KeyError>> {
        Box::pin(async move {
            let plaintext = Zeroizing::new(B64.encode(dek));
            let body =
                json!({"plaintext": plaintext.as_str(), "associated_data": B64.encode(context)});
            let path = format!("{}/encrypt/{}", self.settings.mount, self.settings.key);
            let v = self
                .post(&path, body)
                .await
                .map_err(remote("wrap a DEK with Vault Transit"))?;
            v["data"]["ciphertext"]
                .as_str()
                .map(|c| c.as_bytes().to_vec())
                .ok_or_else(|| {
                    remote("wrap a DEK with Vault Transit")("no ciphertext in the answer".into())
                })
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, KeyError>> {
        Box::pin(async move {
            let ct = std::str::from_utf8(wrapped).map_err(|_| KeyError::Malformed {
                what: "Vault-wrapped DEK is not text",
            })?;
            let body = json!({"ciphertext": ct, "associated_data": B64.encode(context)});
            let path = format!("{}/decrypt/{}", self.settings.mount, self.settings.key);
            let v = self.post(&path, body).await.map_err(|e| {
                if e.contains("message authentication failed") {
                    KeyError::Authentication
                } else {
                    remote("unwrap a DEK with Vault Transit")(e)
                }
            })?;
            super::dek_from_b64(v["data"]["plaintext"].as_str(), "Vault decrypt answer")
        })
    }
}
