//! Identity administration: an org's OpenID providers (`/orgs/{org}/idps…`), its claim rules
//! (`/orgs/{org}/policy-rules…`, with a dry-run evaluator) and what no match means.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::book::{doc, Access, RouteBook};
use super::extract::{ApiJson, Caller, Ids};
use super::{ApiError, AppState};
use crate::identity::oidc::{IdpConfig, IdpInfo};
use crate::identity::rules::{self, Condition, NoMatch, Op, Rule, Verdict};
use crate::mesh::{MeshTier, Permissions};
use crate::secret::Secret;
use crate::tenant::{Need, Role, TenantError};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    let manage = Access::Org(Need::Manage);
    let read = Access::Org(Need::Read);
    book.post(
        "/orgs/{org_id}/idps",
        create_idp,
        doc("Add an OpenID provider; its discovery and keys are fetched now when reachable", manage, Some(idp_schema), 201),
    )
    .get("/orgs/{org_id}/idps", list_idps, doc("The org's identity providers and their key-cache state", read, None, 200))
    .get("/orgs/{org_id}/idps/{idp_id}", get_idp, doc("One identity provider", read, None, 200))
    .patch(
        "/orgs/{org_id}/idps/{idp_id}",
        patch_idp,
        doc("Enable or disable a provider `{enabled}`", manage, Some(|| json!({"type": "object", "required": ["enabled"], "properties": {"enabled": {"type": "boolean"}}})), 200),
    )
    .delete("/orgs/{org_id}/idps/{idp_id}", delete_idp, doc("Remove a provider and its cached keys", manage, None, 204))
    .post(
        "/orgs/{org_id}/idps/{idp_id}/refresh",
        refresh_idp,
        doc("Fetch discovery and keys now; the answer shows the outcome", manage, None, 200),
    )
    .post(
        "/orgs/{org_id}/policy-rules",
        create_rule,
        doc("Add a claim rule (allow with a tier and permissions, or deny)", manage, Some(rule_schema), 201),
    )
    .get("/orgs/{org_id}/policy-rules", list_rules, doc("The org's claim rules in evaluation order", read, None, 200))
    .delete("/orgs/{org_id}/policy-rules/{rule_id}", delete_rule, doc("Remove a claim rule", manage, None, 204))
    .post(
        "/orgs/{org_id}/policy-rules/evaluate",
        evaluate,
        doc("What claims would get as a device (tier, permissions) and at sign-in (role): `{claims | token, app_id?}`; a token is verified and its claims evaluated either way", read, None, 200),
    )
    .get("/orgs/{org_id}/identity-settings", get_settings, doc("What claims get when no rule matches", read, None, 200))
    .put(
        "/orgs/{org_id}/identity-settings",
        put_settings,
        doc("Set what claims get when no rule matches `{no_match: deny|allow, tier?, permissions?}`", manage, None, 200),
    )
}

fn idp_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["issuer", "audience"], "properties": {
        "issuer": {"type": "string", "description": "https URL (http only for loopback)"},
        "audience": {"type": "string"},
        "algorithms": {"type": "array", "items": {"type": "string"}, "default": ["RS256", "ES256"]},
        "client_id": {"type": "string"}, "client_secret": {"type": "string", "description": "sealed; never shown again"},
        "tls_ca_pem": {"type": "string"}, "enabled": {"type": "boolean", "default": true},
        "introspection": {"type": "boolean", "default": false},
        "max_staleness_secs": {"type": "integer", "default": 604800},
        "clock_skew_secs": {"type": "integer", "default": 60},
        "min_refresh_secs": {"type": "integer", "default": 30}}})
}

fn rule_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["conditions"], "properties": {
        "priority": {"type": "integer", "default": 100},
        "effect": {"type": "string", "enum": ["allow", "deny"], "default": "allow"},
        "conditions": {"type": "array", "items": {"type": "object", "required": ["claim", "op"], "properties": {
            "claim": {"type": "string", "description": "dot path or JSON pointer"},
            "op": {"type": "string", "enum": ["equals", "contains", "in", "exists", "prefix"]},
            "value": {}}}},
        "tier": {"type": "string", "default": "Edge"},
        "permissions": {"type": "array", "items": {"type": "string"}, "default": ["STANDARD"]},
        "formations": {"type": "array", "items": {"type": "string"}},
        "description": {"type": "string"},
        "role": {"type": "string", "enum": ["viewer", "operator", "org-admin"],
            "description": "the org role single sign-on to the UI grants these claims; absent: the rule admits devices only"}}})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdpIn {
    issuer: String,
    audience: String,
    algorithms: Option<Vec<String>>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    tls_ca_pem: Option<String>,
    enabled: Option<bool>,
    introspection: Option<bool>,
    max_staleness_secs: Option<u64>,
    clock_skew_secs: Option<u64>,
    min_refresh_secs: Option<u64>,
}

