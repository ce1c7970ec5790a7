//! The enrollment decision: proof of possession, freshness, replay, mesh id, revocation, then
//! the formation's policy. Every decision is one transaction (token use, certificate record,
//! replay mark and audit record commit together or not at all).

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::bootstrap::{self, BOOT_TOKEN_PREFIX};
use super::certs;
use super::events::{EnrollEvent, EnrollEvents};
use super::limits::EnrollLimits;
use super::oidc::Oidc;
use super::rules::{self, Verdict};
use super::settings::{self, EnrollSettings};
use crate::mesh::{
    CertificateFields, EnrollmentRequest, MembershipPolicy, MeshCertificate, MeshTier, Permissions,
};
use crate::store::{keys, PendingRecord, Reader, Table, Txn};
use crate::tenant::{
    audit_append, load_org, now_ms, random_uid, Actor, AuditEvent, Tenancy, TenantError,
    WithFormation,
};

/// Most enrollments one formation keeps waiting for an operator.
pub const MAX_PENDING: usize = 1000;
/// Replay marks pruned per enrollment, so pruning never stalls a commit.
const PRUNE_BATCH: usize = 64;

/// What the device asked for and how it reached us.
pub struct EnrollInput {
    pub request: EnrollmentRequest,
    pub source: Option<IpAddr>,
    /// A renewal: the subject must hold a current certificate; no token needed.
    pub renewal: bool,
    /// The verified client certificate of the TLS connection (DER), if one was presented.
    pub client_cert: Option<std::sync::Arc<Vec<u8>>>,
    /// The request came over TLS (or the local socket): the formation secret may travel.
    pub secure_channel: bool,
}

#[derive(Debug)]
pub enum Decision {
    Approved {
        certificate: Box<MeshCertificate>,
        fingerprint: String,
        formation_secret: Option<Zeroizing<[u8; 32]>>,
    },
    Pending {
        enrollment_id: String,
    },
    Denied {
        reason: String,
    },
    Revoked {
        reason: String,
    },
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Approved { .. } => "approved",
            Self::Pending { .. } => "pending",
            Self::Denied { .. } => "denied",
            Self::Revoked { .. } => "revoked",
        }
    }

    fn denied(reason: impl Into<String>) -> Self {
        Self::Denied {
            reason: reason.into(),
        }
    }
}

/// The decision and what a device needs to check it.
#[derive(Debug)]
pub struct EnrollOutcome {
    pub decision: Decision,
    pub mesh_id: String,
    pub authority_public_key: [u8; 32],
    pub expires_at_ms: Option<u64>,
    /// Why the formation secret the settings deliver was not sent.
    pub secret_withheld: Option<&'static str>,
    /// Whether the formation writes its certificate documents to its node.
    pub publish_documents: bool,
}

/// How the requester proved who it is, before the formation's policy applies.
enum Admission {
    Open,
    Token(Zeroizing<String>),
    Renewal,
    /// An identity provider vouched for the requester and a claim rule allowed it.
    Granted {
        tier: MeshTier,
        permissions: Permissions,
        via: String,
    },
}

/// The formation authority: decides enrollments, issues certificates.
#[derive(Clone)]
pub struct Authority {
    tenancy: Tenancy,
    limits: EnrollLimits,
    events: EnrollEvents,
    oidc: Oidc,
    /// Each formation's enrollment quota and settings, as last read with it.
    reads: WithFormation<(u32, EnrollSettings)>,
}

pub(crate) fn device_actor(subject: &[u8; 32]) -> Actor {
    Actor {
        id: format!("device:{}", &hex::encode(subject)[..16]),
        role: "device",
    }
}

/// Issued tier: what policy grants, but never more trusted than what was asked for.
pub(crate) fn ceiling(granted: MeshTier, requested: MeshTier) -> MeshTier {
    granted.max(requested)
}

