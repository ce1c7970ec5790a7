//! [`Tenancy`]: the service handle, authentication, and the audited-mutation helper.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::audit::{self, Event};
use super::orgs::Quotas;
use super::{now_ms, Actor, Need, OrgScope, Principal, TenantError};
use crate::keys::Keyring;
use crate::store::{keys, AdminTokenRecord, Reader, Store, Table, Txn};

/// How the bootstrap admin is authenticated.
#[derive(Clone, Copy)]
pub enum AdminAuth {
    /// Explicit dev mode with no token: every request is the admin.
    Open,
    /// SHA-256 of the admin token.
    Hash([u8; 32]),
}

/// What start-up did about the admin token, for the operator's console.
pub enum AdminBootstrap {
    Configured,
    Stored,
    DevOpen,
    /// A token was generated now; show it once.
    Generated(Zeroizing<String>),
}

/// Tenancy rules over the store. Cheap to clone.
#[derive(Clone)]
pub struct Tenancy {
    pub(crate) store: Store,
    pub(crate) keyring: Keyring,
    pub(crate) default_quotas: Quotas,
    admin: AdminAuth,
    /// Per-org network allow-lists, read once and kept current by this process's own writes
    /// (checked on every org-token request, so not read from the store each time).
    pub(crate) networks: super::network::NetworkCache,
    /// Every org's egress grant, as last written.
    pub(crate) egress: crate::egress::Policies,
    /// Sign-in sessions after single sign-on; this process's only.
    pub(crate) sessions: super::sessions::Sessions,
    /// Opened geneses, so enrollment neither unseals nor derives keys per request.
    pub(crate) geneses: super::formation_cache::GenesisCache,
    /// The formations ingest names, while nothing their read opened has been written since.
    pub(crate) ingest_formations: super::formation_cache::FormationCache,
}

const TOKEN_LABEL: &[u8] = b"peat-gateway:token:v1";
const ADMIN_PREFIX: &str = "pga_";
pub(crate) const ORG_TOKEN_PREFIX: &str = "pgt_";

/// SHA-256 of a token under a fixed label; tokens carry 256 bits of entropy, so no KDF is needed.
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TOKEN_LABEL);
    h.update(token.as_bytes());
    h.finalize().into()
}

/// `prefix` + base64url of 32 random bytes.
pub(crate) fn random_secret(prefix: &str) -> Result<Zeroizing<String>, TenantError> {
    use base64::Engine;
    let raw = crate::keys::random_secret32()?;
    let mut s = Zeroizing::new(String::with_capacity(prefix.len() + 43));
    s.push_str(prefix);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw.as_ref(), &mut s);
    Ok(s)
}

