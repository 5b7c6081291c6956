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
use tokio_postgres::{Client, Statement, Transaction, error::SqlState, types::ToSql};

use super::{
    Target, pg_error,
    txn::{EventWrite, JobWrite, Need, OpTx, Rows, Writes, is_not_loaded},
};
use crate::{
    domain::{ChargeEvent, Session},
    model::{EventRecord, Job, Notification, fulfill_key},
    store::{Result, StoreError},
};

/// The most operations in one batch: a batch holds its locks until its
/// commit, so an unbounded one would make everyone behind it wait.
const MAX_BATCH: usize = 256;
/// Runs of one operation in a batch before its reads are taken as a bug
/// (each run loads what the last one missed). A session's first write that
/// applies the charge events kept for its payment takes a run per event (its
/// outbox entries), so the bound follows `ops::MAX_UNMATCHED`.
const MAX_RUNS: usize = 8 + 2 * crate::store::ops::MAX_UNMATCHED;
/// Attempts of a batch PostgreSQL asked to retry.
const MAX_ATTEMPTS: usize = 3;
/// The channel replicas listen on for queued work.
pub const CHANNEL: &str = "fulfilld_jobs";

/// Advisory lock namespaces (the two-key form: its key space is apart from
/// the one-key locks of migrations and leader loops).
const LOCK_SESSION: i32 = 1;
const LOCK_EVENT: i32 = 2;
const LOCK_PAYMENT: i32 = 3;

/// A row a batch locks before it reads. An operation names the locks it
/// knows it needs; a row it turns out to read besides is locked when the
/// batch loads it (out of the shared order, so two batches may then
/// deadlock: PostgreSQL ends one, and it is retried).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lock {
    Session(String),
    Event(String),
    /// A payment intent: the link between a session and the charge events
    /// that name its payment.
    Payment(String),
}

impl Lock {
    /// The lock a read of `need` needs, if any.
    fn of(need: &Need) -> Option<Lock> {
        match need {
            Need::Session(id) => Some(Lock::Session(id.clone())),
            Need::Event(id) => Some(Lock::Event(id.clone())),
            Need::Payment(pi) | Need::Unmatched(pi) => Some(Lock::Payment(pi.clone())),
            Need::Notification(_) | Need::Job(_) => None,
        }
    }
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
    let mut client: Option<(Client, Statements)> = None;
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
    client: &mut Option<(Client, Statements)>,
    batch: &mut [Box<dyn PgOp>],
) -> Result<bool> {
    let mut attempt = 1;
    loop {
        let outcome = run_once(target, client, batch).await;
        if let (Err(_), Some((_, st))) = (&outcome, client.as_mut()) {
            st.0.clear();
        }
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
    client: &mut Option<(Client, Statements)>,
    batch: &mut [Box<dyn PgOp>],
) -> Result<bool> {
    if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
        *client = Some((
            target.connect().await.map_err(pg_error)?,
            Statements::default(),
        ));
    }
    let Some((c, st)) = client.as_mut() else {
        return Err(StoreError::Stopped);
    };
    let tx = c.transaction().await.map_err(pg_error)?;
    let mut locked: HashSet<Lock> = batch
        .iter()
        .flat_map(|op| op.locks().iter().cloned())
        .collect();
    lock(&tx, st, locked.iter()).await?;
    let mut rows = Rows::default();
    let first: HashSet<Need> = locked
        .iter()
        .flat_map(|l| match l {
            Lock::Session(id) => vec![Need::Session(id.clone()), Need::Job(fulfill_key(id))],
            Lock::Event(id) => vec![Need::Event(id.clone())],
            // A session's first write reads the charge events kept for
            // its payment; a charge event, the session with it.
            Lock::Payment(pi) => vec![Need::Payment(pi.clone()), Need::Unmatched(pi.clone())],
        })
        .collect();
    load(&tx, st, &mut rows, first).await?;
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
            let unlocked: Vec<Lock> = missing
                .iter()
                .filter_map(Lock::of)
                .filter(|l| !locked.contains(l))
                .collect();
            lock(&tx, st, unlocked.iter()).await?;
            locked.extend(unlocked);
            load(&tx, st, &mut rows, missing).await?;
        }
    }
    let writes = std::mem::take(&mut rows.writes);
    let queued = writes.queues_work();
    if !writes.is_empty() {
        write_back(&tx, st, &writes).await?;
        if queued {
            tx.execute(&st.get(&tx, "SELECT pg_notify($1, '')").await?, &[&CHANNEL])
                .await
                .map_err(pg_error)?;
        }
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(queued)
}

