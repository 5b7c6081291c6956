//! The replica's writer: one task, one connection, that runs a batch of
//! queued operations in one transaction and commits it before answering
//! any of them (group commit, as on redb: concurrent webhooks share one
//! commit and one WAL flush; `synchronous_commit` is left on, so a commit
//! that returned is durable).
//!
//! A batch:
//! 1. takes a transaction-scoped advisory lock on every session and event
//!    its operations name, in one order shared by every replica (so two
//!    replicas' batches never deadlock). Every write to a session or its
//!    outbox goes through a batch holding its lock, so the rows read next
//!    are the newest committed ones and stay so until the commit: the
//!    claim's compare-and-set, the fulfillment id and the event dedup hold
//!    across replicas;
//! 2. reads those rows, runs the operations in memory (`txn`), loading any
//!    row an operation turns out to need and running it again;
//! 3. writes back every changed row in a few statements, wakes the other
//!    replicas when it queued work (`pg_notify`, delivered at commit), and
//!    commits.
//!
//! An operation that fails (a record that does not decode) fails alone:
//! its writes were never sent. A statement that fails fails the batch,
//! which is retried when PostgreSQL asks for it (a deadlock, a
//! serialization failure, a lock wait past `lock_timeout`); a failure
//! that one operation's data may have caused (a value PostgreSQL refuses)
//! runs each operation again on its own, so only that one fails;
//! otherwise every operation in it gets the error, nothing of it was
//! committed, and the caller answers with an error (Stripe then
//! redelivers: dedup makes that safe). A commit whose
//! answer was lost is safe the same way: what it did is found by the retry.

use std::collections::{HashMap, HashSet};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::{Client, Transaction, error::SqlState};

use super::{
    Target, pg_error,
    txn::{EventWrite, JobWrite, Need, OpTx, Rows, Writes, is_not_loaded},
};
use crate::{
    domain::Session,
    model::{EventRecord, Notification, fulfill_key},
    store::{Result, StoreError},
};

/// The most operations in one batch: a batch holds its locks until its
/// commit, so an unbounded one would make everyone behind it wait.
const MAX_BATCH: usize = 256;
/// Runs of one operation in a batch before its reads are taken as a bug
/// (each run loads what the last one missed).
const MAX_RUNS: usize = 8;
/// Attempts of a batch PostgreSQL asked to retry.
const MAX_ATTEMPTS: usize = 3;
/// The channel replicas listen on for queued work.
pub const CHANNEL: &str = "fulfilld_jobs";

/// Advisory lock namespaces (the two-key form: its key space is apart from
/// the one-key locks of migrations and leader loops).
const LOCK_SESSION: i32 = 1;
const LOCK_EVENT: i32 = 2;

/// A row a batch locks before it reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lock {
    Session(String),
    Event(String),
}

/// A queued operation, as the writer sees it.
pub trait PgOp: Send + Sync {
    fn locks(&self) -> &[Lock];
    /// Runs on the batch's rows: `None` when it finished (its result is
    /// kept for `answer`), or the rows it needs loaded first.
    fn apply(&mut self, rows: &mut Rows) -> Option<HashSet<Need>>;
    /// Sends the result, or the batch's failure.
    fn answer(self: Box<Self>, failed: Option<StoreError>);
}

/// An operation: a closure over the shared `Txn`, and where its answer goes.
pub struct Pending<F, R> {
    pub f: F,
    pub locks: Vec<Lock>,
    pub out: Option<Result<R>>,
    pub reply: oneshot::Sender<Result<R>>,
}

impl<F, R> PgOp for Pending<F, R>
where
    F: FnMut(&mut OpTx<'_>) -> Result<R> + Send + Sync,
    R: Send + Sync,
{
    fn locks(&self) -> &[Lock] {
        &self.locks
    }

    fn apply(&mut self, rows: &mut Rows) -> Option<HashSet<Need>> {
        let mut tx = OpTx::new(rows);
        match (self.f)(&mut tx) {
            Ok(r) => {
                let parts = tx.into_parts();
                rows.commit(parts);
                self.out = Some(Ok(r));
                None
            }
            Err(e) if is_not_loaded(&e) => Some(tx.missing()),
            Err(e) => {
                self.out = Some(Err(e));
                None
            }
        }
    }

    fn answer(self: Box<Self>, failed: Option<StoreError>) {
        let out = match failed {
            Some(e) => Err(e),
            None => self.out.unwrap_or(Err(StoreError::Stopped)),
        };
        let _ = self.reply.send(out);
    }
}

/// Runs batches until every sender is gone.
pub async fn writer_loop(target: Target, mut rx: mpsc::Receiver<Box<dyn PgOp>>, wake: &Notify) {
    let mut client: Option<Client> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&target, &mut client, &mut batch).await;
        match outcome {
            Err(e) if batch.len() > 1 && may_be_one_operation(&e) => {
                tracing::warn!(error = %crate::report::chain(&e), ops = batch.len(), "a write batch failed; running its operations one by one");
                for op in batch {
                    let mut alone = vec![op];
                    let outcome = run_batch(&target, &mut client, &mut alone).await;
                    answer(alone, outcome, wake);
                }
            }
            outcome => answer(batch, outcome, wake),
        }
    }
}

