//! Per-table commit counts, so a memo of a read can tell whether anything it read was
//! written since: a read records the tables it opened and their counts when it began; the
//! memo holds while those counts stand (writes to other tables, such as every enrollment's
//! audit and replay marks, leave it valid).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Table;

/// One slot per `Table` discriminant (there are fewer than this).
const SLOTS: usize = 64;

/// A set of tables, one bit per `Table` discriminant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tables(u64);

impl Tables {
    pub(crate) fn with(self, t: Table) -> Self {
        match 1u64.checked_shl(t as u32) {
            Some(bit) => Self(self.0 | bit),
            // Past the slots: stands for every table, which errs on the side of stale.
            None => Self(u64::MAX),
        }
    }

    pub(crate) fn union(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }

    fn iter(self) -> impl Iterator<Item = usize> {
        (0..SLOTS).filter(move |i| self.0 & (1 << i) != 0)
    }
}

/// Commits that wrote each table; bumped by the writer after a commit and before any of its
/// callers hears back, so a check made after a write sees it.
pub(crate) struct TableCommits([AtomicU64; SLOTS]);

impl Default for TableCommits {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl TableCommits {
    pub(crate) fn bump(&self, written: Tables) {
        for i in written.iter() {
            self.0[i].fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn snapshot(&self) -> [u64; SLOTS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Acquire))
    }

    /// The counts only rise, so an equal sum over the same tables means none of them moved.
    fn sum(&self, tables: Tables) -> u64 {
        tables
            .iter()
            .map(|i| self.0[i].load(Ordering::Acquire))
            .fold(0, u64::wrapping_add)
    }

    pub(crate) fn seen(counts: &[u64; SLOTS], tables: Tables) -> Seen {
        Seen {
            tables,
            commits: tables.iter().map(|i| counts[i]).fold(0, u64::wrapping_add),
        }
    }

    pub(crate) fn unchanged(&self, s: &Seen) -> bool {
        self.sum(s.tables) == s.commits
    }
}

/// What a read depended on: the tables it opened and their commit counts before it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    tables: Tables,
    commits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_stays_current_until_a_table_it_opened_is_written() {
        let c = TableCommits::default();
        let read = Tables::default().with(Table::Orgs).with(Table::Formations);
        let seen = TableCommits::seen(&c.snapshot(), read);
        assert!(c.unchanged(&seen));
        c.bump(Tables::default().with(Table::Audit).with(Table::Meta));
        assert!(c.unchanged(&seen), "tables it never read");
        c.bump(Tables::default().with(Table::Formations));
        assert!(!c.unchanged(&seen));
        assert!(c.unchanged(&TableCommits::seen(&c.snapshot(), read)));
        c.bump(Tables::default().with(Table::OrgLog).with(Table::Orgs));
        assert!(!c.unchanged(&TableCommits::seen(&[0; SLOTS], read)));
    }
}
