//! The storage seam: what fulfillment, the worker and the HTTP layer need
//! from durable state, as one trait that a backend implements (redb today,
//! see `redb`). Callers never see a backend's types or transactions.
//!
//! Every backend guarantees:
//! * a write returns `Ok` only once it is durable (committed and synced);
//! * each write is one transaction: a session's transition (`transition`,
//!   `ingest`) loads the session, applies `domain::step` and stores the
//!   result and its effects together, or not at all;
//! * after a commit whose outcome is unknown (an I/O error while
//!   committing) the store refuses every later write with
//!   `StoreError::Stopped` and cancels `failed()`, so the process exits and
//!   its supervisor restarts it on a database it can trust again.

pub mod ops;
pub mod pg;
pub mod redb;

use std::{path::Path, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::{
    domain::{Input, Policy, Reply, Session},
    model::{EventRecord, Job, JobKind, Notification, SessionId, SessionRecord, State},
};

pub use self::redb::RedbStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file's contents are damaged (a failed checksum, a broken page).
    #[error("the database file is damaged: {0}")]
    Corrupted(String),
    /// A stored record no longer decodes (damage, or a change of format).
    #[error("stored record {key} cannot be decoded")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode a record")]
    Encode(#[source] serde_json::Error),
    /// A file exists at the database path but is not a database (empty, or another format).
    #[error("{path} exists but is not a fulfilld database ({reason}); refusing to replace it")]
    NotADatabase { path: String, reason: String },
    /// Another process has the database open.
    #[error("another process has the database open")]
    Locked,
    #[error("database")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A commit failed part way: it may or may not be on disk.
    #[error("a commit failed and its outcome is unknown; writes are stopped")]
    CommitUnknown(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Writes were stopped after an earlier commit's outcome was unknown.
    #[error("writes are stopped after a failed commit; fulfilld must restart")]
    Stopped,
    #[error("database I/O")]
    Io(#[source] std::io::Error),
    #[error("database task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A request the store refuses, in words for the person who made it.
    #[error("{0}")]
    Refused(String),
    /// A copy of the file alone would miss webhook deliveries that were
    /// acknowledged: they are in the acknowledgement log, applied at the
    /// next start.
    #[error(
        "{deliveries} acknowledged webhook deliveries are in {log} but not yet in the database (fulfilld stopped without a checkpoint)"
    )]
    Unapplied { deliveries: usize, log: String },
}

impl StoreError {
    /// The file's contents are damaged (as opposed to unreachable).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupted(_) | StoreError::Decode { .. } | StoreError::NotADatabase { .. }
        )
    }
}

/// What a step needs from the caller: the policy, who asks, the time and some entropy.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub policy: Arc<Policy>,
    pub owner: Arc<str>,
    pub now: u64,
    pub entropy: u64,
}

/// A context for store tests: a default policy without callbacks, at `now`.
#[cfg(test)]
pub(crate) fn test_ctx(now: u64) -> Ctx {
    let retry = crate::domain::RetryPolicy {
        base_ms: 1000,
        max_ms: 60_000,
        give_up_ms: 600_000,
    };
    Ctx {
        policy: Arc::new(Policy::new(
            retry,
            60_000,
            false,
            crate::domain::Channels::default(),
        )),
        owner: "boot_test".into(),
        now,
        entropy: 0,
    }
}

/// A webhook delivery to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub record: EventRecord,
    /// The body exactly as received.
    pub raw: Vec<u8>,
    /// The session it moves on, with the domain's input, when it is acted on.
    pub session: Option<(SessionId, Input)>,
    /// A refund or dispute, applied to the session with its payment intent
    /// (or kept until that session arrives).
    pub charge: Option<crate::domain::ChargeEvent>,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// First delivery of this event id, acted on.
    Recorded,
    /// First delivery of an event fulfilld does not act on.
    Ignored,
    /// First delivery of a charge event for a payment no session has yet:
    /// kept, and applied when that session arrives.
    Unmatched,
    /// A redelivery: nothing changed.
    Duplicate,
}

/// One delivery attempt of an outbox entry, to record.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The `Job::Deliver` that ran.
    pub job: Job,
    pub attempt: crate::model::DeliveryAttempt,
    pub outcome: crate::domain::outbox::Attempt,
    /// A callback body refreshed from Stripe, kept for every later retry.
    pub refreshed_body: Option<String>,
}

/// A session with everything its pages show, from one snapshot.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub session: Session,
    pub events: std::collections::HashMap<String, EventRecord>,
    pub notifications: Vec<Notification>,
}

/// One round of pruning raw event bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Bodies removed this round.
    pub pruned: u64,
    /// Where the next round goes on (the last event id looked at); `None`
    /// once the whole log has been looked at.
    pub next: Option<String>,
    /// When the oldest body this round kept was received.
    pub oldest_kept_ms: Option<u64>,
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupStats {
    pub sessions: u64,
    pub events: u64,
    pub rows: u64,
}

