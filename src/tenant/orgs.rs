//! Organizations: the tenants, each with its own quotas, formations, tokens and audit log.

use super::audit;
use super::service::Tenancy;
use super::{now_ms, validate_id, Actor, OrgScope, Principal, TenantError};
use crate::store::{keys, OrgRecord, QuotasRecord, Reader, Table};

const MAX_DISPLAY_NAME: usize = 256;
const MAX_QUOTA: u32 = 1_000_000;
/// Largest page of `GET /orgs`.
pub const MAX_ORG_PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub max_formations: u32,
    pub max_peers_per_formation: u32,
    pub max_documents_per_formation: u32,
    pub max_cdc_sinks: u32,
    pub max_enrollments_per_hour: u32,
    pub max_api_tokens: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_formations: 10,
            max_peers_per_formation: 100,
            max_documents_per_formation: 10_000,
            max_cdc_sinks: 5,
            max_enrollments_per_hour: 1000,
            max_api_tokens: 50,
        }
    }
}

/// Partial quota change; absent fields keep their value.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotasPatch {
    pub max_formations: Option<u32>,
    pub max_peers_per_formation: Option<u32>,
    pub max_documents_per_formation: Option<u32>,
    pub max_cdc_sinks: Option<u32>,
    pub max_enrollments_per_hour: Option<u32>,
    pub max_api_tokens: Option<u32>,
}

impl QuotasPatch {
    fn validate(&self) -> Result<(), TenantError> {
        let fields = [
            ("quotas.max_formations", self.max_formations),
            (
                "quotas.max_peers_per_formation",
                self.max_peers_per_formation,
            ),
            (
                "quotas.max_documents_per_formation",
                self.max_documents_per_formation,
            ),
            ("quotas.max_cdc_sinks", self.max_cdc_sinks),
            (
                "quotas.max_enrollments_per_hour",
                self.max_enrollments_per_hour,
            ),
            ("quotas.max_api_tokens", self.max_api_tokens),
        ];
        for (name, v) in fields {
            if matches!(v, Some(n) if n > MAX_QUOTA) {
                return Err(TenantError::invalid(
                    name,
                    format!("must be at most {MAX_QUOTA}"),
                ));
            }
        }
        Ok(())
    }

    fn apply(&self, q: &mut Quotas) {
        let set = |dst: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut q.max_formations, self.max_formations);
        set(&mut q.max_peers_per_formation, self.max_peers_per_formation);
        set(
            &mut q.max_documents_per_formation,
            self.max_documents_per_formation,
        );
        set(&mut q.max_cdc_sinks, self.max_cdc_sinks);
        set(
            &mut q.max_enrollments_per_hour,
            self.max_enrollments_per_hour,
        );
        set(&mut q.max_api_tokens, self.max_api_tokens);
    }
}

impl From<QuotasRecord> for Quotas {
    fn from(r: QuotasRecord) -> Self {
        Self {
            max_formations: r.max_formations,
            max_peers_per_formation: r.max_peers_per_formation,
            max_documents_per_formation: r.max_documents_per_formation,
            max_cdc_sinks: r.max_cdc_sinks,
            max_enrollments_per_hour: r.max_enrollments_per_hour,
            max_api_tokens: r.max_api_tokens,
        }
    }
}

