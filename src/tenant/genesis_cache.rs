//! Opened formation geneses, kept so an enrollment neither unseals nor re-derives the
//! authority key. An entry is valid only for the formation uid it was opened for (a formation
//! deleted and created again under the same name has a new uid); deleting a formation drops
//! its entry, so its secrets leave memory with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::mesh::MeshGenesis;

/// Formations held at most; beyond it the cache starts over (a rare, cheap miss).
const MAX_HELD: usize = 256;

type Key = (String, String);
/// Each formation's uid when opened, and its genesis.
type Held = HashMap<Key, ([u8; 16], Arc<MeshGenesis>)>;

#[derive(Clone, Default)]
pub(crate) struct GenesisCache {
    held: Arc<Mutex<Held>>,
}

impl GenesisCache {
    pub(crate) fn get(&self, org: &str, app: &str, uid: &[u8; 16]) -> Option<Arc<MeshGenesis>> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&(org.to_owned(), app.to_owned()))
            .filter(|(u, _)| u == uid)
            .map(|(_, g)| g.clone())
    }

    pub(crate) fn put(&self, org: &str, app: &str, uid: [u8; 16], g: Arc<MeshGenesis>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= MAX_HELD {
            held.clear();
        }
        held.insert((org.to_owned(), app.to_owned()), (uid, g));
    }

    /// Forgets a formation (deleted) or, with `app` `None`, every formation of an org.
    pub(crate) fn forget(&self, org: &str, app: Option<&str>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|(o, a), _| o != org || app.is_some_and(|x| x != a));
    }
}
