//! Extractors that reject with [`ApiError`], and the authenticated [`Caller`].

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::Json;
use serde::de::DeserializeOwned;

use super::guard::Key;
use super::{ApiError, AppState};
use crate::tenant::{validate_id, Principal, TenantError};

/// `Json<T>` whose rejections use the house error shape.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(ApiError::from_json)
    }
}

/// The raw body up to `LIMIT` bytes, with rejections in the house error shape. A declared
/// `Content-Length` over the limit is refused before any body byte is read.
pub(crate) struct ApiBytes<const LIMIT: usize>(pub axum::body::Bytes);

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for ApiBytes<LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let too_large = || {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than this route's limit of {LIMIT} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > LIMIT as u64) {
            return Err(too_large());
        }
        axum::body::Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(|r| {
                if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::new(r.status(), "bad_request", r.body_text())
                }
            })
    }
}

pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(ApiError::from_query)
    }
}

/// Path identifiers; any that cannot be a valid id answers 404, as an absent one would.
pub(crate) struct Ids(pub Vec<String>);

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::from_path)?;
        let mut out = Vec::with_capacity(params.len());
        for (name, value) in params {
            if validate_id("id", &value).is_err() {
                let what = match name.as_str() {
                    "org_id" => "org",
                    "app_id" => "formation",
                    "token_id" => "api token",
                    "sink_id" => "sink",
                    _ => "resource",
                };
                return Err(ApiError::not_found(what));
            }
            out.push(value);
        }
        Ok(Ids(out))
    }
}

impl Ids {
    pub(crate) fn org(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    pub(crate) fn second(&self) -> &str {
        self.0.get(1).map_or("", String::as_str)
    }
}

/// The authenticated caller; extracted before anything else in a handler.
pub(crate) struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(v) => {
                let s = v.to_str().map_err(|_| TenantError::Unauthenticated)?;
                let token = s
                    .strip_prefix("Bearer ")
                    .or_else(|| s.strip_prefix("bearer "))
                    .ok_or(TenantError::Unauthenticated)?;
                Some(token.trim().to_owned())
            }
        };
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<super::PeerInfo>>()
            .and_then(|c| c.0.addr)
            .map(|a| a.ip());
        let mut keys = Vec::with_capacity(2);
        if let Some(ip) = peer {
            keys.push(Key::Source(ip));
        }
        // A blocked source is refused before anything is checked. A token id being guessed at
        // is not: its id is no secret, and its holder (who presents the right secret) must
        // not be locked out by whoever guesses; wrong secrets for it get 429 below.
        let source_keys = keys.clone();
        if let Some(id) = bearer.as_deref().and_then(token_id_of) {
            keys.push(Key::Token(id.to_owned()));
        }
        if let Some(wait) = state.auth_guard.blocked_for(&source_keys) {
            state.metrics.auth_blocked.inc();
            return Err(ApiError::from(TenantError::RateLimited {
                what: "failed authentications",
                retry_after_secs: wait,
            }));
        }
        let cert = parts
            .extensions
            .get::<axum::extract::ConnectInfo<super::PeerInfo>>()
            .and_then(|c| c.0.client_cert.clone());
        let by_cert = match (&bearer, cert) {
            (None, Some(der)) if !state.client_roles.is_empty() => {
                Some(cert_principal(state, &der).await)
            }
            _ => None,
        };
        let authenticated = match by_cert {
            Some(p) => p,
            None => state.tenancy.authenticate(bearer.as_deref()).await,
        };
        match authenticated {
            Ok(p @ Principal::Org { .. }) => {
                let Principal::Org { org_id, .. } = &p else {
                    return Ok(Caller(p));
                };
                if !state.tenancy.org_allows(org_id, peer).await? {
                    state.metrics.refused_sources.inc();
                    return Err(ApiError::new(
                        axum::http::StatusCode::FORBIDDEN,
                        "forbidden_source",
                        "this address is not on the org's allow-list",
                    ));
                }
                Ok(Caller(p))
            }
            Ok(p) => Ok(Caller(p)),
            Err(TenantError::Unauthenticated) => {
                state.metrics.auth_failures.inc();
                let was_blocked = state.auth_guard.blocked_for(&keys);
                state.auth_guard.failed(&keys);
                let source = peer.map_or_else(|| "local socket".to_owned(), |ip| ip.to_string());
                let what = match bearer.as_deref() {
                    None => "no token",
                    Some(t) if token_id_of(t).is_some() => "unknown or wrong token",
                    Some(_) => "malformed token",
                };
                // Audited as refused; the presented token itself is never recorded.
                let _ = state
                    .tenancy
                    .record_auth_failure(&source, parts.uri.path(), what)
                    .await;
                if let Some(wait) = was_blocked {
                    state.metrics.auth_blocked.inc();
                    return Err(ApiError::from(TenantError::RateLimited {
                        what: "failed authentications",
                        retry_after_secs: wait,
                    }));
                }
                Err(TenantError::Unauthenticated.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The non-secret id part of an org API token (`pgt_<id>_…`), if it has one.
fn token_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("pgt_")?;
    let id = rest.get(..16)?;
    id.bytes().all(|b| b.is_ascii_hexdigit()).then_some(id)
}

/// The caller a verified client certificate stands for, by the first matching mapping.
async fn cert_principal(state: &AppState, der: &[u8]) -> Result<Principal, TenantError> {
    let (_, claims) =
        crate::identity::x509::claims(der).map_err(|_| TenantError::Unauthenticated)?;
    let x = &claims["x509"];
    let values = |field: &str| -> Vec<String> {
        let v = match field {
            "cn" => &x["cn"],
            "ou" => &x["ou"],
            "email" => &x["san"]["email"],
            _ => &x["san"]["dns"],
        };
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let rule = state
        .client_roles
        .iter()
        .find(|r| values(&r.field).iter().any(|v| r.matches(v)))
        .ok_or(TenantError::Unauthenticated)?;
    let who = x["cn"].as_str().unwrap_or("certificate").to_owned();
    match &rule.grant {
        None => Ok(Principal::Admin { dev_open: false }),
        Some((org, role)) => state.tenancy.cert_principal(org, role, &who).await,
    }
}
