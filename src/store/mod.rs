//! Durable state in one redb file.
//!
//! Guarantees:
//! * Every write goes through one writer thread that applies a batch of
//!   operations in one write transaction and commits it with
//!   `Durability::Immediate` before answering any of them (group commit), so
//!   a caller that got `Ok` knows its write survives a crash, and concurrent
//!   webhooks share one fsync instead of queueing for one each.
//! * If any operation of a batch fails, the transaction is aborted and each
//!   operation is re-run alone in its own transaction, so one bad operation
//!   never takes its neighbours down with it. Operations must therefore be
//!   safe to run twice (they only act through the transaction they are given).
//! * Reads run on the blocking pool in read transactions and see a
//!   consistent snapshot.

mod tables;

use std::{path::Path, sync::Arc, thread};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

pub use tables::{BackupStats, ListQuery, Page, Reader, Tx, parse_cursor};

/// Operations waiting for the writer beyond this many make callers wait
/// (backpressure) instead of growing memory without bound.
const QUEUE_DEPTH: usize = 16_384;
/// The most operations one transaction commits.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Not a `source`: the message already says it, and error chains would repeat it.
    #[error("database: {0}")]
    Redb(redb::Error),
    #[error("stored record {key} cannot be decoded: {message}")]
    Corrupt { key: String, message: String },
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// The file's contents are damaged (as opposed to unreachable).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Redb(redb::Error::Corrupted(_)) | StoreError::Corrupt { .. }
        ) || self.to_string().contains("corrupted")
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Redb(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.into()) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// One queued write: `apply` may run twice (see the module guarantees),
/// `finish` runs once with the outcome of the commit.
trait WriteOp: Send {
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Pending<F, R> {
    f: F,
    out: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> WriteOp for Pending<F, R>
where
    F: FnMut(&mut Tx<'_>) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        match (self.f)(tx) {
            Ok(r) => {
                self.out = Some(Ok(r));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                self.out = Some(Err(e));
                Err(StoreError::Task(message))
            }
        }
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(StoreError::Task("operation did not run".into())),
            (Err(e), Some(Err(op_err))) => {
                // The operation's own error explains more than the abort it caused.
                let _ = e;
                Err(op_err)
            }
            (Err(e), _) => Err(e),
        };
        let _ = self.reply.send(result);
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    tx: mpsc::Sender<Box<dyn WriteOp>>,
}

impl Store {
    /// Opens (or creates) the database, checking the integrity of every page
    /// first so a corrupted file is refused rather than trusted.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Redb(redb::StorageError::Io(e).into()))?;
        }
        let db = Database::builder()
            .set_cache_size(16 * 1024 * 1024)
            .set_check_integrity_on_open(true)
            .create(path)?;
        let db = Arc::new(db);
        {
            let w = db.begin_write()?;
            Tx::open(&w)?.ensure_state_counts()?;
            w.commit()?;
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer_db = db.clone();
        thread::Builder::new()
            .name("fulfilld-writer".into())
            .spawn(move || writer_loop(writer_db, rx))
            .map_err(|e| StoreError::Task(format!("cannot start the writer thread: {e}")))?;
        Ok(Store { db, tx })
    }

    /// Runs `f` in a write transaction and returns its result once that
    /// transaction is durably committed. `f` may run twice; see the module docs.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnMut(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let op: Box<dyn WriteOp> = Box::new(Pending {
            f,
            out: None,
            reply,
        });
        self.tx.send(op).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Writes a consistent copy of the database to `dest` while it stays in
    /// use: one read snapshot (redb's MVCC; writers are not blocked) copied
    /// into a new file, made durable, then renamed into place.
    pub async fn backup(&self, dest: &Path) -> Result<BackupStats, StoreError> {
        let db = self.db.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || copy_snapshot(&db, &dest))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` against a consistent snapshot, on the blocking pool.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Reader) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let rtx: ReadTransaction = db.begin_read()?;
            f(&Reader::new(rtx))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// Backs up a database file that no process has open (the server is stopped).
/// Fails with `DatabaseAlreadyOpen` while a server holds it.
pub fn backup_file(src: &Path, dest: &Path) -> Result<BackupStats, StoreError> {
    if !src.exists() {
        return Err(StoreError::Task(format!(
            "{} does not exist",
            src.display()
        )));
    }
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .open(src)?;
    copy_snapshot(&db, dest)
}

/// The error redb gives when another process has the file open.
pub fn is_locked(e: &StoreError) -> bool {
    matches!(e, StoreError::Redb(redb::Error::DatabaseAlreadyOpen))
}

/// Creates `path` for writing, failing if anything (a file, a symlink)
/// is already there; readable by the owner only (it holds customer data).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn copy_snapshot(db: &Database, dest: &Path) -> Result<BackupStats, StoreError> {
    let io = |e: std::io::Error| StoreError::Redb(redb::StorageError::Io(e).into());
    let exists = || {
        StoreError::Task(format!(
            "{} already exists; choose a new file name",
            dest.display()
        ))
    };
    if dest.symlink_metadata().is_ok() {
        return Err(exists());
    }
    if dest.file_name().is_none() {
        return Err(StoreError::Task(format!(
            "{} is not a file path",
            dest.display()
        )));
    }
    // An unpredictable name next to the destination, created exclusively.
    let tmp = dest.with_file_name(format!(".{}.partial", crate::model::new_id("backup")));
    let result = (|| {
        drop(create_private(&tmp).map_err(io)?);
        let snapshot = db.begin_read()?;
        let copy = Database::create(&tmp)?;
        let w = copy.begin_write()?;
        let stats = tables::copy_all(&snapshot, &w)?;
        w.commit()?;
        drop(copy);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        // A hard link never replaces an existing file, unlike rename.
        match std::fs::hard_link(&tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
            // A filesystem without hard links: rename, having checked above.
            Err(_) => std::fs::rename(&tmp, dest).map_err(io)?,
        }
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The new name itself must survive a crash.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(stats)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn writer_loop(db: Arc<Database>, mut rx: mpsc::Receiver<Box<dyn WriteOp>>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match apply_batch(&db, &mut batch) {
            Ok(()) => batch.into_iter().for_each(|op| op.finish(Ok(()))),
            Err(_) if batch.len() > 1 => {
                // Re-run each operation alone so only the failing one fails.
                for mut op in batch {
                    let result = apply_batch(&db, std::slice::from_mut(&mut op));
                    op.finish(result);
                }
            }
            Err(e) => batch
                .into_iter()
                .for_each(|op| op.finish(Err(clone_err(&e)))),
        }
    }
}

fn apply_batch(db: &Database, batch: &mut [Box<dyn WriteOp>]) -> Result<(), StoreError> {
    let w: WriteTransaction = db.begin_write()?;
    let applied =
        Tx::open(&w).and_then(|mut tx| batch.iter_mut().try_for_each(|op| op.apply(&mut tx)));
    match applied {
        Ok(()) => {
            w.commit()?;
            Ok(())
        }
        Err(e) => {
            let _ = w.abort();
            Err(e)
        }
    }
}

fn clone_err(e: &StoreError) -> StoreError {
    StoreError::Task(e.to_string())
}
