//! The inventory of issued certificates, revocation by subject key, and the revocation list.

use crate::mesh::documents::{
    doc_id, CertificateEntry, RevocationEntry, CERTIFICATES, REVOCATIONS,
};
use crate::mesh::{MeshCertificate, MeshTier, Permissions};
use crate::store::{keys, CertRecord, Reader, RevocationRecord, Table, Txn};
use crate::tenant::{load_org, now_ms, OrgScope, Tenancy, TenantError};

/// Largest page of the inventory.
pub const MAX_PAGE: usize = 1000;
const MAX_REASON: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub fingerprint: String,
    pub subject: [u8; 32],
    pub node_id: String,
    pub tier: MeshTier,
    pub permissions: Permissions,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub granted_via: String,
    pub certificate: Vec<u8>,
    pub revoked: Option<Revocation>,
}

impl CertInfo {
    /// `valid`, `expired` or `revoked` at `now`.
    pub fn state(&self, now: u64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.expires_at_ms != 0 && now >= self.expires_at_ms {
            "expired"
        } else {
            "valid"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub subject: [u8; 32],
    pub reason: String,
    pub revoked_at_ms: u64,
    pub revoked_by: String,
}

fn revocation(r: RevocationRecord) -> Revocation {
    Revocation {
        subject: r.subject,
        reason: r.reason,
        revoked_at_ms: r.revoked_at_ms,
        revoked_by: r.revoked_by,
    }
}

pub(crate) fn cert_key(org: &str, app: &str, fingerprint: &[u8; 32]) -> Vec<u8> {
    keys::formation_row(org, app, fingerprint)
}

pub(crate) fn revocation_key(org: &str, app: &str, subject: &[u8; 32]) -> Vec<u8> {
    keys::formation_row(org, app, subject)
}

pub(crate) fn revoked(
    r: &impl Reader,
    org: &str,
    app: &str,
    subject: &[u8; 32],
) -> Result<Option<Revocation>, TenantError> {
    Ok(
        r.get::<RevocationRecord>(Table::Revocations, &revocation_key(org, app, subject))?
            .map(revocation),
    )
}

/// Records an issued certificate in the caller's transaction, counts its key as a peer of the
/// formation (refused past `max_peers`) and schedules its pruning; returns its fingerprint.
pub(crate) fn record(
    t: &mut Txn<'_>,
    org: &str,
    app: &str,
    cert: &MeshCertificate,
    granted_via: String,
    max_peers: u32,
) -> Result<[u8; 32], TenantError> {
    use sha2::{Digest, Sha256};
    let bytes = cert.encode()?;
    let fp: [u8; 32] = Sha256::digest(&bytes).into();
    let rec = CertRecord {
        certificate: bytes,
        subject: cert.fields.subject,
        node_id: cert.fields.node_id.clone(),
        tier: cert.fields.tier.to_byte(),
        permissions: cert.fields.permissions.bits(),
        issued_at_ms: cert.fields.issued_at_ms,
        expires_at_ms: cert.fields.expires_at_ms,
        granted_via,
    };
    super::retention::admit_peer(t, org, app, &rec.subject, rec.expires_at_ms, max_peers)?;
    let key = cert_key(org, app, &fp);
    super::retention::schedule_certificate(t, &key, rec.expires_at_ms);
    t.put(Table::Certificates, key, &rec)?;
    Ok(fp)
}

fn to_info(
    r: &impl Reader,
    org: &str,
    app: &str,
    fp: &[u8],
    rec: CertRecord,
) -> Result<CertInfo, TenantError> {
    Ok(CertInfo {
        fingerprint: hex::encode(fp),
        revoked: revoked(r, org, app, &rec.subject)?,
        subject: rec.subject,
        node_id: rec.node_id,
        tier: MeshTier::from_byte("certificate record", rec.tier)?,
        permissions: Permissions::from_wire(rec.permissions),
        issued_at_ms: rec.issued_at_ms,
        expires_at_ms: rec.expires_at_ms,
        granted_via: rec.granted_via,
        certificate: rec.certificate,
    })
}

/// The newest unrevoked, unexpired certificate of `subject` (for renewal).
pub(crate) fn current_for(
    r: &impl Reader,
    org: &str,
    app: &str,
    subject: &[u8; 32],
    now: u64,
) -> Result<Option<CertInfo>, TenantError> {
    if revoked(r, org, app, subject)?.is_some() {
        return Ok(None);
    }
    let prefix = keys::formation_row(org, app, b"");
    let mut best: Option<CertInfo> = None;
    // Bounded: a formation's inventory is scanned at most once per renewal.
    for (k, v) in r.scan(Table::Certificates, &prefix, None, usize::MAX)? {
        let rec = <CertRecord as crate::store::Record>::decode(&v)?;
        if &rec.subject != subject || (rec.expires_at_ms != 0 && now >= rec.expires_at_ms) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|b| rec.issued_at_ms > b.issued_at_ms)
        {
            best = Some(to_info(r, org, app, &k[prefix.len()..], rec)?);
        }
    }
    Ok(best)
}

fn formation_exists(r: &impl Reader, org: &str, app: &str) -> Result<(), TenantError> {
    if r.exists(Table::Formations, &keys::formation(org, app))? {
        Ok(())
    } else {
        Err(TenantError::NotFound { what: "formation" })
    }
}

fn parse_fp(fingerprint: &str) -> Result<[u8; 32], TenantError> {
    hex::decode(fingerprint)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or(TenantError::NotFound {
            what: "certificate",
        })
}

/// One page of the inventory, in fingerprint order, after `after` when given.
pub async fn list(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
    after: Option<String>,
    limit: usize,
) -> Result<Vec<CertInfo>, TenantError> {
    let (org, app) = (scope.org_id().to_owned(), app.to_owned());
    let limit = limit.clamp(1, MAX_PAGE);
    tenancy
        .store()
        .read(move |r| {
            formation_exists(r, &org, &app)?;
            let prefix = keys::formation_row(&org, &app, b"");
            let after_key = match after {
                Some(a) => Some(cert_key(&org, &app, &parse_fp(&a)?)),
                None => None,
            };
            let mut out = Vec::new();
            for (k, v) in r.scan(Table::Certificates, &prefix, after_key.as_deref(), limit)? {
                let rec = <CertRecord as crate::store::Record>::decode(&v)?;
                out.push(to_info(r, &org, &app, &k[prefix.len()..], rec)?);
            }
            Ok(out)
        })
        .await
}

pub async fn get(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
    fingerprint: &str,
) -> Result<CertInfo, TenantError> {
    let fp = parse_fp(fingerprint)?;
    let (org, app) = (scope.org_id().to_owned(), app.to_owned());
    tenancy
        .store()
        .read(move |r| {
            formation_exists(r, &org, &app)?;
            let rec: CertRecord = r
                .get(Table::Certificates, &cert_key(&org, &app, &fp))?
                .ok_or(TenantError::NotFound {
                    what: "certificate",
                })?;
            to_info(r, &org, &app, &fp, rec)
        })
        .await
}

/// Revokes the subject key of the certificate: every certificate of that key stops being
/// valid at once, and enrollment and renewal with that key are refused from then on.
pub async fn revoke(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
    fingerprint: &str,
    reason: String,
) -> Result<Revocation, TenantError> {
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(TenantError::invalid(
            "reason",
            format!("must be 1 to {MAX_REASON} printable bytes"),
        ));
    }
    let fp = parse_fp(fingerprint)?;
    let (org, app) = (scope.org_id().to_owned(), app.to_owned());
    let by = scope.actor().id.clone();
    let target = format!("org/{org}/formation/{app}/certificate/{fingerprint}");
    tenancy
        .mutate(
            scope.actor(),
            "certificate.revoke",
            target,
            Some(org.clone()),
            move |t| {
                let o = load_org(t, &org)?;
                formation_exists(t, &org, &app)?;
                let rec: CertRecord = t
                    .get(Table::Certificates, &cert_key(&org, &app, &fp))?
                    .ok_or(TenantError::NotFound {
                        what: "certificate",
                    })?;
                if revoked(t, &org, &app, &rec.subject)?.is_some() {
                    return Err(TenantError::Conflict {
                        what: "revocation of this key",
                    });
                }
                let rev = RevocationRecord {
                    subject: rec.subject,
                    reason,
                    revoked_at_ms: now_ms(),
                    revoked_by: by,
                };
                t.put(
                    Table::Revocations,
                    revocation_key(&org, &app, &rec.subject),
                    &rev,
                )?;
                Ok((revocation(rev), Some((o.org_id, o.org_uid))))
            },
        )
        .await
}