/// Runs a batch, retrying it when PostgreSQL asks for that.
async fn run_batch(
    target: &Target,
    client: &mut Option<Client>,
    batch: &mut [Box<dyn PgOp>],
) -> Result<bool> {
    let mut attempt = 1;
    loop {
        let outcome = run_once(target, client, batch).await;
        match &outcome {
            Err(StoreError::Backend(e)) if attempt < MAX_ATTEMPTS && retryable(e.as_ref()) => {
                tracing::debug!(attempt, "PostgreSQL asked to retry a batch");
                attempt += 1;
            }
            _ => return outcome,
        }
    }
}

/// Answers every operation of a batch with its outcome.
fn answer(batch: Vec<Box<dyn PgOp>>, outcome: Result<bool>, wake: &Notify) {
    match outcome {
        Ok(queued) => {
            if queued {
                wake.notify_waiters();
                wake.notify_one();
            }
            batch.into_iter().for_each(|op| op.answer(None));
        }
        Err(e) => {
            tracing::error!(error = %crate::report::chain(&e), ops = batch.len(), "a write batch failed; nothing of it was committed");
            let message = crate::report::chain(&e);
            for op in batch {
                op.answer(Some(StoreError::Backend(message.clone().into())));
            }
        }
    }
}

fn retryable(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let code = match e.downcast_ref::<super::PgError>() {
        Some(super::PgError::Query(e)) => e.code(),
        _ => None,
    };
    code.is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            // lock_timeout: the holder is slow or frozen; a frozen one's
            // transaction ends with idle_in_transaction_session_timeout.
            || *c == SqlState::LOCK_NOT_AVAILABLE
    })
}

/// Whether a failed batch may have failed for one of its operations alone
/// (a value PostgreSQL refuses, an operation that keeps reading new rows),
/// rather than for the database: then each operation is run again on its
/// own, so one bad operation does not fail the webhooks batched with it.
fn may_be_one_operation(e: &StoreError) -> bool {
    match e {
        StoreError::Refused(_) => true,
        StoreError::Backend(e) => match e.downcast_ref::<super::PgError>() {
            Some(super::PgError::Query(e)) => e.code().is_some_and(|c| {
                // Data exceptions, integrity violations, program limits.
                matches!(&c.code()[..2], "22" | "23" | "54")
            }),
            _ => false,
        },
        _ => false,
    }
}

