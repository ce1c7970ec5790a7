//! Claim rules: ordered allow and deny rules over (nested) token claims, mapping an identity
//! to a Peat tier and permission bits. When no rule matches, the org's setting decides; it is
//! deny unless an org-admin says otherwise.

use serde_json::Value;

use crate::mesh::{MeshTier, Permissions};
use crate::store::{keys, IdentitySettingsRecord, Reader, RuleRecord, Table};
use crate::tenant::{load_org, now_ms, random_token_id, OrgScope, Role, Tenancy, TenantError};

/// Most rules one org may hold.
pub const MAX_RULES: usize = 500;
const MAX_CONDITIONS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The claim equals the value (numbers and booleans also match their text).
    Equals,
    /// The claim is an array holding the value, or a string containing it.
    Contains,
    /// The claim equals one of the values in an array.
    In,
    /// The claim is present and not null.
    Exists,
    /// The claim is a string starting with the value.
    Prefix,
}

impl Op {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "equals" => Self::Equals,
            "contains" => Self::Contains,
            "in" => Self::In,
            "exists" => Self::Exists,
            "prefix" => Self::Prefix,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Equals => "equals",
            Self::Contains => "contains",
            Self::In => "in",
            Self::Exists => "exists",
            Self::Prefix => "prefix",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Equals => 0,
            Self::Contains => 1,
            Self::In => 2,
            Self::Exists => 3,
            Self::Prefix => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Equals,
            1 => Self::Contains,
            2 => Self::In,
            3 => Self::Exists,
            4 => Self::Prefix,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// A dot path (`realm_access.roles`) or a JSON pointer (`/https:~1~1example.com~1roles`).
    pub claim: String,
    pub op: Op,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub rule_id: String,
    /// Lower runs first; ties go by rule id.
    pub priority: u32,
    pub deny: bool,
    pub conditions: Vec<Condition>,
    pub tier: MeshTier,
    pub permissions: Permissions,
    /// Empty: every formation of the org.
    pub formations: Vec<String>,
    pub description: String,
    /// The org role a single sign-on with these claims gets; `None`: no sign-in from this rule.
    pub role: Option<Role>,
}

/// What the claims get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        tier: MeshTier,
        permissions: Permissions,
        rule_id: Option<String>,
    },
    Deny {
        reason: String,
        rule_id: Option<String>,
    },
}

/// The org's answer when no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoMatch {
    pub allow: bool,
    pub tier: MeshTier,
    pub permissions: Permissions,
}

impl Default for NoMatch {
    fn default() -> Self {
        Self {
            allow: false,
            tier: MeshTier::Edge,
            permissions: Permissions::STANDARD,
        }
    }
}

pub fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return claims.pointer(path);
    }
    path.split('.').try_fold(claims, |v, k| v.get(k))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    a == b || matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

impl Condition {
    pub fn matches(&self, claims: &Value) -> bool {
        let Some(c) = lookup(claims, &self.claim).filter(|v| !v.is_null()) else {
            return false;
        };
        match self.op {
            Op::Exists => true,
            Op::Equals => same(c, &self.value),
            Op::Contains => match c {
                Value::Array(items) => items.iter().any(|i| same(i, &self.value)),
                Value::String(s) => self.value.as_str().is_some_and(|v| s.contains(v)),
                _ => false,
            },
            Op::In => self
                .value
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| same(c, v))),
            Op::Prefix => {
                matches!((c.as_str(), self.value.as_str()), (Some(s), Some(p)) if s.starts_with(p))
            }
        }
    }
}

