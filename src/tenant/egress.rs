//! Egress grants: the internal networks and host names an org's outbound connections may
//! reach, granted by the gateway admin only, held in memory for the connection paths.

use super::orgs::load_org;
use super::service::Tenancy;
use super::{Actor, OrgScope, TenantError};
use crate::egress::{Egress, Grant};
use crate::store::{keys, EgressRecord, Reader, Table};

const MAX_ENTRIES: usize = 64;

fn to_grant(r: &EgressRecord) -> Grant {
    Grant {
        networks: r.networks.iter().filter_map(|n| n.parse().ok()).collect(),
        hosts: r.hosts.clone(),
    }
}

fn validate_host(h: &str) -> Result<(), TenantError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TenantError::invalid(
            "hosts",
            format!("'{h}' is not a host name"),
        ))
    }
}

impl Tenancy {
    /// The checker for the org's outbound connections, following grant changes.
    pub fn egress(&self, org: &str) -> Egress {
        self.egress.for_org(org)
    }

    /// Every org's shared grants, for components that check connections themselves.
    pub fn egress_policies(&self) -> crate::egress::Policies {
        self.egress.clone()
    }

    /// Reads every org's grant into memory (at start-up).
    pub async fn load_egress(&self) -> Result<(), TenantError> {
        let all = self
            .store()
            .read(|r| {
                r.scan(Table::Egress, b"", None, usize::MAX)?
                    .into_iter()
                    .map(|(k, v)| {
                        let rec: EgressRecord = crate::store::Record::decode(&v)?;
                        Ok((String::from_utf8_lossy(&k).into_owned(), to_grant(&rec)))
                    })
                    .collect::<Result<_, TenantError>>()
            })
            .await?;
        self.egress.replace_all(all);
        Ok(())
    }

    pub async fn egress_grant(&self, scope: &OrgScope) -> Result<EgressRecord, TenantError> {
        let org = scope.org_id().to_owned();
        self.store()
            .read(move |r| {
                load_org(r, &org)?;
                Ok(r.get(Table::Egress, &keys::org(&org))?.unwrap_or_default())
            })
            .await
    }

    /// Replaces the org's grant (gateway admin only; the caller checks).
    pub async fn set_egress(
        &self,
        actor: &Actor,
        org_id: &str,
        networks: Vec<ipnet::IpNet>,
        hosts: Vec<String>,
    ) -> Result<EgressRecord, TenantError> {
        if networks.len() > MAX_ENTRIES || hosts.len() > MAX_ENTRIES {
            return Err(TenantError::invalid(
                "networks",
                format!("at most {MAX_ENTRIES} networks and {MAX_ENTRIES} hosts"),
            ));
        }
        for h in &hosts {
            validate_host(h)?;
        }
        let rec = EgressRecord {
            networks: networks.iter().map(ToString::to_string).collect(),
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        };
        let org = org_id.to_owned();
        let target = format!("org/{org}/egress");
        let stored = rec.clone();
        self.mutate(
            actor,
            "org.egress.update",
            target,
            Some(org.clone()),
            move |t| {
                let o = load_org(t, &org)?;
                t.put(Table::Egress, keys::org(&org), &stored)?;
                Ok(((), Some((o.org_id, o.org_uid))))
            },
        )
        .await?;
        self.egress.set(org_id, to_grant(&rec));
        Ok(rec)
    }
}
