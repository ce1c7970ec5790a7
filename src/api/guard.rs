//! Failed authentication is limited per source address and per token id: after too many
//! failures a source (or a token being guessed at) gets 429 with `Retry-After` until its
//! budget refills, without the token even being checked. Every counted failure is audited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Most sources or token ids remembered before idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Who is being limited: a source address, or a token id someone is guessing secrets for.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Key {
    Source(IpAddr),
    Token(String),
}

#[derive(Clone)]
pub struct AuthGuard {
    failures: Arc<DefaultKeyedRateLimiter<Key>>,
    blocked: Arc<Mutex<HashMap<Key, Instant>>>,
}

impl std::fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthGuard")
    }
}

impl AuthGuard {
    /// `per_minute` failed attempts allowed per source address and per token id.
    pub fn new(per_minute: NonZeroU32) -> Self {
        Self {
            failures: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            blocked: Arc::default(),
        }
    }

    /// Seconds to wait when any of `keys` is blocked now.
    pub(crate) fn blocked_for(&self, keys: &[Key]) -> Option<u32> {
        let now = Instant::now();
        let mut map = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, until| *until > now);
        keys.iter()
            .filter_map(|k| map.get(k))
            .max()
            .map(|until| secs(until.saturating_duration_since(now)))
    }

    /// Counts a failure for each key; returns true when one of them just ran out of budget.
    pub(crate) fn failed(&self, keys: &[Key]) -> bool {
        if self.failures.len() > MAX_TRACKED {
            self.failures.retain_recent();
        }
        let clock = DefaultClock::default();
        let mut exhausted = false;
        for k in keys {
            if let Err(not_until) = self.failures.check_key(k) {
                let wait = not_until.wait_time_from(clock.now());
                let mut map = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
                if map.len() < MAX_TRACKED {
                    map.insert(k.clone(), Instant::now() + wait);
                }
                exhausted = true;
            }
        }
        exhausted
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs().saturating_add(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_blocked_after_its_budget_and_others_are_not() {
        let g = AuthGuard::new(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        let a = [Key::Source("10.0.0.1".parse().unwrap())];
        let b = [Key::Source("10.0.0.2".parse().unwrap())];
        assert_eq!(g.blocked_for(&a), None);
        assert!(!g.failed(&a));
        assert!(!g.failed(&a));
        assert!(g.failed(&a), "the third failure exhausts a budget of two");
        assert!(g.blocked_for(&a).is_some_and(|s| (1..=61).contains(&s)));
        assert_eq!(g.blocked_for(&b), None);
    }
}
