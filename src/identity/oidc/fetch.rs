//! Talking to an OpenID provider: discovery, JWKS and token introspection, each with a
//! timeout, no redirects, and https only (plain http is accepted for loopback providers).

use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS or discovery document larger than this is refused.
const MAX_DOC: usize = 256 * 1024;

/// An https URL, or http to a loopback host; `what` names the setting in the error.
pub fn check_url(what: &str, url: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(url).map_err(|e| format!("{what} is not a URL: {e}"))?;
    let loopback = matches!(u.host(), Some(url::Host::Domain("localhost")))
        || matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(u.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback => Ok(u),
        _ => Err(format!(
            "{what} must be https:// (plain http only to a loopback address)"
        )),
    }
}

pub(crate) fn client(
    ca_pem: Option<&str>,
    egress: crate::egress::Egress,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(crate::egress::Resolver(egress)))
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("tls_ca_pem: {e}"))?;
        b = b.add_root_certificate(cert).tls_built_in_root_certs(false);
    }
    b.build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// A URL whose host is an IP literal is checked here; names go through the resolver.
pub(super) fn literal_ok(egress: &crate::egress::Egress, url: &str) -> Result<(), String> {
    match url::Url::parse(url).ok().as_ref().and_then(url::Url::host) {
        Some(h) => egress.check_literal(&h),
        None => Ok(()),
    }
}

async fn get_json(
    http: &reqwest::Client,
    egress: &crate::egress::Egress,
    url: &str,
) -> Result<Value, String> {
    literal_ok(egress, url)?;
    let resp = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", short(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
    }
    let bytes = crate::peer_read::capped(resp, MAX_DOC)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!(
            "connection refused or unreachable ({})",
            crate::peer_read::chain(e)
        )
    } else {
        crate::peer_read::chain(e)
    }
}

/// What discovery and the JWKS said.
pub struct Fetched {
    pub jwks_json: String,
    pub jwks_uri: String,
    pub introspection_endpoint: Option<String>,
    /// Where a browser signs in (authorization code flow).
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
}

/// Discovery (the issuer it names must be exactly ours), then the JWKS it points to.
pub async fn discover(
    http: &reqwest::Client,
    egress: &crate::egress::Egress,
    issuer: &str,
) -> Result<Fetched, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = get_json(http, egress, &url).await?;
    if doc["issuer"].as_str() != Some(issuer) {
        return Err(format!(
            "discovery names issuer {} but the provider is configured as {issuer}",
            doc["issuer"]
        ));
    }
    let jwks_uri = doc["jwks_uri"]
        .as_str()
        .ok_or("discovery has no jwks_uri")?
        .to_owned();
    check_url("jwks_uri", &jwks_uri)?;
    let jwks = get_json(http, egress, &jwks_uri).await?;
    if !jwks["keys"].is_array() {
        return Err(format!("{jwks_uri} holds no `keys` array"));
    }
    let endpoint = |k: &str| doc[k].as_str().map(str::to_owned);
    Ok(Fetched {
        jwks_json: jwks.to_string(),
        jwks_uri,
        introspection_endpoint: endpoint("introspection_endpoint"),
        authorization_endpoint: endpoint("authorization_endpoint"),
        token_endpoint: endpoint("token_endpoint"),
    })
}

/// The authorization code for tokens (RFC 6749 §4.1.3, PKCE RFC 7636): the client secret,
/// when there is one, by HTTP Basic (`client_secret_basic`), else the client id in the form.
/// The token response's JSON, or the provider's own words for a refusal.
pub async fn exchange_code(
    http: &reqwest::Client,
    egress: &crate::egress::Egress,
    endpoint: &str,
    client_id: &str,
    client_secret: Option<&str>,
    form: &[(&str, &str)],
) -> Result<Value, String> {
    check_url("token_endpoint", endpoint)?;
    literal_ok(egress, endpoint)?;
    let mut req = http.post(endpoint).header("accept", "application/json");
    let mut form = form.to_vec();
    match client_secret {
        // RFC 6749 §2.3.1: both parts form-encoded before Basic.
        Some(secret) => {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(client_id), Some(enc(secret)));
        }
        None => form.push(("client_id", client_id)),
    }
    let resp = req.form(&form).send().await.map_err(|e| short(&e))?;
    let status = resp.status().as_u16();
    let bytes = crate::peer_read::capped(resp, MAX_DOC)
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let said = match (v["error"].as_str(), v["error_description"].as_str()) {
            (Some(e), Some(d)) => format!("{e}: {d}"),
            (Some(e), None) => e.to_owned(),
            _ => "no reason given".to_owned(),
        };
        return Err(format!("HTTP {status}: {said}"));
    }
    if !v.is_object() {
        return Err("the token response is not a JSON object".into());
    }
    Ok(v)
}

/// RFC 7662 introspection with client credentials; the claims when `active` is true.
pub async fn introspect(
    http: &reqwest::Client,
    egress: &crate::egress::Egress,
    endpoint: &str,
    client_id: &str,
    client_secret: &str,
    token: &str,
) -> Result<Option<Value>, String> {
    check_url("introspection_endpoint", endpoint)?;
    literal_ok(egress, endpoint)?;
    let resp = http
        .post(endpoint)
        .basic_auth(client_id, Some(client_secret))
        .form(&[("token", token)])
        .send()
        .await
        .map_err(|e| format!("introspection: {}", short(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("introspection: HTTP {}", resp.status().as_u16()));
    }
    let bytes = crate::peer_read::capped(resp, MAX_DOC)
        .await
        .map_err(|e| format!("introspection: {e}"))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("introspection: not JSON: {e}"))?;
    Ok((v["active"] == true).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        assert!(check_url("issuer", "https://idp.example").is_ok());
        assert!(check_url("issuer", "http://127.0.0.1:8080").is_ok());
        assert!(check_url("issuer", "http://localhost:1").is_ok());
        assert!(check_url("issuer", "http://[::1]:1").is_ok());
        assert!(check_url("issuer", "http://idp.example").is_err());
        assert!(check_url("issuer", "ftp://idp.example").is_err());
        assert!(check_url("issuer", "not a url").is_err());
    }
}