/// One attempt at a batch; true when it queued work.
async fn run_once(
    target: &Target,
    client: &mut Option<Client>,
    batch: &mut [Box<dyn PgOp>],
) -> Result<bool> {
    let c = match client {
        Some(c) if !c.is_closed() => c,
        _ => client.insert(target.connect().await.map_err(pg_error)?),
    };
    let tx = c.transaction().await.map_err(pg_error)?;
    lock(&tx, batch.iter().flat_map(|op| op.locks().iter())).await?;
    let mut rows = Rows::default();
    let first: HashSet<Need> = batch
        .iter()
        .flat_map(|op| op.locks().iter())
        .flat_map(|l| match l {
            Lock::Session(id) => vec![Need::Session(id.clone()), Need::Job(fulfill_key(id))],
            Lock::Event(id) => vec![Need::Event(id.clone())],
        })
        .collect();
    load(&tx, &mut rows, first).await?;
    for op in batch.iter_mut() {
        let mut runs = 0;
        while let Some(missing) = op.apply(&mut rows) {
            runs += 1;
            let missing = rows.unknown(missing);
            if runs >= MAX_RUNS || missing.is_empty() {
                return Err(StoreError::Refused(
                    "an operation kept reading rows it had not named".into(),
                ));
            }
            load(&tx, &mut rows, missing).await?;
        }
    }
    let writes = std::mem::take(&mut rows.writes);
    let queued = writes.queues_work();
    if !writes.is_empty() {
        write_back(&tx, &writes).await?;
        if queued {
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .await
                .map_err(pg_error)?;
        }
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(queued)
}

/// Takes the advisory locks of `locks`, in (namespace, hash) order.
async fn lock<'a>(tx: &Transaction<'_>, locks: impl Iterator<Item = &'a Lock>) -> Result<()> {
    let mut spaces = Vec::new();
    let mut keys = Vec::new();
    for l in locks.collect::<HashSet<_>>() {
        let (space, key) = match l {
            Lock::Session(id) => (LOCK_SESSION, id),
            Lock::Event(id) => (LOCK_EVENT, id),
        };
        spaces.push(space);
        keys.push(key.as_str());
    }
    if keys.is_empty() {
        return Ok(());
    }
    tx.execute(
        "SELECT count(pg_advisory_xact_lock(s, h)) FROM (
            SELECT s, hashtext(k) AS h FROM unnest($1::int4[], $2::text[]) AS t(s, k)
            ORDER BY 1, 2
        ) ordered",
        &[&spaces, &keys],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Reads the rows in `needs` into `rows`; an id not found is recorded as absent.
async fn load(tx: &Transaction<'_>, rows: &mut Rows, needs: HashSet<Need>) -> Result<()> {
    let mut sessions = Vec::new();
    let mut events = Vec::new();
    let mut notifications = Vec::new();
    let mut jobs = Vec::new();
    for n in needs {
        match n {
            Need::Session(id) => sessions.push(id),
            Need::Event(id) => events.push(id),
            Need::Notification(id) => notifications.push(id),
            Need::Job(k) => jobs.push(k),
        }
    }
    if !sessions.is_empty() {
        let found = tx
            .query(
                "SELECT id, record, detail FROM sessions WHERE id = ANY($1)",
                &[&sessions],
            )
            .await
            .map_err(pg_error)?;
        for id in &sessions {
            rows.sessions.insert(id.clone(), None);
        }
        for r in found {
            let id: String = r.get(0);
            let s = super::decode(&id, r.get(1)).and_then(|rec| {
                Ok(Session {
                    rec,
                    detail: super::decode(&id, r.get(2))?,
                })
            });
            match s {
                Ok(s) => {
                    rows.sessions.insert(id, Some(s));
                }
                Err(e) => {
                    rows.broken.insert(Need::Session(id), e.to_string());
                }
            }
        }
    }
    if !events.is_empty() {
        let found = tx
            .query(
                "SELECT id, record FROM events WHERE id = ANY($1)",
                &[&events],
            )
            .await
            .map_err(pg_error)?;
        for id in &events {
            rows.events.insert(id.clone(), None);
        }
        for r in found {
            let id: String = r.get(0);
            match super::decode::<EventRecord>(&id, r.get(1)) {
                Ok(rec) => {
                    rows.events.insert(id, Some(rec));
                }
                Err(e) => {
                    rows.broken.insert(Need::Event(id), e.to_string());
                }
            }
        }
    }
    if !notifications.is_empty() {
        let found = tx
            .query(
                "SELECT id, value FROM notifications WHERE id = ANY($1)",
                &[&notifications],
            )
            .await
            .map_err(pg_error)?;
        for id in &notifications {
            rows.notifications.insert(id.clone(), None);
        }
        for r in found {
            let id: String = r.get(0);
            match super::decode::<Notification>(&id, r.get(1)) {
                Ok(n) => {
                    rows.notifications.insert(id, Some(n));
                }
                Err(e) => {
                    rows.broken.insert(Need::Notification(id), e.to_string());
                }
            }
        }
    }
    if !jobs.is_empty() {
        let found = tx
            .query("SELECT key, due_ms FROM jobs WHERE key = ANY($1)", &[&jobs])
            .await
            .map_err(pg_error)?;
        for k in &jobs {
            rows.jobs.insert(k.clone(), None);
        }
        for r in found {
            let due: i64 = r.get(1);
            rows.jobs
                .insert(r.get(0), Some(u64::try_from(due).unwrap_or(0)));
        }
    }
    Ok(())
}

/// Sorted by key, so two statements touching the same rows lock them in
/// the same order.
fn sorted<V>(m: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Writes every changed row: one statement per table and kind of change.
pub(super) async fn write_back(tx: &Transaction<'_>, w: &Writes) -> Result<()> {
    if !w.sessions.is_empty() {
        let mut cols = SessionColumns::default();
        for (_, s) in sorted(&w.sessions) {
            cols.push(s)?;
        }
        tx.execute(
            "INSERT INTO sessions (id, state, created, email_lc, payment_intent, record, detail)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::bytea[], $7::bytea[])
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, created = excluded.created,
               email_lc = excluded.email_lc, payment_intent = excluded.payment_intent,
               record = excluded.record, detail = excluded.detail",
            &[&cols.id, &cols.state, &cols.created, &cols.email_lc, &cols.payment_intent, &cols.record, &cols.detail],
        )
        .await
        .map_err(pg_error)?;
    }
    if !w.bodies.is_empty() {
        let (mut ids, mut bodies) = (Vec::new(), Vec::new());
        for (id, body) in sorted(&w.bodies) {
            ids.push(id.as_str());
            bodies.push(super::encode(body)?);
        }
        tx.execute(
            "INSERT INTO session_bodies (id, body) SELECT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            &[&ids, &bodies],
        )
        .await
        .map_err(pg_error)?;
    }
    if !w.events.is_empty() {
        let mut new = EventColumns::default();
        let (mut ids, mut recs) = (Vec::new(), Vec::new());
        for (id, e) in sorted(&w.events) {
            match e {
                EventWrite::New(rec, raw) => new.push(rec, raw)?,
                EventWrite::Update(rec) => {
                    ids.push(id.as_str());
                    recs.push(super::encode(rec)?);
                }
            }
        }
        if !new.id.is_empty() {
            // Under the event's lock a first delivery is new; a conflict
            // would mean a row written outside the locks, kept as it is.
            tx.execute(
                "INSERT INTO events (id, session_id, received_at_ms, record, raw)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::bytea[])
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &new.id,
                    &new.session_id,
                    &new.received,
                    &new.record,
                    &new.raw,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        if !ids.is_empty() {
            tx.execute(
                "UPDATE events e SET record = u.record
                 FROM unnest($1::text[], $2::bytea[]) AS u(id, record) WHERE e.id = u.id",
                &[&ids, &recs],
            )
            .await
            .map_err(pg_error)?;
        }
    }
    if !w.notifications.is_empty() {
        let (mut ids, mut sessions, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (id, n) in sorted(&w.notifications) {
            ids.push(id.as_str());
            sessions.push(n.session_id.as_str());
            values.push(super::encode(n)?);
        }
        tx.execute(
            "INSERT INTO notifications (id, session_id, value)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
             ON CONFLICT (id) DO UPDATE SET value = excluded.value",
            &[&ids, &sessions, &values],
        )
        .await
        .map_err(pg_error)?;
    }
    if !w.jobs.is_empty() {
        let (mut keys, mut kinds, mut sessions, mut dues, mut jobs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut removed = Vec::new();
        for (key, j) in sorted(&w.jobs) {
            match j {
                JobWrite::Put(due, job) => {
                    keys.push(key.as_str());
                    kinds.push(super::kind_name(job.kind()));
                    sessions.push(super::job_session(job));
                    dues.push(super::ms(*due));
                    jobs.push(super::encode(job)?);
                }
                JobWrite::Remove => removed.push(key.as_str()),
            }
        }
        if !removed.is_empty() {
            tx.execute("DELETE FROM jobs WHERE key = ANY($1)", &[&removed])
                .await
                .map_err(pg_error)?;
        }
        if !keys.is_empty() {
            // A job put again is free to be taken again.
            tx.execute(
                "INSERT INTO jobs (key, kind, session_id, due_ms, job)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bytea[])
                 ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, session_id = excluded.session_id,
                   due_ms = excluded.due_ms, job = excluded.job, taken_by = NULL, taken_until_ms = NULL",
                &[&keys, &kinds, &sessions, &dues, &jobs],
            )
            .await
            .map_err(pg_error)?;
        }
    }
    Ok(())
}

/// A session row per column, for one `unnest` insert.
#[derive(Default)]
struct SessionColumns<'a> {
    id: Vec<&'a str>,
    state: Vec<&'static str>,
    created: Vec<i64>,
    email_lc: Vec<Option<String>>,
    payment_intent: Vec<Option<&'a str>>,
    record: Vec<Vec<u8>>,
    detail: Vec<Vec<u8>>,
}

impl<'a> SessionColumns<'a> {
    fn push(&mut self, s: &'a Session) -> Result<()> {
        self.id.push(&s.rec.id);
        self.state.push(s.rec.state.as_str());
        self.created.push(s.rec.created);
        // Search keys only (the record keeps the exact values): PostgreSQL
        // text cannot hold NUL, which a customer-typed string might.
        self.email_lc.push(
            s.rec
                .customer_email
                .as_deref()
                .map(|e| e.to_lowercase().replace('\0', "\u{FFFD}")),
        );
        self.payment_intent.push(
            s.rec
                .payment_intent
                .as_deref()
                .filter(|pi| !pi.contains('\0')),
        );
        self.record.push(super::encode(&s.rec)?);
        self.detail.push(super::encode(&s.detail)?);
        Ok(())
    }
}

/// New event rows per column.
#[derive(Default)]
struct EventColumns<'a> {
    id: Vec<&'a str>,
    session_id: Vec<Option<&'a str>>,
    received: Vec<i64>,
    record: Vec<Vec<u8>>,
    /// NULL for an empty body: one pruned on redb (`migrate-to`).
    raw: Vec<Option<&'a [u8]>>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, rec: &'a EventRecord, raw: &'a [u8]) -> Result<()> {
        self.id.push(&rec.id);
        self.session_id.push(rec.session_id.as_deref());
        self.received.push(super::ms(rec.received_at_ms));
        self.record.push(super::encode(rec)?);
        self.raw.push((!raw.is_empty()).then_some(raw));
        Ok(())
    }
}