impl Tenancy {
    pub fn new(store: Store, keyring: Keyring, default_quotas: Quotas, admin: AdminAuth) -> Self {
        Self {
            store,
            keyring,
            default_quotas,
            admin,
            networks: Default::default(),
            egress: Default::default(),
            sessions: Default::default(),
            geneses: Default::default(),
            ingest_formations: Default::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Decides the admin authentication at start-up; generates and stores a token when none
    /// is configured and dev mode is off.
    pub async fn bootstrap_admin(
        store: &Store,
        configured: Option<&str>,
        dev_mode: bool,
    ) -> Result<(AdminAuth, AdminBootstrap), TenantError> {
        if let Some(token) = configured {
            return Ok((
                AdminAuth::Hash(token_hash(token)),
                AdminBootstrap::Configured,
            ));
        }
        if dev_mode {
            return Ok((AdminAuth::Open, AdminBootstrap::DevOpen));
        }
        let stored: Option<AdminTokenRecord> = store
            .read(|r| r.get(Table::Meta, keys::ADMIN_TOKEN))
            .await
            .map_err(TenantError::Store)?;
        if let Some(rec) = stored {
            return Ok((AdminAuth::Hash(rec.secret_hash), AdminBootstrap::Stored));
        }
        let token =
            Self::store_new_admin_token(store, &Actor::cli("serve"), "admin-token.generate")
                .await?;
        let hash = token_hash(&token);
        Ok((AdminAuth::Hash(hash), AdminBootstrap::Generated(token)))
    }

    /// Records a gateway-wide key operation (seal, recovery export or import) in the audit log.
    pub async fn audit_key_operation(
        store: &Store,
        actor: &Actor,
        action: &'static str,
        target: String,
    ) -> Result<(), TenantError> {
        let actor = actor.clone();
        store
            .write(move |t| -> Result<(), TenantError> {
                audit::append(
                    t,
                    Event {
                        org: None,
                        actor: &actor,
                        action,
                        target: &target,
                        outcome: "ok",
                    },
                )?;
                Ok(())
            })
            .await
    }

    /// Replaces the stored bootstrap admin token and returns the new one (shown once).
    pub async fn rotate_admin_token(store: &Store) -> Result<Zeroizing<String>, TenantError> {
        Self::store_new_admin_token(
            store,
            &Actor::cli("admin-token rotate"),
            "admin-token.rotate",
        )
        .await
    }

    async fn store_new_admin_token(
        store: &Store,
        actor: &Actor,
        action: &'static str,
    ) -> Result<Zeroizing<String>, TenantError> {
        let token = random_secret(ADMIN_PREFIX)?;
        let rec = AdminTokenRecord {
            secret_hash: token_hash(&token),
            created_at_ms: super::now_ms(),
        };
        let actor = actor.clone();
        store
            .write(move |t| -> Result<(), TenantError> {
                t.put(Table::Meta, keys::ADMIN_TOKEN.to_vec(), &rec)?;
                audit::append(
                    t,
                    Event {
                        org: None,
                        actor: &actor,
                        action,
                        target: "gateway/admin-token",
                        outcome: "ok",
                    },
                )?;
                Ok(())
            })
            .await?;
        Ok(token)
    }

    /// Resolves a bearer token (without the `Bearer ` prefix) to a principal.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, TenantError> {
        if let Some(token) = bearer.filter(|t| t.starts_with(ORG_TOKEN_PREFIX)) {
            return self.authenticate_org_token(token).await;
        }
        if let Some(token) = bearer.filter(|t| t.starts_with(super::sessions::SESSION_PREFIX)) {
            return self.authenticate_session(token);
        }
        match (self.admin, bearer) {
            (AdminAuth::Open, _) => Ok(Principal::Admin { dev_open: true }),
            (AdminAuth::Hash(_), None) => Err(TenantError::Unauthenticated),
            (AdminAuth::Hash(want), Some(token)) => {
                // Hash first, so the comparison time depends on neither content nor length.
                if bool::from(token_hash(token).ct_eq(&want)) {
                    Ok(Principal::Admin { dev_open: false })
                } else {
                    Err(TenantError::Unauthenticated)
                }
            }
        }
    }

    /// An org caller authenticated by a client certificate (the org must exist).
    pub async fn cert_principal(
        &self,
        org: &str,
        role: &str,
        who: &str,
    ) -> Result<Principal, TenantError> {
        let role = super::Role::from_name(role).ok_or(TenantError::Unauthenticated)?;
        let o = org.to_owned();
        let rec = self
            .store
            .read(move |r| super::orgs::load_org(r, &o))
            .await
            .map_err(|_| TenantError::Unauthenticated)?;
        Ok(Principal::Org {
            org_id: rec.org_id,
            org_uid: rec.org_uid,
            token_id: format!("x509:{who}"),
            role,
        })
    }

    /// Clears `p` for `need` on `org_id`; a refusal is written to the audit log first.
    pub async fn authorize(
        &self,
        p: &Principal,
        org_id: &str,
        need: Need,
        action: &'static str,
    ) -> Result<OrgScope, TenantError> {
        match p.scope(org_id, need, action) {
            Ok(scope) => Ok(scope),
            Err(e) => {
                let own = p.own_org().map(str::to_owned);
                self.record_refusal(
                    &p.actor(),
                    own,
                    action,
                    format!("org/{org_id}"),
                    e.outcome(),
                )
                .await?;
                Err(e)
            }
        }
    }

    /// Clears `p` for gateway-wide administration, auditing a refusal.
    pub async fn authorize_admin(
        &self,
        p: &Principal,
        action: &'static str,
    ) -> Result<Actor, TenantError> {
        match p.require_admin(action) {
            Ok(a) => Ok(a),
            Err(e) => {
                let own = p.own_org().map(str::to_owned);
                self.record_refusal(&p.actor(), own, action, "gateway".into(), e.outcome())
                    .await?;
                Err(e)
            }
        }
    }

    /// Runs `op` and its success audit record in one transaction. A refusal by the rules is
    /// audited in its own transaction, under `org_hint` when that org exists.
    pub(crate) async fn mutate<R, F>(
        &self,
        actor: &Actor,
        action: &'static str,
        target: String,
        org_hint: Option<String>,
        op: F,
    ) -> Result<R, TenantError>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<(R, Option<(String, [u8; 16])>), TenantError>
            + Send
            + 'static,
        R: Send + 'static,
    {
        let a = actor.clone();
        let t2 = target.clone();
        let res = self
            .store
            .write(move |t| -> Result<R, TenantError> {
                let (out, org) = op(t)?;
                audit::append(
                    t,
                    Event {
                        org: org.as_ref().map(|(id, uid)| (id.as_str(), *uid)),
                        actor: &a,
                        action,
                        target: &t2,
                        outcome: "ok",
                    },
                )?;
                Ok(out)
            })
            .await;
        if let Err(e) = &res {
            if e.is_refusal() {
                self.record_refusal(actor, org_hint, action, target, e.outcome())
                    .await?;
            }
        }
        res
    }

    /// One audit record with a free-form outcome (enrollment decisions carry their reason).
    pub(crate) async fn record_event(
        &self,
        actor: &Actor,
        org: Option<String>,
        action: &'static str,
        target: String,
        outcome: String,
    ) -> Result<(), TenantError> {
        let actor = actor.clone();
        self.store
            .write(move |t| -> Result<(), TenantError> {
                let org_rec = match &org {
                    Some(id) => t.get::<crate::store::OrgRecord>(Table::Orgs, &keys::org(id))?,
                    None => None,
                };
                audit::append(
                    t,
                    Event {
                        org: org_rec.as_ref().map(|o| (o.org_id.as_str(), o.org_uid)),
                        actor: &actor,
                        action,
                        target: &target,
                        outcome: &outcome,
                    },
                )?;
                Ok(())
            })
            .await
    }

    /// An authentication failure in the audit log (never the presented token).
    pub async fn record_auth_failure(
        &self,
        source: &str,
        path: &str,
        what: &'static str,
    ) -> Result<(), TenantError> {
        let actor = Actor {
            id: format!("source:{source}"),
            role: "anonymous",
        };
        let path: String = path.chars().take(200).collect();
        self.record_event(
            &actor,
            None,
            "auth.failure",
            path,
            format!("refused: {what}"),
        )
        .await
    }

    pub(crate) async fn record_refusal(
        &self,
        actor: &Actor,
        org: Option<String>,
        action: &'static str,
        target: String,
        outcome: &'static str,
    ) -> Result<(), TenantError> {
        self.record_event(actor, org, action, target, outcome.to_owned())
            .await
    }

    /// Applies audit retention: removes what it no longer keeps, in chunks, and records the
    /// new checkpoint in the log itself. Returns how many records went.
    pub async fn prune_audit(&self, keep: audit::Retention) -> Result<u64, TenantError> {
        const CHUNK: usize = 4096;
        let mut total = 0;
        loop {
            let now = now_ms();
            let n = self
                .store
                .write(move |t| -> Result<u64, TenantError> {
                    Ok(audit::prune(t, keep, now, CHUNK)?)
                })
                .await?;
            total += n;
            if n < CHUNK as u64 {
                break;
            }
        }
        if total > 0 {
            self.record_event(
                &Actor::system(),
                None,
                "audit.checkpoint",
                "gateway/audit".into(),
                format!(
                    "pruned {total} records past retention; the chain verifies from the checkpoint"
                ),
            )
            .await?;
        }
        Ok(total)
    }

    /// Walks the audit chain (for `peat-gateway audit verify`).
    pub fn verify_audit_chain_blocking(
        store: &Store,
        progress: impl FnMut(u64),
    ) -> Result<super::ChainReport, TenantError> {
        store.read_blocking(|r| audit::verify_chain(r, progress))
    }

    /// Counts of orgs and formations, for metrics.
    pub async fn counts(&self) -> Result<(u64, u64), TenantError> {
        self.store
            .read(|r| Ok((r.count(Table::Orgs)?, r.count(Table::Formations)?)))
            .await
    }
}
