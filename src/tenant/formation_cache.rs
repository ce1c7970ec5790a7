//! The formation an ingest request names, memoized so a request of one change does not send
//! a read to the blocking pool. An entry holds while the state store has committed nothing
//! since the read that filled it: any write (a formation deleted, an org's quota changed)
//! makes every entry stale, so what ingest sees is never older than a read would give.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::Formation;

/// Formations held at most; beyond it the memo starts over (a rare, cheap miss).
const MAX_HELD: usize = 256;

/// A formation, its org's uid and its org's document quota per formation.
pub(crate) type Found = (Formation, [u8; 16], u32);

/// Per org, per formation: the commit count the read saw, and what it found.
type Held = HashMap<String, HashMap<String, (u64, Found)>>;

#[derive(Clone, Default)]
pub(crate) struct FormationCache {
    held: Arc<Mutex<Held>>,
}

impl FormationCache {
    /// The formation as read when the store had made `commits` commits, if that is still
    /// the count.
    pub(crate) fn get(&self, org: &str, app: &str, commits: u64) -> Option<Found> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(org)?
            .get(app)
            .filter(|(seen, _)| *seen == commits)
            .map(|(_, found)| found.clone())
    }

    /// Keeps what a read begun at `commits` commits found.
    pub(crate) fn put(&self, org: &str, app: &str, commits: u64, found: Found) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.values().map(HashMap::len).sum::<usize>() >= MAX_HELD {
            held.clear();
        }
        held.entry(org.to_owned())
            .or_default()
            .insert(app.to_owned(), (commits, found));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::MembershipPolicy;

    fn formation(org: &str) -> Found {
        let f = Formation {
            org_id: org.into(),
            app_id: "mesh".into(),
            mesh_id: "m".into(),
            policy: MembershipPolicy::Open,
            authority_public_key: [1; 32],
            created_at_ms: 0,
            adopted: false,
            formation_uid: [2; 16],
        };
        (f, [3; 16], 10)
    }

    #[test]
    fn an_entry_holds_only_while_nothing_was_committed_and_only_for_its_org() {
        let memo = FormationCache::default();
        memo.put("acme", "mesh", 7, formation("acme"));
        assert_eq!(memo.get("acme", "mesh", 7), Some(formation("acme")));
        assert_eq!(memo.get("acme", "mesh", 8), None);
        assert_eq!(memo.get("bravo", "mesh", 7), None);
        assert_eq!(memo.get("acme", "other", 7), None);
        for i in 0..MAX_HELD {
            memo.put("bravo", &i.to_string(), 7, formation("bravo"));
        }
        assert!(
            memo.held
                .lock()
                .unwrap()
                .values()
                .map(HashMap::len)
                .sum::<usize>()
                <= MAX_HELD
        );
    }
}
