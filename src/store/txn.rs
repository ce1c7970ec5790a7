//! Transaction views handed to operations: [`Txn`] for writes, [`ReadView`] for reads.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction,
};

use super::error::RedbResultExt;
use super::seen::Tables;
use super::{Record, StoreError, Table};

/// A raw key and value, as scanned.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Read access shared by both views, so domain rules can be written once.
pub trait Reader {
    fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Entries whose key starts with `prefix`, in key order, strictly after `after` when given,
    /// at most `limit` of them.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The same as [`Reader::scan`], newest (highest key) first, strictly before `before`.
    fn scan_rev(
        &self,
        table: Table,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    fn count(&self, table: Table) -> Result<u64, StoreError>;

    /// The values of many keys of one table, in the order asked.
    fn get_many_raw(
        &self,
        table: Table,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get_raw(table, k)).collect()
    }

    fn get<R: Record>(&self, table: Table, key: &[u8]) -> Result<Option<R>, StoreError> {
        self.get_raw(table, key)?
            .map(|raw| R::decode(&raw))
            .transpose()
    }

    fn exists(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get_raw(table, key)?.is_some())
    }
}

fn scan_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
    bound: Option<&[u8]>,
    limit: usize,
    reverse: bool,
) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let push = |out: &mut Vec<Entry>, k: &[u8], v: &[u8]| {
        out.push((k.to_vec(), v.to_vec()));
        out.len() >= limit
    };
    if reverse {
        let upper = match bound {
            Some(b) => b.to_vec(),
            None => prefix_end(prefix).unwrap_or_default(),
        };
        let iter = if upper.is_empty() {
            t.range::<&[u8]>(prefix..).op("scan")?
        } else {
            t.range::<&[u8]>(prefix..upper.as_slice()).op("scan")?
        };
        for item in iter.rev() {
            let (k, v) = item.op("scan")?;
            if !k.value().starts_with(prefix) {
                continue;
            }
            if push(&mut out, k.value(), v.value()) {
                break;
            }
        }
    } else {
        let start: Vec<u8> = match bound {
            Some(b) => {
                let mut s = b.to_vec();
                s.push(0);
                s
            }
            None => prefix.to_vec(),
        };
        for item in t.range::<&[u8]>(start.as_slice()..).op("scan")? {
            let (k, v) = item.op("scan")?;
            if !k.value().starts_with(prefix) {
                break;
            }
            if push(&mut out, k.value(), v.value()) {
                break;
            }
        }
    }
    Ok(out)
}

/// Smallest key greater than every key with this prefix; `None` when no such key exists.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `scan`, `scan_rev` and `count` over the tables method `$open` gives: the same for the read
/// view and the write transaction, whose table types differ.
macro_rules! table_scans {
    ($open:ident) => {
        fn scan(
            &self,
            table: Table,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            let t = self.$open(table)?;
            scan_table(t.raw(), prefix, after, limit, false)
        }

        fn scan_rev(
            &self,
            table: Table,
            prefix: &[u8],
            before: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            let t = self.$open(table)?;
            scan_table(t.raw(), prefix, before, limit, true)
        }

        fn count(&self, table: Table) -> Result<u64, StoreError> {
            let t = self.$open(table)?;
            t.len().op("count")
        }
    };
}

/// A consistent snapshot for reads.
pub struct ReadView {
    rtx: ReadTransaction,
    /// Tables opened so far: opening one looks it up in redb's table tree, which a read of
    /// one event per key would otherwise repeat for every key.
    opened: RefCell<Vec<(Table, Rc<RawTable>)>>,
}

type RawTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The readable table behind what each view's `open` gives.
trait AsRaw {
    type T: ReadableTable<&'static [u8], &'static [u8]>;
    fn raw(&self) -> &Self::T;
}

impl AsRaw for Rc<RawTable> {
    type T = RawTable;
    fn raw(&self) -> &RawTable {
        self
    }
}

impl<'a> AsRaw for redb::Table<'a, &'static [u8], &'static [u8]> {
    type T = Self;
    fn raw(&self) -> &Self {
        self
    }
}

impl ReadView {
    pub(crate) fn new(rtx: ReadTransaction) -> Self {
        Self {
            rtx,
            opened: RefCell::default(),
        }
    }

    fn table(&self, table: Table) -> Result<Rc<RawTable>, StoreError> {
        if let Some((_, t)) = self.opened.borrow().iter().find(|(n, _)| *n == table) {
            return Ok(t.clone());
        }
        let t = Rc::new(self.rtx.open_table(table.def()).op("open table")?);
        self.opened.borrow_mut().push((table, t.clone()));
        Ok(t)
    }

    /// The tables read so far.
    pub(crate) fn tables_read(&self) -> Tables {
        self.opened
            .borrow()
            .iter()
            .fold(Tables::default(), |s, (t, _)| s.with(*t))
    }
}

impl Reader for ReadView {
    fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.table(table)?;
        Ok(t.get(key).op("get")?.map(|v| v.value().to_vec()))
    }

    table_scans!(table);
}

/// A buffered write: the new value, or `None` for a delete.
type Pending = Option<Vec<u8>>;
/// One table's buffered writes: each key's last. Hashed with foldhash (randomly seeded per
/// map): SipHash over every buffered key was 7 % of ingest's CPU, and a buffer lives for one
/// operation.
type TableWrites = HashMap<Vec<u8>, Pending, foldhash::quality::RandomState>;

