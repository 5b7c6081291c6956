//! `Storage` on PostgreSQL: writes through the replica's writer (`writer`),
//! reads and queue operations as single statements on a few shared
//! connections (tokio-postgres pipelines concurrent queries on one).
//!
//! Across replicas:
//! * a job is taken by one replica at a time (`FOR UPDATE SKIP LOCKED`,
//!   with a lease of `TAKE_MS`): one replica runs a callback delivery, and
//!   a replica that dies holding a job leaves it to the others at the end
//!   of that lease. A job queued again is free to be taken at once;
//! * leases of claims are never ended early (`take_over` does nothing): a
//!   replica cannot know that another is gone, so a claim left by one that
//!   died is picked up when its lease ends, by the job the claim queued for
//!   that moment.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::{
    PgError, Target, decode, kind_name, migrate, ms, pg_error,
    txn::OpTx,
    writer::{Lock, Pending, PgOp, writer_loop},
};
use crate::{
    domain::{Input, Reply, Session, ids::InstallationKey},
    model::{EventRecord, Job, JobKind, Notification, SessionId, SessionRecord, State},
    store::{
        BackupStats, Ctx, Delivered, Ingested, ListQuery, NewEvent, Page, Pruned, QueueStats,
        Result, SessionView, SignIns, Storage, StoreError, ops,
    },
};

/// Operations waiting for the writer beyond this many make callers wait.
const QUEUE_DEPTH: usize = 16_384;
/// Connections for reads and queue statements.
const READ_CONNECTIONS: usize = 4;
/// How long a replica holds a job it took, renewed every third of it
/// while the job runs (`Storage::hold_jobs`): what a job waits when the
/// replica that took it died. Three missed renewals in a row (a replica
/// stalled for 20 s) are needed before another may run it too.
pub const TAKE_MS: u64 = 30_000;
/// The most prefix matches a search looks at (as on redb).
const SEARCH_CAP: i64 = 1000;

