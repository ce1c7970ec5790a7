//! Per-formation enrollment settings: certificate validity, freshness window, what is delivered.

use crate::mesh::{MembershipPolicy, MeshTier, Permissions};
use crate::store::{keys, EnrollSettingsRecord, Reader, Table};
use crate::tenant::{load_org, OrgScope, Tenancy, TenantError};

/// Enrollment settings of one formation; absent in the store means [`Default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollSettings {
    /// Lifetime of issued certificates.
    pub validity_secs: u64,
    /// How far a request's timestamp may sit from the gateway's clock, either way.
    pub window_secs: u64,
    /// `issued_at` is set this far in the past, for devices whose clocks run slow.
    pub backdate_secs: u64,
    /// Whether approved answers carry the formation secret (initial enrollment of mesh nodes).
    pub deliver_formation_secret: bool,
    /// What an `Open` formation grants.
    pub open_tier: MeshTier,
    pub open_permissions: Permissions,
    /// How long a pending enrollment waits for an operator.
    pub approval_ttl_secs: u64,
    /// Write certificate and revocation documents to the co-located node (through the
    /// formation's sidecar binding) as they are issued and revoked.
    pub publish_documents: bool,
}

impl Default for EnrollSettings {
    fn default() -> Self {
        Self {
            validity_secs: 24 * 3600,
            window_secs: 300,
            backdate_secs: 0,
            deliver_formation_secret: false,
            open_tier: MeshTier::Edge,
            open_permissions: Permissions::STANDARD,
            approval_ttl_secs: 24 * 3600,
            publish_documents: false,
        }
    }
}

impl EnrollSettings {
    pub fn validate(&self) -> Result<(), TenantError> {
        let range = |field: &'static str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(TenantError::invalid(
                    field,
                    format!("must be between {lo} and {hi} seconds"),
                ))
            }
        };
        range("validity_secs", self.validity_secs, 60, 400 * 86_400)?;
        range("window_secs", self.window_secs, 10, MAX_WINDOW_SECS)?;
        range("backdate_secs", self.backdate_secs, 0, 3600)?;
        range("approval_ttl_secs", self.approval_ttl_secs, 60, 30 * 86_400)?;
        Ok(())
    }

    fn from_record(r: &EnrollSettingsRecord) -> Result<Self, TenantError> {
        Ok(Self {
            validity_secs: r.validity_secs,
            window_secs: r.window_secs,
            backdate_secs: r.backdate_secs,
            deliver_formation_secret: r.deliver_formation_secret,
            open_tier: MeshTier::from_byte("enroll settings", r.open_tier)?,
            open_permissions: Permissions::from_wire(r.open_permissions),
            approval_ttl_secs: r.approval_ttl_secs,
            publish_documents: r.publish_documents,
        })
    }

    fn to_record(&self) -> EnrollSettingsRecord {
        EnrollSettingsRecord {
            validity_secs: self.validity_secs,
            window_secs: self.window_secs,
            backdate_secs: self.backdate_secs,
            deliver_formation_secret: self.deliver_formation_secret,
            open_tier: self.open_tier.to_byte(),
            open_permissions: self.open_permissions.bits(),
            approval_ttl_secs: self.approval_ttl_secs,
            publish_documents: self.publish_documents,
        }
    }
}

pub(crate) fn read(r: &impl Reader, org: &str, app: &str) -> Result<EnrollSettings, TenantError> {
    match r.get::<EnrollSettingsRecord>(Table::EnrollSettings, &keys::formation(org, app))? {
        Some(rec) => EnrollSettings::from_record(&rec),
        None => Ok(EnrollSettings::default()),
    }
}

pub async fn get(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
) -> Result<EnrollSettings, TenantError> {
    let (org, app) = (scope.org_id().to_owned(), app.to_owned());
    tenancy
        .store()
        .read(move |r| {
            if !r.exists(Table::Formations, &keys::formation(&org, &app))? {
                return Err(TenantError::NotFound { what: "formation" });
            }
            read(r, &org, &app)
        })
        .await
}

/// The widest freshness window a formation may allow; replay marks live this long past a
/// request's own timestamp, whatever the window is now.
pub const MAX_WINDOW_SECS: u64 = 3600;

pub async fn put(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
    settings: EnrollSettings,
) -> Result<EnrollSettings, TenantError> {
    settings.validate()?;
    let (org, app) = (scope.org_id().to_owned(), app.to_owned());
    let target = format!("org/{org}/formation/{app}/enrollment-settings");
    let rec = settings.to_record();
    tenancy
        .mutate(
            scope.actor(),
            "enrollment-settings.update",
            target,
            Some(org.clone()),
            move |t| {
                let o = load_org(t, &org)?;
                let f: crate::store::FormationRecord = t
                    .get(Table::Formations, &keys::formation(&org, &app))?
                    .ok_or(TenantError::NotFound { what: "formation" })?;
                if rec.deliver_formation_secret && f.policy == MembershipPolicy::Open.to_byte() {
                    return Err(TenantError::invalid(
                        "deliver_formation_secret",
                        "an Open formation admits any key, so it would hand the formation secret to anyone: use a Controlled or Strict formation to deliver it",
                    ));
                }
                t.put(Table::EnrollSettings, keys::formation(&org, &app), &rec)?;
                Ok(((), Some((o.org_id, o.org_uid))))
            },
        )
        .await?;
    Ok(settings)
}
