//! OpenID providers per org, verified locally: discovery and JWKS fetched with timeouts and
//! cached durably; tokens verified in the gateway; unknown key ids trigger a rate-limited
//! refresh; while the provider is unreachable the cache serves up to `max_staleness_secs`,
//! then enrollment fails closed with the reason. Opaque tokens go to introspection when the
//! provider is configured for it (that path needs the provider online).

mod fetch;
#[cfg(feature = "oidc")]
mod jws;
pub mod sso;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use zeroize::Zeroizing;

use crate::keys::RecordIdentity;
use crate::store::{keys, IdpKeysRecord, IdpRecord, Reader, Table};
use crate::tenant::{load_org, now_ms, random_token_id, OrgScope, Tenancy, TenantError};
pub use fetch::check_url;

/// Why a build without the `oidc` feature takes no identity provider.
pub(crate) const NOT_BUILT: &str =
    "identity providers are not built into this binary (cargo feature oidc); use a build with it, or bootstrap tokens and client certificates";
pub use verify::{looks_like_jwt, unverified_claims};

/// Cached keys younger than this are used without asking the provider.
const FRESH_MS: u64 = 3600 * 1000;
/// Most providers one org may configure.
pub const MAX_IDPS: usize = 16;
const SECRET_APP: &str = "_idp";

/// A provider's settings as operators give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<String>,
    pub client_id: Option<String>,
    pub tls_ca_pem: Option<String>,
    pub enabled: bool,
    pub introspection: bool,
    pub max_staleness_secs: u64,
    pub clock_skew_secs: u64,
    pub min_refresh_secs: u64,
}

/// A provider with its cache state, for listing.
#[derive(Debug, Clone)]
pub struct IdpInfo {
    pub idp_id: String,
    pub config: IdpConfig,
    pub has_client_secret: bool,
    pub keys_fetched_at_ms: Option<u64>,
    pub last_error: Option<String>,
    pub created_at_ms: u64,
}

pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl IdpConfig {
    fn validate(&self) -> Result<(), TenantError> {
        check_url("issuer", &self.issuer).map_err(|e| TenantError::invalid("issuer", e))?;
        if self.audience.trim().is_empty() || self.audience.len() > 512 {
            return Err(TenantError::invalid("audience", "must be 1 to 512 bytes"));
        }
        if self.algorithms.is_empty() {
            return Err(TenantError::invalid("algorithms", "name at least one"));
        }
        if let Some(a) = self
            .algorithms
            .iter()
            .find(|a| !ALGORITHMS.contains(&a.as_str()))
        {
            return Err(TenantError::invalid(
                "algorithms",
                format!("{a} is not accepted (use {})", ALGORITHMS.join(", ")),
            ));
        }
        if !(1..=90 * 86_400).contains(&self.max_staleness_secs) {
            return Err(TenantError::invalid(
                "max_staleness_secs",
                "must be 1 to 7776000",
            ));
        }
        if self.clock_skew_secs > 300 {
            return Err(TenantError::invalid("clock_skew_secs", "must be 0 to 300"));
        }
        if !(1..=3600).contains(&self.min_refresh_secs) {
            return Err(TenantError::invalid(
                "min_refresh_secs",
                "must be 1 to 3600",
            ));
        }
        if self.introspection && self.client_id.is_none() {
            return Err(TenantError::invalid(
                "introspection",
                "needs client_id and client_secret",
            ));
        }
        if let Some(pem) = &self.tls_ca_pem {
            crate::tls::roots(pem, "tls_ca_pem")
                .map_err(|e| TenantError::invalid("tls_ca_pem", e))?;
        }
        Ok(())
    }

    fn from_record(r: &IdpRecord) -> Self {
        Self {
            issuer: r.issuer.clone(),
            audience: r.audience.clone(),
            algorithms: r.algorithms.clone(),
            client_id: r.client_id.clone(),
            tls_ca_pem: r.tls_ca_pem.clone(),
            enabled: r.enabled,
            introspection: r.introspection,
            max_staleness_secs: r.max_staleness_secs,
            clock_skew_secs: r.clock_skew_secs,
            min_refresh_secs: r.min_refresh_secs,
        }
    }
}

fn secret_identity<'a>(org: &'a str, idp_id: &'a str) -> RecordIdentity<'a> {
    RecordIdentity {
        org,
        app: SECRET_APP,
        kind: idp_id,
        codec_version: 1,
        // The provider id is random per creation: it binds the record already.
        uid: [0; 16],
    }
}

