//! The writer thread: gathers queued operations into one write transaction (group commit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::copy;
use super::db::CommitStats;
use super::error::RedbResultExt;
use super::seen::{TableCommits, Tables};
use super::{StoreError, Txn};

/// Operations gathered into one commit at most. Bounds the latency a large batch adds.
pub(crate) const MAX_BATCH: usize = 256;
/// Queued operations before `write` waits for room; callers then feel the disk's pace.
pub(crate) const QUEUE_DEPTH: usize = 1024;

/// A queued operation, type-erased so one writer serves every caller.
pub(crate) trait Job: Send {
    /// Runs the operation; `true` when it succeeded and its writes should be applied.
    fn run(&mut self, txn: &mut Txn<'_>) -> Result<bool, StoreError>;
    /// Delivers the outcome once the batch's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>);
}

pub(crate) enum Msg {
    Job(Box<dyn Job>),
    /// Compact the file; nothing else runs meanwhile.
    Compact(oneshot::Sender<Result<(), StoreError>>),
    /// Answered at once by a writer that is not stuck (the service watchdog asks).
    Ping(oneshot::Sender<()>),
    /// After a failed commit: reopen the file (its last durable commit) if space allows.
    Recover(oneshot::Sender<Result<(), StoreError>>),
    Stop,
}

pub(crate) struct TypedJob<F, R, E> {
    f: Option<F>,
    out: Option<Result<R, E>>,
    reply: oneshot::Sender<Result<R, E>>,
}

impl<F, R, E> TypedJob<F, R, E> {
    pub(crate) fn new(f: F, reply: oneshot::Sender<Result<R, E>>) -> Self {
        Self {
            f: Some(f),
            out: None,
            reply,
        }
    }
}

impl<F, R, E> Job for TypedJob<F, R, E>
where
    F: FnOnce(&mut Txn<'_>) -> Result<R, E> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn run(&mut self, txn: &mut Txn<'_>) -> Result<bool, StoreError> {
        let Some(f) = self.f.take() else {
            return Ok(false);
        };
        let out = f(txn);
        let ok = out.is_ok();
        self.out = Some(out);
        Ok(ok)
    }

    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) {
        let result = match (self.out, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(E::from(clone_for_caller(e))),
            (None, Ok(())) => Err(E::from(StoreError::Closed)),
        };
        // The caller may have gone away (request cancelled); the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// Callers of a failed batch learn that the store is latched; the cause is logged once.
fn clone_for_caller(e: &StoreError) -> StoreError {
    if is_full(e) {
        StoreError::Full
    } else {
        StoreError::Poisoned
    }
}

/// Whether a failed commit ran out of space (or quota) rather than failing otherwise. redb's
/// error carries the I/O error as a variant, not as a `source()`.
pub(crate) fn is_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Full)
        || matches!(e, StoreError::Redb { source: redb::Error::Io(io), .. }
            if matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
}

/// A failed commit's latch: set by the writer, cleared by a reopen; read by `/ready`.
#[derive(Default)]
pub(crate) struct Latch {
    pub(crate) set: AtomicBool,
    pub(crate) full: AtomicBool,
    pub(crate) reason: std::sync::Mutex<Option<String>>,
}

impl Latch {
    fn trip(&self, e: &StoreError) {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        if let Ok(mut r) = self.reason.lock() {
            *r = Some(text);
        }
        self.full.store(is_full(e), Ordering::Release);
        self.set.store(true, Ordering::Release);
    }

    fn clear(&self) {
        self.set.store(false, Ordering::Release);
        self.full.store(false, Ordering::Release);
        if let Ok(mut r) = self.reason.lock() {
            *r = None;
        }
    }

    pub(crate) fn error(&self) -> StoreError {
        if self.full.load(Ordering::Acquire) {
            StoreError::Full
        } else {
            StoreError::Poisoned
        }
    }
}

/// The database file and how to open a file of its kind: the writer reopens it after a
/// failed commit and builds compacted copies beside it.
pub(crate) struct DbFile {
    pub(crate) path: std::path::PathBuf,
    pub(crate) open: Box<Opener>,
}

/// Opens (creating if needed) a database file at a path.
pub(crate) type Opener = dyn Fn(&std::path::Path) -> Result<Database, StoreError> + Send;

impl DbFile {
    fn reopen(&self) -> Result<Database, StoreError> {
        (self.open)(&self.path)
    }
}