pub(crate) fn sign(
    genesis_key: &ed25519_dalek::SigningKey,
    req: &EnrollmentRequest,
    mesh_id: &str,
    tier: MeshTier,
    permissions: Permissions,
    s: &EnrollSettings,
    now: u64,
) -> Result<MeshCertificate, TenantError> {
    Ok(CertificateFields {
        subject: req.subject,
        mesh_id: mesh_id.to_owned(),
        node_id: req.node_id.clone(),
        tier,
        permissions,
        issued_at_ms: now.saturating_sub(s.backdate_secs * 1000),
        expires_at_ms: now.saturating_add(s.validity_secs * 1000),
    }
    .sign(genesis_key)?)
}

fn enrollment_key(org: &str, app: &str, subject: &[u8; 32]) -> Vec<u8> {
    keys::formation_row(org, app, subject)
}

/// Drops replay marks whose window has passed.
fn prune_replay(t: &mut Txn<'_>, now: u64) -> Result<(), TenantError> {
    if !super::retention::first_due(t, Table::EnrollReplay, now)? {
        return Ok(());
    }
    for (k, _) in t.scan(Table::EnrollReplay, b"", None, PRUNE_BATCH)? {
        let expires = super::retention::key_time(&k);
        if expires >= now {
            break;
        }
        t.delete(Table::EnrollReplay, k);
    }
    Ok(())
}

impl Authority {
    pub fn new(tenancy: Tenancy, limits: EnrollLimits) -> Self {
        Self {
            oidc: Oidc::new(tenancy.clone()),
            tenancy,
            limits,
            events: EnrollEvents::default(),
            reads: WithFormation::default(),
        }
    }

    /// Whether the formation writes its certificate documents to its node.
    pub async fn publishes_documents(&self, org: &str, app: &str) -> Result<bool, TenantError> {
        let (o, a) = (org.to_owned(), app.to_owned());
        Ok(self
            .tenancy
            .store()
            .read(move |r| settings::read(r, &o, &a))
            .await?
            .publish_documents)
    }

    pub fn oidc(&self) -> &Oidc {
        &self.oidc
    }

    /// A verified client certificate's names through the org's claim rules.
    async fn certified(
        &self,
        org: &str,
        app: &str,
        der: &[u8],
    ) -> Result<Result<Admission, String>, TenantError> {
        match super::x509::claims(der) {
            Ok((who, claims)) => self.apply_rules(org, app, who, &claims).await,
            Err(reason) => Ok(Err(reason)),
        }
    }

    /// Verifies an identity-provider token and applies the org's claim rules.
    async fn federated(
        &self,
        org: &str,
        app: &str,
        token: &str,
    ) -> Result<Result<Admission, String>, TenantError> {
        let identity = match self.oidc.verify(org, token).await? {
            Ok(i) => i,
            Err(reason) => return Ok(Err(reason)),
        };
        let who = format!("oidc:{}#{}", identity.issuer, identity.subject);
        self.apply_rules(org, app, who, &identity.claims).await
    }

    async fn apply_rules(
        &self,
        org: &str,
        app: &str,
        who: String,
        claims: &serde_json::Value,
    ) -> Result<Result<Admission, String>, TenantError> {
        let o = org.to_owned();
        let (rules, no_match) = self
            .tenancy
            .store()
            .read(move |r| Ok::<_, TenantError>((rules::load_all(r, &o)?, rules::no_match(r, &o)?)))
            .await?;
        Ok(match rules::evaluate(&rules, claims, Some(app), no_match) {
            Verdict::Allow {
                tier,
                permissions,
                rule_id,
            } => Ok(Admission::Granted {
                tier,
                permissions,
                via: match rule_id {
                    Some(id) => format!("{who} (rule {id})"),
                    None => who,
                },
            }),
            Verdict::Deny { reason, .. } => Err(format!("{reason} ({who})")),
        })
    }

    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    pub fn events(&self) -> &EnrollEvents {
        &self.events
    }

