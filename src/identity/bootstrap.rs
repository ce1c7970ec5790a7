//! Bootstrap tokens: `peb_<token id>_<secret>`, shown once, stored as a hash, with atomic use
//! counts (consumed inside the enrollment's own transaction), expiry and revocation.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::mesh::{MeshTier, Permissions};
use crate::store::{keys, BootTokenRecord, Reader, Table, Txn};
use crate::tenant::{
    load_org, now_ms, random_secret, random_token_id, token_hash, OrgScope, Tenancy, TenantError,
};

pub const BOOT_TOKEN_PREFIX: &str = "peb_";
/// Most bootstrap tokens one formation may hold.
pub const MAX_PER_FORMATION: usize = 1000;
const MAX_LABEL: usize = 128;

pub struct NewBootToken {
    pub app_id: String,
    pub label: String,
    pub max_uses: Option<u32>,
    pub expires_at_ms: Option<u64>,
    pub tier: MeshTier,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTokenInfo {
    pub token_id: String,
    pub app_id: String,
    pub label: String,
    pub tier: MeshTier,
    pub permissions: Permissions,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    pub created_by: String,
    /// `active`, `expired`, `used-up` or `revoked`.
    pub state: &'static str,
}

fn state(r: &BootTokenRecord, now: u64) -> &'static str {
    if r.revoked_at_ms.is_some() {
        "revoked"
    } else if r.expires_at_ms.is_some_and(|e| e <= now) {
        "expired"
    } else if r.max_uses.is_some_and(|m| r.uses >= m) {
        "used-up"
    } else {
        "active"
    }
}

fn info(r: &BootTokenRecord) -> Result<BootTokenInfo, TenantError> {
    Ok(BootTokenInfo {
        token_id: r.token_id.clone(),
        app_id: r.app_id.clone(),
        label: r.label.clone(),
        tier: MeshTier::from_byte("boot token", r.tier)?,
        permissions: Permissions::from_wire(r.permissions),
        max_uses: r.max_uses,
        uses: r.uses,
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms,
        revoked_at_ms: r.revoked_at_ms,
        created_by: r.created_by.clone(),
        state: state(r, now_ms()),
    })
}

/// `peb_<16 hex>_<secret>` → the token id; `None` when the shape is wrong.
pub fn token_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(BOOT_TOKEN_PREFIX)?;
    let id = rest.get(..16)?;
    let ok = id.bytes().all(|b| b.is_ascii_hexdigit()) && rest.as_bytes().get(16) == Some(&b'_');
    ok.then_some(id)
}

fn index_key(org: &str, app: &str, token_id: &str) -> Vec<u8> {
    keys::formation_row(org, app, token_id.as_bytes())
}

/// Why a presented bootstrap token does not admit; the text goes into the denial.
pub(crate) fn consume(
    t: &mut Txn<'_>,
    org: &str,
    app: &str,
    token: &str,
) -> Result<Result<BootTokenRecord, &'static str>, TenantError> {
    const INVALID: &str = "invalid bootstrap token";
    let Some(id) = token_id_of(token) else {
        return Ok(Err(INVALID));
    };
    let Some(mut rec) = t.get::<BootTokenRecord>(Table::BootTokens, id.as_bytes())? else {
        return Ok(Err(INVALID));
    };
    let hash_ok = bool::from(token_hash(token).ct_eq(&rec.secret_hash));
    if !hash_ok || rec.org_id != org || rec.app_id != app {
        return Ok(Err(INVALID));
    }
    // Bound to the formation it was issued for, not to its name.
    let f: Option<crate::store::FormationRecord> =
        t.get(Table::Formations, &keys::formation(org, app))?;
    if rec.formation_uid != [0; 16] && f.is_none_or(|f| f.formation_uid != rec.formation_uid) {
        return Ok(Err(INVALID));
    }
    match state(&rec, now_ms()) {
        "revoked" => return Ok(Err("bootstrap token revoked")),
        "expired" => return Ok(Err("bootstrap token expired")),
        "used-up" => return Ok(Err("bootstrap token has no uses left")),
        _ => {}
    }
    rec.uses = rec.uses.saturating_add(1);
    t.put(Table::BootTokens, rec.token_id.as_bytes().to_vec(), &rec)?;
    Ok(Ok(rec))
}