/// A connection that reconnects when it was lost.
struct Conn {
    target: Target,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Conn {
    async fn get(&self) -> Result<Arc<Client>> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(self.target.connect().await.map_err(pg_error)?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// The replica's own connection: it listens for queued work and holds the
/// session-level advisory locks of the background roles it leads (they go
/// when it does, so a replica that dies hands its roles on).
struct Control {
    client: Option<Client>,
    held: std::collections::HashSet<String>,
    /// A connection was up before (a new one then may have missed work).
    was_up: bool,
}

struct Inner {
    target: Target,
    control: tokio::sync::Mutex<Control>,
    reads: Vec<Conn>,
    next: AtomicUsize,
    writer: mpsc::Sender<Box<dyn PgOp>>,
    key: InstallationKey,
    /// Who takes jobs: this process.
    replica: String,
    wake: Arc<Notify>,
    failed: CancellationToken,
    closed: CancellationToken,
}

/// Handle to the PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl PgStore {
    /// Connects, brings the schema up to date (safe when replicas start
    /// together), reads or makes the installation key, and starts the
    /// writer.
    pub async fn open(target: Target) -> Result<PgStore> {
        let mut client = target.connect().await.map_err(pg_error)?;
        migrate::migrate(&mut client).await.map_err(pg_error)?;
        let key = installation_key(&client).await?;
        // The first read connection is the one that migrated.
        let mut first = Some(Arc::new(client));
        let reads = (0..READ_CONNECTIONS)
            .map(|_| Conn {
                target: target.clone(),
                client: tokio::sync::Mutex::new(first.take()),
            })
            .collect();
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let wake = Arc::new(Notify::new());
        let target_for_control = target.clone();
        let writer_wake = wake.clone();
        tokio::spawn(async move { writer_loop(target, rx, &writer_wake).await });
        let store = PgStore {
            inner: Arc::new(Inner {
                target: target_for_control,
                control: tokio::sync::Mutex::new(Control {
                    client: None,
                    held: Default::default(),
                    was_up: false,
                }),
                reads,
                next: AtomicUsize::new(0),
                writer: tx,
                key,
                replica: crate::model::new_id("replica")
                    .map_err(|e| StoreError::Refused(e.to_string()))?,
                wake,
                failed: CancellationToken::new(),
                closed: CancellationToken::new(),
            }),
        };
        drop(store.control().await?);
        let keeper = store.clone();
        tokio::spawn(async move { keeper.keep_listening().await });
        Ok(store)
    }

    /// The control connection, connected (and listening) anew if it was
    /// lost; a new one holds no role and may have missed notifications, so
    /// the worker is woken.
    async fn control(&self) -> Result<tokio::sync::MutexGuard<'_, Control>> {
        let mut control = self.inner.control.lock().await;
        if control.client.as_ref().is_none_or(|c| c.is_closed()) {
            control.held.clear();
            let client = self
                .inner
                .target
                .connect_notifying(Some(self.inner.wake.clone()))
                .await
                .map_err(pg_error)?;
            client
                .batch_execute(&format!("LISTEN {}", super::writer::CHANNEL))
                .await
                .map_err(pg_error)?;
            control.client = Some(client);
            if control.was_up {
                self.inner.wake.notify_one();
            }
            control.was_up = true;
        }
        Ok(control)
    }

    /// Keeps the control connection up until the store closes: queued work
    /// on other replicas wakes this one's worker (the worker's own poll is
    /// the backstop while it is down).
    async fn keep_listening(&self) {
        const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
        loop {
            if self
                .inner
                .closed
                .run_until_cancelled(tokio::time::sleep(EVERY))
                .await
                .is_none()
            {
                return;
            }
            if let Err(e) = self.control().await {
                tracing::warn!(error = %crate::report::chain(&e), "cannot listen for queued work; polling meanwhile");
            }
        }
    }

    async fn client(&self) -> Result<Arc<Client>> {
        if self.inner.closed.is_cancelled() {
            return Err(StoreError::Stopped);
        }
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.reads.len();
        self.inner.reads[i].get().await
    }

    /// Runs `f` in the writer's next batch, holding `locks`; returns once
    /// that batch is committed.
    async fn write<R, F>(&self, locks: Vec<Lock>, f: F) -> Result<R>
    where
        F: FnMut(&mut OpTx<'_>) -> Result<R> + Send + Sync + 'static,
        R: Send + Sync + 'static,
    {
        if self.inner.closed.is_cancelled() {
            return Err(StoreError::Stopped);
        }
        let (reply, rx) = oneshot::channel();
        let op: Box<dyn PgOp> = Box::new(Pending {
            f,
            locks,
            out: None,
            reply,
        });
        self.inner
            .writer
            .send(op)
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Applies `input` to each session in `ids` until `limit` of them did
    /// something, 64 at a time (they share the writer's batches). A session
    /// whose record cannot be read is logged and skipped.
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
                    let step = store.transition_id(&id, input, ctx).await;
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

    async fn transition_id(&self, id: &str, input: Input, ctx: Ctx) -> Result<Reply> {
        let key = self.inner.key;
        let sid = id.to_string();
        let mut locks = vec![Lock::Session(sid.clone())];
        locks.extend(
            input
                .payment_intent()
                .map(|pi| Lock::Payment(pi.to_string())),
        );
        self.write(locks, move |tx| {
            ops::transition(tx, &sid, input.clone(), &ctx, &key)
        })
        .await
    }

    /// Rows of `sql` with a session's record in column 0 and, when `full`,
    /// its detail in column 1 (else the detail is left empty).
    async fn sessions_of(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        full: bool,
    ) -> Result<Vec<Session>> {
        let rows = self
            .client()
            .await?
            .query(sql, params)
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                let rec: SessionRecord = decode("session", r.get(0))?;
                let detail = if full {
                    decode(&rec.id, r.get(1))?
                } else {
                    Default::default()
                };
                Ok(Session { rec, detail })
            })
            .collect()
    }

    /// The list's query: records, or records and details.
    async fn list_rows(&self, query: &ListQuery, full: bool) -> Result<Page<Session>> {
        let limit = query.limit.max(1);
        let state = query.state.map(State::as_str);
        let refund_status = query.refund_status.map(crate::model::RefundStatus::as_str);
        let (before_created, before_id) = match &query.cursor {
            Some((c, id)) => (Some(*c), Some(id.as_str())),
            None => (None, None),
        };
        let detail = if full { "detail" } else { "NULL::bytea" };
        let want = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let mut sessions = match query.q.as_deref().map(str::trim) {
            Some(q) => {
                let (column, prefix) = if q.starts_with("cs_") {
                    ("id", q.to_string())
                } else if q.starts_with("pi_") {
                    ("payment_intent", q.to_string())
                } else {
                    ("email_lc", q.to_lowercase())
                };
                // Keys sort bytewise, so a prefix is one range.
                let upper = format!("{prefix}\u{10FFFF}");
                // Beside an email prefix, a whole word of the name, email or
                // first item; ids only, so the union compares short keys.
                let word = if column == "email_lc" {
                    "UNION (SELECT id FROM sessions WHERE words @> ARRAY[$1]::text[] ORDER BY id LIMIT $3)"
                } else {
                    ""
                };
                let sql = format!(
                    "SELECT record, {detail} FROM sessions WHERE id IN (
                        (SELECT id FROM sessions WHERE {column} >= $1 AND {column} < $2
                         AND starts_with({column}, $1) ORDER BY {column} LIMIT $3)
                        {word}
                     )
                       AND ($4::text IS NULL OR state = $4)
                       AND ($5::int8 IS NULL OR (created, id) < ($5, $6::text))
                       AND ($8::text IS NULL OR refund_status = $8)
                       AND ($9::bool IS NOT TRUE OR disputed)
                     ORDER BY created DESC, id DESC LIMIT $7"
                );
                self.sessions_of(
                    &sql,
                    &[
                        &prefix,
                        &upper,
                        &SEARCH_CAP,
                        &state,
                        &before_created,
                        &before_id,
                        &want,
                        &refund_status,
                        &query.disputed,
                    ],
                    full,
                )
                .await?
            }
            None => {
                let sql = format!(
                    "SELECT record, {detail} FROM sessions
                     WHERE ($1::text IS NULL OR state = $1)
                       AND ($2::int8 IS NULL OR (created, id) < ($2, $3::text))
                       AND ($5::text IS NULL OR refund_status = $5)
                       AND ($6::bool IS NOT TRUE OR disputed)
                     ORDER BY created DESC, id DESC LIMIT $4"
                );
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                    &state,
                    &before_created,
                    &before_id,
                    &want,
                    &refund_status,
                    &query.disputed,
                ];
                self.sessions_of(&sql, &params, full).await?
            }
        };
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let next_cursor = if more {
            sessions
                .last()
                .map(|s| format!("{}:{}", s.rec.created, s.rec.id))
        } else {
            None
        };
        Ok(Page {
            sessions,
            next_cursor,
        })
    }

    /// Stops the store from being used through any of its handles.
    fn check_open(&self) -> Result<()> {
        if self.inner.closed.is_cancelled() {
            Err(StoreError::Stopped)
        } else {
            Ok(())
        }
    }
}

