//! Per-org network allow-lists: where an org's API tokens and its devices may come from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use super::orgs::load_org;
use super::service::Tenancy;
use super::{OrgScope, TenantError};
use crate::store::{keys, OrgNetworkRecord, Reader, Table};

/// Allow-lists by org; a missing entry is not yet read.
pub(crate) type NetworkCache = Arc<RwLock<HashMap<String, Arc<Vec<ipnet::IpNet>>>>>;

/// Most networks one org may list.
const MAX_NETWORKS: usize = 64;

impl Tenancy {
    /// The org's allowed networks; empty means any.
    pub async fn org_networks(&self, org: &str) -> Result<Arc<Vec<ipnet::IpNet>>, TenantError> {
        let cached = self
            .networks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(org)
            .cloned();
        if let Some(n) = cached {
            return Ok(n);
        }
        let o = org.to_owned();
        let rec: Option<OrgNetworkRecord> = self
            .store()
            .read(move |r| Ok::<_, TenantError>(r.get(Table::OrgNetworks, &keys::org(&o))?))
            .await?;
        let nets: Arc<Vec<ipnet::IpNet>> = Arc::new(
            rec.map(|r| r.allow.iter().filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_default(),
        );
        self.networks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(org.to_owned(), nets.clone());
        Ok(nets)
    }

    /// Forgets the org's cached list (after it changed or the org went away).
    pub(crate) fn forget_networks(&self, org: &str) {
        self.networks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(org);
    }

    /// Whether `ip` may act for `org` (true when the org lists no network).
    pub async fn org_allows(&self, org: &str, ip: Option<IpAddr>) -> Result<bool, TenantError> {
        let nets = self.org_networks(org).await?;
        Ok(nets.is_empty() || ip.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))))
    }

    pub async fn set_org_networks(
        &self,
        scope: &OrgScope,
        allow: Vec<ipnet::IpNet>,
    ) -> Result<(), TenantError> {
        if allow.len() > MAX_NETWORKS {
            return Err(TenantError::invalid(
                "allow",
                format!("at most {MAX_NETWORKS} networks"),
            ));
        }
        let org = scope.org_id().to_owned();
        let rec = OrgNetworkRecord {
            allow: allow.iter().map(ToString::to_string).collect(),
        };
        let target = format!("org/{org}/network");
        let written = self
            .mutate(
                scope.actor(),
                "org.network.update",
                target,
                Some(org.clone()),
                move |t| {
                    let o = load_org(t, &org)?;
                    if rec.allow.is_empty() {
                        t.delete(Table::OrgNetworks, keys::org(&org));
                    } else {
                        t.put(Table::OrgNetworks, keys::org(&org), &rec)?;
                    }
                    Ok(((), Some((o.org_id, o.org_uid))))
                },
            )
            .await;
        // Read again on next use, whether or not the write went through.
        self.forget_networks(scope.org_id());
        written
    }
}