/// First matching rule (by priority, then id) for this formation decides.
/// Rules that name a sign-in role are for people signing in to the UI, never for devices.
pub fn evaluate(rules: &[Rule], claims: &Value, app: Option<&str>, no_match: NoMatch) -> Verdict {
    let mut ordered: Vec<&Rule> = rules.iter().filter(|r| r.role.is_none()).collect();
    ordered.sort_by(|a, b| (a.priority, &a.rule_id).cmp(&(b.priority, &b.rule_id)));
    for r in ordered {
        let in_scope =
            r.formations.is_empty() || app.is_none_or(|a| r.formations.iter().any(|f| f == a));
        if in_scope && r.conditions.iter().all(|c| c.matches(claims)) {
            return if r.deny {
                Verdict::Deny {
                    reason: format!("claim rule {} denies this identity", r.rule_id),
                    rule_id: Some(r.rule_id.clone()),
                }
            } else {
                Verdict::Allow {
                    tier: r.tier,
                    permissions: r.permissions,
                    rule_id: Some(r.rule_id.clone()),
                }
            };
        }
    }
    if no_match.allow {
        Verdict::Allow {
            tier: no_match.tier,
            permissions: no_match.permissions,
            rule_id: None,
        }
    } else {
        Verdict::Deny {
            reason: "no claim rule matches this identity (the org denies when none does)".into(),
            rule_id: None,
        }
    }
}

/// The org role single sign-on grants these claims: the first deny rule or rule with a role
/// (by priority, then id) decides; rules without a role only admit devices (and rules with
/// one only people), and no match signs nobody in (the org's no-match setting is for devices).
pub fn sign_in_role(rules: &[Rule], claims: &Value) -> Result<(Role, String), String> {
    let mut ordered: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.deny || r.role.is_some())
        .collect();
    ordered.sort_by(|a, b| (a.priority, &a.rule_id).cmp(&(b.priority, &b.rule_id)));
    for r in ordered {
        if r.conditions.iter().all(|c| c.matches(claims)) {
            return match (r.deny, r.role) {
                (false, Some(role)) if role != Role::Ingest => Ok((role, r.rule_id.clone())),
                _ => Err(format!("claim rule {} denies this identity", r.rule_id)),
            };
        }
    }
    Err("no claim rule with a role matches this identity; an org-admin adds one (claim rules, `role`)".into())
}

pub(crate) fn to_record(r: &Rule, created_at_ms: u64) -> RuleRecord {
    RuleRecord {
        rule_id: r.rule_id.clone(),
        priority: r.priority,
        deny: r.deny,
        conditions: r
            .conditions
            .iter()
            .map(|c| (c.claim.clone(), c.op.byte(), c.value.to_string()))
            .collect(),
        tier: r.tier.to_byte(),
        permissions: r.permissions.bits(),
        formations: r.formations.clone(),
        description: r.description.clone(),
        created_at_ms,
        role: r.role.map(Role::to_byte),
    }
}

pub(crate) fn from_record(r: &RuleRecord) -> Result<Rule, TenantError> {
    let bad = || crate::store::StoreError::Decode {
        kind: "rule",
        reason: "unknown operator or malformed value",
    };
    Ok(Rule {
        rule_id: r.rule_id.clone(),
        priority: r.priority,
        deny: r.deny,
        conditions: r
            .conditions
            .iter()
            .map(|(claim, op, v)| {
                Ok(Condition {
                    claim: claim.clone(),
                    op: Op::from_byte(*op).ok_or_else(bad)?,
                    value: serde_json::from_str(v).map_err(|_| bad())?,
                })
            })
            .collect::<Result<_, crate::store::StoreError>>()?,
        tier: MeshTier::from_byte("rule", r.tier)?,
        permissions: Permissions::from_wire(r.permissions),
        formations: r.formations.clone(),
        description: r.description.clone(),
        role: match r.role {
            None => None,
            Some(b) => Some(Role::from_byte(b).ok_or_else(bad)?),
        },
    })
}

/// The org's rules, for a sign-in (no caller scope yet: the provider vouched for the claims).
pub async fn of_org(tenancy: &Tenancy, org: &str) -> Result<Vec<Rule>, TenantError> {
    let org = org.to_owned();
    tenancy.store().read(move |r| load_all(r, &org)).await
}

pub(crate) fn load_all(r: &impl Reader, org: &str) -> Result<Vec<Rule>, TenantError> {
    r.scan(Table::PolicyRules, &keys::org_prefix(org), None, MAX_RULES)?
        .iter()
        .map(|(_, v)| from_record(&<RuleRecord as crate::store::Record>::decode(v)?))
        .collect()
}