/// Who a verified token says the requester is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub claims: Value,
}

/// The org's providers, their key caches, and token verification.
#[derive(Clone)]
pub struct Oidc {
    tenancy: Tenancy,
    /// One refresh at a time per provider, so a burst of unknown key ids fetches once.
    refreshing: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Oidc {
    pub fn new(tenancy: Tenancy) -> Self {
        Self {
            tenancy,
            refreshing: Arc::default(),
        }
    }

    pub async fn create(
        &self,
        scope: &OrgScope,
        config: IdpConfig,
        client_secret: Option<Zeroizing<String>>,
    ) -> Result<IdpInfo, TenantError> {
        if !cfg!(feature = "oidc") {
            return Err(TenantError::invalid("issuer", NOT_BUILT));
        }
        config.validate()?;
        if config.introspection && client_secret.is_none() {
            return Err(TenantError::invalid(
                "client_secret",
                "introspection needs it",
            ));
        }
        let idp_id = random_token_id()?;
        let org = scope.org_id().to_owned();
        let sealed = match &client_secret {
            Some(s) => Some(
                self.tenancy
                    .keyring()
                    .seal(secret_identity(&org, &idp_id), s.as_bytes())
                    .await?,
            ),
            None => None,
        };
        let rec = IdpRecord {
            idp_id: idp_id.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            algorithms: config.algorithms.clone(),
            client_id: config.client_id.clone(),
            has_client_secret: sealed.is_some(),
            tls_ca_pem: config.tls_ca_pem.clone(),
            enabled: config.enabled,
            introspection: config.introspection,
            max_staleness_secs: config.max_staleness_secs,
            clock_skew_secs: config.clock_skew_secs,
            min_refresh_secs: config.min_refresh_secs,
            created_at_ms: now_ms(),
        };
        let target = format!("org/{org}/idp/{idp_id}");
        let (o2, rec2) = (org.clone(), rec.clone());
        self.tenancy
            .mutate(
                scope.actor(),
                "idp.create",
                target,
                Some(org.clone()),
                move |t| {
                    let o = load_org(t, &o2)?;
                    let held = t
                        .scan(Table::Idps, &keys::org_prefix(&o2), None, MAX_IDPS)?
                        .len();
                    if held >= MAX_IDPS {
                        return Err(TenantError::QuotaExceeded {
                            quota: "identity providers per org",
                            limit: MAX_IDPS as u32,
                        });
                    }
                    t.put(Table::Idps, keys::token_by_org(&o2, &rec2.idp_id), &rec2)?;
                    if let Some(s) = sealed {
                        t.put_raw(
                            Table::Sealed,
                            keys::sealed(&o2, SECRET_APP, &rec2.idp_id),
                            s,
                        );
                    }
                    Ok(((), Some((o.org_id, o.org_uid))))
                },
            )
            .await?;
        // Warm the cache now when the provider is reachable; enrollment retries otherwise.
        let _ = self.refresh(&org, &rec, true).await;
        self.get(scope, &idp_id).await
    }

    pub async fn list(&self, scope: &OrgScope) -> Result<Vec<IdpInfo>, TenantError> {
        let org = scope.org_id().to_owned();
        self.tenancy
            .store()
            .read(move |r| {
                load_org(r, &org)?;
                let mut out = Vec::new();
                for (_, v) in r.scan(Table::Idps, &keys::org_prefix(&org), None, MAX_IDPS)? {
                    let rec = <IdpRecord as crate::store::Record>::decode(&v)?;
                    out.push(info(r, &org, rec)?);
                }
                Ok(out)
            })
            .await
    }

    pub async fn get(&self, scope: &OrgScope, idp_id: &str) -> Result<IdpInfo, TenantError> {
        let (org, id) = (scope.org_id().to_owned(), idp_id.to_owned());
        self.tenancy
            .store()
            .read(move |r| {
                let rec: IdpRecord = r.get(Table::Idps, &keys::token_by_org(&org, &id))?.ok_or(
                    TenantError::NotFound {
                        what: "identity provider",
                    },
                )?;
                info(r, &org, rec)
            })
            .await
    }

    pub async fn set_enabled(
        &self,
        scope: &OrgScope,
        idp_id: &str,
        enabled: bool,
    ) -> Result<IdpInfo, TenantError> {
        let (org, id) = (scope.org_id().to_owned(), idp_id.to_owned());
        let target = format!("org/{org}/idp/{id}");
        let action = if enabled { "idp.enable" } else { "idp.disable" };
        let (o2, id2) = (org.clone(), id.clone());
        self.tenancy
            .mutate(scope.actor(), action, target, Some(org), move |t| {
                let o = load_org(t, &o2)?;
                let key = keys::token_by_org(&o2, &id2);
                let mut rec: IdpRecord =
                    t.get(Table::Idps, &key)?.ok_or(TenantError::NotFound {
                        what: "identity provider",
                    })?;
                rec.enabled = enabled;
                t.put(Table::Idps, key, &rec)?;
                Ok(((), Some((o.org_id, o.org_uid))))
            })
            .await?;
        self.get(scope, &id).await
    }

    pub async fn delete(&self, scope: &OrgScope, idp_id: &str) -> Result<(), TenantError> {
        let (org, id) = (scope.org_id().to_owned(), idp_id.to_owned());
        let target = format!("org/{org}/idp/{id}");
        let o2 = org.clone();
        self.tenancy
            .mutate(scope.actor(), "idp.delete", target, Some(org), move |t| {
                let o = load_org(t, &o2)?;
                let key = keys::token_by_org(&o2, &id);
                if !t.exists(Table::Idps, &key)? {
                    return Err(TenantError::NotFound {
                        what: "identity provider",
                    });
                }
                t.delete(Table::Idps, key.clone());
                t.delete(Table::IdpKeys, key);
                t.delete(Table::Sealed, keys::sealed(&o2, SECRET_APP, &id));
                Ok(((), Some((o.org_id, o.org_uid))))
            })
            .await
    }

    /// Fetches discovery and keys now (an operator's connectivity check).
    pub async fn refresh_now(
        &self,
        scope: &OrgScope,
        idp_id: &str,
    ) -> Result<IdpInfo, TenantError> {
        let (org, id) = (scope.org_id().to_owned(), idp_id.to_owned());
        let rec: IdpRecord = self
            .tenancy
            .store()
            .read(move |r| {
                r.get(Table::Idps, &keys::token_by_org(&org, &id))?
                    .ok_or(TenantError::NotFound {
                        what: "identity provider",
                    })
            })
            .await?;
        self.refresh(scope.org_id(), &rec, true).await?;
        self.get(scope, idp_id).await
    }

    fn lock_for(&self, org: &str, idp: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.entry(format!("{org}\0{idp}")).or_default().clone()
    }

    /// Fetches discovery and JWKS when allowed by `min_refresh_secs` (or `force`); records
    /// the attempt either way. Returns the cache as it stands afterwards.
    async fn refresh(
        &self,
        org: &str,
        rec: &IdpRecord,
        force: bool,
    ) -> Result<Option<IdpKeysRecord>, TenantError> {
        let lock = self.lock_for(org, &rec.idp_id);
        let _guard = lock.lock().await;
        let key = keys::token_by_org(org, &rec.idp_id);
        let k2 = key.clone();
        let cached: Option<IdpKeysRecord> = self
            .tenancy
            .store()
            .read(move |r| Ok::<_, TenantError>(r.get(Table::IdpKeys, &k2)?))
            .await?;
        let now = now_ms();
        if let Some(c) = &cached {
            if !force && now.saturating_sub(c.last_attempt_ms) < rec.min_refresh_secs * 1000 {
                return Ok(cached);
            }
        }
        let egress = self.tenancy.egress(org);
        let result = match fetch::client(rec.tls_ca_pem.as_deref(), egress.clone()) {
            Ok(http) => fetch::discover(&http, &egress, &rec.issuer).await,
            Err(e) => Err(e),
        };
        let next = match (result, cached) {
            (Ok(f), _) => {
                tracing::info!(issuer = %rec.issuer, "identity provider keys refreshed");
                IdpKeysRecord {
                    jwks_json: f.jwks_json,
                    jwks_uri: f.jwks_uri,
                    introspection_endpoint: f.introspection_endpoint,
                    fetched_at_ms: now,
                    last_attempt_ms: now,
                    last_error: None,
                }
            }
            (Err(e), Some(mut c)) => {
                tracing::warn!(issuer = %rec.issuer, error = %e, "identity provider unreachable; using cached keys");
                c.last_attempt_ms = now;
                c.last_error = Some(e);
                c
            }
            (Err(e), None) => {
                tracing::warn!(issuer = %rec.issuer, error = %e, "identity provider unreachable and nothing cached");
                IdpKeysRecord {
                    jwks_json: String::new(),
                    jwks_uri: String::new(),
                    introspection_endpoint: None,
                    fetched_at_ms: 0,
                    last_attempt_ms: now,
                    last_error: Some(e),
                }
            }
        };
        let n2 = next.clone();
        self.tenancy
            .store()
            .write(move |t| -> Result<(), TenantError> {
                t.put(Table::IdpKeys, key, &n2)?;
                Ok(())
            })
            .await?;
        Ok(Some(next))
    }

    /// Verifies `token` against the org's enabled provider whose issuer it names.
    /// `Ok(Err(reason))` is a refusal to tell the device; `Err` is a gateway failure.
    pub async fn verify(
        &self,
        org: &str,
        token: &str,
    ) -> Result<Result<Identity, String>, TenantError> {
        let idps = self.org_idps(org).await?;
        let enabled: Vec<&IdpRecord> = idps.iter().filter(|i| i.enabled).collect();
        if enabled.is_empty() {
            return Ok(Err("this org has no enabled identity provider".into()));
        }
        if !verify::looks_like_jwt(token) {
            return self.introspect(org, &enabled, token).await;
        }
        let Some(iss) = verify::peek_issuer(token) else {
            return Ok(Err("token carries no issuer".into()));
        };
        let Some(rec) = enabled.iter().find(|i| i.issuer == iss) else {
            return Ok(Err(format!(
                "no enabled identity provider of this org has issuer {iss}"
            )));
        };
        let expect = verify::Expect {
            issuer: &rec.issuer,
            audience: &rec.audience,
            algorithms: &rec.algorithms,
            skew_secs: rec.clock_skew_secs,
        };
        let now = now_ms();
        let mut cache = self.cached(org, &rec.idp_id).await?;
        // Past the staleness limit the provider is asked again before refusing.
        let refresh_after = FRESH_MS.min(rec.max_staleness_secs * 1000);
        if cache.as_ref().is_none_or(|c| {
            c.fetched_at_ms == 0 || now.saturating_sub(c.fetched_at_ms) > refresh_after
        }) {
            cache = self.refresh(org, rec, false).await?;
        }
        for attempt in 0..2 {
            let Some(c) = cache.as_ref().filter(|c| c.fetched_at_ms > 0) else {
                let why = cache
                    .as_ref()
                    .and_then(|c| c.last_error.clone())
                    .unwrap_or_else(|| "never fetched".into());
                return Ok(Err(format!(
                    "the identity provider's keys are not available ({why}); connect the gateway to {} once",
                    rec.issuer
                )));
            };
            let age_ms = now.saturating_sub(c.fetched_at_ms);
            if age_ms > rec.max_staleness_secs * 1000 {
                let age_s = age_ms.div_ceil(1000);
                return Ok(Err(format!(
                    "cached identity provider keys are {age_s} s old (allowed {} s) and {} cannot be reached{}; enrollment by token is refused until it can",
                    rec.max_staleness_secs,
                    rec.issuer,
                    c.last_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                )));
            }
            match verify::verify(token, &c.jwks_json, &expect) {
                Ok(claims) => {
                    let subject = claims["sub"].as_str().unwrap_or("").to_owned();
                    return Ok(Ok(Identity {
                        issuer: rec.issuer.clone(),
                        subject,
                        claims,
                    }));
                }
                Err(verify::Refusal::UnknownKey(_)) if attempt == 0 => {
                    cache = self.refresh(org, rec, false).await?;
                }
                Err(r) => return Ok(Err(r.text())),
            }
        }
        Ok(Err("token could not be verified".into()))
    }

    async fn cached(&self, org: &str, idp: &str) -> Result<Option<IdpKeysRecord>, TenantError> {
        let key = keys::token_by_org(org, idp);
        self.tenancy
            .store()
            .read(move |r| Ok::<_, TenantError>(r.get(Table::IdpKeys, &key)?))
            .await
    }

    /// The provider's sealed client secret, opened; `None` when it has none.
    async fn client_secret(
        &self,
        org: &str,
        rec: &IdpRecord,
    ) -> Result<Option<Zeroizing<String>>, TenantError> {
        let (o, id) = (org.to_owned(), rec.idp_id.clone());
        let sealed = self
            .tenancy
            .store()
            .read(move |r| {
                Ok::<_, TenantError>(r.get_raw(Table::Sealed, &keys::sealed(&o, SECRET_APP, &id))?)
            })
            .await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let secret = self
            .tenancy
            .keyring()
            .open(secret_identity(org, &rec.idp_id), &sealed)
            .await?;
        Ok(Some(Zeroizing::new(
            String::from_utf8_lossy(&secret).into_owned(),
        )))
    }

    /// Every provider record of the org, in key order.
    async fn org_idps(&self, org: &str) -> Result<Vec<IdpRecord>, TenantError> {
        let o = org.to_owned();
        self.tenancy
            .store()
            .read(move |r| {
                r.scan(Table::Idps, &keys::org_prefix(&o), None, MAX_IDPS)?
                    .iter()
                    .map(|(_, v)| Ok(<IdpRecord as crate::store::Record>::decode(v)?))
                    .collect::<Result<Vec<_>, TenantError>>()
            })
            .await
    }

    /// The org's enabled providers that can sign operators in (they have a client id), by id.
    async fn sign_in_providers(&self, org: &str) -> Result<Vec<IdpRecord>, TenantError> {
        let mut idps = self.org_idps(org).await?;
        idps.retain(|i| i.enabled && i.client_id.is_some());
        idps.sort_by(|a, b| a.idp_id.cmp(&b.idp_id));
        Ok(idps)
    }

    async fn introspect(
        &self,
        org: &str,
        enabled: &[&IdpRecord],
        token: &str,
    ) -> Result<Result<Identity, String>, TenantError> {
        let Some(rec) = enabled.iter().find(|i| i.introspection) else {
            return Ok(Err("the token is neither a bootstrap token nor a JWT, and no provider introspects opaque tokens".into()));
        };
        let (Some(client_id), true) = (&rec.client_id, rec.has_client_secret) else {
            return Ok(Err(
                "introspection is configured without client credentials".into(),
            ));
        };
        let secret = self
            .client_secret(org, rec)
            .await?
            .ok_or(TenantError::NotFound {
                what: "identity provider client secret",
            })?;
        let cache = match self.cached(org, &rec.idp_id).await? {
            Some(c) if c.introspection_endpoint.is_some() => Some(c),
            _ => self.refresh(org, rec, false).await?,
        };
        let Some(endpoint) = cache.and_then(|c| c.introspection_endpoint) else {
            return Ok(Err(format!(
                "{} publishes no introspection endpoint",
                rec.issuer
            )));
        };
        let egress = self.tenancy.egress(org);
        let http = match fetch::client(rec.tls_ca_pem.as_deref(), egress.clone()) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        match fetch::introspect(&http, &egress, &endpoint, client_id, &secret, token).await {
            Ok(Some(claims)) if !audience_holds(&claims, &rec.audience) => Ok(Err(format!(
                "introspected token audience is not {}",
                rec.audience
            ))),
            Ok(Some(claims)) => Ok(Ok(Identity {
                issuer: rec.issuer.clone(),
                subject: claims["sub"].as_str().unwrap_or("").to_owned(),
                claims,
            })),
            Ok(None) => Ok(Err(
                "the identity provider says the token is not active".into()
            )),
            Err(e) => Ok(Err(format!("introspection failed: {e}"))),
        }
    }
}

/// `aud` as a string or an array holding `want`.
fn audience_holds(claims: &Value, want: &str) -> bool {
    match &claims["aud"] {
        Value::String(s) => s == want,
        Value::Array(a) => a.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    }
}

fn info(r: &impl Reader, org: &str, rec: IdpRecord) -> Result<IdpInfo, TenantError> {
    let cache: Option<IdpKeysRecord> =
        r.get(Table::IdpKeys, &keys::token_by_org(org, &rec.idp_id))?;
    Ok(IdpInfo {
        config: IdpConfig::from_record(&rec),
        has_client_secret: rec.has_client_secret,
        keys_fetched_at_ms: cache.as_ref().map(|c| c.fetched_at_ms).filter(|t| *t > 0),
        last_error: cache.and_then(|c| c.last_error),
        created_at_ms: rec.created_at_ms,
        idp_id: rec.idp_id,
    })
}