fn idp_json(i: &IdpInfo) -> Value {
    let c = &i.config;
    json!({
        "idp_id": i.idp_id, "issuer": c.issuer, "audience": c.audience, "algorithms": c.algorithms,
        "client_id": c.client_id, "client_secret": if i.has_client_secret { json!("[sealed]") } else { Value::Null },
        "tls_ca_pem": c.tls_ca_pem.is_some(), "enabled": c.enabled, "introspection": c.introspection,
        "max_staleness_secs": c.max_staleness_secs, "clock_skew_secs": c.clock_skew_secs,
        "min_refresh_secs": c.min_refresh_secs, "keys_fetched_at": i.keys_fetched_at_ms,
        "last_error": i.last_error, "created_at": i.created_at_ms,
    })
}

async fn create_idp(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<IdpIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "add identity providers")
        .await?;
    let config = IdpConfig {
        issuer: b.issuer,
        audience: b.audience,
        algorithms: b
            .algorithms
            .unwrap_or_else(|| vec!["RS256".into(), "ES256".into()]),
        client_id: b.client_id,
        tls_ca_pem: b.tls_ca_pem,
        enabled: b.enabled.unwrap_or(true),
        introspection: b.introspection.unwrap_or(false),
        max_staleness_secs: b.max_staleness_secs.unwrap_or(7 * 86_400),
        clock_skew_secs: b.clock_skew_secs.unwrap_or(60),
        min_refresh_secs: b.min_refresh_secs.unwrap_or(30),
    };
    let secret = b
        .client_secret
        .map(|s| Zeroizing::new(s.expose().to_owned()));
    let info = s.authority.oidc().create(&scope, config, secret).await?;
    Ok((StatusCode::CREATED, Json(idp_json(&info))))
}

async fn list_idps(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "list identity providers")
        .await?;
    let list = s.authority.oidc().list(&scope).await?;
    Ok(Json(
        json!({"idps": list.iter().map(idp_json).collect::<Vec<_>>()}),
    ))
}

