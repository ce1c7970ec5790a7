//! Opening a database (migrated to its schema first) and the [`Store`] handle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Builder, Database, DatabaseError, ReadableDatabase};
use tokio::sync::{mpsc, oneshot};

use super::copy;
use super::error::RedbResultExt;
use super::migrate::{migrate, read_schema_version_of, Schema, STATE};
use super::seen::{Seen, TableCommits};
use super::writer::{self, Latch, Msg, TypedJob, QUEUE_DEPTH};
use super::{ReadView, StoreError, Txn};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb page cache. redb's default (1 GiB) exceeds a kit's RAM; keep this small.
    pub cache_bytes: usize,
    pub schema: &'static Schema,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 4 * 1024 * 1024,
            schema: &STATE,
        }
    }
}

/// What one group commit did; reported to metrics.
#[derive(Debug, Clone, Copy)]
pub struct CommitStats {
    pub ops: usize,
    pub elapsed: Duration,
}

struct Inner {
    /// `None` only between dropping a handle whose commit failed and reopening the file.
    db: Arc<RwLock<Option<Database>>>,
    path: PathBuf,
    tx: mpsc::Sender<Msg>,
    latch: Arc<Latch>,
    /// Milliseconds since `started` of the last reopen tried (rate-limits them).
    last_recover_ms: AtomicU64,
    started: Instant,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Commits so far per table, counted by the writer before it answers their callers.
    commits: Arc<TableCommits>,
}

/// A reopen after a failed commit is tried at most this often.
const RECOVER_EVERY: Duration = Duration::from_secs(2);