/// Takes the advisory locks of `locks`, in (namespace, hash) order.
async fn lock<'a>(
    tx: &Transaction<'_>,
    st: &mut Statements,
    locks: impl Iterator<Item = &'a Lock>,
) -> Result<()> {
    let mut spaces = Vec::new();
    let mut keys = Vec::new();
    for l in locks.collect::<HashSet<_>>() {
        let (space, key) = match l {
            Lock::Session(id) => (LOCK_SESSION, id),
            Lock::Event(id) => (LOCK_EVENT, id),
            Lock::Payment(pi) => (LOCK_PAYMENT, pi),
        };
        spaces.push(space);
        keys.push(key.as_str());
    }
    if keys.is_empty() {
        return Ok(());
    }
    tx.execute(
        &st.get(
            tx,
            "SELECT count(pg_advisory_xact_lock(s, h)) FROM (
            SELECT s, hashtext(k) AS h FROM unnest($1::int4[], $2::text[]) AS t(s, k)
            ORDER BY 1, 2
        ) ordered",
        )
        .await?,
        &[&spaces, &keys],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Reads the rows in `needs` into `rows`; an id not found is recorded as
/// absent. The reads are pipelined: sent together, answered in one round trip.
async fn load(
    tx: &Transaction<'_>,
    st: &mut Statements,
    rows: &mut Rows,
    needs: HashSet<Need>,
) -> Result<()> {
    let mut sessions = Vec::new();
    let mut events = Vec::new();
    let mut notifications = Vec::new();
    let mut jobs = Vec::new();
    let mut payments = Vec::new();
    let mut unmatched = Vec::new();
    for n in needs {
        match n {
            Need::Session(id) => sessions.push(id),
            Need::Event(id) => events.push(id),
            Need::Notification(id) => notifications.push(id),
            Need::Job(k) => jobs.push(k),
            Need::Payment(pi) => payments.push(pi),
            Need::Unmatched(pi) => unmatched.push(pi),
        }
    }
    let q_sessions = st
        .get_if(
            !sessions.is_empty(),
            tx,
            "SELECT id, record, detail FROM sessions WHERE id = ANY($1)",
        )
        .await?;
    let q_events = st
        .get_if(
            !events.is_empty(),
            tx,
            "SELECT id, record FROM events WHERE id = ANY($1)",
        )
        .await?;
    let q_notifications = st
        .get_if(
            !notifications.is_empty(),
            tx,
            "SELECT id, value FROM notifications WHERE id = ANY($1)",
        )
        .await?;
    let q_jobs = st
        .get_if(
            !jobs.is_empty(),
            tx,
            "SELECT key, due_ms FROM jobs WHERE key = ANY($1)",
        )
        .await?;
    let q_payments = st
        .get_if(
            !payments.is_empty(),
            tx,
            "SELECT payment_intent, id FROM sessions WHERE payment_intent = ANY($1)",
        )
        .await?;
    let q_unmatched = st
        .get_if(
            !unmatched.is_empty(),
            tx,
            "SELECT payment_intent, value FROM unmatched_charges WHERE payment_intent = ANY($1)",
        )
        .await?;
    let (
        found_sessions,
        found_events,
        found_notifications,
        found_jobs,
        found_payments,
        found_unmatched,
    ) = tokio::try_join!(
        query_if(tx, q_sessions, &sessions),
        query_if(tx, q_events, &events),
        query_if(tx, q_notifications, &notifications),
        query_if(tx, q_jobs, &jobs),
        query_if(tx, q_payments, &payments),
        query_if(tx, q_unmatched, &unmatched),
    )?;
    for pi in payments {
        rows.payments.insert(pi, None);
    }
    for r in found_payments {
        rows.payments.insert(r.get(0), Some(r.get(1)));
    }
    for pi in unmatched {
        rows.unmatched.insert(pi, None);
    }
    for r in found_unmatched {
        let pi: String = r.get(0);
        match super::decode::<Vec<ChargeEvent>>(&pi, r.get(1)) {
            Ok(kept) => {
                rows.unmatched.insert(pi, Some(kept));
            }
            Err(e) => {
                rows.unmatched.remove(&pi);
                rows.broken.insert(Need::Unmatched(pi), e.to_string());
            }
        }
    }
    for id in sessions {
        rows.sessions.insert(id, None);
    }
    for r in found_sessions {
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
                rows.sessions.remove(&id);
                rows.broken.insert(Need::Session(id), e.to_string());
            }
        }
    }
    for id in events {
        rows.events.insert(id, None);
    }
    for r in found_events {
        let id: String = r.get(0);
        match super::decode::<EventRecord>(&id, r.get(1)) {
            Ok(rec) => {
                rows.events.insert(id, Some(rec));
            }
            Err(e) => {
                rows.events.remove(&id);
                rows.broken.insert(Need::Event(id), e.to_string());
            }
        }
    }
    for id in notifications {
        rows.notifications.insert(id, None);
    }
    for r in found_notifications {
        let id: String = r.get(0);
        match super::decode::<Notification>(&id, r.get(1)) {
            Ok(n) => {
                rows.notifications.insert(id, Some(n));
            }
            Err(e) => {
                rows.notifications.remove(&id);
                rows.broken.insert(Need::Notification(id), e.to_string());
            }
        }
    }
    for k in jobs {
        rows.jobs.insert(k, None);
    }
    for r in found_jobs {
        let due: i64 = r.get(1);
        rows.jobs
            .insert(r.get(0), Some(u64::try_from(due).unwrap_or(0)));
    }
    Ok(())
}