async fn installation_key(client: &Client) -> Result<InstallationKey> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| {
        StoreError::Refused(format!(
            "the operating system's random number generator failed: {e}"
        ))
    })?;
    // The first replica's key wins; every later one reads it.
    client
        .execute(
            "INSERT INTO meta (name, value) VALUES ('installation_key', $1) ON CONFLICT (name) DO NOTHING",
            &[&fresh.as_slice()],
        )
        .await
        .map_err(pg_error)?;
    let row = client
        .query_one(
            "SELECT value FROM meta WHERE name = 'installation_key'",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let bytes: Vec<u8> = row.get(0);
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupted("the installation key has the wrong length".into()))
}

fn job_of(key: &str, due: i64, bytes: &[u8]) -> Option<(u64, Job)> {
    match decode::<Job>(key, bytes) {
        Ok(job) => Some((u64::try_from(due).unwrap_or(0), job)),
        Err(e) => {
            tracing::error!(job = key, error = %e, "skipping an unreadable job");
            None
        }
    }
}

#[async_trait::async_trait]
impl Storage for PgStore {
    async fn ingest(&self, event: NewEvent, ctx: Ctx) -> Result<Ingested> {
        let key = self.inner.key;
        let mut locks = vec![Lock::Event(event.record.id.clone())];
        if let Some((id, input)) = &event.session {
            locks.push(Lock::Session(id.as_str().to_string()));
            locks.extend(
                input
                    .payment_intent()
                    .map(|pi| Lock::Payment(pi.to_string())),
            );
        }
        if let Some(charge) = &event.charge {
            // The session it will apply to, locked in the shared order; a
            // session stored with it since is locked when the batch reads it.
            locks.push(Lock::Payment(charge.payment_intent.clone()));
            let found = self
                .client()
                .await?
                .query_opt(
                    "SELECT id FROM sessions WHERE payment_intent = $1",
                    &[&charge.payment_intent],
                )
                .await
                .map_err(pg_error)?;
            if let Some(row) = found {
                locks.push(Lock::Session(row.get(0)));
            }
        }
        self.write(locks, move |tx| ops::ingest(tx, &event, &ctx, &key))
            .await
    }

