//! Single sign-on for the operator UI: OpenID Connect authorization code with PKCE (S256)
//! against one of the org's providers. The ID token is verified as enrollment tokens are
//! (signature by the provider's published keys, issuer, audience = client id, expiry), plus
//! its nonce and authorized party; the caller maps its claims to a role.
//!
//! Nothing secret travels in a URL: each flow is bound to the browser that started it by a
//! random binder the browser holds in an HttpOnly cookie, and the outcome is handed over once,
//! to a POST carrying that cookie. Flows and hand-overs live in memory, bounded and short-lived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{fetch, Oidc};
use crate::store::IdpRecord;
use crate::tenant::TenantError;

/// How long a started sign-in may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// How long the outcome waits for the browser to collect it.
const HANDOFF_TTL: Duration = Duration::from_secs(120);
/// Flows in progress at once, all orgs together; the oldest is dropped beyond it.
const MAX_FLOWS: usize = 256;

/// Why a sign-in cannot go on, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("single sign-on is not set up for org {0}: an org-admin adds an identity provider with a client id (identity screen); sign in with a token meanwhile")]
    NotConfigured(String),
    #[error("the identity provider {issuer} cannot be reached ({reason}); sign in with a token (the break-glass way in) until it answers")]
    Unreachable { issuer: String, reason: String },
    #[error("this sign-in is unknown or expired (start again from the sign-in screen)")]
    UnknownFlow,
    #[error("this sign-in was started in another browser")]
    WrongBrowser,
    #[error("the identity provider refused: {0}")]
    Refused(String),
    #[error("the identity provider's answer does not verify: {0}")]
    Invalid(String),
    #[error(transparent)]
    Tenant(#[from] TenantError),
}

/// A verified sign-in, before roles.
#[derive(Debug, Clone)]
pub struct Verified {
    pub org_id: String,
    pub idp_id: String,
    pub issuer: String,
    pub subject: String,
    /// Every claim of the ID token.
    pub claims: Value,
}

/// Where to send the browser, and the binder to set as its cookie.
pub struct Started {
    pub authorize_url: String,
    pub binder: Zeroizing<String>,
}

struct Flow {
    org_id: String,
    idp_id: String,
    binder: [u8; 32],
    verifier: Zeroizing<String>,
    nonce: String,
    redirect: String,
    at: Instant,
}

/// The outcome kept for the browser: a session secret, or why not.
pub struct Handoff<T> {
    pub outcome: Result<T, String>,
    at: Instant,
}

/// Flows in progress and outcomes waiting. Cheap to clone.
pub struct Sso<T> {
    flows: Arc<Mutex<HashMap<String, Flow>>>,
    handoffs: Arc<Mutex<HashMap<[u8; 32], Handoff<T>>>>,
}

impl<T> Clone for Sso<T> {
    fn clone(&self) -> Self {
        Self {
            flows: self.flows.clone(),
            handoffs: self.handoffs.clone(),
        }
    }
}

impl<T> Default for Sso<T> {
    fn default() -> Self {
        Self {
            flows: Arc::default(),
            handoffs: Arc::default(),
        }
    }
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn digest(binder: &str) -> [u8; 32] {
    Sha256::digest(binder.as_bytes()).into()
}

/// A fresh random value, base64url: 32 bytes make a PKCE verifier of 43 characters.
fn random_b64(bytes: usize) -> Result<String, SsoError> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    getrandom::fill(&mut buf)
        .map_err(|_| SsoError::Tenant(TenantError::Key(crate::keys::KeyError::Rng)))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*buf))
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Discovery of `rec`'s provider through the org's egress guard.
async fn discover(
    oidc: &Oidc,
    org: &str,
    rec: &IdpRecord,
) -> Result<(reqwest::Client, fetch::Fetched), SsoError> {
    let unreachable = |reason: String| SsoError::Unreachable {
        issuer: rec.issuer.clone(),
        reason,
    };
    let egress = oidc.tenancy.egress(org);
    fetch::literal_ok(&egress, &rec.issuer).map_err(unreachable)?;
    let http = fetch::client(rec.tls_ca_pem.as_deref(), egress.clone()).map_err(unreachable)?;
    let meta = fetch::discover(&http, &egress, &rec.issuer)
        .await
        .map_err(unreachable)?;
    Ok((http, meta))
}

