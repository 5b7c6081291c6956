//! The embedded backend: one redb file.
//!
//! * Writes go through one writer thread that applies a batch of operations
//!   in one write transaction and commits it (two-phase, `Durability::
//!   Immediate`) before answering any of them: group commit, so concurrent
//!   webhooks share one sync. Two-phase commit makes the newest commit the
//!   one a restart sees even if its pages are later damaged: when the file
//!   was not closed cleanly, every page's checksum is verified at open and
//!   a failure is reported instead of silently rolling back to the commit
//!   before it (and losing acknowledged events). A file closed cleanly is
//!   opened without that full read (see `open`); damage at rest in it shows
//!   when a damaged record is read, as a decode or corruption error.
//! * A batch of webhook deliveries only is made durable by the
//!   acknowledgement log instead (one append and one data sync, `acklog`):
//!   its commit is not durable until a checkpoint, and a restart after a
//!   crash applies the log's entries again (`Storage::replay`).
//! * A commit that wrote nothing is not made (no syncs for nothing).
//! * The queue's due order and the per-state counts are kept in memory
//!   (`memory`), changed only after the commit that made a change durable.
//! * An operation that fails (a record that does not decode) aborts the
//!   batch's transaction; the batch then runs again without it, so one bad
//!   record never takes its neighbours down. An operation is a pure
//!   function of the transaction's contents and its captured input, so
//!   running it again gives the same result.
//! * A failed commit stops all writes for good (see `store` guarantees).
//! * Reads run on the blocking pool in read transactions: consistent snapshots.
//! * The file lock is exclusive, so any lease not owned by this process
//!   belongs to one that is gone (`take_over`).

mod acklog;
mod file;
mod memory;
mod migrate;
mod reader;
mod recovery;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
    thread,
};

use redb::{Database, ReadableDatabase};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    BackupStats, Ctx, Delivered, Ingested, ListQuery, NewEvent, Page, QueueStats, Result,
    SessionView, Storage, StoreError,
};
use crate::{
    domain::{Input, Reply, Session, ids::InstallationKey},
    model::{EventRecord, Job, JobKind, Notification, SessionId, SessionRecord, State},
};
use acklog::{AckLog, Entry};

use crate::store::ops;
use memory::Memory;
use reader::Reader;
use recovery::start_checkpoints;
use tables::Tx;
use writer::{Logging, Pending, Shared, WriteOp, writer_loop};

pub use file::{backup_file, dump_file};
use file::{check_header, check_tables, copy_snapshot, create_private, needs_recovery};

/// Operations waiting for the writer beyond this many make callers wait
/// (backpressure) instead of growing memory without bound.
const QUEUE_DEPTH: usize = 16_384;
/// redb's page cache (its read cache and write buffer together): enough
/// for the hot part of the indexes. Measured with 100,000 sessions, 16 MiB
/// made the dashboard no faster (p50 within run-to-run spread) and peak
/// RSS 12 MB higher under a draining backlog; 6 MiB instead of 8 kept the
/// dashboard as fast (lists p50 0.33-0.34 ms) and fulfilling with callbacks
/// under 64 MB once webhooks went through the log (59-61 MB, was 65-69).
const CACHE_BYTES: usize = 6 * 1024 * 1024;
fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(m) => StoreError::Corrupted(m),
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
            redb::Error::Io(e) => StoreError::Io(e),
            other => backend(other),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { redb::Error::from(e).into() }
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

/// Handle to the redb database; cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    db: Shared,
    tx: mpsc::Sender<Box<dyn WriteOp>>,
    failed: CancellationToken,
    key: Key,
    memory: Arc<Memory>,
    /// Acknowledged deliveries found in the log at open, until `replay`,
    /// and their generation.
    unreplayed: Arc<Mutex<(Vec<Entry>, u64)>>,
    /// The database file (none for tests on other backends).
    path: Option<std::path::PathBuf>,
}