/// Handle to the state database. Cheap to clone; every clone shares one writer thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it, and starts the writer.
    ///
    /// Blocks on disk I/O: call it before the runtime serves requests, or via `spawn_blocking`.
    pub fn open(
        path: &Path,
        opts: &StoreOptions,
        on_commit: Option<Arc<dyn Fn(CommitStats) + Send + Sync>>,
    ) -> Result<Self, StoreError> {
        let db = open_db(path, opts)?;
        copy::remove_unfinished_rewrite(path);
        migrate(&db, path, opts.schema)?;
        let db = Arc::new(RwLock::new(Some(db)));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let latch = Arc::new(Latch::default());
        let commits = Arc::new(TableCommits::default());
        let thread = {
            let db = db.clone();
            let latch = latch.clone();
            let commits = commits.clone();
            let name = format!("{}-writer", opts.schema.name);
            let opts = opts.clone();
            let file = writer::DbFile {
                path: path.to_path_buf(),
                open: Box::new(move |p| open_db(p, &opts)),
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || writer::run(db, rx, latch, file, on_commit, commits))
                .map_err(|_| StoreError::Closed)?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                tx,
                latch,
                last_recover_ms: AtomicU64::new(0),
                started: Instant::now(),
                thread: Mutex::new(Some(thread)),
                commits,
            }),
        })
    }

    /// Runs `op` in a write transaction on the writer thread and resolves after the commit.
    ///
    /// `op` must not block on anything but the store itself. If it returns `Err`, none of its
    /// writes are applied; other operations in the same batch are unaffected.
    pub async fn write<R, E, F>(&self, op: F) -> Result<R, E>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if self.is_poisoned() {
            self.try_recover().await?;
        }
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob::new(op, reply));
        self.inner
            .tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// After a failed commit: reopens the file when space allows, at most every 2 s; until
    /// then every write gets the latch's error and nothing is acknowledged. Writes ask, and
    /// so does `/ready`, so a gateway nobody writes to comes back too.
    pub async fn try_recover(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        if !self.is_poisoned() {
            return Ok(());
        }
        let now = u64::try_from(i.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = i.last_recover_ms.load(Ordering::Acquire);
        let due = last == 0 || now.saturating_sub(last) >= RECOVER_EVERY.as_millis() as u64;
        if !due
            || !writer::room_to_recover(&i.path)
            || i.last_recover_ms
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Err(i.latch.error());
        }
        let (reply, rx) = oneshot::channel();
        i.tx.send(Msg::Recover(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Why writes are refused, when they are: the failed commit's error.
    pub fn write_problem(&self) -> Option<String> {
        if !self.is_poisoned() {
            return None;
        }
        let reason = self.inner.latch.reason.lock().ok().and_then(|r| r.clone());
        Some(match (self.inner.latch.error(), reason) {
            (StoreError::Full, r) => format!(
                "the file system of {} is full{}; writes are refused and nothing new is \
                 acknowledged until space is freed (the file is reopened at the next write or \
                 /ready once {} MiB are free)",
                self.dir().display(),
                r.map(|r| format!(" ({r})")).unwrap_or_default(),
                writer::RECOVER_FREE_BYTES >> 20
            ),
            (_, r) => format!(
                "a commit failed ({}); writes are refused until the file reopens",
                r.unwrap_or_default()
            ),
        })
    }

    /// [`Store::write`] for start-up code that runs before (or outside) the async runtime.
    pub fn write_blocking<R, E, F>(&self, op: F) -> Result<R, E>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob::new(op, reply));
        self.inner
            .tx
            .blocking_send(Msg::Job(job))
            .map_err(|_| StoreError::Closed)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `op` against a consistent snapshot on the blocking pool.
    pub async fn read<R, E, F>(&self, op: F) -> Result<R, E>
    where
        F: FnOnce(&ReadView) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        // Not `read_seen` without its stamp: each caller's closure makes its own copy of the
        // body, and the stamp's work in every one of them cost the aarch64 build 64 KiB.
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            // The guard lives as long as the read, so compaction never meets a live reader.
            let guard = read_lock(&db);
            let rtx = opened(&guard)?.begin_read().op("begin read")?;
            op(&ReadView::new(rtx))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// [`Store::read`], with what the read depended on: while [`Store::unchanged`] holds for
    /// it, the same read would find the same.
    pub async fn read_seen<R, E, F>(&self, op: F) -> Result<(R, Seen), E>
    where
        F: FnOnce(&ReadView) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let db = self.inner.db.clone();
        let commits = self.inner.commits.clone();
        tokio::task::spawn_blocking(move || {
            let guard = read_lock(&db);
            // Counted before the snapshot: a commit in between leaves the memo stale, never
            // older than the store.
            let before = commits.snapshot();
            let rtx = opened(&guard)?.begin_read().op("begin read")?;
            let view = ReadView::new(rtx);
            let out = op(&view)?;
            Ok((out, TableCommits::seen(&before, view.tables_read())))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Whether no table a read opened has been written since it began.
    pub fn unchanged(&self, seen: &Seen) -> bool {
        self.inner.commits.unchanged(seen)
    }

    /// Synchronous read for command-line tools that run without serving.
    pub fn read_blocking<R, E, F>(&self, op: F) -> Result<R, E>
    where
        F: FnOnce(&ReadView) -> Result<R, E>,
        E: From<StoreError>,
    {
        let guard = read_lock(&self.inner.db);
        let rtx = opened(&guard)?.begin_read().op("begin read")?;
        op(&ReadView::new(rtx))
    }

    /// Size of the database file on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.inner.path).map_or(0, |m| m.len())
    }

    /// Writes a consistent copy of the whole database to the new file `dest`: every table as
    /// one read transaction sees it, so writers go on meanwhile and nothing is torn. Returns
    /// the copy's schema version. Blocks on disk I/O: call it from `spawn_blocking`.
    pub fn snapshot_to(&self, dest: &Path) -> Result<u32, StoreError> {
        let guard = read_lock(&self.inner.db);
        let rtx = opened(&guard)?.begin_read().op("begin read")?;
        let mut b = Builder::new();
        b.set_cache_size(1 << 20);
        let out = b.create(dest).op("create the snapshot")?;
        copy::copy_tables(&rtx, &out, &|| true)?;
        drop(out);
        read_schema_version_of(&rtx)
    }

    /// The directory holding the database file.
    pub fn dir(&self) -> &Path {
        self.inner.path.parent().unwrap_or(Path::new("."))
    }

    /// Whether another process holds the database at `path` open (a running gateway).
    pub fn in_use(path: &Path) -> bool {
        path.exists()
            && matches!(
                Builder::new().set_cache_size(1 << 20).open(path),
                Err(DatabaseError::DatabaseAlreadyOpen)
            )
    }

    /// Free space for unprivileged writers on the file system holding the database.
    pub fn free_bytes(&self) -> Option<u64> {
        writer::free_bytes(&self.inner.path)
    }

    /// Compacts the file on the writer thread, between batches; readers wait meanwhile.
    /// Returns the file size before and after.
    pub async fn compact(&self) -> Result<(u64, u64), StoreError> {
        let before = self.file_bytes();
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Compact(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)??;
        Ok((before, self.file_bytes()))
    }

    /// Whether the writer thread answers within `within`: what the service watchdog needs to
    /// keep the gateway alive. A store refusing writes after a failed commit is alive (it
    /// reopens its file at a later write; a restart would not free a full disk). Writes
    /// nothing.
    pub async fn writer_healthy(&self, within: std::time::Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        // A full queue counts against the writer too: the send waits inside the limit.
        let asked = async {
            self.inner.tx.send(Msg::Ping(reply)).await.ok()?;
            rx.await.ok()
        };
        matches!(tokio::time::timeout(within, asked).await, Ok(Some(())))
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.latch.set.load(Ordering::Acquire)
    }

    /// Lets queued writes commit, then stops the writer thread. Later writes get `Closed`.
    pub async fn shutdown(&self) {
        let _ = self.inner.tx.send(Msg::Stop).await;
        let handle = self.inner.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Read access to the database; a poisoned lock (a panicked reader) is still usable.
pub(crate) fn read_lock(
    db: &RwLock<Option<Database>>,
) -> std::sync::RwLockReadGuard<'_, Option<Database>> {
    db.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The open database, or `Closed` while a failed one is being reopened.
pub(crate) fn opened(db: &Option<Database>) -> Result<&Database, StoreError> {
    db.as_ref().ok_or(StoreError::Closed)
}

fn open_db(path: &Path, opts: &StoreOptions) -> Result<Database, StoreError> {
    let mut b = Builder::new();
    b.set_cache_size(opts.cache_bytes);
    b.set_repair_callback(|session| {
        tracing::warn!(
            progress_pct = format_args!("{:.0}", session.progress() * 100.0),
            "repairing state database after an unclean shutdown"
        );
    });
    match b.create(path) {
        Ok(db) => Ok(db),
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Locked {
            path: PathBuf::from(path),
        }),
        Err(e) => Err(StoreError::redb("open")(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::{read_schema_version, SCHEMA_VERSION};
    use crate::store::{keys, AdminTokenRecord, Reader, Table};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn new_file_gets_current_schema_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.redb");
        {
            let s = Store::open(&p, &StoreOptions::default(), None).unwrap();
            rt().block_on(s.shutdown());
        }
        let db = open_db(&p, &StoreOptions::default()).unwrap();
        assert_eq!(read_schema_version(&db).unwrap(), SCHEMA_VERSION);
        assert_eq!(STATE.version(), SCHEMA_VERSION);
    }

    #[test]
    fn schema_newer_than_this_build_is_refused_with_both_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.redb");
        {
            let db = open_db(&p, &StoreOptions::default()).unwrap();
            let wtx = db.begin_write().unwrap();
            {
                let mut meta = wtx.open_table(Table::Meta.def()).unwrap();
                meta.insert(keys::SCHEMA_VERSION, 99u32.to_le_bytes().as_slice())
                    .unwrap();
            }
            wtx.commit().unwrap();
        }
        match Store::open(&p, &StoreOptions::default(), None) {
            Err(StoreError::TooNew {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("newer schema was accepted"),
        }
    }

    #[test]
    fn second_open_of_the_same_file_reports_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.redb");
        let s = Store::open(&p, &StoreOptions::default(), None).unwrap();
        assert!(matches!(
            Store::open(&p, &StoreOptions::default(), None),
            Err(StoreError::Locked { .. })
        ));
        rt().block_on(s.shutdown());
    }

    #[derive(Debug)]
    struct Refused;
    impl From<StoreError> for Refused {
        fn from(_: StoreError) -> Self {
            Refused
        }
    }

    #[test]
    fn failed_operation_leaves_no_write_while_its_batch_mates_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb"), &StoreOptions::default(), None).unwrap();
        rt().block_on(async {
            let rec = AdminTokenRecord {
                secret_hash: [1; 32],
                created_at_ms: 1,
            };
            let (a, b) = tokio::join!(
                s.write(move |t| -> Result<(), Refused> {
                    t.put(Table::Orgs, b"good".to_vec(), &rec)?;
                    Ok(())
                }),
                s.write(|t| -> Result<(), Refused> {
                    t.put_raw(Table::Orgs, b"bad".to_vec(), vec![1]);
                    Err(Refused)
                })
            );
            assert!(a.is_ok());
            assert!(b.is_err());
            let (good, bad) = s
                .read(|r| -> Result<_, StoreError> {
                    Ok((
                        r.exists(Table::Orgs, b"good")?,
                        r.exists(Table::Orgs, b"bad")?,
                    ))
                })
                .await
                .unwrap();
            assert!(good);
            assert!(!bad);
            s.shutdown().await;
        });
    }

    #[test]
    fn an_operation_sees_its_own_writes_and_commits_the_last_write_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb"), &StoreOptions::default(), None).unwrap();
        rt().block_on(async {
            s.write(|t| -> Result<(), StoreError> {
                t.put_raw(Table::Formations, b"gone".to_vec(), vec![9]);
                Ok(())
            })
            .await
            .unwrap();
            let seen = s
                .write(|t| -> Result<_, StoreError> {
                    // Written out of key order, across two tables, some keys twice.
                    t.put_raw(Table::Formations, b"z".to_vec(), vec![1]);
                    t.put_raw(Table::Orgs, b"o".to_vec(), vec![5]);
                    t.put_raw(Table::Formations, b"a".to_vec(), vec![2]);
                    t.put_raw(Table::Formations, b"z".to_vec(), vec![3]);
                    t.delete(Table::Formations, b"gone".to_vec());
                    t.put_raw(Table::Formations, b"m".to_vec(), vec![4]);
                    t.delete(Table::Formations, b"m".to_vec());
                    let own = t.get_many_raw(Table::Formations, &[b"z", b"gone", b"m"])?;
                    Ok((own, t.get_raw(Table::Orgs, b"o")?))
                })
                .await
                .unwrap();
            assert_eq!(seen.0, vec![Some(vec![3]), None, None]);
            assert_eq!(seen.1, Some(vec![5]));
            let (formations, org) = s
                .read(|r| -> Result<_, StoreError> {
                    Ok((
                        r.scan(Table::Formations, b"", None, 10)?,
                        r.get_raw(Table::Orgs, b"o")?,
                    ))
                })
                .await
                .unwrap();
            assert_eq!(
                formations,
                vec![(b"a".to_vec(), vec![2]), (b"z".to_vec(), vec![3])]
            );
            assert_eq!(org, Some(vec![5]));
            s.shutdown().await;
        });
    }

    #[test]
    fn a_long_run_of_deletes_removes_exactly_its_keys_and_keeps_those_between() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb"), &StoreOptions::default(), None).unwrap();
        let key = |i: u32| i.to_be_bytes().to_vec();
        rt().block_on(async {
            s.write(move |t| -> Result<(), StoreError> {
                for i in 0..400 {
                    t.put_raw(Table::Formations, key(i), vec![1]);
                }
                Ok(())
            })
            .await
            .unwrap();
            // Every third key from 10 to 300 (and one that never existed) goes; 7 is rewritten
            // and 301 written, either side of the run; everything else stays.
            s.write(move |t| -> Result<(), StoreError> {
                for i in (10..=300).step_by(3) {
                    t.delete(Table::Formations, key(i));
                }
                t.delete(Table::Formations, key(1000));
                t.put_raw(Table::Formations, key(7), vec![2]);
                t.put_raw(Table::Formations, key(301), vec![2]);
                Ok(())
            })
            .await
            .unwrap();
            let left = s
                .read(|r| r.scan(Table::Formations, b"", None, 1000))
                .await
                .unwrap();
            let want: Vec<(Vec<u8>, Vec<u8>)> = (0..400)
                .filter(|i| !(10..=300).contains(i) || (i - 10) % 3 != 0)
                .map(|i| (key(i), vec![if i == 7 || i == 301 { 2 } else { 1 }]))
                .collect();
            assert_eq!(left.len(), 400 - 97);
            assert_eq!(left, want);
            s.shutdown().await;
        });
    }

    #[test]
    fn scans_respect_prefix_cursor_and_limit_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb"), &StoreOptions::default(), None).unwrap();
        rt().block_on(async {
            s.write(|t| -> Result<(), StoreError> {
                for k in ["a\0x", "a\0y", "a\0z", "ab\0q", "b\0x"] {
                    t.put_raw(Table::Formations, k.as_bytes().to_vec(), vec![]);
                }
                Ok(())
            })
            .await
            .unwrap();
            let keys_of = |v: Vec<(Vec<u8>, Vec<u8>)>| {
                v.into_iter()
                    .map(|(k, _)| String::from_utf8(k).unwrap())
                    .collect::<Vec<_>>()
            };
            let got = s
                .read(|r| -> Result<_, StoreError> {
                    Ok((
                        r.scan(Table::Formations, b"a\0", None, 10)?,
                        r.scan(Table::Formations, b"a\0", Some(b"a\0x"), 1)?,
                        r.scan_rev(Table::Formations, b"a\0", None, 2)?,
                        r.scan_rev(Table::Formations, b"a\0", Some(b"a\0y"), 5)?,
                    ))
                })
                .await
                .unwrap();
            assert_eq!(keys_of(got.0), ["a\0x", "a\0y", "a\0z"]);
            assert_eq!(keys_of(got.1), ["a\0y"]);
            assert_eq!(keys_of(got.2), ["a\0z", "a\0y"]);
            assert_eq!(keys_of(got.3), ["a\0x"]);
            let n = s
                .write(|t| t.delete_prefix(Table::Formations, b"a\0"))
                .await
                .unwrap();
            assert_eq!(n, 3);
            let left = s
                .read(|r| r.scan(Table::Formations, b"", None, 10))
                .await
                .unwrap();
            assert_eq!(keys_of(left), ["ab\0q", "b\0x"]);
            s.shutdown().await;
        });
    }
}