pub(crate) fn no_match(r: &impl Reader, org: &str) -> Result<NoMatch, TenantError> {
    Ok(
        match r.get::<IdentitySettingsRecord>(Table::IdentitySettings, &keys::org(org))? {
            Some(s) => NoMatch {
                allow: s.no_match_allow,
                tier: MeshTier::from_byte("identity settings", s.no_match_tier)?,
                permissions: Permissions::from_wire(s.no_match_permissions),
            },
            None => NoMatch::default(),
        },
    )
}

fn validate(r: &Rule) -> Result<(), TenantError> {
    if r.conditions.is_empty() || r.conditions.len() > MAX_CONDITIONS {
        return Err(TenantError::invalid(
            "conditions",
            format!("give 1 to {MAX_CONDITIONS} conditions"),
        ));
    }
    for c in &r.conditions {
        if c.claim.is_empty() || c.claim.len() > 256 {
            return Err(TenantError::invalid(
                "conditions",
                "claim must be 1 to 256 bytes",
            ));
        }
        if c.op == Op::In && !c.value.is_array() {
            return Err(TenantError::invalid(
                "conditions",
                "`in` needs an array value",
            ));
        }
        if matches!(c.op, Op::Prefix) && !c.value.is_string() {
            return Err(TenantError::invalid(
                "conditions",
                "`prefix` needs a string value",
            ));
        }
    }
    if r.description.len() > 256 {
        return Err(TenantError::invalid("description", "at most 256 bytes"));
    }
    match (r.deny, r.role) {
        (_, Some(Role::Ingest)) => Err(TenantError::invalid(
            "role",
            "viewer, operator or org-admin (ingest tokens cannot sign in)",
        )),
        (true, Some(_)) => Err(TenantError::invalid(
            "role",
            "a deny rule grants no role; leave it out",
        )),
        _ => Ok(()),
    }
}

pub async fn create(
    tenancy: &Tenancy,
    scope: &OrgScope,
    mut rule: Rule,
) -> Result<Rule, TenantError> {
    validate(&rule)?;
    rule.rule_id = random_token_id()?;
    let org = scope.org_id().to_owned();
    let target = format!("org/{org}/policy-rule/{}", rule.rule_id);
    let rec = to_record(&rule, now_ms());
    tenancy
        .mutate(
            scope.actor(),
            "policy-rule.create",
            target,
            Some(org.clone()),
            move |t| {
                let o = load_org(t, &org)?;
                if t.scan(Table::PolicyRules, &keys::org_prefix(&org), None, MAX_RULES)?
                    .len()
                    >= MAX_RULES
                {
                    return Err(TenantError::QuotaExceeded {
                        quota: "claim rules per org",
                        limit: MAX_RULES as u32,
                    });
                }
                t.put(
                    Table::PolicyRules,
                    keys::token_by_org(&org, &rec.rule_id),
                    &rec,
                )?;
                Ok(((), Some((o.org_id, o.org_uid))))
            },
        )
        .await?;
    Ok(rule)
}

pub async fn list(tenancy: &Tenancy, scope: &OrgScope) -> Result<Vec<Rule>, TenantError> {
    let org = scope.org_id().to_owned();
    let mut rules = tenancy
        .store()
        .read(move |r| {
            load_org(r, &org)?;
            load_all(r, &org)
        })
        .await?;
    rules.sort_by(|a, b| (a.priority, &a.rule_id).cmp(&(b.priority, &b.rule_id)));
    Ok(rules)
}

pub async fn delete(tenancy: &Tenancy, scope: &OrgScope, rule_id: &str) -> Result<(), TenantError> {
    let (org, id) = (scope.org_id().to_owned(), rule_id.to_owned());
    let target = format!("org/{org}/policy-rule/{id}");
    tenancy
        .mutate(
            scope.actor(),
            "policy-rule.delete",
            target,
            Some(org.clone()),
            move |t| {
                let o = load_org(t, &org)?;
                let key = keys::token_by_org(&org, &id);
                if !t.exists(Table::PolicyRules, &key)? {
                    return Err(TenantError::NotFound {
                        what: "policy rule",
                    });
                }
                t.delete(Table::PolicyRules, key);
                Ok(((), Some((o.org_id, o.org_uid))))
            },
        )
        .await
}

