//! A capture loop's health: the link, the counts, and the documents it refused (by reason,
//! with the most recent ones listed), for the API, `/ready` and metrics.

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::tenant::SourceDef;

/// Refused documents listed at most.
const REFUSED_LISTED: usize = 50;
/// Refusals remembered as already audited at most (then the oldest are forgotten).
const AUDITED_REMEMBERED: usize = 4096;

/// What a reconciliation found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub at_ms: u64,
    pub listed: u64,
    pub appended: u64,
    pub deleted: u64,
}

/// A capture loop's health, for the API and metrics.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    pub connected: bool,
    pub node_id: String,
    pub endpoint_addr: String,
    pub last_event_ms: Option<u64>,
    pub last_error: Option<String>,
    pub frames: u64,
    pub appended: u64,
    pub unchanged: u64,
    pub encrypted_payloads: u64,
    pub skipped_frames: u64,
    pub connects: u64,
    pub last_reconciliation: Option<Reconciliation>,
    /// Set while the endpoint answers with another node id than the pinned one.
    pub wrong_node: Option<String>,
    /// Documents refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// The most recent refusals, newest last.
    pub refused_docs: VecDeque<Refusal>,
    /// Refusals already audited (collection, doc id, reason).
    audited: HashSet<(String, String, &'static str)>,
    /// Reconciliations by outcome (`ok`, `failed`).
    pub reconciliations: BTreeMap<&'static str, u64>,
}

/// One refused document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub collection: String,
    pub doc_id: String,
    pub reason: &'static str,
    pub at_ms: u64,
}

impl SourceHealth {
    /// One word for the link: `not_granted`, `wrong_node`, `connected` or `reconnecting`.
    pub fn state(&self, def: &SourceDef) -> &'static str {
        if !def.granted {
            "not_granted"
        } else if self.wrong_node.is_some() {
            "wrong_node"
        } else if self.connected {
            "connected"
        } else {
            "reconnecting"
        }
    }
}

impl SourceHealth {
    /// Counts and lists a refused document; `true` the first time it is refused for this
    /// reason (the caller audits it once).
    pub(crate) fn refuse(
        &mut self,
        collection: &str,
        doc_id: &str,
        reason: &'static str,
        now: u64,
    ) -> bool {
        *self.refused.entry(reason).or_default() += 1;
        if self.refused_docs.len() >= REFUSED_LISTED {
            self.refused_docs.pop_front();
        }
        self.refused_docs.push_back(Refusal {
            collection: collection.to_owned(),
            doc_id: doc_id.to_owned(),
            reason,
            at_ms: now,
        });
        if self.audited.len() >= AUDITED_REMEMBERED {
            self.audited.clear();
        }
        self.audited
            .insert((collection.to_owned(), doc_id.to_owned(), reason))
    }

    /// Documents refused in all.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}
