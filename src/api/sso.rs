//! `/sso/…`: single sign-on to the operator UI with an org's OpenID provider. The browser
//! starts (`POST /sso/start`), goes to the provider, comes back to `/sso/callback`, and
//! collects its session once (`POST /sso/session`). A cookie scoped to `/sso` binds the three
//! to one browser; the session token never appears in a URL or a script-readable cookie.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::book::{doc, Access, RouteBook};
use super::extract::ApiJson;
use super::peer::Peer;
use super::{ApiError, AppState};
use crate::identity::oidc::sso::SsoError;
use crate::identity::rules;
use crate::tenant::{Actor, SessionInfo, SignIn};

const COOKIE: &str = "peat_sso";

/// A session opened by a sign-in, waiting for its browser.
pub(crate) struct Opened {
    info: SessionInfo,
    token: Zeroizing<String>,
}

pub(crate) type Flows = crate::identity::oidc::sso::Sso<Opened>;

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.post(
        "/sso/start",
        start,
        doc(
            "Begin single sign-on with the org's OpenID provider (authorization code + PKCE): answers the provider URL to open and sets a cookie binding the flow to this browser",
            Access::Public,
            Some(|| json!({"type": "object", "additionalProperties": false, "required": ["org_id"], "properties": {
                "org_id": {"type": "string"},
                "idp_id": {"type": "string", "description": "which provider; default the org's first that has a client id"}}})),
            200,
        ),
    )
    .get(
        "/sso/callback",
        callback,
        doc(
            "Where the provider sends the browser back: the code is exchanged, the ID token verified, its claims mapped to a role by the org's claim rules; redirects to the UI",
            Access::Public,
            None,
            303,
        ),
    )
    .post(
        "/sso/session",
        collect,
        doc(
            "Hands this browser the session its sign-in opened (once), or says why there is none",
            Access::Public,
            None,
            200,
        ),
    )
}

impl From<SsoError> for ApiError {
    fn from(e: SsoError) -> Self {
        let (status, code) = match &e {
            SsoError::NotConfigured(_) => (StatusCode::NOT_FOUND, "sso_not_configured"),
            SsoError::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "idp_unreachable"),
            SsoError::UnknownFlow | SsoError::WrongBrowser => {
                (StatusCode::BAD_REQUEST, "sso_flow_invalid")
            }
            SsoError::Refused(_) => (StatusCode::UNAUTHORIZED, "sso_refused"),
            SsoError::Invalid(_) => (StatusCode::BAD_GATEWAY, "idp_answer_invalid"),
            SsoError::Tenant(_) => {
                if let SsoError::Tenant(t) = e {
                    return t.into();
                }
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `Lax`: the provider's redirect back is a top-level navigation from another site.
fn set_cookie(value: &str, max_age: u32, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/sso; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("peat_sso=; Path=/sso; Max-Age=0"))
}

/// This gateway's callback URL as the browser reaches it; the provider accepts only URLs its
/// client registration lists, so a forged Host header leads nowhere.
fn redirect_uri(headers: &HeaderMap, peer: &Peer) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', '\\', '@', ' ']))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a Host header naming this gateway is needed for single sign-on",
            )
        })?;
    let scheme = if peer.secure && peer.ip.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}/sso/callback"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartIn {
    org_id: String,
    idp_id: Option<String>,
}

async fn start(
    State(s): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(b): ApiJson<StartIn>,
) -> Result<Response, ApiError> {
    let redirect = redirect_uri(&headers, &peer)?;
    let started = s
        .sso
        .start(s.authority.oidc(), &b.org_id, b.idp_id.as_deref(), redirect)
        .await?;
    let mut res = Json(json!({"authorize_url": started.authorize_url})).into_response();
    let h = res.headers_mut();
    h.insert(
        header::SET_COOKIE,
        set_cookie(&started.binder, 600, peer.secure),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

#[derive(Deserialize)]
struct CallbackIn {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Verifies the sign-in, maps it to a role and opens the session; a refusal is audited.
async fn sign_in(s: &AppState, q: CallbackIn, binder: Option<&str>) -> Result<Opened, String> {
    let state = q.state.unwrap_or_default();
    let org = s.sso.org_of(&state);
    let verified = match (q.error, q.code) {
        (Some(err), _) => {
            s.sso.finish_abandoned(&state);
            Err(SsoError::Refused(match q.error_description {
                Some(d) => format!("{err}: {d}"),
                None => err,
            }))
        }
        (None, Some(code)) => {
            s.sso
                .finish(s.authority.oidc(), &state, &code, binder)
                .await
        }
        (None, None) => Err(SsoError::Refused("the provider sent no code".into())),
    };
    let refuse = |reason: String, who: String| {
        let org = org.clone();
        async move {
            if let Some(org) = org {
                let actor = Actor {
                    id: format!("sso:{who}"),
                    role: "anonymous",
                };
                let _ = s
                    .tenancy
                    .record_event(
                        &actor,
                        Some(org.clone()),
                        "session.sign-in",
                        format!("org/{org}/session"),
                        format!("refused: {reason}"),
                    )
                    .await;
            }
            reason
        }
    };
    let v = match verified {
        Ok(v) => v,
        Err(e) => return Err(refuse(e.to_string(), "unknown".into()).await),
    };
    let list = match rules::of_org(&s.tenancy, &v.org_id).await {
        Ok(l) => l,
        Err(e) => return Err(refuse(e.to_string(), v.subject.clone()).await),
    };
    let (role, rule_id) = match rules::sign_in_role(&list, &v.claims) {
        Ok(r) => r,
        Err(reason) => return Err(refuse(reason, v.subject.clone()).await),
    };
    let subject = v.claims["email"]
        .as_str()
        .filter(|e| !e.is_empty())
        .map_or_else(|| v.subject.clone(), str::to_owned);
    match s
        .tenancy
        .open_session(SignIn {
            org_id: v.org_id,
            role,
            subject,
            issuer: v.issuer,
            rule_id,
        })
        .await
    {
        Ok((info, token)) => Ok(Opened { info, token }),
        Err(e) => Err(refuse(e.to_string(), v.subject).await),
    }
}

async fn callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackIn>,
) -> Response {
    let binder = cookie_of(&headers);
    let outcome = sign_in(&s, q, binder.as_deref()).await;
    if let Some(b) = &binder {
        s.sso.hand_over(b, outcome);
    }
    let mut res = Redirect::to("/_/#/sso").into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn collect(State(s): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let outcome = cookie_of(&headers).and_then(|b| s.sso.collect(&b));
    let mut res = match outcome {
        Some(Ok(o)) => Json(json!({
            "token": o.token.as_str(),
            "session_id": o.info.session_id,
            "org_id": o.info.org_id,
            "role": o.info.role.name(),
            "subject": o.info.subject,
            "expires_at": o.info.expires_at_ms,
        }))
        .into_response(),
        Some(Err(reason)) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "sso_refused", reason).into_response()
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_sign_in_waiting",
            "no sign-in waits for this browser (it was collected, expired after two minutes, or started elsewhere); start again",
        )
        .into_response(),
    };
    let h = res.headers_mut();
    h.insert(header::SET_COOKIE, set_cookie("", 0, peer.secure));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