/// One record of a whole database, as `fulfilld migrate-to` copies it
/// from a stopped redb file to PostgreSQL. The installation key comes
/// first (fulfillment ids and signing keys derive from it).
#[derive(Debug, Clone)]
pub enum Row {
    InstallationKey(crate::domain::ids::InstallationKey),
    Session(Box<Session>),
    /// The Checkout Session as last retrieved, by session id.
    Body(String, serde_json::Value),
    /// An event and its body as received (empty once pruned).
    Event(EventRecord, Vec<u8>),
    Notification(Notification),
    /// A queued job: its key, due time and job.
    Job(String, u64, Job),
    /// Charge events kept for a payment intent no session has yet.
    Unmatched(String, Vec<crate::domain::ChargeEvent>),
}

/// What `fulfilld migrate-to` copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub sessions: u64,
    pub events: u64,
    pub notifications: u64,
    pub jobs: u64,
}

/// The queue at a glance, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: u64,
    /// When the earliest job falls due.
    pub next_due: Option<u64>,
    /// When a job can next be taken: a due job a replica has taken (this
    /// one included, while it runs it) is free only when the hold ends.
    pub next_free: Option<u64>,
}

/// One page of sessions, newest first.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub sessions: Vec<T>,
    /// `created:id` of the last session, when more may follow.
    pub next_cursor: Option<String>,
}

/// What to list.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub state: Option<State>,
    /// Only sessions with this refund status.
    pub refund_status: Option<crate::model::RefundStatus>,
    /// Only sessions with a dispute.
    pub disputed: bool,
    pub q: Option<String>,
    pub cursor: Option<(i64, String)>,
    pub limit: usize,
}

impl ListQuery {
    /// Whether `rec` passes the filters (the search aside).
    pub fn admits(&self, rec: &SessionRecord) -> bool {
        self.state.is_none_or(|s| s == rec.state)
            && self.refund_status.is_none_or(|r| r == rec.refund_status())
            && (!self.disputed || rec.disputed())
    }
}

