//! Org-scoped API tokens: `pgt_<token id>_<secret>`, shown once, stored as a hash.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::orgs::{check_quota, load_org};
use super::service::{random_secret, token_hash, Tenancy, ORG_TOKEN_PREFIX};
use super::{now_ms, OrgScope, Principal, Role, TenantError};
use crate::store::{keys, ApiTokenRecord, Reader, Table};

const MAX_NAME: usize = 128;

pub struct NewApiToken {
    pub name: String,
    pub role: Role,
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub created_by: String,
}

/// A freshly issued token; `secret` is the whole bearer value and is never shown again.
pub struct IssuedToken {
    pub info: TokenInfo,
    pub secret: Zeroizing<String>,
}

fn info(rec: &ApiTokenRecord) -> Result<TokenInfo, TenantError> {
    Ok(TokenInfo {
        token_id: rec.token_id.clone(),
        name: rec.name.clone(),
        role: Role::from_byte(rec.role).ok_or(crate::store::StoreError::Decode {
            kind: "api-token",
            reason: "unknown role",
        })?,
        created_at_ms: rec.created_at_ms,
        expires_at_ms: rec.expires_at_ms,
        created_by: rec.created_by.clone(),
    })
}

/// Splits `pgt_<16 hex>_<secret>` into the token id; `None` when malformed.
fn token_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(ORG_TOKEN_PREFIX)?;
    let id = rest.get(..16)?;
    let ok = id.bytes().all(|b| b.is_ascii_hexdigit()) && rest.as_bytes().get(16) == Some(&b'_');
    ok.then_some(id)
}

impl Tenancy {
    pub async fn create_api_token(
        &self,
        scope: &OrgScope,
        new: NewApiToken,
    ) -> Result<IssuedToken, TenantError> {
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            return Err(TenantError::invalid(
                "name",
                format!("must be 1 to {MAX_NAME} printable characters"),
            ));
        }
        let now = now_ms();
        if new.expires_at_ms.is_some_and(|e| e <= now) {
            return Err(TenantError::invalid(
                "expires_at_ms",
                "must be in the future",
            ));
        }
        let token_id = super::ids::random_token_id()?;
        let mut secret = Zeroizing::new(format!("{ORG_TOKEN_PREFIX}{token_id}_"));
        secret.push_str(&random_secret("")?);
        let org_id = scope.org_id().to_owned();
        let created_by = scope.actor().id.clone();
        let hash = token_hash(&secret);
        let target = format!("org/{org_id}/api-token/{token_id}");
        let info = self
            .mutate(
                scope.actor(),
                "api-token.create",
                target,
                Some(org_id.clone()),
                move |t| {
                    let org = load_org(t, &org_id)?;
                    check_quota(
                        t,
                        Table::ApiTokensByOrg,
                        &org_id,
                        "max_api_tokens",
                        org.quotas.max_api_tokens,
                    )?;
                    let rec = ApiTokenRecord {
                        token_id: token_id.clone(),
                        org_id: org_id.clone(),
                        org_uid: org.org_uid,
                        name,
                        role: new.role.to_byte(),
                        secret_hash: hash,
                        created_at_ms: now,
                        expires_at_ms: new.expires_at_ms,
                        revoked_at_ms: None,
                        created_by,
                    };
                    t.put(Table::ApiTokens, token_id.as_bytes().to_vec(), &rec)?;
                    t.put_raw(
                        Table::ApiTokensByOrg,
                        keys::token_by_org(&org_id, &token_id),
                        Vec::new(),
                    );
                    Ok((info(&rec)?, Some((org.org_id, org.org_uid))))
                },
            )
            .await?;
        Ok(IssuedToken { info, secret })
    }

    pub async fn list_api_tokens(&self, scope: &OrgScope) -> Result<Vec<TokenInfo>, TenantError> {
        let org_id = scope.org_id().to_owned();
        self.store
            .read(move |r| {
                let org = load_org(r, &org_id)?;
                let limit = org.quotas.max_api_tokens as usize + 1;
                let prefix = keys::org_prefix(&org_id);
                let mut out = Vec::new();
                for (k, _) in r.scan(Table::ApiTokensByOrg, &prefix, None, limit)? {
                    let Some(id) = keys::suffix_str(&k, &prefix) else {
                        continue;
                    };
                    if let Some(rec) = r.get::<ApiTokenRecord>(Table::ApiTokens, id.as_bytes())? {
                        out.push(info(&rec)?);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Revokes a token by deleting it; it stops working for every later request.
    pub async fn revoke_api_token(
        &self,
        scope: &OrgScope,
        token_id: &str,
    ) -> Result<(), TenantError> {
        let org_id = scope.org_id().to_owned();
        let token_id = token_id.to_owned();
        let target = format!("org/{org_id}/api-token/{token_id}");
        self.mutate(
            scope.actor(),
            "api-token.revoke",
            target,
            Some(org_id.clone()),
            move |t| {
                let org = load_org(t, &org_id)?;
                let rec: Option<ApiTokenRecord> = t.get(Table::ApiTokens, token_id.as_bytes())?;
                match rec {
                    Some(rec) if rec.org_id == org_id => {}
                    _ => return Err(TenantError::NotFound { what: "api token" }),
                }
                t.delete(Table::ApiTokens, token_id.as_bytes().to_vec());
                t.delete(
                    Table::ApiTokensByOrg,
                    keys::token_by_org(&org_id, &token_id),
                );
                Ok(((), Some((org.org_id, org.org_uid))))
            },
        )
        .await
    }

    pub(crate) async fn authenticate_org_token(
        &self,
        token: &str,
    ) -> Result<Principal, TenantError> {
        let id = token_id_of(token)
            .ok_or(TenantError::Unauthenticated)?
            .to_owned();
        let presented = token_hash(token);
        let rec: Option<ApiTokenRecord> = self
            .store
            .read(move |r| r.get(Table::ApiTokens, id.as_bytes()))
            .await
            .map_err(TenantError::Store)?;
        let rec = rec.ok_or(TenantError::Unauthenticated)?;
        if !bool::from(presented.ct_eq(&rec.secret_hash)) {
            return Err(TenantError::Unauthenticated);
        }
        if rec.revoked_at_ms.is_some() || rec.expires_at_ms.is_some_and(|e| e <= now_ms()) {
            return Err(TenantError::Unauthenticated);
        }
        let role = Role::from_byte(rec.role).ok_or(TenantError::Unauthenticated)?;
        Ok(Principal::Org {
            org_id: rec.org_id,
            org_uid: rec.org_uid,
            token_id: rec.token_id,
            role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::token_id_of;

    #[test]
    fn token_id_is_parsed_only_from_the_exact_shape() {
        assert_eq!(
            token_id_of("pgt_0123456789abcdef_secret"),
            Some("0123456789abcdef")
        );
        for bad in [
            "pgt_0123",
            "pgt_0123456789abcdefXsecret",
            "pga_0123456789abcdef_s",
            "pgt_0123456789abcdeg_s",
        ] {
            assert_eq!(token_id_of(bad), None, "{bad}");
        }
    }
}
