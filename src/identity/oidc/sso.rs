//! Single sign-on for the operator UI: OpenID Connect authorization code with PKCE (S256)
//! against one of the org's providers, with the `openidconnect` crate. The ID token is
//! verified (signature by the provider's published keys, issuer, audience = client id, nonce,
//! expiry); the caller maps its claims to a role.
//!
//! Nothing secret travels in a URL: each flow is bound to the browser that started it by a
//! random binder the browser holds in an HttpOnly cookie, and the outcome is handed over once,
//! to a POST carrying that cookie. Flows and hand-overs live in memory, bounded and short-lived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
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

fn algorithms(names: &[String]) -> Vec<CoreJwsSigningAlgorithm> {
    names
        .iter()
        .filter_map(|n| {
            Some(match n.as_str() {
                "RS256" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                "RS384" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
                "RS512" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
                "PS256" => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
                "PS384" => CoreJwsSigningAlgorithm::RsaSsaPssSha384,
                "PS512" => CoreJwsSigningAlgorithm::RsaSsaPssSha512,
                "ES256" => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                "ES384" => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
                "EdDSA" => CoreJwsSigningAlgorithm::EdDsa,
                _ => return None,
            })
        })
        .collect()
}

/// Discovery of `rec`'s provider through the org's egress guard.
async fn discover(
    oidc: &Oidc,
    org: &str,
    rec: &IdpRecord,
) -> Result<(reqwest::Client, CoreProviderMetadata), SsoError> {
    let unreachable = |reason: String| SsoError::Unreachable {
        issuer: rec.issuer.clone(),
        reason,
    };
    let egress = oidc.tenancy.egress(org);
    fetch::literal_ok(&egress, &rec.issuer).map_err(unreachable)?;
    let http = fetch::client(rec.tls_ca_pem.as_deref(), egress).map_err(unreachable)?;
    let issuer = IssuerUrl::new(rec.issuer.clone()).map_err(|e| unreachable(e.to_string()))?;
    let meta = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .map_err(|e| unreachable(crate::peer_read::chain(&e)))?;
    Ok((http, meta))
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
        let redirect_url = RedirectUrl::new(redirect.clone())
            .map_err(|e| SsoError::Invalid(format!("redirect URL {redirect}: {e}")))?;
        let client = CoreClient::from_provider_metadata(meta, ClientId::new(client_id), None)
            .set_redirect_uri(redirect_url);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("email".into()))
            // Kit laptops are shared: the provider asks who is there every time, so a
            // provider session left by the previous operator signs nobody in.
            .add_prompt(CoreAuthPrompt::Login)
            .set_pkce_challenge(challenge)
            .url();
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
            state.secret().clone(),
            Flow {
                org_id: org_id.to_owned(),
                idp_id: rec.idp_id.clone(),
                binder: digest(&binder),
                verifier: Zeroizing::new(verifier.secret().clone()),
                nonce: nonce.secret().clone(),
                redirect,
                at: Instant::now(),
            },
        );
        Ok(Started {
            authorize_url: url.to_string(),
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
        let client = CoreClient::from_provider_metadata(
            meta,
            ClientId::new(rec.client_id.clone().unwrap_or_default()),
            secret.as_ref().map(|s| ClientSecret::new(s.to_string())),
        )
        .set_redirect_uri(
            RedirectUrl::new(flow.redirect.clone())
                .map_err(|e| SsoError::Invalid(e.to_string()))?,
        );
        let exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| {
                SsoError::Invalid(format!("the provider publishes no token endpoint: {e}"))
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.to_string()));
        let tokens = exchange.request_async(&http).await.map_err(|e| {
            SsoError::Refused(format!(
                "exchanging the code: {}",
                crate::peer_read::chain(&e)
            ))
        })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| SsoError::Invalid("no ID token in the answer".into()))?;
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(algorithms(&rec.algorithms));
        id_token
            .claims(&verifier, &Nonce::new(flow.nonce.clone()))
            .map_err(|e| SsoError::Invalid(e.to_string()))?;
        // The signature was verified over these very bytes; read every claim, not only the
        // standard ones the crate models.
        let claims = super::unverified_claims(&id_token.to_string())
            .ok_or_else(|| SsoError::Invalid("the ID token payload is not JSON".into()))?;
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