/// Runs `stmt` when there is one (the batch needs it), else finds nothing.
async fn query_if(
    tx: &Transaction<'_>,
    stmt: Option<Statement>,
    param: &(dyn ToSql + Sync),
) -> Result<Vec<tokio_postgres::Row>> {
    match stmt {
        Some(stmt) => tx.query(&stmt, &[param]).await.map_err(pg_error),
        None => Ok(Vec::new()),
    }
}

/// Runs `stmt` with `params` when there is one, else does nothing.
async fn execute_if(
    tx: &Transaction<'_>,
    stmt: Option<Statement>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    match stmt {
        Some(stmt) => tx.execute(&stmt, params).await.map_err(pg_error),
        None => Ok(0),
    }
}

/// One connection's prepared statements, by their text: each is parsed and
/// planned once per connection rather than once per use, and a use is one
/// round trip instead of two. Cleared when a batch fails, so a statement
/// that went stale (a migration by a newer replica) is prepared again.
#[derive(Default)]
pub(super) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    pub(super) async fn get(
        &mut self,
        tx: &Transaction<'_>,
        sql: &'static str,
    ) -> Result<Statement> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = tx.prepare(sql).await.map_err(pg_error)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }

    /// The statement when `needed`.
    async fn get_if(
        &mut self,
        needed: bool,
        tx: &Transaction<'_>,
        sql: &'static str,
    ) -> Result<Option<Statement>> {
        Ok(if needed {
            Some(self.get(tx, sql).await?)
        } else {
            None
        })
    }
}