impl RedbStore {
    /// Opens the database at `path`, or creates it (mode 0600, in a folder
    /// made 0700) when nothing is there. An existing file that is empty or
    /// not a redb database is refused, never replaced. A file that was not
    /// closed cleanly (a crash, a kill, a lost disk) has every page's
    /// checksum verified before it is trusted, so a damaged file is refused;
    /// one closed cleanly opens without reading every page (the check costs
    /// about 1.5 ms per MB here, 0.8-1.2 s for 100,000 sessions).
    pub fn open(path: &Path) -> Result<RedbStore> {
        Self::open_with(path, true)
    }

    /// `open`; without `checkpoints` only writes and `close` checkpoint
    /// (tests that need the log to keep its entries).
    fn open_with(path: &Path, checkpoints: bool) -> Result<RedbStore> {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                check_header(path)?;
                builder.set_check_integrity_on_open(needs_recovery(path)?);
                let db = builder.open(path)?;
                check_tables(&db, path)?;
                Self::start(db, Some(path), checkpoints)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::create(&builder, path, checkpoints)
            }
            Err(e) => Err(StoreError::Io(e)),
        }
    }

    /// Creates the database under a temporary name and gives it its real
    /// name only once its tables and key are committed: a first start that
    /// dies half way leaves no empty file behind to be refused at the next.
    fn create(builder: &redb::Builder, path: &Path, checkpoints: bool) -> Result<RedbStore> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| StoreError::Refused(format!("{} is not a file path", path.display())))?;
        let tmp = path.with_file_name(format!(".{name}.creating"));
        // What an interrupted first start left: nothing was acknowledged in it.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::Io(e)),
            _ => {}
        }
        let file = create_private(&tmp).map_err(StoreError::Io)?;
        let store = builder
            .create_with_backend(redb::backends::FileBackend::new(file)?)
            .map_err(StoreError::from)
            .and_then(|db| Self::start(db, Some(path), checkpoints));
        let named = store.and_then(|store| {
            // A link never replaces a file that appeared meanwhile; a
            // filesystem without links gets a rename (checked just before).
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::Io(e));
                }
                Err(_) if !path.exists() => std::fs::rename(&tmp, path).map_err(StoreError::Io)?,
                Err(e) => return Err(StoreError::Io(e)),
            }
            file::sync_dir(path).map_err(StoreError::Io)?;
            Ok(store)
        });
        let _ = std::fs::remove_file(&tmp);
        named
    }

    /// A store on any redb backend (tests inject failing storage this way).
    #[cfg(test)]
    fn open_on(backend: impl redb::StorageBackend) -> Result<RedbStore> {
        Self::start(
            Database::builder().create_with_backend(backend)?,
            None,
            false,
        )
    }

    /// Prepares an open database (an older layout upgraded, the
    /// installation key), opens the acknowledgement log beside `path` (none
    /// without a path: tests on other backends), reads the queue and the
    /// counts into memory, and starts its writer thread.
    fn start(db: Database, path: Option<&Path>, checkpoints: bool) -> Result<RedbStore> {
        let (key, position) = {
            let mut w = db.begin_write()?;
            w.set_two_phase_commit(true);
            let upgraded = migrate::upgrade(&w)?;
            let mut tx = Tx::open(&w)?;
            let key = tx.installation_key()?;
            let position = tx.log_position()?;
            drop(tx);
            w.commit()?;
            if upgraded > 0 {
                tracing::info!(
                    sessions = upgraded,
                    "upgraded the database to its new layout"
                );
            }
            (key, position)
        };
        let (log, unreplayed) = match path {
            Some(path) => {
                let (log, entries) = AckLog::open(path, acklog::database_id(&key), position)?;
                if !log.direct() {
                    tracing::info!(
                        log = %log.path().display(),
                        "the filesystem refuses direct I/O: the acknowledgement log is written through the page cache"
                    );
                }
                if !entries.is_empty() {
                    tracing::warn!(
                        deliveries = entries.len(),
                        log = %log.path().display(),
                        "fulfilld stopped without a checkpoint: applying the webhook deliveries it acknowledged since"
                    );
                }
                (Some(log), entries)
            }
            None => (None, Vec::new()),
        };
        let logs = log.is_some();
        let (jobs, counts) = tables::read_memory(&db.begin_read()?)?;
        let memory = Arc::new(Memory::rebuilt(jobs, counts));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let failed = CancellationToken::new();
        let db: Shared = Arc::new(RwLock::new(Some(db)));
        let (writer_db, writer_failed, writer_memory) =
            (db.clone(), failed.clone(), memory.clone());
        thread::Builder::new()
            .name("fulfilld-writer".into())
            .spawn(move || writer_loop(writer_db, rx, writer_failed, &writer_memory, log))
            .map_err(StoreError::Io)?;
        if logs && checkpoints {
            start_checkpoints(tx.downgrade())?;
        }
        Ok(RedbStore {
            db,
            tx,
            failed,
            key: Arc::new(key),
            memory,
            unreplayed: Arc::new(Mutex::new((unreplayed, position.generation))),
            path: path.map(Path::to_path_buf),
        })
    }

    /// Runs `f` in a write transaction; returns once that is durably committed.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnMut(&mut Tx<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_as(Logging::No, f).await
    }

    /// `write`, made durable as `logging` says.
    async fn write_as<R, F>(&self, logging: Logging, f: F) -> Result<R>
    where
        F: FnMut(&mut Tx<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.enqueue(logging, f)
            .await?
            .await
            .map_err(|_| StoreError::Stopped)?
    }

    /// Queues a write; operations are applied in the order they are queued.
    async fn enqueue<R, F>(&self, logging: Logging, f: F) -> Result<oneshot::Receiver<Result<R>>>
    where
        F: FnMut(&mut Tx<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        if self.failed.is_cancelled() {
            return Err(StoreError::Stopped);
        }
        let (reply, rx) = oneshot::channel();
        let op: Box<dyn WriteOp> = Box::new(Pending {
            f,
            out: None,
            reply,
            logging,
        });
        self.tx.send(op).await.map_err(|_| StoreError::Stopped)?;
        Ok(rx)
    }

    /// Applies `input` to each session in `ids`, one operation each, until
    /// `limit` of them did something. A session whose record cannot be read
    /// is logged and skipped, so one bad record never stops the round (or
    /// the start) for every other. Operations go in groups of up to 64 at
    /// once, so the writer commits each group together.
    async fn each_session(
        &self,
        ids: Vec<String>,
        input: Input,
        limit: usize,
        ctx: Ctx,
    ) -> Result<usize> {
        let mut done = 0;
        let mut ids = ids.into_iter().peekable();
        while done < limit && ids.peek().is_some() {
            let mut group = tokio::task::JoinSet::new();
            for id in ids.by_ref().take((limit - done).min(64)) {
                let (store, input, ctx) = (self.clone(), input.clone(), ctx.clone());
                group.spawn(async move {
                    let key = store.key.clone();
                    let sid = id.clone();
                    let step = store
                        .write(move |tx| ops::transition(tx, &sid, input.clone(), &ctx, &key))
                        .await;
                    (id, step)
                });
            }
            while let Some(joined) = group.join_next().await {
                let (id, step) = joined.map_err(StoreError::Task)?;
                match step {
                    Ok(Reply::Done(_)) => done += 1,
                    Ok(_) => {}
                    Err(e @ (StoreError::Decode { .. } | StoreError::Corrupted(_))) => {
                        tracing::error!(session = %id, error = %crate::report::chain(&e), "skipping a session whose record cannot be read");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    /// What reads from memory answer once the store is closed or stopped,
    /// like reads from the file.
    fn open_or_stopped(&self) -> Result<()> {
        if self.failed.is_cancelled() {
            return Err(StoreError::Stopped);
        }
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|_| ()).ok_or(StoreError::Stopped)
    }

    /// Runs `f` against a consistent snapshot, on the blocking pool.
    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Reader) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let guard = db.read().unwrap_or_else(|p| p.into_inner());
            let db = guard.as_ref().ok_or(StoreError::Stopped)?;
            f(&Reader::new(db.begin_read()?))
        })
        .await
        .map_err(StoreError::Task)?
    }
}

