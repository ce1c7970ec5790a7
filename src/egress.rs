//! Where an org's outbound connections (webhooks, brokers, identity providers) may go.
//!
//! Public addresses are open to every org. Loopback, private, shared, link-local (cloud
//! metadata), unspecified and multicast addresses are refused unless the gateway admin granted
//! the org that network or that host name (`PUT /orgs/{org}/egress`); an org-admin cannot
//! grant itself anything. A name is resolved once per connection, every address it yields is
//! checked, and the connection goes to a checked address (the HTTP clients resolve through
//! [`Resolver`]; plain broker connections are made to the checked IP literal).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

/// What the admin granted one org beyond the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub networks: Vec<ipnet::IpNet>,
    /// Host names allowed whatever they resolve to (exact, case-insensitive).
    pub hosts: Vec<String>,
}

/// Why an address is not public, if it is not.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("a private network (RFC 1918)")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared address space (100.64.0.0/10)")
            } else if v4.is_link_local() {
                Some("link-local (169.254.0.0/16, where cloud metadata services live)")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("an unspecified address")
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                Some("a multicast or reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return restricted(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("a unique local address (fc00::/7)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

/// Every org's grant, by org id; shared by the sinks and the identity layer, replaced when
/// the admin changes one.
#[derive(Clone, Default)]
pub struct Policies(Arc<RwLock<Inner>>);

#[derive(Default)]
struct Inner {
    /// What every org may reach (`PEAT_EGRESS_ALLOW`).
    base: Arc<Grant>,
    orgs: HashMap<String, Arc<Grant>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policies")
    }
}

impl Policies {
    pub fn set(&self, org: &str, grant: Grant) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .orgs
            .insert(org.to_owned(), Arc::new(grant));
    }

    pub fn set_base(&self, grant: Grant) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .base = Arc::new(grant);
    }

    pub fn replace_all(&self, all: HashMap<String, Grant>) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .orgs = all.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    }

    /// What the org may reach: the base grant and its own.
    pub fn grants(&self, org: &str) -> (Arc<Grant>, Arc<Grant>) {
        let g = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (g.base.clone(), g.orgs.get(org).cloned().unwrap_or_default())
    }

    /// The checker for one org's connections.
    pub fn for_org(&self, org: &str) -> Egress {
        Egress {
            org: org.to_owned(),
            policies: self.clone(),
        }
    }
}

/// One org's view of the policy; checks are made against the policy as it is at that moment.
#[derive(Clone)]
pub struct Egress {
    org: String,
    policies: Policies,
}

impl Egress {
    /// Refuses `ip` (reached as `host`) unless it is public or granted.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        let Some(why) = restricted(ip) else {
            return Ok(());
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (base, own) = self.policies.grants(&self.org);
        for g in [base, own] {
            if g.networks.iter().any(|n| n.contains(&ip))
                || g.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            {
                return Ok(());
            }
        }
        Err(format!(
            "{host} is {ip}, {why}: refused by the org's egress policy (the gateway admin grants networks with PUT /orgs/{}/egress, or PEAT_EGRESS_ALLOW for every org)",
            self.org
        ))
    }

    /// A URL's literal IP host, checked; names are checked when resolved.
    pub fn check_literal(&self, host: &url::Host<&str>) -> Result<(), String> {
        match host {
            url::Host::Ipv4(ip) => self.check(&ip.to_string(), IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.check(&ip.to_string(), IpAddr::V6(*ip)),
            // Non-special schemes (nats://, mqtt://) keep an IP host as opaque text.
            url::Host::Domain(d) => match d.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => self.check(d, ip),
                Err(_) => Ok(()),
            },
        }
    }

    /// Resolves `host:port` once and keeps the addresses the policy allows; an error when
    /// none is left (naming the first refusal).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let host = host.trim_matches(['[', ']']);
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check(host, a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    first_refusal.get_or_insert(e);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| format!("{host} has no address")));
        }
        Ok(allowed)
    }
}

impl Egress {
    /// The host to connect to for `host:port`: the checked IP itself for plain connections
    /// (pinned: nothing re-resolves it), the name for TLS ones (the certificate binds the
    /// name; the addresses it had when checked were allowed).
    pub async fn pinned_host(&self, host: &str, port: u16, tls: bool) -> Result<String, String> {
        let literal = host.trim_matches(['[', ']']);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.check(literal, ip)?;
            return Ok(host.to_owned());
        }
        let addrs = self.resolve(host, port).await?;
        if tls {
            return Ok(host.to_owned());
        }
        Ok(match addrs.first().map(SocketAddr::ip) {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(ip) => ip.to_string(),
            None => host.to_owned(),
        })
    }
}

/// reqwest's resolver for one org: the connection uses exactly the addresses checked.
pub struct Resolver(pub Egress);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = egress
                .resolve(&host, 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_restricted_and_public_ones_open() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(restricted(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"] {
            assert!(restricted(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn only_what_the_admin_granted_opens_internal_addresses() {
        let p = Policies::default();
        let e = p.for_org("acme");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(e
            .check("127.0.0.1", lo)
            .unwrap_err()
            .contains("PUT /orgs/acme/egress"));
        assert!(e.check("x", "8.8.8.8".parse().unwrap()).is_ok());
        p.set(
            "acme",
            Grant {
                networks: vec!["127.0.0.0/8".parse().unwrap()],
                hosts: vec!["broker.kit".into()],
            },
        );
        assert!(
            e.check("127.0.0.1", lo).is_ok(),
            "checks see the policy as it is now"
        );
        assert!(e.check("Broker.Kit", "10.9.9.9".parse().unwrap()).is_ok());
        assert!(
            p.for_org("other").check("127.0.0.1", lo).is_err(),
            "per org"
        );
    }
}