    /// Decides one enrollment (or renewal) request.
    pub async fn enroll(
        &self,
        org: &str,
        app: &str,
        input: EnrollInput,
    ) -> Result<EnrollOutcome, TenantError> {
        self.limits.check_source(input.source)?;
        // One store read, kept while nothing it read is written (enrollments write none of
        // it): the formation, its genesis, the org's quota and the settings.
        let (o, a) = (org.to_owned(), app.to_owned());
        let (formation, genesis, (quota, settings)) = self
            .tenancy
            .open_genesis_kept(&self.reads, org, app, move |r| {
                let quota = load_org(r, &o)?.quotas.max_enrollments_per_hour;
                Ok((quota, settings::read(r, &o, &a)?))
            })
            .await?;
        let req = input.request;
        let now = now_ms();
        let mut outcome = EnrollOutcome {
            decision: Decision::denied(""),
            mesh_id: formation.mesh_id.clone(),
            authority_public_key: formation.authority_public_key,
            expires_at_ms: None,
            secret_withheld: None,
            publish_documents: settings.publish_documents,
        };
        let actor = device_actor(&req.subject);
        let target = format!("org/{org}/formation/{app}/node/{}", req.node_id);

        // Checks that need no state; a failure is audited on its own.
        let window = settings.window_secs * 1000;
        let pre = if req.verify().is_err() {
            Some("request signature does not verify (proof of possession failed)".to_owned())
        } else if req.mesh_id != formation.mesh_id {
            Some(format!(
                "mesh ID mismatch: expected {}, got {}",
                formation.mesh_id, req.mesh_id
            ))
        } else if req.timestamp_ms.abs_diff(now) > window {
            Some(format!(
                "request timestamp is {} s from the gateway's clock (allowed ±{} s); check the device clock",
                req.timestamp_ms.abs_diff(now) / 1000,
                settings.window_secs
            ))
        } else {
            None
        };
        if let Some(reason) = pre {
            self.tenancy
                .record_event(
                    &actor,
                    Some(org.to_owned()),
                    "enroll",
                    target,
                    format!("denied: {reason}"),
                )
                .await?;
            self.events.send(EnrollEvent::decision(
                org,
                app,
                &req,
                "denied",
                Some(&reason),
            ));
            outcome.decision = Decision::Denied { reason };
            return Ok(outcome);
        }
        self.limits.check_org(org, quota)?;

        let token = std::str::from_utf8(&req.token).unwrap_or("").trim();
        let admission = if input.renewal {
            Ok(Admission::Renewal)
        } else {
            match formation.policy {
                MembershipPolicy::Open => Ok(Admission::Open),
                _ if token.starts_with(BOOT_TOKEN_PREFIX) => {
                    Ok(Admission::Token(Zeroizing::new(token.to_owned())))
                }
                _ if token.is_empty() => match &input.client_cert {
                    Some(der) => self.certified(org, app, der).await?,
                    None => Err(format!(
                        "this formation's policy is {}: a bootstrap token, an identity-provider token or a client certificate is required",
                        formation.policy.name()
                    )),
                },
                _ => self.federated(org, app, token).await?,
            }
        };

        let digest: [u8; 32] = Sha256::digest(req.encode()?).into();
        // Keyed by the request alone: changing the window cannot make a used request new.
        let replay_key = keys::replay(
            req.timestamp_ms
                .saturating_add(settings::MAX_WINDOW_SECS * 1000),
            &digest,
        );
        let signer = genesis.authority_signing_key();
        let mesh_id = formation.mesh_id.clone();
        let (org_s, app_s) = (org.to_owned(), app.to_owned());
        let policy = formation.policy;
        // Never to an Open formation's devices (settings refuse it; older ones are held here).
        let deliver_secret = settings.deliver_formation_secret && policy != MembershipPolicy::Open;
        let renewal = input.renewal;
        let event_req = req.clone();
        let decision = self
            .tenancy
            .store()
            .write(move |t| -> Result<(Decision, String), TenantError> {
                let o = load_org(t, &org_s)?;
                let org_ref = Some((o.org_id.as_str(), o.org_uid));
                let (decision, outcome_text) = decide(
                    t,
                    &org_s,
                    &app_s,
                    &req,
                    admission,
                    policy,
                    &settings,
                    &signer,
                    &mesh_id,
                    &replay_key,
                    o.quotas.max_peers_per_formation,
                    now,
                )?;
                audit_append(
                    t,
                    AuditEvent {
                        org: org_ref,
                        actor: &actor,
                        action: if renewal { "enroll.renew" } else { "enroll" },
                        target: &target,
                        outcome: &outcome_text,
                    },
                )?;
                Ok((decision, outcome_text))
            })
            .await?;
        let (mut decision, _) = decision;
        let reason = match &decision {
            Decision::Denied { reason } | Decision::Revoked { reason } => Some(reason.as_str()),
            _ => None,
        };
        self.events.send(EnrollEvent::decision(
            org,
            app,
            &event_req,
            decision.name(),
            reason,
        ));
        if let Decision::Approved {
            certificate,
            formation_secret,
            ..
        } = &mut decision
        {
            outcome.expires_at_ms = Some(certificate.fields.expires_at_ms);
            if deliver_secret {
                let node = format!(
                    "org/{org}/formation/{app}/node/{}",
                    certificate.fields.node_id
                );
                // The formation secret opens every node's transport key: only over TLS.
                let note = if input.secure_channel {
                    *formation_secret = Some(genesis.formation_secret());
                    "delivered"
                } else {
                    outcome.secret_withheld = Some(
                        "the connection is not TLS: enroll over https to receive the formation secret",
                    );
                    "withheld: the connection is not TLS"
                };
                self.tenancy
                    .record_event(
                        &device_actor(&certificate.fields.subject),
                        Some(org.to_owned()),
                        "enroll.formation-secret",
                        node,
                        note.to_owned(),
                    )
                    .await?;
            }
        }
        outcome.decision = decision;
        Ok(outcome)
    }
}

