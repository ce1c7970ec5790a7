//! Copying a database into a fresh file: backups, and compaction by rewrite.
//!
//! A copy commits every [`CHUNK_BYTES`], so no transaction grows with the database.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadTransaction, ReadableDatabase as _};
use redb::{ReadableTable as _, TableDefinition, TableHandle as _};

use super::error::RedbResultExt;
use super::StoreError;

/// Bytes of keys and values copied per commit.
pub(crate) const CHUNK_BYTES: usize = 2 << 20;

type Bytes<'n> = TableDefinition<'n, &'static [u8], &'static [u8]>;

/// Copies every table `rtx` sees into `to` (empty), committing every [`CHUNK_BYTES`]; each
/// commit is durable, so the copy is complete on disk when this returns. `room` is asked
/// before each commit; without it the copy stops with [`StoreError::Full`].
pub(crate) fn copy_tables(
    rtx: &ReadTransaction,
    to: &Database,
    room: &dyn Fn() -> bool,
) -> Result<(), StoreError> {
    for handle in rtx.list_tables().op("list tables")? {
        let name = handle.name().to_owned();
        let def: Bytes<'_> = TableDefinition::new(&name);
        let from = rtx.open_table(def).op("open table")?;
        let mut rows = from.iter().op("scan table")?.peekable();
        loop {
            if !room() {
                return Err(StoreError::Full);
            }
            let mut wtx = to.begin_write().op("begin write")?;
            wtx.set_durability(Durability::Immediate)
                .op("set durability")?;
            {
                // Opened even for an empty table, so the copy has it too.
                let mut table = wtx.open_table(def).op("create table")?;
                let mut bytes = 0;
                while bytes < CHUNK_BYTES {
                    let Some(row) = rows.next() else { break };
                    let (k, v) = row.op("read row")?;
                    table.insert(k.value(), v.value()).op("copy row")?;
                    bytes += k.value().len() + v.value().len();
                }
            }
            wtx.commit().op("commit the copy")?;
            if rows.peek().is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// The file a rewrite builds beside `path` before it replaces it.
pub(crate) fn rewrite_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".compacting");
    path.with_file_name(name)
}

/// Removes what a rewrite cut short (a crash, a full disk) left beside `path`.
pub(crate) fn remove_unfinished_rewrite(path: &Path) {
    let tmp = rewrite_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::warn!(
            file = %tmp.display(),
            "removed an unfinished compaction copy; the database file itself was untouched"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %tmp.display(), error = %e,
            "could not remove an unfinished compaction copy; remove it by hand"),
    }
}

/// Compacts by copying what `from` holds into a fresh file opened by `open`, then renaming it
/// over `path`: memory stays bounded by [`CHUNK_BYTES`] and the page cache, where redb's own
/// compaction gathers the path of every page it may move in one map (~13 MiB more at the end
/// of a 1 M event drain). Until the rename the old file is the database, so a crash at any
/// point leaves one whole file; the copy goes on only while `room` holds. Returns the new
/// handle; the caller drops `from`.
pub(crate) fn rewrite(
    from: &Database,
    path: &Path,
    open: &dyn Fn(&Path) -> Result<Database, StoreError>,
    room: &dyn Fn() -> bool,
) -> Result<Database, StoreError> {
    let tmp = rewrite_path(path);
    remove_unfinished_rewrite(path);
    let copied = open(&tmp).and_then(|to| {
        let rtx = from.begin_read().op("begin read")?;
        copy_tables(&rtx, &to, room)?;
        Ok(to)
    });
    let to = match copied {
        Ok(to) => to,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // The copy is durable (its last commit); the rename makes it the database.
    if let Err(e) = std::fs::rename(&tmp, path) {
        drop(to);
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::Redb {
            op: "replace the file with its compacted copy",
            source: redb::Error::Io(e),
        });
    }
    // Renamed: the copy is the database now; the old handle's file is gone from the directory.
    if let Err(e) = sync_dir(path) {
        tracing::error!(error = %e, dir = %path.parent().unwrap_or(Path::new(".")).display(),
            "could not sync the data directory after compaction: the disk is failing; a \
             power loss now may bring back the file as it was before compaction");
    }
    Ok(to)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Builder, ReadableTableMetadata as _};

    const T: Bytes<'static> = TableDefinition::new("t");
    const EMPTY: Bytes<'static> = TableDefinition::new("empty");

    fn open(p: &Path) -> Result<Database, StoreError> {
        Builder::new().set_cache_size(1 << 20).create(p).op("open")
    }

    /// A file holding `n` rows of 1 KiB in `t` and an empty table.
    fn filled(p: &Path, n: u32) -> Database {
        let db = open(p).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(T).unwrap();
            for i in 0..n {
                t.insert(i.to_be_bytes().as_slice(), [7u8; 1024].as_slice())
                    .unwrap();
            }
            w.open_table(EMPTY).unwrap();
        }
        w.commit().unwrap();
        db
    }

    #[test]
    fn a_rewrite_keeps_every_row_and_table_and_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cdc.redb");
        // 5 MiB: more than one commit's worth.
        let old = filled(&p, 5 * 1024);
        let fresh = rewrite(&old, &p, &open, &|| true).unwrap();
        drop(old);
        assert!(!rewrite_path(&p).exists());
        let r = fresh.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 5 * 1024);
        let rows: Vec<u32> = t
            .iter()
            .unwrap()
            .map(|row| u32::from_be_bytes(row.unwrap().0.value().try_into().unwrap()))
            .collect();
        assert!(rows.iter().copied().eq(0..5 * 1024));
        assert_eq!(r.open_table(EMPTY).unwrap().len().unwrap(), 0);
        drop((t, r, fresh));
        // The file at the path is the copy: it opens with the rows.
        let again = open(&p).unwrap();
        let r = again.begin_read().unwrap();
        assert_eq!(r.open_table(T).unwrap().len().unwrap(), 5 * 1024);
    }

    #[test]
    fn a_failed_rewrite_leaves_the_file_and_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cdc.redb");
        let old = filled(&p, 16);
        let failing = |_: &Path| -> Result<Database, StoreError> { Err(StoreError::Closed) };
        assert!(rewrite(&old, &p, &failing, &|| true).is_err());
        assert!(!rewrite_path(&p).exists());
        // Out of room part-way: the copy stops, is removed, and the file is untouched.
        let asked = std::cell::Cell::new(0);
        let room = || {
            asked.set(asked.get() + 1);
            asked.get() < 2
        };
        assert!(matches!(
            rewrite(&old, &p, &open, &room),
            Err(StoreError::Full)
        ));
        assert!(!rewrite_path(&p).exists());
        let r = old.begin_read().unwrap();
        assert_eq!(r.open_table(T).unwrap().len().unwrap(), 16);
    }

    #[test]
    fn an_unfinished_copy_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cdc.redb");
        std::fs::write(rewrite_path(&p), b"half a copy").unwrap();
        remove_unfinished_rewrite(&p);
        assert!(!rewrite_path(&p).exists());
    }
}
