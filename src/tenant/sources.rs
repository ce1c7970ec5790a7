//! Source bindings: which peat-node sidecar a formation's changes come from, and which
//! collections. Capture itself is `cdc/`'s.

use zeroize::Zeroizing;

use super::orgs::load_org;
use super::service::Tenancy;
use super::{now_ms, OrgScope, TenantError};
use crate::keys::RecordIdentity;
use crate::secret::Secret;
use crate::store::{keys, Reader, SourceGrantRecord, SourceRecord, Table};

pub(crate) const TOKEN_KIND: &str = "source-token";
pub(crate) const CLIENT_KEY_KIND: &str = "source-client-key";
const MAX_COLLECTIONS: usize = 64;

/// A binding as given by an operator.
pub struct NewSource {
    pub endpoint: String,
    pub collections: Vec<String>,
    pub token: Option<Secret>,
    pub reconcile_secs: u64,
    /// `block` or `drop-oldest`; `None` follows the gateway's `PEAT_CDC_FULL_POLICY`.
    pub full_policy: Option<String>,
    /// For `https://` endpoints (a TLS front of the sidecar).
    pub tls_ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<Secret>,
    /// The node id the operator gave the node (`--node-id`): pinned and checked on every
    /// connect. Without it a node draws a new random id at every start.
    pub node_id: Option<String>,
}

/// A binding as stored, with the formation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDef {
    pub org_id: String,
    /// The owning org's immutable uid, which every captured change carries.
    pub org_uid: [u8; 16],
    /// The org's `max_documents_per_formation`.
    pub max_documents: u64,
    pub app_id: String,
    pub formation_uid: [u8; 16],
    pub endpoint: String,
    pub collections: Vec<String>,
    pub has_token: bool,
    pub reconcile_secs: u64,
    /// `None`: the gateway's policy.
    pub full_policy: Option<&'static str>,
    pub tls_ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    /// The pinned node id, when the operator set one.
    pub node_id: Option<String>,
    /// Whether the gateway admin grants the org this endpoint; capture runs only then.
    pub granted: bool,
}

/// What a capture loop needs opened: the bearer token and the mTLS client key.
#[derive(Default)]
pub struct SourceSecrets {
    pub token: Option<Secret>,
    pub client_key_pem: Option<Secret>,
}

/// Source secrets are bound to the formation's uid, like its genesis.
fn identity<'a>(org: &'a str, app: &'a str, kind: &'a str, uid: [u8; 16]) -> RecordIdentity<'a> {
    RecordIdentity {
        org,
        app,
        kind,
        codec_version: 1,
        uid,
    }
}

fn is_pem(s: &str, label: &str) -> bool {
    s.contains(&format!("-----BEGIN {label}")) && s.len() <= 64 * 1024
}

fn validate_endpoint(e: &str) -> Result<(), TenantError> {
    let unix_ok = e
        .strip_prefix("unix://")
        .is_some_and(|p| p.starts_with('/') && p.len() > 1);
    let tcp_ok = e.starts_with("http://") || e.starts_with("https://");
    if !(tcp_ok || unix_ok) || e.len() > 512 || e.chars().any(char::is_whitespace) {
        return Err(TenantError::invalid(
            "endpoint",
            "must be the sidecar's unix:///path/to.sock, http://host:port, or https://host:port for a TLS front",
        ));
    }
    Ok(())
}