/// The stateful part of a decision, inside the enrollment's transaction. Returns the decision
/// and the audit outcome text.
#[allow(clippy::too_many_arguments)]
fn decide(
    t: &mut Txn<'_>,
    org: &str,
    app: &str,
    req: &EnrollmentRequest,
    admission: Result<Admission, String>,
    policy: MembershipPolicy,
    s: &EnrollSettings,
    signer: &ed25519_dalek::SigningKey,
    mesh_id: &str,
    replay_key: &[u8],
    max_peers: u32,
    now: u64,
) -> Result<(Decision, String), TenantError> {
    let deny = |reason: String| {
        let text = format!("denied: {reason}");
        Ok((Decision::Denied { reason }, text))
    };
    prune_replay(t, now)?;
    super::retention::prune(t, now)?;
    if t.exists(Table::EnrollReplay, replay_key)? {
        return deny("replayed request: sign a new request with a fresh timestamp".into());
    }
    t.put_raw(Table::EnrollReplay, replay_key.to_vec(), Vec::new());
    if let Some(rev) = certs::revoked(t, org, app, &req.subject)? {
        let text = format!("revoked: {}", rev.reason);
        return Ok((Decision::Revoked { reason: rev.reason }, text));
    }
    let admission = match admission {
        Ok(a) => a,
        Err(reason) => return deny(reason),
    };

    // Strict: an operator decides; a device asking again learns the decision.
    let pending_key = enrollment_key(org, app, &req.subject);
    if policy == MembershipPolicy::Strict && !matches!(admission, Admission::Renewal) {
        if let Some(p) = t.get::<PendingRecord>(Table::Enrollments, &pending_key)? {
            match p.state {
                1 => {
                    if let Some(fp) = p.certificate {
                        if let Some(rec) = t.get::<crate::store::CertRecord>(
                            Table::Certificates,
                            &certs::cert_key(org, app, &fp),
                        )? {
                            let cert = MeshCertificate::decode(&rec.certificate)?;
                            return Ok((
                                Decision::Approved {
                                    certificate: Box::new(cert),
                                    fingerprint: hex::encode(fp),
                                    formation_secret: None,
                                },
                                format!(
                                    "approved earlier ({}); certificate returned",
                                    p.enrollment_id
                                ),
                            ));
                        }
                    }
                }
                2 => {
                    return deny(format!(
                        "an operator denied this enrollment: {}",
                        p.reason.unwrap_or_default()
                    ))
                }
                _ if p.expires_at_ms > now => {
                    return Ok((
                        Decision::Pending {
                            enrollment_id: p.enrollment_id.clone(),
                        },
                        format!("pending {} (asked again)", p.enrollment_id),
                    ))
                }
                _ => {}
            }
        }
    }

    let (tier, permissions, via) = match admission {
        Admission::Open => (s.open_tier, s.open_permissions, "open".to_owned()),
        Admission::Token(token) => match bootstrap::consume(t, org, app, &token)? {
            Ok(rec) => (
                MeshTier::from_byte("boot token", rec.tier)?,
                Permissions::from_wire(rec.permissions),
                format!("token:{}", rec.token_id),
            ),
            Err(reason) => return deny(reason.to_owned()),
        },
        Admission::Granted {
            tier,
            permissions,
            via,
        } => (tier, permissions, via),
        Admission::Renewal => match certs::current_for(t, org, app, &req.subject, now)? {
            Some(c) if c.node_id == req.node_id => (c.tier, c.permissions, "renewal".to_owned()),
            Some(_) => return deny("renewal must keep the node id of the current certificate".into()),
            None => {
                return deny(
                    "no current certificate for this key: enroll again (renewal needs an unexpired, unrevoked certificate)"
                        .into(),
                )
            }
        },
    };
    let tier = ceiling(tier, req.requested_tier);

    if policy == MembershipPolicy::Strict && via != "renewal" {
        let pending_in_formation = t
            .scan(
                Table::Enrollments,
                &keys::formation_row(org, app, b""),
                None,
                MAX_PENDING,
            )?
            .len();
        if pending_in_formation >= MAX_PENDING {
            return deny("too many enrollments are waiting for an operator; try later".into());
        }
        let id = hex::encode(random_uid()?);
        let rec = PendingRecord {
            enrollment_id: id.clone(),
            request: req.encode()?,
            tier: tier.to_byte(),
            permissions: permissions.bits(),
            identity: via.clone(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(s.approval_ttl_secs * 1000),
            state: 0,
            decided_by: None,
            decided_at_ms: None,
            reason: None,
            certificate: None,
        };
        super::retention::schedule_enrollment(t, &pending_key, rec.expires_at_ms);
        t.put(Table::Enrollments, pending_key, &rec)?;
        return Ok((
            Decision::Pending {
                enrollment_id: id.clone(),
            },
            format!(
                "pending {id}: tier {} (requested {}) permissions {:#04x} via {via}",
                tier.name(),
                req.requested_tier.name(),
                permissions.bits()
            ),
        ));
    }

    let cert = sign(signer, req, mesh_id, tier, permissions, s, now)?;
    let fp = certs::record(t, org, app, &cert, via.clone(), max_peers)?;
    let text = format!(
        "approved: tier {} (requested {}) permissions {:#04x} via {via}, certificate {}",
        tier.name(),
        req.requested_tier.name(),
        permissions.bits(),
        &hex::encode(fp)[..16]
    );
    Ok((
        Decision::Approved {
            certificate: Box::new(cert),
            fingerprint: hex::encode(fp),
            formation_secret: None,
        },
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requested_tier_is_a_ceiling_on_trust() {
        assert_eq!(ceiling(MeshTier::Tactical, MeshTier::Edge), MeshTier::Edge);
        assert_eq!(
            ceiling(MeshTier::Edge, MeshTier::Enterprise),
            MeshTier::Edge
        );
        assert_eq!(
            ceiling(MeshTier::Regional, MeshTier::Regional),
            MeshTier::Regional
        );
    }
}