async fn get_idp(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "read identity providers")
        .await?;
    Ok(Json(idp_json(
        &s.authority.oidc().get(&scope, ids.second()).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnabledIn {
    enabled: bool,
}

async fn patch_idp(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<EnabledIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "change identity providers")
        .await?;
    Ok(Json(idp_json(
        &s.authority
            .oidc()
            .set_enabled(&scope, ids.second(), b.enabled)
            .await?,
    )))
}

async fn delete_idp(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "remove identity providers")
        .await?;
    s.authority.oidc().delete(&scope, ids.second()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh_idp(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "refresh identity providers")
        .await?;
    Ok(Json(idp_json(
        &s.authority.oidc().refresh_now(&scope, ids.second()).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionIn {
    claim: String,
    op: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleIn {
    priority: Option<u32>,
    effect: Option<String>,
    conditions: Vec<ConditionIn>,
    tier: Option<String>,
    permissions: Option<Vec<String>>,
    #[serde(default)]
    formations: Vec<String>,
    #[serde(default)]
    description: String,
    /// The org role single sign-on grants (viewer, operator, org-admin).
    role: Option<String>,
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "rule_id": r.rule_id, "priority": r.priority, "effect": if r.deny { "deny" } else { "allow" },
        "conditions": r.conditions.iter().map(|c| json!({"claim": c.claim, "op": c.op.name(), "value": c.value})).collect::<Vec<_>>(),
        "tier": r.tier.name(), "permissions": r.permissions.names(), "formations": r.formations,
        "description": r.description, "role": r.role.map(Role::name),
    })
}

async fn create_rule(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<RuleIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Manage, "add claim rules").await?;
    let deny = match b.effect.as_deref() {
        None | Some("allow") => false,
        Some("deny") => true,
        Some(_) => return Err(TenantError::invalid("effect", "must be allow or deny").into()),
    };
    let conditions = b
        .conditions
        .into_iter()
        .map(|c| {
            Ok(Condition {
                op: Op::from_name(&c.op).ok_or_else(|| {
                    TenantError::invalid(
                        "conditions",
                        format!(
                            "unknown op '{}' (equals, contains, in, exists, prefix)",
                            c.op
                        ),
                    )
                })?,
                claim: c.claim,
                value: c.value,
            })
        })
        .collect::<Result<Vec<_>, TenantError>>()?;
    let rule = Rule {
        rule_id: String::new(),
        priority: b.priority.unwrap_or(100),
        deny,
        conditions,
        tier: super::authority::tier("tier", b.tier.as_deref(), MeshTier::Edge)?,
        permissions: super::authority::permissions(
            "permissions",
            b.permissions.as_deref(),
            Permissions::STANDARD,
        )?,
        formations: b.formations,
        description: b.description,
        role: match b.role.as_deref() {
            None => None,
            Some(name) => Some(
                Role::from_name(name)
                    .ok_or_else(|| TenantError::invalid("role", "viewer, operator or org-admin"))?,
            ),
        },
    };
    let rule = rules::create(&s.tenancy, &scope, rule).await?;
    Ok((StatusCode::CREATED, Json(rule_json(&rule))))
}

async fn list_rules(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s.scope(&p, &ids, Need::Read, "list claim rules").await?;
    let list = rules::list(&s.tenancy, &scope).await?;
    Ok(Json(
        json!({"rules": list.iter().map(rule_json).collect::<Vec<_>>()}),
    ))
}

async fn delete_rule(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "remove claim rules")
        .await?;
    rules::delete(&s.tenancy, &scope, ids.second()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateIn {
    /// Claims as JSON, or
    claims: Option<Value>,
    /// a token the org's providers verify (its claims are evaluated either way).
    token: Option<crate::secret::Secret>,
    app_id: Option<String>,
}

async fn evaluate(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<EvaluateIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "evaluate claim rules")
        .await?;
    let (claims, token) = match (b.claims, b.token) {
        (Some(c), None) => (c, None),
        (None, Some(t)) => {
            let verdict = s
                .authority
                .oidc()
                .verify(scope.org_id(), t.expose())
                .await?;
            let claims = crate::identity::oidc::unverified_claims(t.expose()).ok_or_else(|| {
                TenantError::invalid(
                    "token",
                    "is not a JWT (three base64url parts, a JSON payload)",
                )
            })?;
            let report = match verdict {
                Ok(id) => json!({"verified": true, "issuer": id.issuer, "subject": id.subject}),
                Err(reason) => json!({"verified": false, "reason": reason}),
            };
            (claims, Some(report))
        }
        _ => {
            return Err(TenantError::invalid("claims", "give either claims or token").into());
        }
    };
    if !claims.is_object() {
        return Err(TenantError::invalid("claims", "must be a JSON object").into());
    }
    let list = rules::list(&s.tenancy, &scope).await?;
    let no_match = rules::get_no_match(&s.tenancy, &scope).await?;
    let mut out = match rules::evaluate(&list, &claims, b.app_id.as_deref(), no_match) {
        Verdict::Allow {
            tier,
            permissions,
            rule_id,
        } => json!({
        "decision": "allow", "rule_id": rule_id, "tier": tier.name(),
        "permissions": permissions.names(), "permission_bits": permissions.bits()}),
        Verdict::Deny { reason, rule_id } => {
            json!({"decision": "deny", "rule_id": rule_id, "reason": reason})
        }
    };
    out["sign_in"] = match rules::sign_in_role(&list, &claims) {
        Ok((role, rule_id)) => {
            json!({"decision": "allow", "role": role.name(), "rule_id": rule_id})
        }
        Err(reason) => json!({"decision": "deny", "reason": reason}),
    };
    if let Some(t) = token {
        out["token"] = t;
        out["claims"] = claims;
    }
    Ok(Json(out))
}

fn no_match_json(n: &NoMatch) -> Value {
    json!({"no_match": if n.allow { "allow" } else { "deny" }, "tier": n.tier.name(), "permissions": n.permissions.names()})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsIn {
    no_match: String,
    tier: Option<String>,
    permissions: Option<Vec<String>>,
}

async fn get_settings(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Read, "read identity settings")
        .await?;
    Ok(Json(no_match_json(
        &rules::get_no_match(&s.tenancy, &scope).await?,
    )))
}

async fn put_settings(
    State(s): State<AppState>,
    Caller(p): Caller,
    ids: Ids,
    ApiJson(b): ApiJson<SettingsIn>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = s
        .scope(&p, &ids, Need::Manage, "change identity settings")
        .await?;
    let allow = match b.no_match.as_str() {
        "deny" => false,
        "allow" => true,
        _ => return Err(TenantError::invalid("no_match", "must be deny or allow").into()),
    };
    let n = NoMatch {
        allow,
        tier: super::authority::tier("tier", b.tier.as_deref(), MeshTier::Edge)?,
        permissions: super::authority::permissions(
            "permissions",
            b.permissions.as_deref(),
            Permissions::STANDARD,
        )?,
    };
    rules::set_no_match(&s.tenancy, &scope, n).await?;
    Ok(Json(no_match_json(&n)))
}
