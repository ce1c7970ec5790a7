//! Enrollments waiting for an operator (Strict formations): list, approve, deny, poll.
//! Untouched enrollments expire after the formation's `approval_ttl_secs`.

use super::authority::{sign, Authority};
use super::certs;
use super::events::EnrollEvent;
use super::settings;
use crate::mesh::{EnrollmentRequest, MeshCertificate, MeshTier, Permissions};
use crate::store::{keys, PendingRecord, Reader, Table};
use crate::tenant::{audit_append, load_org, now_ms, AuditEvent, OrgScope, TenantError};

const MAX_REASON: usize = 256;

#[derive(Debug, Clone)]
pub struct PendingInfo {
    pub enrollment_id: String,
    pub app_id: String,
    pub node_id: String,
    pub subject: [u8; 32],
    pub requested_tier: MeshTier,
    pub tier: MeshTier,
    pub permissions: Permissions,
    pub identity: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: &'static str,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<u64>,
    pub reason: Option<String>,
    pub fingerprint: Option<String>,
}

fn state_of(p: &PendingRecord, now: u64) -> &'static str {
    match p.state {
        1 => "approved",
        2 => "denied",
        _ if p.expires_at_ms <= now => "expired",
        _ => "pending",
    }
}

fn info(app: &str, p: &PendingRecord, now: u64) -> Result<PendingInfo, TenantError> {
    let req = EnrollmentRequest::decode(&p.request)?;
    Ok(PendingInfo {
        enrollment_id: p.enrollment_id.clone(),
        app_id: app.to_owned(),
        node_id: req.node_id.clone(),
        subject: req.subject,
        requested_tier: req.requested_tier,
        tier: MeshTier::from_byte("enrollment", p.tier)?,
        permissions: Permissions::from_wire(p.permissions),
        identity: p.identity.clone(),
        created_at_ms: p.created_at_ms,
        expires_at_ms: p.expires_at_ms,
        state: state_of(p, now),
        decided_by: p.decided_by.clone(),
        decided_at_ms: p.decided_at_ms,
        reason: p.reason.clone(),
        fingerprint: p.certificate.map(hex::encode),
    })
}

/// Every enrollment row of the org as (app, key, record).
fn rows(r: &impl Reader, org: &str) -> Result<Vec<(String, Vec<u8>, PendingRecord)>, TenantError> {
    let prefix = keys::org_prefix(org);
    let mut out = Vec::new();
    for (k, v) in r.scan(Table::Enrollments, &prefix, None, usize::MAX)? {
        let rest = &k[prefix.len()..];
        let Some(app_end) = rest.iter().position(|b| *b == 0) else {
            continue;
        };
        let app = String::from_utf8_lossy(&rest[..app_end]).into_owned();
        let rec = <PendingRecord as crate::store::Record>::decode(&v)?;
        out.push((app, k, rec));
    }
    Ok(out)
}

