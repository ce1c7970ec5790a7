//! Who is calling, what they may do, and the [`OrgScope`] that proves it.

use super::TenantError;

/// Role of an org-scoped API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    OrgAdmin,
    Operator,
    Viewer,
    Ingest,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::OrgAdmin, Role::Operator, Role::Viewer, Role::Ingest];

    pub fn name(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org-admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Ingest => "ingest",
        }
    }

    pub fn from_name(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Role::OrgAdmin => 1,
            Role::Operator => 2,
            Role::Viewer => 3,
            Role::Ingest => 4,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.to_byte() == b)
    }
}

/// What an operation needs from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read the org's state: viewer, operator, org-admin.
    Read,
    /// Day-to-day operation (pause a sink, approve): operator, org-admin.
    Operate,
    /// Change the org's configuration, tokens and keys: org-admin.
    Manage,
    /// Append changes: ingest, operator, org-admin.
    Ingest,
    /// Gateway-wide administration: the admin token only.
    GatewayAdmin,
}

impl Need {
    fn allows(self, role: Role) -> bool {
        match self {
            Need::Read => matches!(role, Role::Viewer | Role::Operator | Role::OrgAdmin),
            Need::Operate => matches!(role, Role::Operator | Role::OrgAdmin),
            Need::Manage => role == Role::OrgAdmin,
            Need::Ingest => matches!(role, Role::Ingest | Role::Operator | Role::OrgAdmin),
            Need::GatewayAdmin => false,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap admin token (or open access in explicit dev mode).
    Admin { dev_open: bool },
    /// An org-scoped API token.
    Org {
        org_id: String,
        org_uid: [u8; 16],
        token_id: String,
        role: Role,
    },
}

/// Who did something, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: String,
    pub role: &'static str,
}

impl Actor {
    pub fn cli(command: &str) -> Self {
        Self {
            id: format!("cli:{command}"),
            role: "admin",
        }
    }

    /// The gateway itself, for what its pipelines do unasked.
    pub fn system() -> Self {
        Self {
            id: "system".into(),
            role: "system",
        }
    }
}

impl Principal {
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Admin { dev_open: false } => Actor {
                id: "admin".into(),
                role: "admin",
            },
            Principal::Admin { dev_open: true } => Actor {
                id: "dev-mode".into(),
                role: "admin",
            },
            Principal::Org { token_id, role, .. } => Actor {
                // A client certificate (`x509:<cn>`) and a session (`sso:<subject>/<id>`)
                // name themselves; tokens go by their id.
                id: if token_id.starts_with("x509:") || token_id.starts_with("sso:") {
                    token_id.clone()
                } else {
                    format!("token:{token_id}")
                },
                role: role.name(),
            },
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin { .. })
    }

    /// The org this principal belongs to, if it is org-scoped.
    pub fn own_org(&self) -> Option<&str> {
        match self {
            Principal::Org { org_id, .. } => Some(org_id),
            Principal::Admin { .. } => None,
        }
    }

    /// Clears the caller for `need` on `org_id`. Another org answers `NotFound`.
    pub fn scope(
        &self,
        org_id: &str,
        need: Need,
        action: &'static str,
    ) -> Result<OrgScope, TenantError> {
        match self {
            Principal::Admin { .. } => Ok(OrgScope {
                org_id: org_id.to_owned(),
                actor: self.actor(),
            }),
            Principal::Org {
                org_id: own, role, ..
            } => {
                if own != org_id {
                    Err(TenantError::NotFound { what: "org" })
                } else if need.allows(*role) {
                    Ok(OrgScope {
                        org_id: org_id.to_owned(),
                        actor: self.actor(),
                    })
                } else {
                    Err(TenantError::Forbidden { action })
                }
            }
        }
    }

    /// Clears the caller for gateway-wide administration.
    pub fn require_admin(&self, action: &'static str) -> Result<Actor, TenantError> {
        if self.is_admin() {
            Ok(self.actor())
        } else {
            Err(TenantError::Forbidden { action })
        }
    }
}

/// Proof that the caller may act on `org_id`; only [`Principal::scope`] makes one.
#[derive(Debug, Clone)]
pub struct OrgScope {
    org_id: String,
    actor: Actor,
}

impl OrgScope {
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(org: &str, role: Role) -> Principal {
        Principal::Org {
            org_id: org.into(),
            org_uid: [0; 16],
            token_id: "t".into(),
            role,
        }
    }

    #[test]
    fn role_table_matches_the_documented_matrix() {
        use Need::*;
        let table = [
            (Read, [true, true, true, false]),
            (Operate, [true, true, false, false]),
            (Manage, [true, false, false, false]),
            (Ingest, [true, true, false, true]),
            (GatewayAdmin, [false, false, false, false]),
        ];
        for (need, allowed) in table {
            for (role, want) in Role::ALL.into_iter().zip(allowed) {
                let got = token("a", role).scope("a", need, "x").is_ok();
                assert_eq!(got, want, "{need:?} {role:?}");
            }
        }
    }

    #[test]
    fn another_orgs_token_sees_not_found_never_forbidden() {
        for role in Role::ALL {
            let err = token("a", role).scope("b", Need::Read, "x").unwrap_err();
            assert!(matches!(err, TenantError::NotFound { what: "org" }));
        }
    }

    #[test]
    fn role_names_round_trip_and_bytes_are_distinct() {
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(r));
            assert_eq!(Role::from_byte(r.to_byte()), Some(r));
        }
        assert_eq!(Role::from_name("admin"), None);
    }
}
