//! Local verification of a JWT against cached keys: signature, algorithm allow-list (never
//! `none`), `iss`, `aud`, `exp` and `nbf` with bounded skew.

#[cfg(feature = "oidc")]
use jsonwebtoken::{decode, decode_header, errors::ErrorKind, DecodingKey, Validation};
use serde_json::Value;

/// What the verifier needs to know about the provider.
#[cfg_attr(not(feature = "oidc"), allow(dead_code))]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub algorithms: &'a [String],
    pub skew_secs: u64,
}

/// Why a token was refused, worded for the audit log and the device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "oidc"), allow(dead_code))]
pub enum Refusal {
    /// The key id is not in the cached set (a refresh may help).
    UnknownKey(String),
    Other(String),
}

impl Refusal {
    pub fn text(&self) -> String {
        match self {
            Self::UnknownKey(kid) => {
                format!("token signed with key {kid}, which the identity provider does not publish")
            }
            Self::Other(s) => s.clone(),
        }
    }
}

/// The unverified `iss` claim, to pick the provider; nothing else is trusted from it.
pub fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v["iss"].as_str().map(str::to_owned)
}

#[cfg(feature = "oidc")]
fn raw_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let h = token.split('.').next()?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v["alg"].as_str().map(str::to_owned)
}

pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && !token.contains(char::is_whitespace)
}

/// A JWT's payload, read without checking anything: for the rule tester and for an ID token
/// whose signature was already verified over these same bytes.
pub fn unverified_claims(token: &str) -> Option<Value> {
    use base64::Engine as _;
    if !looks_like_jwt(token) {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// Without the `oidc` feature no token verifies (and no provider can be added).
#[cfg(not(feature = "oidc"))]
pub fn verify(_token: &str, _jwks_json: &str, _e: &Expect<'_>) -> Result<Value, Refusal> {
    Err(Refusal::Other(super::NOT_BUILT.to_owned()))
}

#[cfg(feature = "oidc")]
pub fn verify(token: &str, jwks_json: &str, e: &Expect<'_>) -> Result<Value, Refusal> {
    super::jws::install();
    let other = |s: &str| Refusal::Other(s.to_owned());
    if raw_alg(token).is_some_and(|a| a.eq_ignore_ascii_case("none")) {
        return Err(other("token is unsigned (alg none); never accepted"));
    }
    let header = decode_header(token).map_err(|err| match err.kind() {
        ErrorKind::InvalidAlgorithmName => {
            other("token algorithm is not accepted (`none` never is)")
        }
        _ => other("token is not a well-formed JWT"),
    })?;
    let alg_name = format!("{:?}", header.alg);
    if !e.algorithms.iter().any(|a| a == &alg_name) {
        return Err(Refusal::Other(format!(
            "token algorithm {alg_name} is not in this provider's allow-list {:?}",
            e.algorithms
        )));
    }
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(jwks_json).map_err(|_| other("cached JWKS is unreadable"))?;
    let jwk = match &header.kid {
        Some(kid) => set
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .ok_or_else(|| Refusal::UnknownKey(kid.clone()))?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => {
            return Err(other(
                "token names no key id and the provider publishes several keys",
            ))
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| other("the provider's key is unusable"))?;
    let mut v = Validation::new(header.alg);
    v.algorithms = vec![header.alg];
    v.set_issuer(&[e.issuer]);
    v.set_audience(&[e.audience]);
    v.leeway = e.skew_secs;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|err| {
            Refusal::Other(match err.kind() {
                ErrorKind::ExpiredSignature => "token expired".into(),
                ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
                ErrorKind::InvalidAudience => format!("token audience is not {}", e.audience),
                ErrorKind::InvalidIssuer => format!("token issuer is not {}", e.issuer),
                ErrorKind::InvalidSignature => "token signature does not verify".into(),
                ErrorKind::MissingRequiredClaim(c) => format!("token lacks the `{c}` claim"),
                ErrorKind::InvalidAlgorithm => "token algorithm does not fit the key".into(),
                _ => "token could not be verified".into(),
            })
        })
}

#[cfg(all(test, feature = "oidc"))]
mod tests {
    use super::*;

    #[test]
    fn alg_none_and_garbage_are_refused_before_any_key_is_used() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"iss":"https://idp","aud":"a","exp":9999999999}"#)
        );
        let e = Expect {
            issuer: "https://idp",
            audience: "a",
            algorithms: &["RS256".to_owned()],
            skew_secs: 0,
        };
        assert_eq!(
            verify(&none, r#"{"keys":[]}"#, &e),
            Err(Refusal::Other(
                "token is unsigned (alg none); never accepted".into()
            ))
        );
        assert_eq!(peek_issuer(&none).as_deref(), Some("https://idp"));
        assert!(verify("a.b.c", r#"{"keys":[]}"#, &e).is_err());
        assert!(looks_like_jwt(&none) && !looks_like_jwt("peb_x") && !looks_like_jwt("a.b"));
    }
}

#[cfg(all(test, not(feature = "oidc")))]
mod without_oidc {
    use super::*;

    #[test]
    fn no_token_verifies_and_the_refusal_names_the_feature() {
        let e = Expect {
            issuer: "https://idp",
            audience: "a",
            algorithms: &["RS256".to_owned()],
            skew_secs: 0,
        };
        let r = verify("a.b.c", r#"{"keys":[]}"#, &e);
        assert!(matches!(r, Err(Refusal::Other(s)) if s.contains("cargo feature oidc")));
    }
}
