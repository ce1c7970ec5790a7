//! Sign-in sessions: short-lived bearer tokens (`pgs_…`) issued after single sign-on, held in
//! this process only (a restart signs everyone out), revocable by their holder and by the
//! org's admins, every issue and revocation audited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::service::{random_secret, token_hash, Tenancy};
use super::{now_ms, Actor, OrgScope, Principal, Role, TenantError};

pub(crate) const SESSION_PREFIX: &str = "pgs_";
/// How long a sign-in lasts: one shift.
pub const SESSION_TTL_MS: u64 = 8 * 3600 * 1000;
/// Live sessions one org may hold; the oldest goes first beyond it.
const MAX_PER_ORG: usize = 64;

/// A live session as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub org_id: String,
    pub role: Role,
    /// Who signed in: `<subject>` at `<issuer>`, as the provider said.
    pub subject: String,
    pub issuer: String,
    /// The claim rule that granted the role.
    pub rule_id: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

struct Held {
    hash: [u8; 32],
    org_uid: [u8; 16],
    info: SessionInfo,
}

/// The live sessions. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Held>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `pgs_<16 hex id>_<secret>` → the id.
fn session_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(SESSION_PREFIX)?;
    let id = rest.get(..16)?;
    let ok = id.bytes().all(|b| b.is_ascii_hexdigit()) && rest.as_bytes().get(16) == Some(&b'_');
    ok.then_some(id)
}

/// What single sign-on established, to open a session with.
pub struct SignIn {
    pub org_id: String,
    pub role: Role,
    pub subject: String,
    pub issuer: String,
    pub rule_id: String,
}

impl Tenancy {
    /// Opens a session for a verified sign-in and audits it; the secret is returned once.
    pub async fn open_session(
        &self,
        s: SignIn,
    ) -> Result<(SessionInfo, Zeroizing<String>), TenantError> {
        let org = {
            let o = s.org_id.clone();
            self.store
                .read(move |r| super::orgs::load_org(r, &o))
                .await?
        };
        let session_id = super::ids::random_token_id()?;
        let mut secret = Zeroizing::new(format!("{SESSION_PREFIX}{session_id}_"));
        secret.push_str(&random_secret("")?);
        let now = now_ms();
        let info = SessionInfo {
            session_id: session_id.clone(),
            org_id: org.org_id.clone(),
            role: s.role,
            subject: s.subject,
            issuer: s.issuer,
            rule_id: s.rule_id,
            created_at_ms: now,
            expires_at_ms: now + SESSION_TTL_MS,
        };
        self.record_event(
            &actor_of(&info),
            Some(org.org_id.clone()),
            "session.sign-in",
            format!(
                "org/{}/session/{session_id} as {} by rule {} ({} at {})",
                org.org_id,
                info.role.name(),
                info.rule_id,
                info.subject,
                info.issuer
            ),
            "ok".into(),
        )
        .await?;
        let mut held = self.sessions.lock();
        held.retain(|_, h| h.info.expires_at_ms > now);
        let mut own: Vec<(u64, String)> = held
            .values()
            .filter(|h| h.info.org_id == org.org_id)
            .map(|h| (h.info.created_at_ms, h.info.session_id.clone()))
            .collect();
        own.sort();
        for (_, old) in own.iter().take((own.len() + 1).saturating_sub(MAX_PER_ORG)) {
            held.remove(old);
        }
        held.insert(
            session_id,
            Held {
                hash: token_hash(&secret),
                org_uid: org.org_uid,
                info: info.clone(),
            },
        );
        Ok((info, secret))
    }

    pub(crate) fn authenticate_session(&self, token: &str) -> Result<Principal, TenantError> {
        let id = session_id_of(token).ok_or(TenantError::Unauthenticated)?;
        let held = self.sessions.lock();
        let h = held.get(id).ok_or(TenantError::Unauthenticated)?;
        if !bool::from(token_hash(token).ct_eq(&h.hash)) || h.info.expires_at_ms <= now_ms() {
            return Err(TenantError::Unauthenticated);
        }
        Ok(Principal::Org {
            org_id: h.info.org_id.clone(),
            org_uid: h.org_uid,
            token_id: session_token_id(&h.info),
            role: h.info.role,
        })
    }

    /// The org's live sessions, newest first.
    pub fn list_sessions(&self, scope: &OrgScope) -> Vec<SessionInfo> {
        let now = now_ms();
        let mut out: Vec<SessionInfo> = self
            .sessions
            .lock()
            .values()
            .filter(|h| h.info.org_id == scope.org_id() && h.info.expires_at_ms > now)
            .map(|h| h.info.clone())
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
        out
    }

    /// Ends a session of the scope's org (an org-admin's revocation or its holder's sign-out).
    pub async fn revoke_session(
        &self,
        scope: &OrgScope,
        session_id: &str,
        action: &'static str,
    ) -> Result<(), TenantError> {
        let gone = {
            let mut held = self.sessions.lock();
            match held.get(session_id) {
                Some(h) if h.info.org_id == scope.org_id() => held.remove(session_id),
                _ => None,
            }
        };
        let Some(h) = gone else {
            return Err(TenantError::NotFound { what: "session" });
        };
        self.record_event(
            scope.actor(),
            Some(h.info.org_id.clone()),
            action,
            format!(
                "org/{}/session/{session_id} ({})",
                h.info.org_id, h.info.subject
            ),
            "ok".into(),
        )
        .await
    }
}

/// The principal's `token_id` for a session: `sso:<subject>/<session id>`, so the audit log
/// names the person and the session.
fn session_token_id(info: &SessionInfo) -> String {
    let subject: String = info.subject.chars().take(128).collect();
    format!("sso:{subject}/{}", info.session_id)
}

fn actor_of(info: &SessionInfo) -> Actor {
    Actor {
        id: session_token_id(info),
        role: info.role.name(),
    }
}

/// The session id in a principal's `token_id`, when it is a session.
pub fn session_of(token_id: &str) -> Option<&str> {
    let rest = token_id.strip_prefix("sso:")?;
    rest.rsplit('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_parsed_only_from_the_exact_shape() {
        assert_eq!(
            session_id_of("pgs_0123456789abcdef_x"),
            Some("0123456789abcdef")
        );
        for bad in [
            "pgt_0123456789abcdef_x",
            "pgs_0123456789abcdefx",
            "pgs_012345",
            "pgs_0123456789abcdeg_x",
        ] {
            assert_eq!(session_id_of(bad), None, "{bad}");
        }
        assert_eq!(
            session_of("sso:ana@kit.lan/0123456789abcdef"),
            Some("0123456789abcdef")
        );
        assert_eq!(
            session_of("sso:a/b/0123456789abcdef"),
            Some("0123456789abcdef")
        );
        assert_eq!(session_of("token:0123456789abcdef"), None);
    }
}