impl From<Quotas> for QuotasRecord {
    fn from(q: Quotas) -> Self {
        Self {
            max_formations: q.max_formations,
            max_peers_per_formation: q.max_peers_per_formation,
            max_documents_per_formation: q.max_documents_per_formation,
            max_cdc_sinks: q.max_cdc_sinks,
            max_enrollments_per_hour: q.max_enrollments_per_hour,
            max_api_tokens: q.max_api_tokens,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub org_id: String,
    /// Immutable, random per creation: a re-created org of the same id is another org.
    pub org_uid: [u8; 16],
    pub display_name: String,
    pub quotas: Quotas,
    pub created_at_ms: u64,
}

impl From<OrgRecord> for Org {
    fn from(r: OrgRecord) -> Self {
        Self {
            org_id: r.org_id,
            org_uid: r.org_uid,
            display_name: r.display_name,
            quotas: r.quotas.into(),
            created_at_ms: r.created_at_ms,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewOrg {
    pub org_id: String,
    pub display_name: String,
    pub quotas: QuotasPatch,
}

#[derive(Debug, Clone, Default)]
pub struct OrgPatch {
    pub display_name: Option<String>,
    pub quotas: Option<QuotasPatch>,
}

fn validate_display_name(s: &str) -> Result<(), TenantError> {
    if s.trim().is_empty() {
        return Err(TenantError::invalid("display_name", "must not be empty"));
    }
    if s.chars().count() > MAX_DISPLAY_NAME {
        return Err(TenantError::invalid(
            "display_name",
            format!("must be at most {MAX_DISPLAY_NAME} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(TenantError::invalid(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Reads an org record or answers `NotFound`.
pub(crate) fn load_org(r: &impl Reader, org_id: &str) -> Result<OrgRecord, TenantError> {
    r.get(Table::Orgs, &keys::org(org_id))?
        .ok_or(TenantError::NotFound { what: "org" })
}

/// Refuses when the org already holds `limit` entries of `table` under its prefix; counts at
/// most `limit + 1` keys, never the whole table.
pub(crate) fn check_quota(
    r: &impl Reader,
    table: Table,
    org_id: &str,
    quota: &'static str,
    limit: u32,
) -> Result<(), TenantError> {
    let existing = r
        .scan(table, &keys::org_prefix(org_id), None, limit as usize + 1)?
        .len();
    if existing >= limit as usize {
        return Err(TenantError::QuotaExceeded { quota, limit });
    }
    Ok(())
}

impl Tenancy {
    /// Creates an org (gateway admin only; the caller checked `require_admin`).
    pub async fn create_org(&self, actor: &Actor, new: NewOrg) -> Result<Org, TenantError> {
        validate_id("org_id", &new.org_id)?;
        validate_display_name(&new.display_name)?;
        new.quotas.validate()?;
        let mut quotas = self.default_quotas;
        new.quotas.apply(&mut quotas);
        let rec = OrgRecord {
            org_id: new.org_id.clone(),
            org_uid: super::ids::random_uid()?,
            display_name: new.display_name,
            quotas: quotas.into(),
            created_at_ms: now_ms(),
        };
        let target = format!("org/{}", new.org_id);
        self.mutate(actor, "org.create", target, Some(new.org_id), move |t| {
            if t.exists(Table::Orgs, &keys::org(&rec.org_id))? {
                return Err(TenantError::Conflict { what: "org" });
            }
            t.put(Table::Orgs, keys::org(&rec.org_id), &rec)?;
            let org = (rec.org_id.clone(), rec.org_uid);
            Ok((Org::from(rec), Some(org)))
        })
        .await
    }

    /// Lists orgs in id order: every org for the admin, only its own for an org token.
    pub async fn list_orgs(
        &self,
        p: &Principal,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Org>, TenantError> {
        let limit = limit.clamp(1, MAX_ORG_PAGE);
        let own = p.own_org().map(str::to_owned);
        self.store
            .read(move |r| {
                if let Some(own) = own {
                    return Ok(r
                        .get::<OrgRecord>(Table::Orgs, &keys::org(&own))?
                        .filter(|o| after.as_deref().is_none_or(|a| o.org_id.as_str() > a))
                        .map(Org::from)
                        .into_iter()
                        .collect());
                }
                let rows = r.scan(Table::Orgs, b"", after.as_deref().map(str::as_bytes), limit)?;
                rows.into_iter()
                    .map(|(_, v)| Ok(Org::from(<OrgRecord as crate::store::Record>::decode(&v)?)))
                    .collect()
            })
            .await
    }

    pub async fn get_org(&self, scope: &OrgScope) -> Result<Org, TenantError> {
        let org_id = scope.org_id().to_owned();
        self.store
            .read(move |r| load_org(r, &org_id).map(Org::from))
            .await
    }

    /// Changes display name and quotas. Quota changes need the admin; the caller checks.
    pub async fn patch_org(&self, scope: &OrgScope, patch: OrgPatch) -> Result<Org, TenantError> {
        if let Some(name) = &patch.display_name {
            validate_display_name(name)?;
        }
        if let Some(q) = &patch.quotas {
            q.validate()?;
        }
        let org_id = scope.org_id().to_owned();
        let target = format!("org/{org_id}");
        self.mutate(
            scope.actor(),
            "org.update",
            target,
            Some(org_id.clone()),
            move |t| {
                let mut rec = load_org(t, &org_id)?;
                if let Some(name) = patch.display_name {
                    rec.display_name = name;
                }
                if let Some(q) = patch.quotas {
                    let mut quotas = Quotas::from(rec.quotas);
                    q.apply(&mut quotas);
                    rec.quotas = quotas.into();
                }
                t.put(Table::Orgs, keys::org(&org_id), &rec)?;
                let org = (rec.org_id.clone(), rec.org_uid);
                Ok((Org::from(rec), Some(org)))
            },
        )
        .await
    }

    /// Every org's id and immutable uid, for the CDC pipeline (no caller scope: the pipeline
    /// uses them only to keep orgs apart).
    pub async fn org_uids(
        &self,
    ) -> Result<std::collections::HashMap<String, [u8; 16]>, TenantError> {
        self.store
            .read(|r| {
                r.scan(Table::Orgs, b"", None, usize::MAX)?
                    .into_iter()
                    .map(|(_, v)| {
                        let o: OrgRecord = crate::store::Record::decode(&v)?;
                        Ok((o.org_id, o.org_uid))
                    })
                    .collect()
            })
            .await
    }

    /// Deletes an org and everything it owns in one transaction (gateway admin only).
    /// Deletes the org and everything it owns; returns the uids of its formations, which key
    /// their records in the outbox database.
    pub async fn delete_org(
        &self,
        actor: &Actor,
        org_id: &str,
    ) -> Result<Vec<[u8; 16]>, TenantError> {
        let org_id = org_id.to_owned();
        let forgotten = org_id.clone();
        let target = format!("org/{org_id}");
        let deleted = self
            .mutate(
                actor,
                "org.delete",
                target,
                Some(org_id.clone()),
                move |t| {
                    let rec = load_org(t, &org_id)?;
                    let prefix = keys::org_prefix(&org_id);
                    let uids = t
                        .scan(Table::Formations, &prefix, None, usize::MAX)?
                        .into_iter()
                        .map(|(_, v)| {
                            <crate::store::FormationRecord as crate::store::Record>::decode(&v)
                                .map(|f| f.formation_uid)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    t.delete_prefix(Table::Formations, &prefix)?;
                    t.delete_prefix(Table::Sealed, &prefix)?;
                    t.delete_prefix(Table::Sinks, &prefix)?;
                    t.delete_prefix(Table::Sources, &prefix)?;
                    t.delete_prefix(Table::EnrollSettings, &prefix)?;
                    t.delete_prefix(Table::Idps, &prefix)?;
                    t.delete_prefix(Table::IdpKeys, &prefix)?;
                    t.delete_prefix(Table::PolicyRules, &prefix)?;
                    t.delete(Table::IdentitySettings, keys::org(&org_id));
                    t.delete(Table::OrgNetworks, keys::org(&org_id));
                    t.delete(Table::SourceGrants, keys::org(&org_id));
                    t.delete(Table::Egress, keys::org(&org_id));
                    super::formations::delete_enrollment_rows(t, &prefix)?;
                    let tokens = t.scan(Table::ApiTokensByOrg, &prefix, None, usize::MAX)?;
                    for (k, _) in tokens {
                        if let Some(token_id) = keys::suffix_str(&k, &prefix) {
                            t.delete(Table::ApiTokens, token_id.as_bytes().to_vec());
                        }
                        t.delete(Table::ApiTokensByOrg, k);
                    }
                    t.delete(Table::Orgs, keys::org(&org_id));
                    Ok((uids, Some((rec.org_id, rec.org_uid))))
                },
            )
            .await;
        // A re-created org with this id starts without an allow-list or egress grant.
        self.forget_networks(&forgotten);
        self.geneses.forget(&forgotten, None);
        self.egress.set(&forgotten, crate::egress::Grant::default());
        deleted
    }

    /// The whole audit log (gateway-wide entries included), newest first; admin only.
    pub async fn audit_page_all(
        &self,
        _admin: &Actor,
        before: Option<u64>,
        limit: usize,
        filter: audit::Filter,
    ) -> Result<audit::AuditPage, TenantError> {
        self.store
            .read(move |r| audit::list_all(r, before, limit, &filter))
            .await
    }

    /// The org's audit log, newest first.
    pub async fn audit_page(
        &self,
        scope: &OrgScope,
        before: Option<u64>,
        limit: usize,
        filter: audit::Filter,
    ) -> Result<audit::AuditPage, TenantError> {
        let org_id = scope.org_id().to_owned();
        self.store
            .read(move |r| {
                let org = load_org(r, &org_id)?;
                audit::list_for_org(r, &org.org_uid, before, limit, &filter)
            })
            .await
    }

    /// Walks the whole audit chain (it links every org's entries); for the org screen and
    /// the admin.
    pub async fn verify_audit_chain(
        &self,
        _proof: &super::Actor,
    ) -> Result<audit::ChainReport, TenantError> {
        self.store.read(|r| audit::verify_chain(r, |_| {})).await
    }
}