pub async fn get_no_match(tenancy: &Tenancy, scope: &OrgScope) -> Result<NoMatch, TenantError> {
    let org = scope.org_id().to_owned();
    tenancy
        .store()
        .read(move |r| {
            load_org(r, &org)?;
            no_match(r, &org)
        })
        .await
}

pub async fn set_no_match(
    tenancy: &Tenancy,
    scope: &OrgScope,
    n: NoMatch,
) -> Result<(), TenantError> {
    let org = scope.org_id().to_owned();
    let target = format!("org/{org}/identity-settings");
    tenancy
        .mutate(
            scope.actor(),
            "identity-settings.update",
            target,
            Some(org.clone()),
            move |t| {
                let o = load_org(t, &org)?;
                t.put(
                    Table::IdentitySettings,
                    keys::org(&org),
                    &IdentitySettingsRecord {
                        no_match_allow: n.allow,
                        no_match_tier: n.tier.to_byte(),
                        no_match_permissions: n.permissions.bits(),
                    },
                )?;
                Ok(((), Some((o.org_id, o.org_uid))))
            },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(id: &str, priority: u32, deny: bool, conds: Vec<(&str, Op, Value)>) -> Rule {
        Rule {
            rule_id: id.into(),
            priority,
            deny,
            conditions: conds
                .into_iter()
                .map(|(c, op, value)| Condition {
                    claim: c.into(),
                    op,
                    value,
                })
                .collect(),
            tier: MeshTier::Tactical,
            permissions: Permissions::STANDARD,
            formations: vec![],
            description: String::new(),
            role: None,
        }
    }

    #[test]
    fn sign_in_takes_the_first_rule_with_a_role_or_a_deny() {
        let mut device_only = rule("a-device", 1, false, vec![("sub", Op::Exists, json!(null))]);
        device_only.tier = MeshTier::Edge;
        let banned = rule(
            "b-banned",
            5,
            true,
            vec![("groups", Op::Contains, json!("banned"))],
        );
        let mut ops = rule(
            "c-ops",
            10,
            false,
            vec![("groups", Op::Contains, json!("kit-operators"))],
        );
        ops.role = Some(Role::Operator);
        let mut lead = rule(
            "d-lead",
            20,
            false,
            vec![("groups", Op::Contains, json!("kit-leads"))],
        );
        lead.role = Some(Role::OrgAdmin);
        let rules = vec![lead, ops, banned, device_only];
        // A device rule matching first grants no sign-in; the operator rule decides.
        let op = json!({"sub": "ana", "groups": ["kit-operators", "kit-leads"]});
        assert_eq!(
            sign_in_role(&rules, &op),
            Ok((Role::Operator, "c-ops".into()))
        );
        let lead_only = json!({"sub": "bo", "groups": ["kit-leads"]});
        assert_eq!(
            sign_in_role(&rules, &lead_only),
            Ok((Role::OrgAdmin, "d-lead".into()))
        );
        let denied = json!({"sub": "cy", "groups": ["kit-operators", "banned"]});
        assert!(sign_in_role(&rules, &denied).is_err_and(|e| e.contains("b-banned")));
        // Matching only a device rule (or nothing) signs nobody in, whatever the no-match setting.
        assert!(sign_in_role(&rules, &json!({"sub": "dee", "groups": []})).is_err());
        // And a sign-in rule admits no device: the device rule decides for the same claims.
        assert!(matches!(
            evaluate(&rules, &op, None, NoMatch::default()),
            Verdict::Allow { rule_id: Some(ref id), tier: MeshTier::Edge, .. } if id == "a-device"
        ));
        let only_people: Vec<Rule> = rules.iter().filter(|r| r.role.is_some()).cloned().collect();
        assert!(matches!(
            evaluate(&only_people, &op, None, NoMatch::default()),
            Verdict::Deny { rule_id: None, .. }
        ));
    }

    #[test]
    fn a_rule_grants_no_ingest_role_and_a_deny_rule_no_role_at_all() {
        let mut r = rule("x", 1, false, vec![("sub", Op::Exists, json!(null))]);
        r.role = Some(Role::Ingest);
        assert!(validate(&r).is_err());
        r.role = Some(Role::Viewer);
        assert!(validate(&r).is_ok());
        r.deny = true;
        assert!(validate(&r).is_err());
    }

    #[test]
    fn a_version_1_rule_record_reads_as_granting_no_sign_in() {
        use crate::store::Record;
        #[derive(serde::Serialize)]
        struct V1 {
            rule_id: String,
            priority: u32,
            deny: bool,
            conditions: Vec<(String, u8, String)>,
            tier: u8,
            permissions: u8,
            formations: Vec<String>,
            description: String,
            created_at_ms: u64,
        }
        let v1 = V1 {
            rule_id: "old".into(),
            priority: 7,
            deny: false,
            conditions: vec![("groups".into(), 1, "\"field-ops\"".into())],
            tier: MeshTier::Edge.to_byte(),
            permissions: Permissions::STANDARD.bits(),
            formations: vec!["mesh".into()],
            description: "from before sign-in".into(),
            created_at_ms: 5,
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_allocvec(&v1).unwrap());
        let rec = RuleRecord::decode(&bytes).unwrap();
        let r = from_record(&rec).unwrap();
        assert_eq!((r.rule_id.as_str(), r.priority, r.role), ("old", 7, None));
        assert_eq!(r.conditions[0].value, json!("field-ops"));
        // Written back, it is the current version and reads the same.
        let again = RuleRecord::decode(&to_record(&r, 5).encode().unwrap()).unwrap();
        assert_eq!(from_record(&again).unwrap(), r);
    }

    #[test]
    fn nested_claims_arrays_and_order_decide() {
        let claims = json!({"sub": "alice", "groups": ["field-ops", "medic"], "unit": {"name": "alpha", "clearance": 3},
            "email_verified": true, "https://example.com/roles": ["pilot"]});
        let rules = vec![
            rule(
                "b-allow",
                20,
                false,
                vec![("groups", Op::Contains, json!("field-ops"))],
            ),
            rule(
                "a-deny",
                10,
                true,
                vec![("groups", Op::Contains, json!("banned"))],
            ),
            rule(
                "c",
                30,
                false,
                vec![("unit.clearance", Op::Equals, json!("3"))],
            ),
        ];
        assert!(
            matches!(evaluate(&rules, &claims, None, NoMatch::default()),
            Verdict::Allow { rule_id: Some(ref id), .. } if id == "b-allow")
        );
        let banned = json!({"groups": ["field-ops", "banned"]});
        assert!(
            matches!(evaluate(&rules, &banned, None, NoMatch::default()),
            Verdict::Deny { rule_id: Some(ref id), .. } if id == "a-deny")
        );
        assert!(matches!(
            evaluate(&rules, &json!({"groups": []}), None, NoMatch::default()),
            Verdict::Deny { rule_id: None, .. }
        ));
        let open = NoMatch {
            allow: true,
            ..NoMatch::default()
        };
        assert!(matches!(
            evaluate(&[], &claims, None, open),
            Verdict::Allow { rule_id: None, .. }
        ));

        let c = |claim: &str, op, value| Condition {
            claim: claim.into(),
            op,
            value,
        };
        assert!(c("unit.name", Op::In, json!(["alpha", "bravo"])).matches(&claims));
        assert!(c("unit.name", Op::Prefix, json!("al")).matches(&claims));
        assert!(c("email_verified", Op::Equals, json!("true")).matches(&claims));
        assert!(c(
            "/https:~1~1example.com~1roles",
            Op::Contains,
            json!("pilot")
        )
        .matches(&claims));
        assert!(!c("unit.missing", Op::Exists, Value::Null).matches(&claims));
        assert!(
            !c("unit", Op::Equals, json!("alpha")).matches(&claims),
            "objects never equal text"
        );
    }

    #[test]
    fn formation_scoped_rules_apply_only_there() {
        let mut r = rule("r", 1, false, vec![("sub", Op::Exists, Value::Null)]);
        r.formations = vec!["mesh".into()];
        let claims = json!({"sub": "x"});
        assert!(matches!(
            evaluate(
                std::slice::from_ref(&r),
                &claims,
                Some("mesh"),
                NoMatch::default()
            ),
            Verdict::Allow { .. }
        ));
        assert!(matches!(
            evaluate(&[r], &claims, Some("other"), NoMatch::default()),
            Verdict::Deny { .. }
        ));
    }
}