#[async_trait::async_trait]
impl Storage for RedbStore {
    async fn ingest(&self, event: NewEvent, ctx: Ctx) -> Result<Ingested> {
        let key = self.key.clone();
        let entry = acklog::payload(ctx.now, ctx.entropy, &event.raw);
        self.write_as(Logging::Entry(entry), move |tx| {
            ops::ingest(tx, &event, &ctx, &key)
        })
        .await
    }

    async fn replay(
        &self,
        ctx: Ctx,
        to_event: &(dyn Fn(Vec<u8>, u64) -> Option<NewEvent> + Sync),
    ) -> Result<usize> {
        self.replay_log(ctx, to_event).await
    }

    async fn transition(&self, id: &SessionId, input: Input, ctx: Ctx) -> Result<Reply> {
        let (id, key) = (id.clone(), self.key.clone());
        self.write(move |tx| ops::transition(tx, id.as_str(), input.clone(), &ctx, &key))
            .await
    }

    async fn take_over(&self, ctx: Ctx) -> Result<usize> {
        let ids = self.ids_in_state(State::Fulfilling).await?;
        self.each_session(ids, Input::TakeOver, usize::MAX, ctx)
            .await
    }

    async fn reconcile_awaiting(&self, quiet_ms: u64, limit: usize, ctx: Ctx) -> Result<usize> {
        let ids = self.ids_in_state(State::AwaitingPayment).await?;
        self.each_session(ids, Input::Reconcile { quiet_ms }, limit, ctx)
            .await
    }