/// The browser's way to the provider: code flow with PKCE, state, nonce and `prompt=login`.
fn authorize_url(
    endpoint: &str,
    client_id: &str,
    redirect: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> Result<String, SsoError> {
    let mut url =
        fetch::check_url("authorization_endpoint", endpoint).map_err(SsoError::Invalid)?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid profile email")
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge(verifier))
        .append_pair("code_challenge_method", "S256")
        // Kit laptops are shared: the provider asks who is there every time, so a provider
        // session left by the previous operator signs nobody in.
        .append_pair("prompt", "login");
    Ok(url.into())
}

/// OIDC Core §3.1.3.7 beyond the JWT checks: the nonce this flow sent, and with several
/// audiences an authorized party that is this client.
fn id_token_binds(claims: &Value, nonce: &str, client_id: &str) -> Result<(), SsoError> {
    if claims["nonce"].as_str() != Some(nonce) {
        return Err(SsoError::Invalid(
            "the ID token's nonce is not this sign-in's".into(),
        ));
    }
    let several = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
    if (several || claims.get("azp").is_some()) && claims["azp"].as_str() != Some(client_id) {
        return Err(SsoError::Invalid(format!(
            "the ID token's authorized party is not this client ({client_id})"
        )));
    }
    Ok(())
}

impl<T> Sso<T> {
    /// Starts a sign-in with the org's provider `idp_id` (or its first that can sign in):
    /// discovery now (an unreachable provider says so at once), PKCE, state and nonce.
    pub async fn start(
        &self,
        oidc: &Oidc,
        org_id: &str,
        idp_id: Option<&str>,
        redirect: String,
    ) -> Result<Started, SsoError> {
        let rec = oidc
            .sign_in_providers(org_id)
            .await?
            .into_iter()
            .find(|p| idp_id.is_none_or(|want| p.idp_id == want))
            .ok_or_else(|| SsoError::NotConfigured(org_id.to_owned()))?;
        let (_, meta) = discover(oidc, org_id, &rec).await?;
        let client_id = rec.client_id.clone().unwrap_or_default();
        url::Url::parse(&redirect)
            .map_err(|e| SsoError::Invalid(format!("redirect URL {redirect}: {e}")))?;
        let endpoint = meta.authorization_endpoint.as_deref().ok_or_else(|| {
            SsoError::Invalid("the provider publishes no authorization endpoint".into())
        })?;
        let (state, nonce, verifier) = (random_b64(16)?, random_b64(16)?, random_b64(32)?);
        let url = authorize_url(endpoint, &client_id, &redirect, &state, &nonce, &verifier)?;
        let binder = crate::tenant::random_token_id()? + &crate::tenant::random_token_id()?;
        let binder = Zeroizing::new(binder);
        let mut flows = lock(&self.flows);
        flows.retain(|_, f| f.at.elapsed() < FLOW_TTL);
        if flows.len() >= MAX_FLOWS {
            if let Some(oldest) = flows
                .iter()
                .min_by_key(|(_, f)| f.at)
                .map(|(k, _)| k.clone())
            {
                flows.remove(&oldest);
            }
        }
        flows.insert(
            state,
            Flow {
                org_id: org_id.to_owned(),
                idp_id: rec.idp_id.clone(),
                binder: digest(&binder),
                verifier: Zeroizing::new(verifier),
                nonce,
                redirect,
                at: Instant::now(),
            },
        );
        Ok(Started {
            authorize_url: url,
            binder,
        })
    }

    /// The org a pending flow is for (to audit a refusal against it).
    pub fn org_of(&self, state: &str) -> Option<String> {
        lock(&self.flows).get(state).map(|f| f.org_id.clone())
    }

    /// Forgets the flow `state` (the provider answered with an error).
    pub fn finish_abandoned(&self, state: &str) {
        lock(&self.flows).remove(state);
    }

