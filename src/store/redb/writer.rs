//! The writer thread: batches of queued operations applied in one write
//! transaction and committed together (group commit); see the module docs
//! of `redb` for what a batch guarantees, and `acklog` for the batches of
//! webhook deliveries that are logged instead of committed durably.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    acklog::{self, AckLog},
    memory::Memory,
    tables::Tx,
};
use crate::store::{Result, StoreError};

/// The most operations one transaction commits.
pub(super) const MAX_BATCH: usize = 512;

type OpResult = std::result::Result<(), StoreError>;

/// How an operation is made durable.
pub(super) enum Logging {
    /// By a durable commit.
    No,
    /// By this log entry, when every operation of its batch has one and no
    /// checkpoint is due (`acklog`); else by a durable commit.
    Entry(Vec<u8>),
    /// The end of a replay: its durable commit is the checkpoint that
    /// holds every entry found at open.
    ReplayDone,
}

/// One queued write. `apply` may run again after an abort (see the module docs).
pub(super) trait WriteOp: Send {
    fn apply(&mut self, tx: &mut Tx<'_>) -> OpResult;
    fn finish(self: Box<Self>, committed: OpResult);
    fn logging(&self) -> &Logging;
}

pub(super) struct Pending<F, R> {
    pub(super) f: F,
    pub(super) out: Option<R>,
    pub(super) reply: oneshot::Sender<Result<R>>,
    pub(super) logging: Logging,
}

impl<F, R> WriteOp for Pending<F, R>
where
    F: FnMut(&mut Tx<'_>) -> Result<R> + Send,
    R: Send,
{
    fn apply(&mut self, tx: &mut Tx<'_>) -> OpResult {
        self.out = Some((self.f)(tx)?);
        Ok(())
    }

    fn finish(self: Box<Self>, committed: OpResult) {
        let result = match (committed, self.out) {
            (Ok(()), Some(out)) => Ok(out),
            (Ok(()), None) => Err(StoreError::Stopped),
            (Err(e), _) => Err(e),
        };
        let _ = self.reply.send(result);
    }

    fn logging(&self) -> &Logging {
        &self.logging
    }
}

/// The database, shared by reads, the writer thread and backups, until
/// `close` takes it out (so it can be dropped, which closes the file cleanly).
pub(super) type Shared = Arc<RwLock<Option<Database>>>;

pub(super) fn writer_loop(
    db: Shared,
    mut rx: mpsc::Receiver<Box<dyn WriteOp>>,
    failed: CancellationToken,
    memory: &Memory,
    mut log: Option<AckLog>,
) {
    /// Should the writer thread die (a panic in redb or an operation), the
    /// process is told to stop like after a failed commit: every later write
    /// would fail, and only a restart brings the store back.
    struct StopOnPanic(CancellationToken);
    impl Drop for StopOnPanic {
        fn drop(&mut self) {
            if thread::panicking() {
                tracing::error!(
                    "the database writer stopped unexpectedly; stopping so fulfilld restarts"
                );
                self.0.cancel();
            }
        }
    }
    let _guard = StopOnPanic(failed.clone());
    let stopped = AtomicBool::new(false);
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if stopped.load(Ordering::Relaxed) {
            batch
                .into_iter()
                .for_each(|op| op.finish(Err(StoreError::Stopped)));
            continue;
        }
        let guard = db.read().unwrap_or_else(|p| p.into_inner());
        let Some(open) = guard.as_ref() else {
            // Closed at shutdown: nothing more is written.
            batch
                .into_iter()
                .for_each(|op| op.finish(Err(StoreError::Stopped)));
            continue;
        };
        let committed = commit_batch(open, &mut batch, memory, log.as_mut());
        drop(guard);
        if let Err(e) = committed {
            // The commit may or may not be on disk: nothing written from now
            // on could be trusted to follow it. Stop, and let the process exit.
            tracing::error!(error = %crate::report::chain(&e), "a database commit failed; stopping all writes so fulfilld restarts");
            stopped.store(true, Ordering::Relaxed);
            failed.cancel();
            let mut first = Some(e);
            for op in batch {
                let err = first.take().unwrap_or(StoreError::Stopped);
                op.finish(Err(err));
            }
        }
    }
}

/// Applies and commits a batch. Operations that fail are answered with
/// their error and left out; the rest run again in a new transaction.
/// Returns an error only when a commit (or a transaction) itself failed.
/// Memory follows a commit (and its log entries) before any operation of
/// it is answered, so a caller that saw its write done finds the queue and
/// counts up to date, and no job runs on a change not yet durable.
fn commit_batch(
    db: &Database,
    batch: &mut Vec<Box<dyn WriteOp>>,
    memory: &Memory,
    mut log: Option<&mut AckLog>,
) -> Result<()> {
    loop {
        let logged = batch
            .iter()
            .all(|op| matches!(op.logging(), Logging::Entry(_)))
            && log
                .as_ref()
                .is_some_and(|l| l.may_log(acklog::batch_len(entries(batch))));
        let replays = batch
            .iter()
            .any(|op| matches!(op.logging(), Logging::ReplayDone));
        // A durable commit also holds everything logged before it: it is
        // the checkpoint that lets the log start again.
        let checkpoint = match (&log, logged) {
            (Some(l), false) => l.checkpoint(replays),
            _ => None,
        };
        let mut w: WriteTransaction = db.begin_write()?;
        w.set_two_phase_commit(true);
        if logged {
            w.set_durability(Durability::None)
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
        }
        let mut failed_at = None;
        let (changes, dirty) = {
            let mut tx = Tx::open(&w)?;
            for (i, op) in batch.iter_mut().enumerate() {
                if let Err(e) = op.apply(&mut tx) {
                    failed_at = Some((i, e));
                    break;
                }
            }
            if failed_at.is_none() {
                match (log.as_deref_mut(), checkpoint) {
                    (Some(l), _) if logged => {
                        // Durable in the log before redb commits, so no
                        // reader sees what a crash could take back.
                        let at = l
                            .append(entries(batch))
                            .map_err(|e| StoreError::CommitUnknown(Box::new(StoreError::Io(e))))?;
                        tx.set_log_position(at)?;
                    }
                    (_, Some(at)) => tx.set_log_position(at)?,
                    _ => {}
                }
            }
            (std::mem::take(&mut tx.changes), tx.dirty)
        };
        match failed_at {
            None if !dirty => {
                // Nothing to make durable (every operation found its work done).
                w.abort()?;
                for op in batch.drain(..) {
                    op.finish(Ok(()));
                }
                return Ok(());
            }
            None => {
                w.commit()
                    .map_err(|e| StoreError::CommitUnknown(Box::new(e)))?;
                if let (Some(log), Some(at)) = (log.as_deref_mut(), checkpoint) {
                    log.checkpointed(at);
                }
                memory.apply(changes);
                for op in batch.drain(..) {
                    op.finish(Ok(()));
                }
                return Ok(());
            }
            Some((i, e)) => {
                w.abort()?;
                let op = batch.remove(i);
                if matches!(e, StoreError::Io(_) | StoreError::Backend(_)) {
                    // The storage itself failed mid-transaction: treat as a
                    // failed commit rather than blame one operation.
                    op.finish(Err(StoreError::Stopped));
                    return Err(StoreError::CommitUnknown(Box::new(e)));
                }
                op.finish(Err(e));
                if batch.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// The log entries of a batch's operations.
fn entries(batch: &[Box<dyn WriteOp>]) -> impl Iterator<Item = &[u8]> {
    batch.iter().filter_map(|op| match op.logging() {
        Logging::Entry(p) => Some(p.as_slice()),
        _ => None,
    })
}
