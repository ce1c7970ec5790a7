//! The writer thread: gathers queued operations into one write transaction (group commit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::db::CommitStats;
use super::error::RedbResultExt;
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

/// Callers of a failed batch learn that the store is poisoned; the cause is logged once.
fn clone_for_caller(_e: &StoreError) -> StoreError {
    StoreError::Poisoned
}

pub(crate) fn run(
    db: Arc<RwLock<Database>>,
    mut rx: mpsc::Receiver<Msg>,
    poisoned: Arc<AtomicBool>,
    on_commit: Option<Arc<dyn Fn(CommitStats) + Send + Sync>>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut stop = false;
    while !stop {
        match rx.blocking_recv() {
            Some(Msg::Job(j)) => batch.push(j),
            Some(Msg::Compact(reply)) => {
                let _ = reply.send(compact(&db));
                continue;
            }
            Some(Msg::Ping(reply)) => {
                let _ = reply.send(());
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
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if poisoned.load(Ordering::Acquire) {
            for j in batch.drain(..) {
                j.finish(Err(&StoreError::Poisoned));
            }
            continue;
        }
        let started = Instant::now();
        let ops = batch.len();
        let committed = commit_batch(&super::db::read_lock(&db), &mut batch);
        match committed {
            Ok(()) => {
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
                poisoned.store(true, Ordering::Release);
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), ops,
                    "state commit failed; refusing further writes until restart");
                for j in batch.drain(..) {
                    j.finish(Err(&e));
                }
            }
        }
        if let Some(reply) = compact_after {
            let _ = reply.send(compact(&db));
        }
    }
    tracing::debug!("state writer stopped");
}

fn compact(db: &RwLock<Database>) -> Result<(), StoreError> {
    let mut guard = db
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Each call compacts what it can; a few rounds reach the end of the free space.
    for _ in 0..8 {
        match guard.compact() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(StoreError::redb("compact")(e.into())),
        }
    }
    Ok(())
}

fn commit_batch(db: &Database, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let mut wtx = db.begin_write().op("begin write")?;
    wtx.set_durability(Durability::Immediate)
        .op("set durability")?;
    for job in batch.iter_mut() {
        let mut txn = Txn::new(&wtx);
        if job.run(&mut txn)? {
            txn.apply()?;
        }
    }
    wtx.commit().op("commit")
}