pub async fn create(
    tenancy: &Tenancy,
    scope: &OrgScope,
    new: NewBootToken,
) -> Result<(BootTokenInfo, Zeroizing<String>), TenantError> {
    let label = new.label.trim().to_owned();
    if label.chars().count() > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(TenantError::invalid(
            "label",
            format!("must be at most {MAX_LABEL} printable characters"),
        ));
    }
    if new.max_uses == Some(0) {
        return Err(TenantError::invalid("max_uses", "must be at least 1"));
    }
    let now = now_ms();
    if new.expires_at_ms.is_some_and(|e| e <= now) {
        return Err(TenantError::invalid("expires_at", "must be in the future"));
    }
    let token_id = random_token_id()?;
    let mut secret = Zeroizing::new(format!("{BOOT_TOKEN_PREFIX}{token_id}_"));
    secret.push_str(&random_secret("")?);
    let hash = token_hash(&secret);
    let org = scope.org_id().to_owned();
    let created_by = scope.actor().id.clone();
    let target = format!(
        "org/{org}/formation/{}/bootstrap-token/{token_id}",
        new.app_id
    );
    let info = tenancy
        .mutate(
            scope.actor(),
            "bootstrap-token.create",
            target,
            Some(org.clone()),
            move |t| {
                let o = load_org(t, &org)?;
                let f: crate::store::FormationRecord = t
                    .get(Table::Formations, &keys::formation(&org, &new.app_id))?
                    .ok_or(TenantError::NotFound { what: "formation" })?;
                let held = t
                    .scan(
                        Table::BootTokensByFormation,
                        &keys::formation_row(&org, &new.app_id, b""),
                        None,
                        MAX_PER_FORMATION,
                    )?
                    .len();
                if held >= MAX_PER_FORMATION {
                    return Err(TenantError::QuotaExceeded {
                        quota: "bootstrap tokens per formation",
                        limit: MAX_PER_FORMATION as u32,
                    });
                }
                let rec = BootTokenRecord {
                    token_id: token_id.clone(),
                    org_id: org.clone(),
                    app_id: new.app_id.clone(),
                    label,
                    secret_hash: hash,
                    tier: new.tier.to_byte(),
                    permissions: new.permissions.bits(),
                    max_uses: new.max_uses,
                    uses: 0,
                    created_at_ms: now,
                    expires_at_ms: new.expires_at_ms,
                    revoked_at_ms: None,
                    created_by,
                    formation_uid: f.formation_uid,
                };
                t.put(Table::BootTokens, token_id.as_bytes().to_vec(), &rec)?;
                t.put_raw(
                    Table::BootTokensByFormation,
                    index_key(&org, &new.app_id, &token_id),
                    Vec::new(),
                );
                Ok((info(&rec)?, Some((o.org_id, o.org_uid))))
            },
        )
        .await?;
    Ok((info, secret))
}

pub async fn list(
    tenancy: &Tenancy,
    scope: &OrgScope,
    app: &str,
) -> Result<Vec<BootTokenInfo>, TenantError> {
    let (org, app) = (scope.org_id().to_owned(), app.to_owned());
    tenancy
        .store()
        .read(move |r| {
            if !r.exists(Table::Formations, &keys::formation(&org, &app))? {
                return Err(TenantError::NotFound { what: "formation" });
            }
            let prefix = keys::formation_row(&org, &app, b"");
            let mut out = Vec::new();
            for (k, _) in r.scan(
                Table::BootTokensByFormation,
                &prefix,
                None,
                MAX_PER_FORMATION,
            )? {
                let Some(id) = keys::suffix_str(&k, &prefix) else {
                    continue;
                };
                if let Some(rec) = r.get::<BootTokenRecord>(Table::BootTokens, id.as_bytes())? {
                    out.push(info(&rec)?);
                }
            }
            Ok(out)
        })
        .await
}

fn load_owned(r: &impl Reader, org: &str, token_id: &str) -> Result<BootTokenRecord, TenantError> {
    match r.get::<BootTokenRecord>(Table::BootTokens, token_id.as_bytes())? {
        Some(rec) if rec.org_id == org => Ok(rec),
        _ => Err(TenantError::NotFound {
            what: "bootstrap token",
        }),
    }
}

pub async fn get(
    tenancy: &Tenancy,
    scope: &OrgScope,
    token_id: &str,
) -> Result<BootTokenInfo, TenantError> {
    let (org, id) = (scope.org_id().to_owned(), token_id.to_owned());
    tenancy
        .store()
        .read(move |r| info(&load_owned(r, &org, &id)?))
        .await
}

/// Revokes (kept for the record) or deletes a token; either way it admits nothing afterwards.
pub async fn revoke(
    tenancy: &Tenancy,
    scope: &OrgScope,
    token_id: &str,
    delete: bool,
) -> Result<Option<BootTokenInfo>, TenantError> {
    let (org, id) = (scope.org_id().to_owned(), token_id.to_owned());
    let target = format!("org/{org}/bootstrap-token/{id}");
    let action = if delete {
        "bootstrap-token.delete"
    } else {
        "bootstrap-token.revoke"
    };
    tenancy
        .mutate(scope.actor(), action, target, Some(org.clone()), move |t| {
            let o = load_org(t, &org)?;
            let mut rec = load_owned(t, &org, &id)?;
            let out = if delete {
                t.delete(Table::BootTokens, id.as_bytes().to_vec());
                t.delete(
                    Table::BootTokensByFormation,
                    index_key(&org, &rec.app_id, &id),
                );
                None
            } else {
                if rec.revoked_at_ms.is_some() {
                    return Err(TenantError::Conflict {
                        what: "revocation of this bootstrap token",
                    });
                }
                rec.revoked_at_ms = Some(now_ms());
                t.put(Table::BootTokens, id.as_bytes().to_vec(), &rec)?;
                Some(info(&rec)?)
            };
            Ok((out, Some((o.org_id, o.org_uid))))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::token_id_of;

    #[test]
    fn token_id_is_parsed_only_from_the_exact_shape() {
        assert_eq!(
            token_id_of("peb_0123456789abcdef_s"),
            Some("0123456789abcdef")
        );
        for bad in [
            "peb_0123",
            "pgt_0123456789abcdef_s",
            "peb_0123456789abcdefXs",
        ] {
            assert_eq!(token_id_of(bad), None, "{bad}");
        }
    }
}