impl Authority {
    /// The org's enrollments, newest first, optionally only those in `state`.
    pub async fn list_enrollments(
        &self,
        scope: &OrgScope,
        state: Option<String>,
    ) -> Result<Vec<PendingInfo>, TenantError> {
        if let Some(s) = &state {
            if !["pending", "approved", "denied", "expired"].contains(&s.as_str()) {
                return Err(TenantError::invalid(
                    "status",
                    "must be pending, approved, denied or expired",
                ));
            }
        }
        let org = scope.org_id().to_owned();
        let now = now_ms();
        let mut out = self
            .tenancy()
            .store()
            .read(move |r| {
                load_org(r, &org)?;
                rows(r, &org)?
                    .into_iter()
                    .map(|(app, _, p)| info(&app, &p, now))
                    .collect::<Result<Vec<_>, TenantError>>()
            })
            .await?;
        if let Some(s) = state {
            out.retain(|p| p.state == s);
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.created_at_ms));
        Ok(out)
    }

    /// An operator's decision. Approving signs the certificate now; the device receives it
    /// when it asks again (or polls).
    pub async fn decide(
        &self,
        scope: &OrgScope,
        enrollment_id: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<PendingInfo, TenantError> {
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REASON || r.chars().any(char::is_control))
        {
            return Err(TenantError::invalid(
                "reason",
                format!("must be at most {MAX_REASON} printable bytes"),
            ));
        }
        let org = scope.org_id().to_owned();
        let id = enrollment_id.to_owned();
        let (app, _) = {
            let (org, id) = (org.clone(), id.clone());
            self.tenancy()
                .store()
                .read(move |r| {
                    rows(r, &org)?
                        .into_iter()
                        .find(|(_, _, p)| p.enrollment_id == id)
                        .map(|(app, k, _)| (app, k))
                        .ok_or(TenantError::NotFound { what: "enrollment" })
                })
                .await?
        };
        let (formation, genesis) = self.tenancy().open_genesis(&org, &app).await?;
        let signer = genesis.authority_signing_key();
        let actor = scope.actor().clone();
        let action = if approve {
            "enrollment.approve"
        } else {
            "enrollment.deny"
        };
        let (org_c, app_c) = (org.clone(), app.clone());
        let out =
            self.tenancy()
                .store()
                .write(move |t| -> Result<PendingInfo, TenantError> {
                    let o = load_org(t, &org_c)?;
                    let now = now_ms();
                    let (_, key, mut p) = rows(t, &org_c)?
                        .into_iter()
                        .find(|(a, _, p)| p.enrollment_id == id && *a == app_c)
                        .ok_or(TenantError::NotFound { what: "enrollment" })?;
                    match state_of(&p, now) {
                        "pending" => {}
                        "expired" => return Err(TenantError::Conflict {
                            what:
                                "decision on an expired enrollment (the device must enroll again)",
                        }),
                        _ => {
                            return Err(TenantError::Conflict {
                                what: "decision on this enrollment",
                            })
                        }
                    }
                    let req = EnrollmentRequest::decode(&p.request)?;
                    let target = format!(
                        "org/{org_c}/formation/{app_c}/enrollment/{}/node/{}",
                        p.enrollment_id, req.node_id
                    );
                    if approve {
                        if certs::revoked(t, &org_c, &app_c, &req.subject)?.is_some() {
                            return Err(TenantError::Conflict {
                                what: "approval of a revoked key",
                            });
                        }
                        let s = settings::read(t, &org_c, &app_c)?;
                        let cert: MeshCertificate = sign(
                            &signer,
                            &req,
                            &formation.mesh_id,
                            MeshTier::from_byte("enrollment", p.tier)?,
                            Permissions::from_wire(p.permissions),
                            &s,
                            now,
                        )?;
                        let fp = certs::record(
                            t,
                            &org_c,
                            &app_c,
                            &cert,
                            format!("approval:{}", p.enrollment_id),
                            o.quotas.max_peers_per_formation,
                        )?;
                        p.state = 1;
                        p.certificate = Some(fp);
                    } else {
                        p.state = 2;
                    }
                    p.decided_by = Some(actor.id.clone());
                    p.decided_at_ms = Some(now);
                    p.reason = reason.clone();
                    super::retention::schedule_enrollment(t, &key, now);
                    t.put(Table::Enrollments, key, &p)?;
                    let outcome = match (&reason, approve) {
                        (Some(r), true) => format!("approved: {r}"),
                        (Some(r), false) => format!("denied: {r}"),
                        (None, true) => "approved".to_owned(),
                        (None, false) => "denied".to_owned(),
                    };
                    audit_append(
                        t,
                        AuditEvent {
                            org: Some((o.org_id.as_str(), o.org_uid)),
                            actor: &actor,
                            action,
                            target: &target,
                            outcome: &outcome,
                        },
                    )?;
                    info(&app_c, &p, now)
                })
                .await;
        if let Err(e) = &out {
            if e.is_refusal() {
                self.tenancy()
                    .record_event(
                        scope.actor(),
                        Some(org.clone()),
                        action,
                        format!("org/{org}/formation/{app}/enrollment/{enrollment_id}"),
                        e.outcome().to_owned(),
                    )
                    .await?;
            }
        }
        let out = out?;
        self.events().send(EnrollEvent {
            org_id: org,
            app_id: app,
            kind: "approval",
            node_id: out.node_id.clone(),
            subject: hex::encode(out.subject),
            status: out.state,
            reason: out.reason.clone(),
            enrollment_id: Some(out.enrollment_id.clone()),
            at_ms: now_ms(),
        });
        Ok(out)
    }

    /// What a device polling its enrollment may learn: the state, and the certificate once
    /// approved (never the formation secret: that needs a freshly signed request).
    pub async fn poll(
        &self,
        org: &str,
        app: &str,
        enrollment_id: &str,
    ) -> Result<(PendingInfo, Option<Vec<u8>>), TenantError> {
        let (org, app, id) = (org.to_owned(), app.to_owned(), enrollment_id.to_owned());
        self.tenancy()
            .store()
            .read(move |r| {
                let prefix = keys::formation_row(&org, &app, b"");
                for (_, v) in r.scan(Table::Enrollments, &prefix, None, usize::MAX)? {
                    let p = <PendingRecord as crate::store::Record>::decode(&v)?;
                    if p.enrollment_id != id {
                        continue;
                    }
                    let cert = match p.certificate {
                        Some(fp) => r
                            .get::<crate::store::CertRecord>(
                                Table::Certificates,
                                &certs::cert_key(&org, &app, &fp),
                            )?
                            .map(|c| c.certificate),
                        None => None,
                    };
                    return Ok((info(&app, &p, now_ms())?, cert));
                }
                Err(TenantError::NotFound { what: "enrollment" })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untouched_enrollment_expires_and_a_decided_one_keeps_its_state() {
        let mut p = PendingRecord {
            enrollment_id: "e".into(),
            request: Vec::new(),
            tier: 3,
            permissions: 3,
            identity: "token:x".into(),
            created_at_ms: 1_000,
            expires_at_ms: 2_000,
            state: 0,
            decided_by: None,
            decided_at_ms: None,
            reason: None,
            certificate: None,
        };
        assert_eq!(state_of(&p, 1_999), "pending");
        assert_eq!(state_of(&p, 2_000), "expired");
        p.state = 1;
        assert_eq!(state_of(&p, 9_999), "approved");
        p.state = 2;
        assert_eq!(state_of(&p, 9_999), "denied");
    }
}