    async fn transition(&self, id: &SessionId, input: Input, ctx: Ctx) -> Result<Reply> {
        self.transition_id(id.as_str(), input, ctx).await
    }

    async fn take_over(&self, _ctx: Ctx) -> Result<usize> {
        // See the module notes: leases end on their own.
        self.check_open()?;
        Ok(0)
    }

    async fn reconcile_awaiting(&self, quiet_ms: u64, limit: usize, ctx: Ctx) -> Result<usize> {
        let ids = self.ids_in_state(State::AwaitingPayment).await?;
        self.each_session(ids, Input::Reconcile { quiet_ms }, limit, ctx)
            .await
    }

    async fn record_delivery(&self, delivered: Delivered, ctx: Ctx) -> Result<()> {
        let key = self.inner.key;
        let locks = match &delivered.job {
            Job::Deliver { session_id, .. } | Job::Fulfill { session_id, .. } => {
                vec![Lock::Session(session_id.clone())]
            }
        };
        self.write(locks, move |tx| {
            ops::record_delivery(tx, &delivered, &ctx, &key)
        })
        .await
    }

    async fn resend(&self, session: &SessionId, notification_id: &str, now: u64) -> Result<bool> {
        let (sid, nid) = (session.as_str().to_string(), notification_id.to_string());
        self.write(vec![Lock::Session(sid.clone())], move |tx| {
            ops::resend(tx, &sid, &nid, now)
        })
        .await
    }