    /// Completes the flow `state` from the browser holding `binder`: code for tokens (with the
    /// PKCE verifier and the client secret when the provider has one), then the ID token
    /// verified. The flow is spent whatever the outcome.
    pub async fn finish(
        &self,
        oidc: &Oidc,
        state: &str,
        code: &str,
        binder: Option<&str>,
    ) -> Result<Verified, SsoError> {
        let flow = lock(&self.flows)
            .remove(state)
            .filter(|f| f.at.elapsed() < FLOW_TTL)
            .ok_or(SsoError::UnknownFlow)?;
        if binder.map(digest) != Some(flow.binder) {
            return Err(SsoError::WrongBrowser);
        }
        let rec = oidc
            .sign_in_providers(&flow.org_id)
            .await?
            .into_iter()
            .find(|p| p.idp_id == flow.idp_id)
            .ok_or_else(|| SsoError::NotConfigured(flow.org_id.clone()))?;
        let (http, meta) = discover(oidc, &flow.org_id, &rec).await?;
        let secret = oidc.client_secret(&flow.org_id, &rec).await?;
        let client_id = rec.client_id.clone().unwrap_or_default();
        let endpoint = meta
            .token_endpoint
            .as_deref()
            .ok_or_else(|| SsoError::Invalid("the provider publishes no token endpoint".into()))?;
        let tokens = fetch::exchange_code(
            &http,
            &oidc.tenancy.egress(&flow.org_id),
            endpoint,
            &client_id,
            secret.as_ref().map(|s| s.as_str()),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &flow.redirect),
                ("code_verifier", &flow.verifier),
            ],
        )
        .await
        .map_err(|e| SsoError::Refused(format!("exchanging the code: {e}")))?;
        let id_token = tokens["id_token"]
            .as_str()
            .ok_or_else(|| SsoError::Invalid("no ID token in the answer".into()))?;
        let expect = super::verify::Expect {
            issuer: &rec.issuer,
            audience: &client_id,
            algorithms: &rec.algorithms,
            skew_secs: rec.clock_skew_secs,
        };
        let claims = super::verify::verify(id_token, &meta.jwks_json, &expect)
            .map_err(|r| SsoError::Invalid(r.text()))?;
        id_token_binds(&claims, &flow.nonce, &client_id)?;
        Ok(Verified {
            org_id: flow.org_id,
            idp_id: flow.idp_id,
            issuer: rec.issuer,
            subject: claims["sub"].as_str().unwrap_or_default().to_owned(),
            claims,
        })
    }

    /// Keeps `outcome` for the browser holding `binder`.
    pub fn hand_over(&self, binder: &str, outcome: Result<T, String>) {
        let mut h = lock(&self.handoffs);
        h.retain(|_, o| o.at.elapsed() < HANDOFF_TTL);
        if h.len() < MAX_FLOWS {
            h.insert(
                digest(binder),
                Handoff {
                    outcome,
                    at: Instant::now(),
                },
            );
        }
    }

    /// The outcome kept for `binder`, once.
    pub fn collect(&self, binder: &str) -> Option<Result<T, String>> {
        lock(&self.handoffs)
            .remove(&digest(binder))
            .filter(|o| o.at.elapsed() < HANDOFF_TTL)
            .map(|o| o.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(random_b64(32).unwrap().len(), 43);
    }

    #[test]
    fn an_id_token_must_carry_this_flows_nonce_and_party() {
        let ok = serde_json::json!({"nonce": "n1", "aud": "gw"});
        assert!(id_token_binds(&ok, "n1", "gw").is_ok());
        assert!(id_token_binds(&ok, "n2", "gw").is_err());
        assert!(id_token_binds(&serde_json::json!({"aud": "gw"}), "n1", "gw").is_err());
        let several = serde_json::json!({"nonce": "n1", "aud": ["gw", "other"]});
        assert!(id_token_binds(&several, "n1", "gw").is_err());
        let mut with_azp = several.clone();
        with_azp["azp"] = "gw".into();
        assert!(id_token_binds(&with_azp, "n1", "gw").is_ok());
        with_azp["azp"] = "other".into();
        assert!(id_token_binds(&with_azp, "n1", "gw").is_err());
    }

    #[test]
    fn the_authorize_url_carries_pkce_state_nonce_and_login_prompt() {
        let u = authorize_url(
            "https://idp/auth?x=1",
            "gw",
            "http://k/cb",
            "st",
            "no",
            "ver",
        )
        .unwrap();
        let u = url::Url::parse(&u).unwrap();
        let q: HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["x"], "1");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge"], challenge("ver"));
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!((q["state"].as_str(), q["nonce"].as_str()), ("st", "no"));
        assert_eq!(q["prompt"], "login");
        assert!(q["scope"].split(' ').any(|s| s == "openid"));
        assert!(authorize_url("http://idp.example/auth", "gw", "r", "s", "n", "v").is_err());
    }
}