fn validate(new: &NewSource) -> Result<(), TenantError> {
    let e = &new.endpoint;
    validate_endpoint(e)?;
    let https = e.starts_with("https://");
    if !https
        && (new.tls_ca_pem.is_some()
            || new.client_cert_pem.is_some()
            || new.client_key_pem.is_some())
    {
        return Err(TenantError::invalid(
            "endpoint",
            "TLS settings (tls_ca_pem, client_cert_pem, client_key_pem) need an https:// endpoint",
        ));
    }
    if new
        .tls_ca_pem
        .as_deref()
        .is_some_and(|p| !is_pem(p, "CERTIFICATE"))
    {
        return Err(TenantError::invalid(
            "tls_ca_pem",
            "must be PEM certificates, at most 64 KiB",
        ));
    }
    match (&new.client_cert_pem, &new.client_key_pem) {
        (None, None) => {}
        (Some(c), Some(k)) => {
            if !is_pem(c, "CERTIFICATE") {
                return Err(TenantError::invalid(
                    "client_cert_pem",
                    "must be a PEM certificate",
                ));
            }
            if !is_pem(k.expose(), "") || !k.expose().contains("PRIVATE KEY") {
                return Err(TenantError::invalid(
                    "client_key_pem",
                    "must be a PEM private key",
                ));
            }
        }
        _ => return Err(TenantError::invalid(
            "client_cert_pem",
            "give the client certificate and its key together (client_cert_pem and client_key_pem)",
        )),
    }
    if new.collections.is_empty() || new.collections.len() > MAX_COLLECTIONS {
        return Err(TenantError::invalid(
            "collections",
            format!("name 1 to {MAX_COLLECTIONS} collections; a wildcard subscription gets no snapshot, so it is not offered"),
        ));
    }
    for c in &new.collections {
        let ok = !c.is_empty()
            && c.len() <= 1024
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(TenantError::invalid(
                "collections",
                format!("'{c}' is not a collection name ([A-Za-z0-9][A-Za-z0-9._-]*)"),
            ));
        }
    }
    if let Some(p) = &new.full_policy {
        if policy_byte(Some(p)).is_none() {
            return Err(TenantError::invalid(
                "full_policy",
                "must be block or drop-oldest",
            ));
        }
    }
    if let Some(n) = &new.node_id {
        if n.is_empty() || n.len() > 128 || !n.chars().all(|c| c.is_ascii_graphic()) {
            return Err(TenantError::invalid(
                "node_id",
                "must be the id the node was started with (--node-id): 1 to 128 printable characters",
            ));
        }
    }
    if !(10..=86_400).contains(&new.reconcile_secs) {
        return Err(TenantError::invalid(
            "reconcile_secs",
            "must be between 10 and 86400",
        ));
    }
    Ok(())
}

