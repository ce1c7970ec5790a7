//! `aws-kms` provider: AWS KMS holds the KEK; each DEK is sent to `Encrypt`/`Decrypt` with
//! the record identity as `EncryptionContext`, so a wrapped DEK cannot be replayed onto
//! another record. Requests are signed with SigV4 here (hmac + sha2) rather than through the
//! AWS SDK, which would weigh more than the rest of the gateway.
//!
//! Wrapped DEK = the `CiphertextBlob` bytes.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{BoxFuture, KeyProvider, ProviderKind};
use crate::keys::KeyError;
use crate::secret::Secret;

/// Where the KMS key is and the credentials that may use it.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    pub key_arn: String,
    pub region: String,
    /// `https://kms.<region>.amazonaws.com`, or an emulator's address.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// The region inside `arn:aws:kms:<region>:<account>:key/<id>`.
pub fn region_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next()? == "arn").then_some(())?;
    parts.next()?;
    (parts.next()? == "kms").then_some(())?;
    parts.next().filter(|r| !r.is_empty())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match hmac::Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC accepts keys of any length.
        Err(_) => Vec::new(),
    }
}

/// SigV4 headers for a KMS JSON call: `(name, value)` pairs to add to the request.
pub fn sign(
    s: &KmsSettings,
    host: &str,
    target: &str,
    body: &[u8],
    now_ms: u64,
) -> Vec<(&'static str, String)> {
    let t = crate::utc(now_ms);
    let date = format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day());
    let amz_date = format!("{date}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second());
    let content_type = "application/x-amz-json-1.1";
    let mut headers = vec![
        ("content-type", content_type.to_owned()),
        ("host", host.to_owned()),
        ("x-amz-date", amz_date.clone()),
        ("x-amz-target", target.to_owned()),
    ];
    if let Some(tok) = &s.session_token {
        headers.push(("x-amz-security-token", tok.expose().to_owned()));
    }
    let signed: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
    let signed = signed.join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let canonical = format!(
        "POST\n/\n\n{canonical_headers}\n{signed}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{date}/{}/kms/aws4_request", s.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let secret = Zeroizing::new(format!("AWS4{}", s.secret_access_key.expose()));
    let k = hmac(secret.as_bytes(), date.as_bytes());
    let k = hmac(&k, s.region.as_bytes());
    let k = hmac(&k, b"kms");
    let k = hmac(&k, b"aws4_request");
    let signature = hex::encode(hmac(&k, to_sign.as_bytes()));
    headers.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            s.access_key_id
        ),
    ));
    headers.retain(|(k, _)| *k != "host");
    headers
}

pub struct AwsKms {
    http: reqwest::Client,
    settings: KmsSettings,
    host: String,
    kek_id: String,
}

fn remote(what: &'static str) -> impl Fn(String) -> KeyError {
    move |detail| KeyError::Remote { what, detail }
}

impl AwsKms {
    /// Checks the key with `DescribeKey`.
    pub async fn connect(settings: KmsSettings) -> Result<Self, KeyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| remote("build the KMS client")(e.to_string()))?;
        let url = reqwest::Url::parse(&settings.endpoint)
            .map_err(|e| remote("parse the KMS endpoint")(e.to_string()))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return Err(remote("parse the KMS endpoint")("no host".into())),
        };
        let kek_id = format!("aws-kms:{}", settings.key_arn);
        let me = Self {
            http,
            settings,
            host,
            kek_id,
        };
        me.call(
            "TrentService.DescribeKey",
            json!({"KeyId": me.settings.key_arn}),
        )
        .await
        .map_err(remote(
            "describe the KMS key (check PEAT_KMS_KEY_ARN and the AWS credentials)",
        ))?;
        Ok(me)
    }

    async fn call(&self, target: &str, body: Value) -> Result<Value, String> {
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let mut r = self.http.post(&self.settings.endpoint);
        for (k, v) in sign(
            &self.settings,
            &self.host,
            target,
            &bytes,
            crate::tenant::now_ms(),
        ) {
            r = r.header(k, v);
        }
        let resp = r.body(bytes).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = crate::peer_read::json_or_null(resp, 1024 * 1024).await;
        if status.is_success() {
            return Ok(v);
        }
        let kind = v["__type"].as_str().unwrap_or_default();
        let msg = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or_default();
        Err(format!("HTTP {status}: {kind} {msg}"))
    }

    fn context(context: &[u8]) -> Value {
        json!({"peat-record": B64.encode(context)})
    }
}

impl KeyProvider for AwsKms {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AwsKms
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
            let body = json!({"KeyId": self.settings.key_arn, "Plaintext": plaintext.as_str(),
                "EncryptionContext": Self::context(context)});
            let v = self
                .call("TrentService.Encrypt", body)
                .await
                .map_err(remote("wrap a DEK with AWS KMS"))?;
            let blob = v["CiphertextBlob"]
                .as_str()
                .ok_or_else(|| remote("wrap a DEK with AWS KMS")("no CiphertextBlob".into()))?;
            B64.decode(blob).map_err(|_| KeyError::Malformed {
                what: "KMS CiphertextBlob",
            })
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, KeyError>> {
        Box::pin(async move {
            let body = json!({"KeyId": self.settings.key_arn, "CiphertextBlob": B64.encode(wrapped),
                "EncryptionContext": Self::context(context)});
            let v = self.call("TrentService.Decrypt", body).await.map_err(|e| {
                if e.contains("InvalidCiphertextException") {
                    KeyError::Authentication
                } else {
                    remote("unwrap a DEK with AWS KMS")(e)
                }
            })?;
            super::dek_from_b64(v["Plaintext"].as_str(), "KMS Decrypt answer")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_regions() {
        assert_eq!(
            region_of_arn("arn:aws:kms:eu-west-1:123456789012:key/abc"),
            Some("eu-west-1")
        );
        assert_eq!(region_of_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(region_of_arn("nonsense"), None);
    }

    #[test]
    fn sigv4_signs_deterministically_and_scopes_to_kms() {
        let s = KmsSettings {
            key_arn: "arn:aws:kms:us-east-1:1:key/k".into(),
            region: "us-east-1".into(),
            endpoint: "https://kms.us-east-1.amazonaws.com".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        };
        let a = sign(
            &s,
            "kms.us-east-1.amazonaws.com",
            "TrentService.Encrypt",
            b"{}",
            1_440_938_160_000,
        );
        let b = sign(
            &s,
            "kms.us-east-1.amazonaws.com",
            "TrentService.Encrypt",
            b"{}",
            1_440_938_160_000,
        );
        assert_eq!(a, b);
        let auth = &a.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kms/aws4_request"
        ));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target"));
        assert!(!auth.contains("wJalr"));
        let c = sign(
            &s,
            "kms.us-east-1.amazonaws.com",
            "TrentService.Encrypt",
            b"{ }",
            1_440_938_160_000,
        );
        assert_ne!(a, c, "the body is signed");
    }
}