pub(crate) fn run(
    db: Arc<RwLock<Option<Database>>>,
    mut rx: mpsc::Receiver<Msg>,
    latch: Arc<Latch>,
    file: DbFile,
    on_commit: Option<Arc<dyn Fn(CommitStats) + Send + Sync>>,
    commits: Arc<TableCommits>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut stop = false;
    while !stop {
        match rx.blocking_recv() {
            Some(Msg::Job(j)) => batch.push(j),
            Some(Msg::Compact(reply)) => {
                let _ = reply.send(compact(&db, &file));
                continue;
            }
            Some(Msg::Ping(reply)) => {
                let _ = reply.send(());
                continue;
            }
            Some(Msg::Recover(reply)) => {
                let _ = reply.send(recover(&db, &latch, &file));
                continue;
            }
            Some(Msg::Stop) | None => break,
        }
        let mut compact_after = None;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Compact(reply)) => {
                    compact_after = Some(reply);
                    break;
                }
                Ok(Msg::Ping(reply)) => {
                    let _ = reply.send(());
                }
                Ok(Msg::Recover(reply)) => {
                    // Before the gathered writes commit, so they meet the reopened file.
                    let _ = reply.send(recover(&db, &latch, &file));
                }
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if latch.set.load(Ordering::Acquire) {
            let e = latch.error();
            for j in batch.drain(..) {
                j.finish(Err(&e));
            }
            continue;
        }
        let started = Instant::now();
        let ops = batch.len();
        let committed = match super::db::read_lock(&db).as_ref() {
            Some(d) => commit_batch(d, &mut batch),
            None => Err(StoreError::Closed),
        };
        match committed {
            Ok(written) => {
                // Before any caller learns of its write, so a memo checked after sees it.
                commits.bump(written);
                for j in batch.drain(..) {
                    j.finish(Ok(()));
                }
                if let Some(cb) = &on_commit {
                    cb(CommitStats {
                        ops,
                        elapsed: started.elapsed(),
                    });
                }
            }
            Err(e) => {
                latch.trip(&e);
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), ops,
                    "commit failed; refusing writes until the file is reopened (tried when a \
                     write comes and space allows)");
                for j in batch.drain(..) {
                    j.finish(Err(&e));
                }
            }
        }
        if let Some(reply) = compact_after {
            let _ = reply.send(compact(&db, &file));
        }
    }
    tracing::debug!("state writer stopped");
}

/// Least free space on the file system before a reopen is tried: a reopen may repair.
pub(crate) const RECOVER_FREE_BYTES: u64 = 4 << 20;

/// Drops the database handle whose commit failed (its pages in memory are not trusted: the
/// failed data is never written or synced again) and opens the file at its last durable
/// commit. Tried only with room on the file system; readers wait for the swap.
fn recover(db: &RwLock<Option<Database>>, latch: &Latch, file: &DbFile) -> Result<(), StoreError> {
    if !latch.set.load(Ordering::Acquire) {
        return Ok(());
    }
    let mut guard = db
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    drop(guard.take());
    match file.reopen() {
        Ok(d) => {
            *guard = Some(d);
            latch.clear();
            tracing::warn!("database reopened after a failed commit; writes are accepted again");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "reopening the database failed; writes stay refused");
            Err(latch.error())
        }
    }
}

pub(crate) fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let dir = path.parent()?;
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether the file system holding `path` has room for a reopen.
pub(crate) fn room_to_recover(path: &std::path::Path) -> bool {
    free_bytes(path).is_none_or(|b| b >= RECOVER_FREE_BYTES)
}

/// Compacts the file, readers waiting meanwhile: by rewriting what it holds into a fresh
/// file (memory bounded), in place when the file system runs short of room for the copy
/// (redb's compaction needs no room, but maps every page it may move).
fn compact(db: &RwLock<Option<Database>>, file: &DbFile) -> Result<(), StoreError> {
    let mut guard = db
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(current) = guard.as_mut() else {
        return Err(StoreError::Closed);
    };
    // Asked before each commit of the copy: a statfs, where sizing the copy up front would
    // read every live page once more.
    let room = || free_bytes(&file.path).is_none_or(|free| free >= 2 * RECOVER_FREE_BYTES);
    match copy::rewrite(current, &file.path, &*file.open, &room) {
        Ok(fresh) => {
            // The old handle's file is already unlinked; what its close writes is lost.
            *guard = Some(fresh);
            return Ok(());
        }
        Err(e) => tracing::warn!(error = %e, source = ?std::error::Error::source(&e),
            "compacting into a fresh file failed; compacting in place"),
    }
    // Each call compacts what it can; a few rounds reach the end of the free space.
    for _ in 0..8 {
        match current.compact() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(StoreError::redb("compact")(e.into())),
        }
    }
    Ok(())
}

/// Commits the batch; returns the tables it wrote.
fn commit_batch(db: &Database, batch: &mut [Box<dyn Job>]) -> Result<Tables, StoreError> {
    let mut wtx = db.begin_write().op("begin write")?;
    wtx.set_durability(Durability::Immediate)
        .op("set durability")?;
    let mut written = Tables::default();
    for job in batch.iter_mut() {
        let mut txn = Txn::new(&wtx);
        if job.run(&mut txn)? {
            written = written.union(txn.written());
            txn.apply()?;
        }
    }
    wtx.commit().op("commit")?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_file_system_out_of_space_or_quota_counts_as_full() {
        let io = |kind| StoreError::Redb {
            op: "commit",
            source: redb::Error::Io(std::io::Error::from(kind)),
        };
        assert!(is_full(&io(std::io::ErrorKind::StorageFull)));
        assert!(is_full(&io(std::io::ErrorKind::QuotaExceeded)));
        assert!(is_full(&StoreError::Full));
        assert!(!is_full(&io(std::io::ErrorKind::PermissionDenied)));
        assert!(!is_full(&StoreError::Poisoned));
        assert!(!is_full(&StoreError::Redb {
            op: "commit",
            source: redb::Error::PreviousIo,
        }));
    }
}
