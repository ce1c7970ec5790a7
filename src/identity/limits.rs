//! Abuse limits on enrollment: per source address and per org (the org's hourly quota).
//! Every attempt counts, successful or not, so a flood of bad requests is cut off too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::tenant::TenantError;

/// Most source addresses remembered before idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Per org: its quota when the limiter was made, and the limiter.
type OrgLimiters = HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>;

#[derive(Clone)]
pub struct EnrollLimits {
    per_source: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    per_org: Arc<Mutex<OrgLimiters>>,
}

impl std::fmt::Debug for EnrollLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollLimits")
    }
}

fn retry_after(wait: std::time::Duration) -> u32 {
    u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX)
}

impl EnrollLimits {
    /// `per_source_per_minute` attempts from one address, with a burst of the same size.
    pub fn new(per_source_per_minute: NonZeroU32) -> Self {
        Self {
            per_source: Arc::new(RateLimiter::keyed(Quota::per_minute(per_source_per_minute))),
            per_org: Arc::default(),
        }
    }

    /// Counts one attempt against its source address, before anything else is looked at.
    pub fn check_source(&self, source: Option<IpAddr>) -> Result<(), TenantError> {
        let clock = DefaultClock::default();
        if let Some(ip) = source {
            if self.per_source.len() > MAX_TRACKED {
                self.per_source.retain_recent();
            }
            if let Err(not_until) = self.per_source.check_key(&ip) {
                return Err(TenantError::RateLimited {
                    what: "enrollment attempts from this address",
                    retry_after_secs: retry_after(not_until.wait_time_from(clock.now())),
                });
            }
        }
        Ok(())
    }

    /// Counts one request against the org's hourly quota. Called only for requests that
    /// verified (signature, mesh id, freshness), so junk cannot spend an org's budget.
    pub fn check_org(&self, org: &str, org_per_hour: u32) -> Result<(), TenantError> {
        let clock = DefaultClock::default();
        let Some(per_hour) = NonZeroU32::new(org_per_hour) else {
            return Err(TenantError::RateLimited {
                what: "enrollments for this org (its quota is 0)",
                retry_after_secs: 3600,
            });
        };
        let limiter = {
            let mut map = self.per_org.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = map.entry(org.to_owned()).or_insert_with(|| {
                (
                    per_hour.get(),
                    Arc::new(RateLimiter::direct(Quota::per_hour(per_hour))),
                )
            });
            // A changed quota starts a fresh budget.
            if entry.0 != per_hour.get() {
                *entry = (
                    per_hour.get(),
                    Arc::new(RateLimiter::direct(Quota::per_hour(per_hour))),
                );
            }
            entry.1.clone()
        };
        limiter
            .check()
            .map_err(|not_until| TenantError::RateLimited {
                what: "enrollments for this org (max_enrollments_per_hour)",
                retry_after_secs: retry_after(not_until.wait_time_from(clock.now())),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_its_budget_is_told_when_to_come_back() {
        let l = EnrollLimits::new(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN));
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..3 {
            l.check_source(Some(ip)).unwrap();
        }
        match l.check_source(Some(ip)) {
            Err(TenantError::RateLimited {
                retry_after_secs, ..
            }) => {
                assert!((1..=61).contains(&retry_after_secs))
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // Another address is unaffected; the org budget is separate.
        l.check_source(Some("10.0.0.10".parse().unwrap())).unwrap();
        l.check_org("acme", 1000).unwrap();
        assert!(matches!(
            l.check_org("tiny", 0),
            Err(TenantError::RateLimited { .. })
        ));
    }
}