/// Parses a list cursor `created:id`.
pub fn parse_cursor(raw: &str) -> Option<(i64, String)> {
    let (created, id) = raw.split_once(':')?;
    let created = created.parse().ok()?;
    crate::model::is_session_id(id).then(|| (created, id.to_string()))
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Durable state. See the module guarantees.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    // Session transitions.
    /// Records a webhook delivery: dedup by event id, the event, and its
    /// session's transition, in one transaction.
    async fn ingest(&self, event: NewEvent, ctx: Ctx) -> Result<Ingested>;
    /// Applies one input to a session (see `domain::step`).
    async fn transition(&self, id: &SessionId, input: Input, ctx: Ctx) -> Result<Reply>;
    /// Ends the leases of processes known to be gone (only a backend that
    /// can know that, like redb's exclusive file lock, does anything) and
    /// makes their sessions due. Returns how many.
    async fn take_over(&self, ctx: Ctx) -> Result<usize>;
    /// Queues a re-check of up to `limit` sessions awaiting their payment
    /// and quiet for `quiet_ms`. Returns how many.
    async fn reconcile_awaiting(&self, quiet_ms: u64, limit: usize, ctx: Ctx) -> Result<usize>;

    // The outbox and the queue.
    /// Records one delivery attempt of an outbox entry and what follows it.
    async fn record_delivery(&self, delivered: Delivered, ctx: Ctx) -> Result<()>;
    /// Queues a `failed` outbox entry again; false when there is nothing to resend.
    async fn resend(&self, session: &SessionId, notification_id: &str, now: u64) -> Result<bool>;
    /// Removes the job `key` if it is still queued at `due` (its work is done).
    async fn finish_job(&self, key: &str, due: u64) -> Result<()>;
    /// Jobs of `kind` due at or before `now`, earliest first. A backend
    /// shared by replicas hands them to this process: the others do not see
    /// them until they are queued again or a while has passed (PostgreSQL:
    /// `pg::TAKE_MS`), so ask only for as many as will run now.
    async fn due_jobs(&self, now: u64, limit: usize, kind: JobKind) -> Result<Vec<(u64, Job)>>;
    async fn job_due(&self, key: &str) -> Result<Option<u64>>;
    /// Hands back a job `due_jobs` gave this process that it will not run
    /// now (the same job is still running here), so that it is not held
    /// for a whole `pg::TAKE_MS` if this process stops.
    async fn release_job(&self, _key: &str, _due: u64) -> Result<()> {
        Ok(())
    }
    /// Extends this process's hold on the jobs it is running (`keys`) to
    /// `now` + `pg::TAKE_MS`: a job outlives its first hold only while the
    /// process running it is alive.
    async fn hold_jobs(&self, _keys: Vec<String>, _now: u64) -> Result<()> {
        Ok(())
    }
    async fn queue_stats(&self) -> Result<QueueStats>;
    /// Notified when a commit queued a job: the worker waits on this
    /// instead of rescanning after every write.
    fn queue_changed(&self) -> Arc<tokio::sync::Notify>;

    // Reads.
    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>>;
    async fn session_full(&self, id: &SessionId) -> Result<Option<Session>>;
    async fn session_view(&self, id: &SessionId) -> Result<Option<SessionView>>;
    async fn notification(&self, id: &str) -> Result<Option<Notification>>;
    async fn list(&self, query: ListQuery) -> Result<Page<SessionRecord>>;
    /// `list`, with each session's detail (the JSON API shows line items).
    async fn list_full(&self, query: ListQuery) -> Result<Page<Session>>;
    async fn state_counts(&self) -> Result<Vec<(State, u64)>>;
    async fn event(&self, id: &str) -> Result<Option<EventRecord>>;
    /// The exact body of an event as received; `None` when unknown or
    /// pruned after `storage.event_retention_days`.
    async fn event_payload(&self, id: &str) -> Result<Option<Vec<u8>>>;
    async fn event_count(&self) -> Result<u64>;
    async fn session_count(&self) -> Result<u64>;
    /// Ids of every session in `state`.
    async fn ids_in_state(&self, state: State) -> Result<Vec<String>>;
    /// The connected accounts (Stripe Connect) sessions were recorded on,
    /// up to `limit`, in id order: the missed-event sweep looks at each.
    async fn accounts(&self, limit: usize) -> Result<Vec<String>>;

    // Retention.
    /// Looks at up to `scan` events after `after` (by id) and removes the
    /// raw bodies of those received before `before_ms`, keeping their
    /// records (so redeliveries are still recognised). Removals are written
    /// in small transactions, so webhooks never wait long behind them.
    async fn prune_event_bodies(
        &self,
        before_ms: u64,
        after: Option<String>,
        scan: usize,
    ) -> Result<Pruned>;

    /// Applies again the deliveries acknowledged but not yet in the tables
    /// when the last process stopped without a checkpoint (a crash): each
    /// body with the time it was received, turned into an event by
    /// `to_event` (None: it no longer parses; left out and logged). Call
    /// once at start, before serving. Returns how many were applied.
    async fn replay(
        &self,
        _ctx: Ctx,
        _to_event: &(dyn Fn(Vec<u8>, u64) -> Option<NewEvent> + Sync),
    ) -> Result<usize> {
        Ok(0)
    }

    // Operations.
    /// A read and a committed write: the database answers and can write.
    async fn probe(&self) -> Result<()>;
    /// Writes a consistent copy to `dest` (a new file) while in use.
    async fn backup(&self, dest: &Path) -> Result<BackupStats>;
    /// Stores whole sessions as given, replacing any with the same id
    /// (tests, benchmarks and moves between backends).
    async fn import(&self, sessions: Vec<Session>) -> Result<()>;
    /// Cancelled once writes have stopped for good (see the module guarantees).
    fn failed(&self) -> CancellationToken;
    /// Closes the store at shutdown: later reads and writes fail with
    /// `Stopped`; the backend closes its files cleanly (redb then needs no
    /// repair at the next start).
    async fn close(&self);
    /// A secret for `purpose`, derived from the database's own: the same for
    /// every process on this database and after every restart.
    fn derived_key(&self, purpose: &str) -> [u8; 32];
    /// Whether this process should run the background loop `role` now
    /// (the missed-event sweep, reconciliation, retention): loops that must
    /// run once however many processes share the database. A process that
    /// owns its database always leads; on a shared one, one process at a
    /// time holds each role, until it stops or loses its connection.
    async fn lead(&self, _role: &str) -> Result<bool> {
        Ok(true)
    }
    /// Where dashboard sign-ins live when several processes share this
    /// database; None: one process owns the database and keeps them in
    /// memory (a restart signs the admin out).
    fn sign_ins(&self) -> Option<Arc<dyn SignIns>> {
        None
    }
}

/// Dashboard sign-ins kept at once, in memory or in a database.
pub const SIGN_INS_KEPT: usize = 256;

/// Dashboard sign-ins kept in the database, so that every replica knows
/// them (`Storage::sign_ins`). Keys are SHA-256 digests of the cookie's
/// token bound to the admin's credential: the token itself is never
/// stored, and a changed password ends every sign-in. A backend keeps at
/// most `SIGN_INS_KEPT` of them, dropping those that expire first.
#[async_trait::async_trait]
pub trait SignIns: Send + Sync + 'static {
    /// Stores a sign-in until `expires_ms`.
    async fn put(&self, token_sha256: [u8; 32], value: Vec<u8>, expires_ms: u64) -> Result<()>;
    /// The sign-in under this digest, unless it expired by `now_ms`.
    async fn get(&self, token_sha256: [u8; 32], now_ms: u64) -> Result<Option<Vec<u8>>>;
    /// Ends a sign-in (logout), for every replica at once.
    async fn remove(&self, token_sha256: [u8; 32]) -> Result<()>;
}

/// A shared handle to the configured backend.
pub type Store = Arc<dyn Storage>;

/// Opens the redb database at `path`, creating it when no file is there.
pub fn open_redb(path: &Path) -> Result<Store> {
    Ok(Arc::new(RedbStore::open(path)?))
}