    async fn finish_job(&self, key: &str, due: u64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM jobs WHERE key = $1 AND due_ms = $2",
                &[&key, &ms(due)],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn due_jobs(&self, now: u64, limit: usize, kind: JobKind) -> Result<Vec<(u64, Job)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                "UPDATE jobs SET taken_by = $1, taken_until_ms = $2
                 WHERE key IN (
                    SELECT key FROM jobs
                    WHERE kind = $3 AND due_ms <= $4 AND (taken_until_ms IS NULL OR taken_until_ms <= $4)
                    ORDER BY due_ms LIMIT $5 FOR UPDATE SKIP LOCKED
                 )
                 RETURNING key, due_ms, job",
                &[
                    &self.inner.replica,
                    &ms(now.saturating_add(TAKE_MS)),
                    &kind_name(kind),
                    &ms(now),
                    &limit,
                ],
            )
            .await
            .map_err(pg_error)?;
        let mut jobs: Vec<(u64, Job)> = rows
            .iter()
            .filter_map(|r| job_of(r.get(0), r.get(1), r.get(2)))
            .collect();
        jobs.sort_by_key(|(due, _)| *due);
        Ok(jobs)
    }

    async fn job_due(&self, key: &str) -> Result<Option<u64>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT due_ms FROM jobs WHERE key = $1", &[&key])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    async fn release_job(&self, key: &str, due: u64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE jobs SET taken_by = NULL, taken_until_ms = NULL
                 WHERE key = $1 AND due_ms = $2 AND taken_by = $3",
                &[&key, &ms(due), &self.inner.replica],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn hold_jobs(&self, keys: Vec<String>, now: u64) -> Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE jobs SET taken_until_ms = $2 WHERE taken_by = $1 AND key = ANY($3)",
                &[&self.inner.replica, &ms(now.saturating_add(TAKE_MS)), &keys],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*), min(due_ms), min(greatest(due_ms, coalesce(taken_until_ms, 0)))
                 FROM jobs",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let queued: i64 = row.get(0);
        let at = |v: Option<i64>| v.map(|d| u64::try_from(d).unwrap_or(0));
        Ok(QueueStats {
            queued: u64::try_from(queued).unwrap_or(0),
            next_due: at(row.get(1)),
            next_free: at(row.get(2)),
        })
    }

    fn queue_changed(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT record FROM sessions WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(pg_error)?;
        row.map(|r| decode(id.as_str(), r.get(0))).transpose()
    }

    async fn session_full(&self, id: &SessionId) -> Result<Option<Session>> {
        Ok(self
            .sessions_of(
                "SELECT record, detail FROM sessions WHERE id = $1",
                &[&id.as_str()],
                true,
            )
            .await?
            .pop())
    }

    async fn session_view(&self, id: &SessionId) -> Result<Option<SessionView>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT s.record, s.detail, b.body FROM sessions s
                 LEFT JOIN session_bodies b ON b.id = s.id WHERE s.id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let mut session = Session {
            rec: decode(id.as_str(), row.get(0))?,
            detail: decode(id.as_str(), row.get(1))?,
        };
        let body: Option<Vec<u8>> = row.get(2);
        session.detail.raw = body.map(|b| decode(id.as_str(), &b)).transpose()?;
        let event_ids: Vec<&str> = session
            .detail
            .events
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        let notification_ids: Vec<&str> = session
            .detail
            .fulfillments
            .iter()
            .map(|f| f.id.as_str())
            .chain(session.detail.notifications.iter().map(String::as_str))
            .collect();
        let found = client
            .query(
                "SELECT 'e', id, record FROM events WHERE id = ANY($1)
                 UNION ALL SELECT 'n', id, value FROM notifications WHERE id = ANY($2)",
                &[&event_ids, &notification_ids],
            )
            .await
            .map_err(pg_error)?;
        let mut events = std::collections::HashMap::new();
        let mut by_id = std::collections::HashMap::new();
        for r in &found {
            let (which, key): (&str, String) = (r.get(0), r.get(1));
            if which == "e" {
                events.insert(key.clone(), decode::<EventRecord>(&key, r.get(2))?);
            } else {
                by_id.insert(key.clone(), decode::<Notification>(&key, r.get(2))?);
            }
        }
        // Fulfillments' callbacks first, then the others, as listed.
        let notifications = notification_ids
            .iter()
            .filter_map(|id| by_id.remove(*id))
            .collect();
        Ok(Some(SessionView {
            session,
            events,
            notifications,
        }))
    }

    async fn notification(&self, id: &str) -> Result<Option<Notification>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM notifications WHERE id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        row.map(|r| decode(id, r.get(0))).transpose()
    }

    async fn list(&self, query: ListQuery) -> Result<Page<SessionRecord>> {
        let page = self.list_rows(&query, false).await?;
        Ok(Page {
            sessions: page.sessions.into_iter().map(|s| s.rec).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn list_full(&self, query: ListQuery) -> Result<Page<Session>> {
        self.list_rows(&query, true).await
    }

    async fn state_counts(&self) -> Result<Vec<(State, u64)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT state, count(*) FROM sessions GROUP BY state", &[])
            .await
            .map_err(pg_error)?;
        let mut counts: std::collections::HashMap<State, u64> = Default::default();
        for r in rows {
            if let Some(state) = State::parse(r.get(0)) {
                counts.insert(state, u64::try_from(r.get::<_, i64>(1)).unwrap_or(0));
            }
        }
        Ok(State::ALL
            .into_iter()
            .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
            .collect())
    }

    async fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT record FROM events WHERE id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        row.map(|r| decode(id, r.get(0))).transpose()
    }

    async fn event_payload(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT raw FROM events WHERE id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        Ok(row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
    }

    async fn event_count(&self) -> Result<u64> {
        self.count("SELECT count(*) FROM events").await
    }

    async fn session_count(&self) -> Result<u64> {
        self.count("SELECT count(*) FROM sessions").await
    }

    async fn accounts(&self, limit: usize) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT DISTINCT account FROM sessions WHERE account IS NOT NULL ORDER BY account LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn ids_in_state(&self, state: State) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id FROM sessions WHERE state = $1 ORDER BY id",
                &[&state.as_str()],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn prune_event_bodies(
        &self,
        before_ms: u64,
        after: Option<String>,
        scan: usize,
    ) -> Result<Pruned> {
        /// Bodies removed per statement, so webhooks never wait long behind one.
        const GROUP: usize = 64;
        let client = self.client().await?;
        let scan_n = i64::try_from(scan).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT id, received_at_ms, raw IS NOT NULL FROM events
                 WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
                &[&after, &scan_n],
            )
            .await
            .map_err(pg_error)?;
        let before = ms(before_ms);
        let mut old = Vec::new();
        let mut oldest_kept: Option<u64> = None;
        for r in &rows {
            let (id, received, has_body): (String, i64, bool) = (r.get(0), r.get(1), r.get(2));
            if !has_body {
                continue;
            }
            if received < before {
                old.push(id);
            } else {
                let received = u64::try_from(received).unwrap_or(0);
                oldest_kept = Some(oldest_kept.map_or(received, |o| o.min(received)));
            }
        }
        let next = if rows.len() == scan {
            rows.last().map(|r| r.get::<_, String>(0))
        } else {
            None
        };
        let mut pruned = 0;
        for group in old.chunks(GROUP) {
            // A body a batch is writing is skipped, not waited for: the
            // next round prunes it.
            pruned += client
                .execute(
                    "UPDATE events SET raw = NULL WHERE id IN (
                        SELECT id FROM events WHERE id = ANY($1) AND received_at_ms < $2
                        AND raw IS NOT NULL ORDER BY id FOR UPDATE SKIP LOCKED)",
                    &[&group, &before],
                )
                .await
                .map_err(pg_error)?;
        }
        Ok(Pruned {
            pruned,
            next,
            oldest_kept_ms: oldest_kept,
        })
    }

    async fn probe(&self) -> Result<()> {
        let now = crate::time::now_ms();
        self.client()
            .await?
            .execute(
                "INSERT INTO meta (name, value) VALUES ('probed_at_ms', $1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&now.to_le_bytes().as_slice()],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn backup(&self, _dest: &Path) -> Result<BackupStats> {
        Err(StoreError::Refused(BACKUP_WITH_PG_DUMP.into()))
    }

    async fn import(&self, sessions: Vec<Session>) -> Result<()> {
        let locks = sessions
            .iter()
            .map(|s| Lock::Session(s.rec.id.clone()))
            .collect();
        self.write(locks, move |tx| {
            sessions
                .iter()
                .try_for_each(|s| ops::Txn::store_over(tx, None, s))
        })
        .await
    }

    fn failed(&self) -> CancellationToken {
        // Never cancelled: a failed commit on PostgreSQL is rolled back or
        // found again by the caller's retry, so writes need not stop.
        self.inner.failed.clone()
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        // Roles are released with the control connection.
        self.inner.control.lock().await.client = None;
    }

    fn derived_key(&self, purpose: &str) -> [u8; 32] {
        crate::domain::ids::derived_key(&self.inner.key, purpose)
    }

    fn sign_ins(&self) -> Option<Arc<dyn SignIns>> {
        Some(Arc::new(self.clone()))
    }

    async fn lead(&self, role: &str) -> Result<bool> {
        let mut control = self.control().await?;
        if control.held.contains(role) {
            return Ok(true);
        }
        // Any fixed number per role, the same in every replica.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("fulfilld role {role}"));
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let key = i64::from_be_bytes(first);
        let Some(client) = control.client.as_ref() else {
            return Ok(false);
        };
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(pg_error)?
            .get(0);
        if got {
            tracing::info!(role, "this replica now runs the role");
            control.held.insert(role.to_string());
        }
        Ok(got)
    }
}