/// Every revoked subject of the formation (the revocation list).
pub async fn revocations(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
) -> Result<Vec<Revocation>, TenantError> {
    let (org, app) = (scope.org_id().to_owned(), app.to_owned());
    tenancy
        .store()
        .read(move |r| {
            formation_exists(r, &org, &app)?;
            let prefix = keys::formation_row(&org, &app, b"");
            r.scan(Table::Revocations, &prefix, None, usize::MAX)?
                .into_iter()
                .map(|(_, v)| {
                    Ok(revocation(
                        <RevocationRecord as crate::store::Record>::decode(&v)?,
                    ))
                })
                .collect()
        })
        .await
}

/// A document for the node: (collection, doc id, JSON text).
pub type Document = (&'static str, String, String);

/// The certificate document peat-mesh's certificate store reads.
pub fn certificate_document(cert_bytes: &[u8], now: u64) -> Result<Document, TenantError> {
    let cert = MeshCertificate::decode(cert_bytes)?;
    let entry = CertificateEntry::new(&cert, now)?;
    let json = serde_json::to_string(&entry)
        .map_err(|e| TenantError::invalid("certificate", e.to_string()))?;
    Ok((CERTIFICATES, doc_id(&cert.fields.subject), json))
}

pub fn revocation_document(r: &Revocation) -> Result<Document, TenantError> {
    let entry = RevocationEntry {
        subject: doc_id(&r.subject),
        reason: r.reason.clone(),
        timestamp_ms: r.revoked_at_ms,
    };
    let json = serde_json::to_string(&entry)
        .map_err(|e| TenantError::invalid("revocation", e.to_string()))?;
    Ok((REVOCATIONS, doc_id(&r.subject), json))
}

/// Everything the node should hold: the newest current certificate of each unrevoked key, and
/// every revocation.
pub async fn documents(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
) -> Result<Vec<Document>, TenantError> {
    let now = now_ms();
    let mut newest: std::collections::BTreeMap<[u8; 32], CertInfo> = Default::default();
    let mut after = None;
    loop {
        let page = list(tenancy, scope, app, after.clone(), MAX_PAGE).await?;
        let done = page.len() < MAX_PAGE;
        after = page.last().map(|c| c.fingerprint.clone());
        for c in page {
            if c.state(now) != "valid" {
                continue;
            }
            let keep = newest
                .get(&c.subject)
                .is_none_or(|b| c.issued_at_ms > b.issued_at_ms);
            if keep {
                newest.insert(c.subject, c);
            }
        }
        if done {
            break;
        }
    }
    let mut out = Vec::new();
    for c in newest.values() {
        out.push(certificate_document(&c.certificate, now)?);
    }
    for r in revocations(tenancy, scope, app).await? {
        out.push(revocation_document(&r)?);
    }
    Ok(out)
}