/// One operation's view of a write transaction.
///
/// Writes are buffered and reach the transaction only if the operation returns `Ok`.
/// `get` sees the operation's own buffered writes; `scan` and `count` see only what earlier
/// operations committed to the transaction, not this operation's buffer.
pub struct Txn<'a> {
    wtx: &'a WriteTransaction,
    /// The last buffered write of each key, per table in the order first written (an
    /// operation writes a few tables): applying them opens each table once, and a read of a
    /// buffered key is one lookup.
    pending: Vec<(Table, TableWrites)>,
}

impl<'a> Txn<'a> {
    fn open(
        &self,
        table: Table,
    ) -> Result<redb::Table<'a, &'static [u8], &'static [u8]>, StoreError> {
        self.wtx.open_table(table.def()).op("open table")
    }

    pub(crate) fn new(wtx: &'a WriteTransaction) -> Self {
        Self {
            wtx,
            pending: Vec::new(),
        }
    }

    fn buffer(&mut self, table: Table, key: Vec<u8>, value: Pending) {
        let at = match self.pending.iter().position(|(t, _)| *t == table) {
            Some(at) => at,
            None => {
                self.pending.push((table, TableWrites::default()));
                self.pending.len() - 1
            }
        };
        self.pending[at].1.insert(key, value);
    }

    /// This operation's own write of `key`, if any (`Some(None)`: deleted).
    pub fn buffered(&self, table: Table, key: &[u8]) -> Option<&Pending> {
        self.pending
            .iter()
            .find(|(t, _)| *t == table)
            .and_then(|(_, v)| v.get(key))
    }

    pub fn put_raw(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.buffer(table, key, Some(value));
    }

    pub fn put<R: Record>(
        &mut self,
        table: Table,
        key: Vec<u8>,
        value: &R,
    ) -> Result<(), StoreError> {
        let bytes = value.encode()?;
        self.put_raw(table, key, bytes);
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.buffer(table, key, None);
    }

    /// Deletes every key with `prefix` in `table`; returns how many there were.
    pub fn delete_prefix(&mut self, table: Table, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan(table, prefix, after.as_deref(), 512)?;
            let done = page.len() < 512;
            for (k, _) in page {
                after = Some(k.clone());
                self.delete(table, k);
                n += 1;
            }
            if done {
                return Ok(n);
            }
        }
    }

    /// The tables this operation writes.
    pub(crate) fn written(&self) -> Tables {
        self.pending
            .iter()
            .fold(Tables::default(), |s, (t, _)| s.with(*t))
    }

    pub(crate) fn apply(mut self) -> Result<(), StoreError> {
        for (table, values) in std::mem::take(&mut self.pending) {
            // Distinct keys commute; in key order the B-tree is walked once, left to right.
            let mut writes: Vec<_> = values.into_iter().collect();
            writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut t = self.open(table)?;
            let mut rest = writes.as_slice();
            while let Some(((k, w), tail)) = rest.split_first() {
                if let Some(v) = w {
                    t.insert(k.as_slice(), v.as_slice()).op("insert")?;
                    rest = tail;
                    continue;
                }
                let run = rest.iter().take_while(|(_, w)| w.is_none()).count();
                let (deletes, tail) = rest.split_at(run);
                remove_run(&mut t, deletes)?;
                rest = tail;
            }
        }
        Ok(())
    }
}

/// Deletes at least this many keys in a row in one pass over their range (a trim deletes
/// thousands): redb's cursor removes them leaf by leaf, where a `remove` per key walks down
/// from the root and copies each old value out.
const RUN_SCAN: usize = 16;

/// Removes the sorted `deletes` (no write of another key lies between the first and the last).
fn remove_run(
    t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    deletes: &[(Vec<u8>, Pending)],
) -> Result<(), StoreError> {
    let (Some((first, _)), Some((last, _))) = (deletes.first(), deletes.last()) else {
        return Ok(());
    };
    if deletes.len() < RUN_SCAN {
        for (k, _) in deletes {
            t.remove(k.as_slice()).op("remove")?;
        }
        return Ok(());
    }
    // The range may hold keys this operation keeps (another org's events between its own):
    // the predicate sees keys in order and drops exactly the deleted ones.
    let mut next = 0;
    t.retain_in(first.as_slice()..=last.as_slice(), |k, _| {
        while deletes.get(next).is_some_and(|(d, _)| d.as_slice() < k) {
            next += 1;
        }
        deletes.get(next).is_none_or(|(d, _)| d.as_slice() != k)
    })
    .op("remove")
}

impl Reader for Txn<'_> {
    fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(p) = self.buffered(table, key) {
            return Ok(p.clone());
        }
        let t = self.open(table)?;
        let v = t.get(key).op("get")?.map(|v| v.value().to_vec());
        Ok(v)
    }

    fn get_many_raw(
        &self,
        table: Table,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let t = self.open(table)?;
        keys.iter()
            .map(|k| match self.buffered(table, k) {
                Some(p) => Ok(p.clone()),
                None => Ok(t.get(*k).op("get")?.map(|v| v.value().to_vec())),
            })
            .collect()
    }

    table_scans!(open);
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_skips_saturated_bytes() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