#[async_trait::async_trait]
impl SignIns for PgStore {
    async fn put(&self, token_sha256: [u8; 32], value: Vec<u8>, expires_ms: u64) -> Result<()> {
        let client = self.client().await?;
        // Expired sign-ins go as new ones come: the table stays as small
        // as the sign-ins alive.
        client
            .execute(
                "DELETE FROM admin_sessions WHERE expires_ms < $1",
                &[&ms(crate::time::now_ms())],
            )
            .await
            .map_err(pg_error)?;
        client
            .execute(
                "INSERT INTO admin_sessions (token_sha256, value, expires_ms) VALUES ($1, $2, $3)",
                &[&token_sha256.as_slice(), &value, &ms(expires_ms)],
            )
            .await
            .map_err(pg_error)?;
        // Bounded as in memory: those expiring first go.
        let kept = i64::try_from(crate::store::SIGN_INS_KEPT).unwrap_or(i64::MAX);
        client
            .execute(
                "DELETE FROM admin_sessions WHERE token_sha256 IN (
                    SELECT token_sha256 FROM admin_sessions ORDER BY expires_ms DESC OFFSET $1)",
                &[&kept],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn get(&self, token_sha256: [u8; 32], now_ms: u64) -> Result<Option<Vec<u8>>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT value FROM admin_sessions WHERE token_sha256 = $1 AND expires_ms > $2",
                &[&token_sha256.as_slice(), &ms(now_ms)],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn remove(&self, token_sha256: [u8; 32]) -> Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM admin_sessions WHERE token_sha256 = $1",
                &[&token_sha256.as_slice()],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}

impl PgStore {
    async fn count(&self, sql: &str) -> Result<u64> {
        let n: i64 = self
            .client()
            .await?
            .query_one(sql, &[])
            .await
            .map_err(pg_error)?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// What `fulfilld backup` says on PostgreSQL.
pub const BACKUP_WITH_PG_DUMP: &str = "fulfilld keeps its state in PostgreSQL (storage.url): back it up with pg_dump (for example `pg_dump --format=custom --file=fulfilld.dump \"$DATABASE_URL\"`), which takes a consistent copy while replicas run";

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}