    async fn record_delivery(&self, delivered: Delivered, ctx: Ctx) -> Result<()> {
        let key = self.key.clone();
        self.write(move |tx| ops::record_delivery(tx, &delivered, &ctx, &key))
            .await
    }

    async fn resend(&self, session: &SessionId, notification_id: &str, now: u64) -> Result<bool> {
        let (sid, nid) = (session.clone(), notification_id.to_string());
        self.write(move |tx| ops::resend(tx, sid.as_str(), &nid, now))
            .await
    }

    async fn finish_job(&self, key: &str, due: u64) -> Result<()> {
        // Memory is what the file holds once every write so far is answered:
        // a job already gone or moved needs no write.
        if self.memory.job_due(key) != Some(due) {
            return self.open_or_stopped();
        }
        let key = key.to_string();
        self.write(move |tx| {
            if tx.job_due(&key)? == Some(due) {
                tx.unschedule(&key)?;
            }
            Ok(())
        })
        .await
    }

    async fn due_jobs(&self, now: u64, limit: usize, kind: JobKind) -> Result<Vec<(u64, Job)>> {
        self.open_or_stopped()?;
        Ok(self.memory.due_jobs(now, limit, kind))
    }

    async fn job_due(&self, key: &str) -> Result<Option<u64>> {
        self.open_or_stopped()?;
        Ok(self.memory.job_due(key))
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        self.open_or_stopped()?;
        Ok(QueueStats {
            queued: self.memory.queued(),
            next_due: self.memory.next_due(),
            next_free: self.memory.next_due(),
        })
    }

    fn queue_changed(&self) -> Arc<tokio::sync::Notify> {
        self.memory.wake()
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        let id = id.clone();
        self.read(move |r| r.session(id.as_str())).await
    }

    async fn session_full(&self, id: &SessionId) -> Result<Option<Session>> {
        let id = id.clone();
        self.read(move |r| r.load(id.as_str())).await
    }

    async fn session_view(&self, id: &SessionId) -> Result<Option<SessionView>> {
        let id = id.clone();
        self.read(move |r| {
            let Some(mut session) = r.load(id.as_str())? else {
                return Ok(None);
            };
            session.detail.raw = r.body(id.as_str())?;
            let mut events = std::collections::HashMap::new();
            for e in &session.detail.events {
                if let Some(stored) = r.event(&e.id)? {
                    events.insert(e.id.clone(), stored);
                }
            }
            let notifications = r.session_notifications(&session.detail)?;
            Ok(Some(SessionView {
                session,
                events,
                notifications,
            }))
        })
        .await
    }

