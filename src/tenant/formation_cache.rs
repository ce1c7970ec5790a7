//! What is kept per formation between requests, bounded and checked before use: opened
//! geneses (enrollment neither unseals nor re-derives the authority key per request; valid for
//! the formation uid they were opened for, dropped with the formation or org), and what an
//! ingest or an enrollment reads first (valid while no table the read opened has been written
//! since it began, so a request never sees older state than a read would give).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::Formation;
use crate::mesh::MeshGenesis;
use crate::store::Seen;

/// Formations held at most per memo; beyond it the memo starts over (a rare, cheap miss).
const MAX_HELD: usize = 256;

/// Per org, per formation: a value and what it is valid for.
pub(crate) struct PerFormation<V> {
    held: Arc<Mutex<HashMap<String, HashMap<String, V>>>>,
}

impl<V> Clone for PerFormation<V> {
    fn clone(&self) -> Self {
        Self {
            held: self.held.clone(),
        }
    }
}

impl<V> Default for PerFormation<V> {
    fn default() -> Self {
        Self {
            held: Arc::default(),
        }
    }
}

impl<V: Clone> PerFormation<V> {
    /// The formation's value, if `valid` accepts it.
    fn get_if(&self, org: &str, app: &str, valid: impl FnOnce(&V) -> bool) -> Option<V> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(org)?.get(app).filter(|v| valid(v)).cloned()
    }

    fn put(&self, org: &str, app: &str, v: V) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.values().map(HashMap::len).sum::<usize>() >= MAX_HELD {
            held.clear();
        }
        held.entry(org.to_owned())
            .or_default()
            .insert(app.to_owned(), v);
    }

    /// Forgets a formation (deleted) or, with `app` `None`, every formation of an org.
    pub(crate) fn forget(&self, org: &str, app: Option<&str>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match app {
            None => {
                held.remove(org);
            }
            Some(app) => {
                if let Some(apps) = held.get_mut(org) {
                    apps.remove(app);
                }
            }
        }
    }
}

/// Opened geneses, each with the formation uid it was opened for.
pub(crate) type GenesisCache = PerFormation<([u8; 16], Arc<MeshGenesis>)>;

impl GenesisCache {
    pub(crate) fn get(&self, org: &str, app: &str, uid: &[u8; 16]) -> Option<Arc<MeshGenesis>> {
        self.get_if(org, app, |(u, _)| u == uid).map(|(_, g)| g)
    }

    pub(crate) fn put_genesis(&self, org: &str, app: &str, uid: [u8; 16], g: Arc<MeshGenesis>) {
        self.put(org, app, (uid, g));
    }
}

/// Values read from the store, each with what its read depended on (a [`Seen`] in use; the
/// caller says whether it still holds).
pub(crate) type ReadMemo<S, V> = PerFormation<(S, V)>;

impl<S: Clone, V: Clone> ReadMemo<S, V> {
    /// The formation's value, if `current` says its read still holds.
    pub(crate) fn found(
        &self,
        org: &str,
        app: &str,
        current: impl FnOnce(&S) -> bool,
    ) -> Option<V> {
        self.get_if(org, app, |(seen, _)| current(seen))
            .map(|(_, v)| v)
    }

    /// Keeps what a read found, with what it depended on.
    pub(crate) fn keep(&self, org: &str, app: &str, seen: S, v: V) {
        self.put(org, app, (seen, v));
    }
}

/// A formation, its org's uid and its org's document quota per formation.
pub(crate) type Found = (Formation, [u8; 16], u32);

/// The formations ingest names.
pub(crate) type FormationCache = ReadMemo<Seen, Found>;

/// A formation and what else a read of it fetched (its genesis stays in the [`GenesisCache`],
/// so secrets still leave memory with their formation).
pub(crate) type WithFormation<T> = ReadMemo<Seen, (Formation, T)>;

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

    /// Read memos with a plain count standing in for what a read saw.
    type Memo = ReadMemo<u64, Found>;

    fn at(n: u64) -> impl FnOnce(&u64) -> bool {
        move |seen| *seen == n
    }

    #[test]
    fn an_entry_holds_only_while_its_read_holds_and_only_for_its_org() {
        let memo = Memo::default();
        memo.keep("acme", "mesh", 7, formation("acme"));
        assert_eq!(memo.found("acme", "mesh", at(7)), Some(formation("acme")));
        assert_eq!(memo.found("acme", "mesh", at(8)), None);
        assert_eq!(memo.found("bravo", "mesh", at(7)), None);
        assert_eq!(memo.found("acme", "other", at(7)), None);
        for i in 0..MAX_HELD {
            memo.keep("bravo", &i.to_string(), 7, formation("bravo"));
        }
        let held = memo.held.lock().unwrap();
        assert!(held.values().map(HashMap::len).sum::<usize>() <= MAX_HELD);
    }

    #[test]
    fn forgetting_drops_a_formation_or_a_whole_org() {
        let memo = Memo::default();
        for (org, app) in [("acme", "a"), ("acme", "b"), ("bravo", "a")] {
            memo.keep(org, app, 1, formation(org));
        }
        memo.forget("acme", Some("a"));
        assert_eq!(memo.found("acme", "a", at(1)), None);
        assert!(memo.found("acme", "b", at(1)).is_some());
        memo.forget("acme", None);
        assert_eq!(memo.found("acme", "b", at(1)), None);
        assert!(memo.found("bravo", "a", at(1)).is_some());
    }
}