/// Sorted by key, so two statements touching the same rows lock them in
/// the same order.
fn sorted<V>(m: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Writes every changed row: one statement per table and kind of change,
/// pipelined (sent together, answered in one round trip; PostgreSQL runs
/// them in order, and they touch different rows).
pub(super) async fn write_back(
    tx: &Transaction<'_>,
    st: &mut Statements,
    w: &Writes,
) -> Result<()> {
    let mut sessions = SessionColumns::default();
    for (_, s) in sorted(&w.sessions) {
        sessions.push(s)?;
    }
    let (mut body_ids, mut bodies) = (Vec::new(), Vec::new());
    for (id, body) in sorted(&w.bodies) {
        body_ids.push(id.as_str());
        bodies.push(super::encode(body)?);
    }
    let mut new_events = EventColumns::default();
    let (mut event_ids, mut event_recs) = (Vec::new(), Vec::new());
    for (id, e) in sorted(&w.events) {
        match e {
            EventWrite::New(rec, raw) => new_events.push(rec, raw)?,
            EventWrite::Update(rec) => {
                event_ids.push(id.as_str());
                event_recs.push(super::encode(rec)?);
            }
        }
    }
    let (mut note_ids, mut note_sessions, mut note_values) = (Vec::new(), Vec::new(), Vec::new());
    for (id, n) in sorted(&w.notifications) {
        note_ids.push(id.as_str());
        note_sessions.push(n.session_id.as_str());
        note_values.push(super::encode(n)?);
    }
    let (mut kept_pis, mut kept_values, mut linked_pis) = (Vec::new(), Vec::new(), Vec::new());
    for (pi, kept) in sorted(&w.unmatched) {
        if kept.is_empty() {
            linked_pis.push(pi.as_str());
        } else {
            kept_pis.push(pi.as_str());
            kept_values.push(super::encode(kept)?);
        }
    }
    let mut jobs = JobColumns::default();
    let mut removed = Vec::new();
    for (key, j) in sorted(&w.jobs) {
        match j {
            JobWrite::Put(due, job) => jobs.push(key, *due, job)?,
            JobWrite::Remove => removed.push(key.as_str()),
        }
    }

    let q_sessions = st
        .get_if(
            !sessions.id.is_empty(),
            tx,
            "INSERT INTO sessions (id, state, created, email_lc, payment_intent, record, detail, refund_status, disputed, account, words)
             SELECT id, state, created, email_lc, payment_intent, record, detail, refund_status, disputed, account,
                    string_to_array(words, ' ')
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::bytea[], $7::bytea[], $8::text[], $9::bool[], $10::text[], $11::text[])
               AS t(id, state, created, email_lc, payment_intent, record, detail, refund_status, disputed, account, words)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, created = excluded.created,
               email_lc = excluded.email_lc, payment_intent = excluded.payment_intent,
               record = excluded.record, detail = excluded.detail,
               refund_status = excluded.refund_status, disputed = excluded.disputed,
               account = excluded.account, words = excluded.words",
        )
        .await?;
    let q_bodies = st
        .get_if(
            !body_ids.is_empty(),
            tx,
            "INSERT INTO session_bodies (id, body) SELECT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        )
        .await?;
    // Under the event's lock a first delivery is new; a conflict would mean
    // a row written outside the locks, kept as it is.
    let q_new_events = st
        .get_if(
            !new_events.id.is_empty(),
            tx,
            "INSERT INTO events (id, session_id, received_at_ms, record, raw)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[], $5::bytea[])
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let q_events = st
        .get_if(
            !event_ids.is_empty(),
            tx,
            "UPDATE events e SET record = u.record
             FROM unnest($1::text[], $2::bytea[]) AS u(id, record) WHERE e.id = u.id",
        )
        .await?;
    let q_notifications = st
        .get_if(
            !note_ids.is_empty(),
            tx,
            "INSERT INTO notifications (id, session_id, value)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
             ON CONFLICT (id) DO UPDATE SET value = excluded.value",
        )
        .await?;
    let q_removed = st
        .get_if(
            !removed.is_empty(),
            tx,
            "DELETE FROM jobs WHERE key = ANY($1)",
        )
        .await?;
    // A job put again is free to be taken again.
    let q_jobs = st
        .get_if(
            !jobs.key.is_empty(),
            tx,
            "INSERT INTO jobs (key, kind, session_id, due_ms, job)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bytea[])
             ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, session_id = excluded.session_id,
               due_ms = excluded.due_ms, job = excluded.job, taken_by = NULL, taken_until_ms = NULL",
        )
        .await?;
    let q_kept = st
        .get_if(
            !kept_pis.is_empty(),
            tx,
            "INSERT INTO unmatched_charges (payment_intent, value)
             SELECT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT (payment_intent) DO UPDATE SET value = excluded.value",
        )
        .await?;
    let q_linked = st
        .get_if(
            !linked_pis.is_empty(),
            tx,
            "DELETE FROM unmatched_charges WHERE payment_intent = ANY($1)",
        )
        .await?;
    type Param<'p> = &'p (dyn ToSql + Sync);
    let p_sessions: [Param; 11] = [
        &sessions.id,
        &sessions.state,
        &sessions.created,
        &sessions.email_lc,
        &sessions.payment_intent,
        &sessions.record,
        &sessions.detail,
        &sessions.refund_status,
        &sessions.disputed,
        &sessions.account,
        &sessions.words,
    ];
    let p_bodies: [Param; 2] = [&body_ids, &bodies];
    let p_new_events: [Param; 5] = [
        &new_events.id,
        &new_events.session_id,
        &new_events.received,
        &new_events.record,
        &new_events.raw,
    ];
    let p_events: [Param; 2] = [&event_ids, &event_recs];
    let p_notifications: [Param; 3] = [&note_ids, &note_sessions, &note_values];
    let p_removed: [Param; 1] = [&removed];
    let p_kept: [Param; 2] = [&kept_pis, &kept_values];
    let p_linked: [Param; 1] = [&linked_pis];
    let p_jobs: [Param; 5] = [
        &jobs.key,
        &jobs.kind,
        &jobs.session_id,
        &jobs.due,
        &jobs.job,
    ];
    tokio::try_join!(
        execute_if(tx, q_sessions, &p_sessions),
        execute_if(tx, q_bodies, &p_bodies),
        execute_if(tx, q_new_events, &p_new_events),
        execute_if(tx, q_events, &p_events),
        execute_if(tx, q_notifications, &p_notifications),
        execute_if(tx, q_removed, &p_removed),
        execute_if(tx, q_jobs, &p_jobs),
        execute_if(tx, q_kept, &p_kept),
        execute_if(tx, q_linked, &p_linked),
    )?;
    Ok(())
}

/// Job rows per column.
#[derive(Default)]
struct JobColumns<'a> {
    key: Vec<&'a str>,
    kind: Vec<&'static str>,
    session_id: Vec<&'a str>,
    due: Vec<i64>,
    job: Vec<Vec<u8>>,
}

impl<'a> JobColumns<'a> {
    fn push(&mut self, key: &'a str, due: u64, job: &'a Job) -> Result<()> {
        self.key.push(key);
        self.kind.push(super::kind_name(job.kind()));
        self.session_id.push(super::job_session(job));
        self.due.push(super::ms(due));
        self.job.push(super::encode(job)?);
        Ok(())
    }
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
    refund_status: Vec<&'static str>,
    disputed: Vec<bool>,
    account: Vec<Option<&'a str>>,
    /// Space-joined (a word has none): arrays of arrays do not unnest.
    words: Vec<String>,
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
        self.refund_status.push(s.rec.refund_status().as_str());
        self.disputed.push(s.rec.disputed());
        // Checked to be `acct_` and letters or digits when it was recorded.
        self.account.push(s.rec.account.as_deref());
        self.words
            .push(s.rec.search_words().join(" ").replace('\0', "\u{FFFD}"));
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