    async fn notification(&self, id: &str) -> Result<Option<Notification>> {
        let id = id.to_string();
        self.read(move |r| r.notification(&id)).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page<SessionRecord>> {
        self.read(move |r| r.list(&query)).await
    }

    async fn list_full(&self, query: ListQuery) -> Result<Page<Session>> {
        self.read(move |r| {
            let page = r.list(&query)?;
            let sessions = page
                .sessions
                .into_iter()
                .map(|rec| {
                    let detail = r.load(&rec.id)?.map(|s| s.detail).unwrap_or_default();
                    Ok(Session { rec, detail })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Page {
                sessions,
                next_cursor: page.next_cursor,
            })
        })
        .await
    }

    async fn state_counts(&self) -> Result<Vec<(State, u64)>> {
        self.open_or_stopped()?;
        Ok(self.memory.state_counts())
    }

    async fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        let id = id.to_string();
        self.read(move |r| r.event(&id)).await
    }

    async fn event_payload(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let id = id.to_string();
        self.read(move |r| r.event_payload(&id)).await
    }

    async fn event_count(&self) -> Result<u64> {
        self.read(|r| r.event_count()).await
    }

    async fn session_count(&self) -> Result<u64> {
        self.read(|r| r.session_count()).await
    }

    async fn ids_in_state(&self, state: State) -> Result<Vec<String>> {
        self.read(move |r| r.ids_in_state(state)).await
    }

    async fn accounts(&self, limit: usize) -> Result<Vec<String>> {
        self.read(move |r| r.accounts(limit)).await
    }

    async fn prune_event_bodies(
        &self,
        before_ms: u64,
        after: Option<String>,
        scan: usize,
    ) -> Result<super::Pruned> {
        /// Removals per transaction: each rewrites one event's value, so a
        /// group this size keeps the writer's turn short for the webhooks
        /// queued behind it.
        const GROUP: usize = 64;
        let reader::Prunable {
            old,
            next,
            oldest_kept_ms,
        } = self
            .read(move |r| r.prunable_events(before_ms, after.as_deref(), scan))
            .await?;
        let mut pruned = 0;
        for group in old.chunks(GROUP) {
            let ids = group.to_vec();
            pruned += self
                .write(move |tx| {
                    let mut n = 0;
                    for id in &ids {
                        n += u64::from(tx.prune_event(id, before_ms)?);
                    }
                    Ok(n)
                })
                .await?;
        }
        Ok(super::Pruned {
            pruned,
            next,
            oldest_kept_ms,
        })
    }

    async fn probe(&self) -> Result<()> {
        self.read(|r| r.session_count()).await?;
        let now = crate::time::now_ms();
        self.write(move |tx| tx.touch(now)).await
    }

    async fn backup(&self, dest: &Path) -> Result<BackupStats> {
        let db = self.db.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let guard = db.read().unwrap_or_else(|p| p.into_inner());
            copy_snapshot(guard.as_ref().ok_or(StoreError::Stopped)?, &dest)
        })
        .await
        .map_err(StoreError::Task)?
    }

    async fn import(&self, sessions: Vec<Session>) -> Result<()> {
        self.write(move |tx| sessions.iter().try_for_each(|s| tx.store(s)))
            .await
    }

    fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    async fn close(&self) {
        // A last checkpoint, so the next start has nothing to apply again
        // (skipped when writes have stopped: the log then keeps its entries).
        if let Err(e) = self.checkpoint().await
            && !matches!(e, StoreError::Stopped)
        {
            tracing::warn!(error = %crate::report::chain(&e), "no checkpoint before closing; the next start applies the log again");
        }
        // Waits for the batch being committed and the reads in progress,
        // then drops the database: redb closes the file cleanly, so the next
        // start needs no repair, and the file lock is released.
        let db = self.db.clone();
        let closed = tokio::task::spawn_blocking(move || {
            drop(db.write().unwrap_or_else(|p| p.into_inner()).take());
        })
        .await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, "the database could not be closed cleanly");
        }
    }

    fn derived_key(&self, purpose: &str) -> [u8; 32] {
        crate::domain::ids::derived_key(&self.key, purpose)
    }
}

/// The installation key as read at open.
type Key = Arc<InstallationKey>;