impl Tenancy {
    /// Binds (or rebinds) a formation to a sidecar; the token is sealed like formation keys.
    pub async fn put_source(
        &self,
        scope: &OrgScope,
        app_id: &str,
        new: NewSource,
    ) -> Result<SourceDef, TenantError> {
        validate(&new)?;
        let org_id = scope.org_id().to_owned();
        let app = app_id.to_owned();
        // The secrets are sealed to the formation's uid, read first.
        let formation_uid = {
            let key = keys::formation(&org_id, &app);
            let f: Option<crate::store::FormationRecord> = self
                .store
                .read(move |r| r.get(Table::Formations, &key))
                .await?;
            f.ok_or(TenantError::NotFound { what: "formation" })?
                .formation_uid
        };
        let sealed = match &new.token {
            Some(t) => Some(
                self.keyring
                    .seal(
                        identity(&org_id, &app, TOKEN_KIND, formation_uid),
                        t.expose().as_bytes(),
                    )
                    .await?,
            ),
            None => None,
        };
        let sealed_key = match &new.client_key_pem {
            Some(k) => Some(
                self.keyring
                    .seal(
                        identity(&org_id, &app, CLIENT_KEY_KIND, formation_uid),
                        k.expose().as_bytes(),
                    )
                    .await?,
            ),
            None => None,
        };
        let target = format!("org/{org_id}/formation/{app}/source");
        let by_admin = scope.actor().role == "admin";
        self.mutate(
            scope.actor(),
            "source.put",
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                let key = keys::formation(&org_id, &app);
                let f: crate::store::FormationRecord = t
                    .get(Table::Formations, &key)?
                    .ok_or(TenantError::NotFound { what: "formation" })?;
                if f.formation_uid != formation_uid {
                    return Err(TenantError::Conflict {
                        what: "binding: the formation was re-created meanwhile; bind again",
                    });
                }
                let mut grants: SourceGrantRecord = t
                    .get(Table::SourceGrants, &keys::org(&org_id))?
                    .unwrap_or_default();
                if !grants.endpoints.contains(&new.endpoint) {
                    if !by_admin {
                        return Err(not_granted(&org_id, &new.endpoint));
                    }
                    // The admin's own binding grants its endpoint.
                    grants.endpoints.push(new.endpoint.clone());
                    t.put(Table::SourceGrants, keys::org(&org_id), &grants)?;
                }
                let rec = SourceRecord {
                    endpoint: new.endpoint,
                    collections: new.collections,
                    has_token: sealed.is_some(),
                    tls_ca_pem: new.tls_ca_pem,
                    client_cert_pem: new.client_cert_pem,
                    reconcile_secs: new.reconcile_secs,
                    full_policy: policy_byte(new.full_policy.as_deref()).unwrap_or(0),
                    updated_at_ms: now_ms(),
                    node_id: new.node_id,
                };
                let token_key = keys::sealed(&org_id, &app, TOKEN_KIND);
                match sealed {
                    Some(s) => t.put_raw(Table::Sealed, token_key, s),
                    None => t.delete(Table::Sealed, token_key),
                }
                let client_key = keys::sealed(&org_id, &app, CLIENT_KEY_KIND);
                match sealed_key {
                    Some(s) => t.put_raw(Table::Sealed, client_key, s),
                    None => t.delete(Table::Sealed, client_key),
                }
                t.put(Table::Sources, key, &rec)?;
                Ok((
                    def(&org, &app, f.formation_uid, rec, true),
                    Some((org.org_id, org.org_uid)),
                ))
            },
        )
        .await
    }

    pub async fn get_source(
        &self,
        scope: &OrgScope,
        app_id: &str,
    ) -> Result<SourceDef, TenantError> {
        let (org, app) = (scope.org_id().to_owned(), app_id.to_owned());
        self.store
            .read(move |r| {
                let key = keys::formation(&org, &app);
                let f: crate::store::FormationRecord = r
                    .get(Table::Formations, &key)?
                    .ok_or(TenantError::NotFound { what: "formation" })?;
                let rec: SourceRecord = r
                    .get(Table::Sources, &key)?
                    .ok_or(TenantError::NotFound { what: "source" })?;
                let o = load_org(r, &org)?;
                let granted = is_granted(r, &org, &rec.endpoint)?;
                Ok(def(&o, &app, f.formation_uid, rec, granted))
            })
            .await
    }

    pub async fn delete_source(&self, scope: &OrgScope, app_id: &str) -> Result<(), TenantError> {
        let (org_id, app) = (scope.org_id().to_owned(), app_id.to_owned());
        let target = format!("org/{org_id}/formation/{app}/source");
        self.mutate(
            scope.actor(),
            "source.delete",
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                let key = keys::formation(&org_id, &app);
                if !t.exists(Table::Sources, &key)? {
                    return Err(TenantError::NotFound { what: "source" });
                }
                t.delete(Table::Sources, key);
                t.delete(Table::Sealed, keys::sealed(&org_id, &app, TOKEN_KIND));
                t.delete(Table::Sealed, keys::sealed(&org_id, &app, CLIENT_KEY_KIND));
                Ok(((), Some((org.org_id, org.org_uid))))
            },
        )
        .await
    }

    /// The sidecar endpoints the gateway admin grants the org.
    pub async fn source_grants(&self, scope: &OrgScope) -> Result<Vec<String>, TenantError> {
        let org_id = scope.org_id().to_owned();
        self.store
            .read(move |r| {
                load_org(r, &org_id)?;
                let g: Option<SourceGrantRecord> =
                    r.get(Table::SourceGrants, &keys::org(&org_id))?;
                Ok(g.unwrap_or_default().endpoints)
            })
            .await
    }

    /// Replaces the org's granted endpoints (gateway admin only; the caller checks). A
    /// binding whose endpoint is no longer granted stops capturing.
    pub async fn put_source_grants(
        &self,
        actor: &super::Actor,
        org_id: &str,
        endpoints: Vec<String>,
    ) -> Result<Vec<String>, TenantError> {
        if endpoints.len() > 64 {
            return Err(TenantError::invalid("endpoints", "at most 64"));
        }
        for e in &endpoints {
            validate_endpoint(e)?;
        }
        let org_id = org_id.to_owned();
        let target = format!("org/{org_id}/source-grants");
        self.mutate(
            actor,
            "source.grants",
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                let mut endpoints = endpoints;
                endpoints.sort();
                endpoints.dedup();
                let rec = SourceGrantRecord { endpoints };
                t.put(Table::SourceGrants, keys::org(&org_id), &rec)?;
                Ok((rec.endpoints, Some((org.org_id, org.org_uid))))
            },
        )
        .await
    }

    /// Every binding, for the capture loops.
    pub async fn all_sources(&self) -> Result<Vec<SourceDef>, TenantError> {
        self.store
            .read(|r| {
                let mut out = Vec::new();
                for (k, v) in r.scan(Table::Sources, b"", None, usize::MAX)? {
                    let rec = <SourceRecord as crate::store::Record>::decode(&v)?;
                    let Some(f) = r.get::<crate::store::FormationRecord>(Table::Formations, &k)?
                    else {
                        continue;
                    };
                    let o = load_org(r, &f.org_id)?;
                    let granted = is_granted(r, &f.org_id, &rec.endpoint)?;
                    out.push(def(&o, &f.app_id, f.formation_uid, rec, granted));
                }
                Ok(out)
            })
            .await
    }

    /// The binding's bearer token and client key, opened under the key provider.
    pub async fn source_secrets(&self, d: &SourceDef) -> Result<SourceSecrets, TenantError> {
        let mut out = SourceSecrets::default();
        for (kind, slot) in [
            (TOKEN_KIND, &mut out.token),
            (CLIENT_KEY_KIND, &mut out.client_key_pem),
        ] {
            let key = keys::sealed(&d.org_id, &d.app_id, kind);
            let Some(sealed) = self
                .store
                .read(move |r| r.get_raw(Table::Sealed, &key))
                .await?
            else {
                continue;
            };
            let plain: Zeroizing<Vec<u8>> = self
                .keyring
                .open(
                    identity(&d.org_id, &d.app_id, kind, d.formation_uid),
                    &sealed,
                )
                .await?;
            let s = String::from_utf8(plain.to_vec())
                .map_err(|_| TenantError::invalid("source secret", "not UTF-8"))?;
            *slot = Some(Secret::new(s));
        }
        Ok(out)
    }
}

fn not_granted(org: &str, endpoint: &str) -> TenantError {
    TenantError::NotGranted {
        reason: format!(
            "the endpoint {} is not granted to org {org}: the gateway admin grants the sidecar endpoints an org may bind (PUT /orgs/{org}/source-grants)",
            redact_endpoint(endpoint)
        ),
    }
}

fn is_granted(r: &impl Reader, org: &str, endpoint: &str) -> Result<bool, TenantError> {
    let g: Option<SourceGrantRecord> = r.get(Table::SourceGrants, &keys::org(org))?;
    Ok(g.is_some_and(|g| g.endpoints.iter().any(|e| e == endpoint)))
}

/// An endpoint without its user-info part (credentials), fit for messages and views.
pub fn redact_endpoint(e: &str) -> String {
    let Some((scheme, rest)) = e.split_once("://") else {
        return e.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]@{}", &rest[at + 1..]),
        None => e.to_owned(),
    }
}

fn def(
    org: &crate::store::OrgRecord,
    app: &str,
    formation_uid: [u8; 16],
    r: SourceRecord,
    granted: bool,
) -> SourceDef {
    SourceDef {
        org_id: org.org_id.clone(),
        org_uid: org.org_uid,
        max_documents: u64::from(org.quotas.max_documents_per_formation),
        app_id: app.to_owned(),
        formation_uid,
        endpoint: r.endpoint,
        collections: r.collections,
        has_token: r.has_token,
        reconcile_secs: r.reconcile_secs,
        tls_ca_pem: r.tls_ca_pem,
        client_cert_pem: r.client_cert_pem,
        full_policy: match r.full_policy {
            1 => Some("block"),
            2 => Some("drop-oldest"),
            _ => None,
        },
        node_id: r.node_id,
        granted,
    }
}

fn policy_byte(p: Option<&str>) -> Option<u8> {
    match p {
        None => Some(0),
        Some("block") => Some(1),
        Some("drop-oldest") => Some(2),
        Some(_) => None,
    }
}
