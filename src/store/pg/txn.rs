//! The shared operations (`store::ops`) on PostgreSQL: a batch's rows, read
//! once under the batch's locks, with every operation's writes kept in
//! memory and written back together before the commit.
//!
//! An operation runs against `OpTx`: its own writes over the batch's rows.
//! A read of a row the batch has not loaded yet fails with `NotLoaded`; the
//! writer then loads what was missing and runs the operation again from the
//! start (operations are pure functions of the rows and their input, so a
//! second run gives the same result). An operation that fails leaves the
//! batch as it was: its writes are dropped with its `OpTx`.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
};

use crate::{
    domain::{ChargeEvent, Session},
    model::{EventRecord, Job, Notification, SessionRecord},
    store::{Result, StoreError, ops::Txn},
};

/// A row an operation read before the batch loaded it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Need {
    Session(String),
    Event(String),
    Notification(String),
    Job(String),
    /// The session with this payment intent.
    Payment(String),
    /// Charge events kept for this payment intent.
    Unmatched(String),
}

/// The marker error of a read the batch could not answer yet.
#[derive(Debug, thiserror::Error)]
#[error("a row was read before it was loaded")]
pub struct NotLoaded;

pub fn is_not_loaded(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(b) if b.is::<NotLoaded>())
}

/// What an event write does to its row.
#[derive(Debug, Clone)]
pub enum EventWrite {
    /// A first delivery, with its body as received.
    New(EventRecord, Vec<u8>),
    /// A new record; the stored body stays.
    Update(EventRecord),
}

/// A job write.
#[derive(Debug, Clone)]
pub enum JobWrite {
    Put(u64, Job),
    Remove,
}

/// Rows as the batch has them: loaded ones (`None`: known absent), changed
/// by the operations that succeeded so far.
#[derive(Debug, Default)]
pub struct Rows {
    pub sessions: HashMap<String, Option<Session>>,
    pub events: HashMap<String, Option<EventRecord>>,
    pub notifications: HashMap<String, Option<Notification>>,
    pub jobs: HashMap<String, Option<u64>>,
    /// Payment intent → the session stored with it.
    pub payments: HashMap<String, Option<String>>,
    pub unmatched: HashMap<String, Option<Vec<ChargeEvent>>>,
    /// Rows that were read but do not decode: an operation reading one
    /// fails alone, as on redb.
    pub broken: HashMap<Need, String>,
    pub writes: Writes,
}

/// What the batch will write back, by key (the last write of a key wins).
#[derive(Debug, Default)]
pub struct Writes {
    pub sessions: HashMap<String, Session>,
    /// Raw retrieved sessions, by session id.
    pub bodies: HashMap<String, serde_json::Value>,
    pub events: HashMap<String, EventWrite>,
    pub notifications: HashMap<String, Notification>,
    pub jobs: HashMap<String, JobWrite>,
    /// By payment intent; an empty list removes the row.
    pub unmatched: HashMap<String, Vec<ChargeEvent>>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.unmatched.is_empty()
            && self.sessions.is_empty()
            && self.bodies.is_empty()
            && self.events.is_empty()
            && self.notifications.is_empty()
            && self.jobs.is_empty()
    }

    /// Some write queues work (replicas are then woken).
    pub fn queues_work(&self) -> bool {
        self.jobs.values().any(|w| matches!(w, JobWrite::Put(..)))
    }

    fn merge(&mut self, later: Writes) {
        self.sessions.extend(later.sessions);
        self.bodies.extend(later.bodies);
        self.notifications.extend(later.notifications);
        self.jobs.extend(later.jobs);
        self.unmatched.extend(later.unmatched);
        for (id, w) in later.events {
            let merged = match (self.events.remove(&id), w) {
                // Still a first delivery, with its newer record.
                (Some(EventWrite::New(_, raw)), EventWrite::Update(rec)) => {
                    EventWrite::New(rec, raw)
                }
                (_, w) => w,
            };
            self.events.insert(id, merged);
        }
    }
}

impl Rows {
    /// What the batch needs loaded that it has not: ids never looked up.
    pub fn unknown(&self, needs: impl IntoIterator<Item = Need>) -> HashSet<Need> {
        needs
            .into_iter()
            .filter(|n| !self.broken.contains_key(n))
            .filter(|n| match n {
                Need::Session(id) => !self.sessions.contains_key(id),
                Need::Event(id) => !self.events.contains_key(id),
                Need::Notification(id) => !self.notifications.contains_key(id),
                Need::Job(k) => !self.jobs.contains_key(k),
                Need::Payment(pi) => !self.payments.contains_key(pi),
                Need::Unmatched(pi) => !self.unmatched.contains_key(pi),
            })
            .collect()
    }

    /// Keeps what a successful operation did.
    pub fn commit(&mut self, parts: Parts) {
        let Parts { changes, writes } = parts;
        self.sessions.extend(changes.sessions);
        self.events.extend(changes.events);
        self.notifications.extend(changes.notifications);
        self.jobs.extend(changes.jobs);
        self.unmatched.extend(changes.unmatched);
        self.writes.merge(writes);
    }
}

/// What an operation did, apart from the rows it read.
pub struct Parts {
    changes: Changes,
    writes: Writes,
}

/// Changed rows, as an operation sees them.
#[derive(Debug, Default)]
struct Changes {
    sessions: HashMap<String, Option<Session>>,
    events: HashMap<String, Option<EventRecord>>,
    notifications: HashMap<String, Option<Notification>>,
    jobs: HashMap<String, Option<u64>>,
    unmatched: HashMap<String, Option<Vec<ChargeEvent>>>,
}

/// One operation's view: its own changes over the batch's rows.
pub struct OpTx<'b> {
    base: &'b Rows,
    changes: Changes,
    writes: Writes,
    /// What it read that the batch had not loaded (reads take `&self`).
    missing: RefCell<HashSet<Need>>,
}

impl<'b> OpTx<'b> {
    pub fn new(base: &'b Rows) -> Self {
        OpTx {
            base,
            changes: Changes::default(),
            writes: Writes::default(),
            missing: RefCell::default(),
        }
    }

    pub fn into_parts(self) -> Parts {
        Parts {
            changes: self.changes,
            writes: self.writes,
        }
    }

    /// What the operation read before the batch loaded it.
    pub fn missing(&self) -> HashSet<Need> {
        self.missing.borrow().clone()
    }

    /// Looks `key` up in the operation's changes, then in the batch's
    /// rows; notes it as missing when neither has it.
    fn look<T: Clone>(
        &self,
        pick: impl Fn(&Changes) -> &HashMap<String, Option<T>>,
        base: &HashMap<String, Option<T>>,
        key: &str,
        need: impl FnOnce() -> Need,
    ) -> Result<Option<T>> {
        if let Some(v) = pick(&self.changes).get(key) {
            return Ok(v.clone());
        }
        let need = need();
        if let Some(why) = self.base.broken.get(&need) {
            return Err(StoreError::Corrupted(why.clone()));
        }
        if let Some(v) = base.get(key) {
            return Ok(v.clone());
        }
        self.missing.borrow_mut().insert(need);
        Err(StoreError::Backend(Box::new(NotLoaded)))
    }
}

impl Txn for OpTx<'_> {
    fn load(&self, id: &str) -> Result<Option<Session>> {
        self.look(
            |c| &c.sessions,
            &self.base.sessions,
            id,
            || Need::Session(id.to_string()),
        )
    }

    fn store_over(&mut self, _old: Option<&SessionRecord>, s: &Session) -> Result<()> {
        let mut stored = s.clone();
        if let Some(raw) = stored.detail.raw.take() {
            self.writes.bodies.insert(s.rec.id.clone(), raw);
        }
        self.changes
            .sessions
            .insert(s.rec.id.clone(), Some(stored.clone()));
        self.writes.sessions.insert(s.rec.id.clone(), stored);
        Ok(())
    }

    fn notification(&self, id: &str) -> Result<Option<Notification>> {
        self.look(
            |c| &c.notifications,
            &self.base.notifications,
            id,
            || Need::Notification(id.to_string()),
        )
    }

    fn put_notification(&mut self, n: &Notification) -> Result<()> {
        self.changes
            .notifications
            .insert(n.id.clone(), Some(n.clone()));
        self.writes.notifications.insert(n.id.clone(), n.clone());
        Ok(())
    }

    fn put_notification_if_absent(&mut self, n: &Notification) -> Result<bool> {
        if self.notification(&n.id)?.is_some() {
            return Ok(false);
        }
        self.put_notification(n)?;
        Ok(true)
    }

    fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        self.look(
            |c| &c.events,
            &self.base.events,
            id,
            || Need::Event(id.to_string()),
        )
    }

    fn put_event(&mut self, rec: &EventRecord, raw: &[u8]) -> Result<()> {
        self.changes
            .events
            .insert(rec.id.clone(), Some(rec.clone()));
        self.writes
            .events
            .insert(rec.id.clone(), EventWrite::New(rec.clone(), raw.to_vec()));
        Ok(())
    }

    fn update_event(&mut self, rec: &EventRecord) -> Result<()> {
        self.changes
            .events
            .insert(rec.id.clone(), Some(rec.clone()));
        let w = match self.writes.events.remove(&rec.id) {
            Some(EventWrite::New(_, raw)) => EventWrite::New(rec.clone(), raw),
            _ => EventWrite::Update(rec.clone()),
        };
        self.writes.events.insert(rec.id.clone(), w);
        Ok(())
    }

    fn job_due(&self, key: &str) -> Result<Option<u64>> {
        self.look(
            |c| &c.jobs,
            &self.base.jobs,
            key,
            || Need::Job(key.to_string()),
        )
    }

    fn schedule(&mut self, job: &Job, due_ms: u64) -> Result<()> {
        let key = job.key();
        self.changes.jobs.insert(key.clone(), Some(due_ms));
        self.writes
            .jobs
            .insert(key, JobWrite::Put(due_ms, job.clone()));
        Ok(())
    }

    fn unschedule(&mut self, key: &str) -> Result<()> {
        // Removing a row that may not exist needs no read.
        self.changes.jobs.insert(key.to_string(), None);
        self.writes.jobs.insert(key.to_string(), JobWrite::Remove);
        Ok(())
    }

    fn session_for_payment(&self, payment_intent: &str) -> Result<Option<String>> {
        // A session this batch stored with it is newer than the table.
        let stored = self
            .changes
            .sessions
            .values()
            .chain(self.base.sessions.values())
            .flatten()
            .find(|s| s.rec.payment_intent.as_deref() == Some(payment_intent));
        if let Some(s) = stored {
            return Ok(Some(s.rec.id.clone()));
        }
        // A payment intent, once a session has it, stays that session's.
        match self.base.payments.get(payment_intent) {
            Some(found) => Ok(found.clone()),
            None => {
                self.missing
                    .borrow_mut()
                    .insert(Need::Payment(payment_intent.to_string()));
                Err(StoreError::Backend(Box::new(NotLoaded)))
            }
        }
    }

    fn unmatched(&self, payment_intent: &str) -> Result<Vec<ChargeEvent>> {
        Ok(self
            .look(
                |c| &c.unmatched,
                &self.base.unmatched,
                payment_intent,
                || Need::Unmatched(payment_intent.to_string()),
            )?
            .unwrap_or_default())
    }

    fn put_unmatched(&mut self, payment_intent: &str, events: &[ChargeEvent]) -> Result<()> {
        let value = (!events.is_empty()).then(|| events.to_vec());
        self.changes
            .unmatched
            .insert(payment_intent.to_string(), value);
        self.writes
            .unmatched
            .insert(payment_intent.to_string(), events.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SessionDetail, Trigger};

    fn session(id: &str) -> Session {
        Session {
            rec: SessionRecord::new(id, 1, 0),
            detail: SessionDetail::default(),
        }
    }

    fn event(id: &str, deliveries: u32) -> EventRecord {
        EventRecord {
            id: id.into(),
            kind: "checkout.session.completed".into(),
            livemode: false,
            created: 1,
            session_id: Some("cs_1".into()),
            received_at_ms: 5,
            deliveries,
            disposition: "handled".into(),
        }
    }

    /// Runs `f` as the writer does: on the batch's rows, keeping its writes
    /// only when it succeeds. Returns its result or what it was missing.
    fn run<R>(
        rows: &mut Rows,
        f: impl FnOnce(&mut OpTx<'_>) -> Result<R>,
    ) -> std::result::Result<Result<R>, HashSet<Need>> {
        let mut tx = OpTx::new(rows);
        match f(&mut tx) {
            Ok(r) => {
                let parts = tx.into_parts();
                rows.commit(parts);
                Ok(Ok(r))
            }
            Err(e) if is_not_loaded(&e) => Err(tx.missing()),
            Err(e) => Ok(Err(e)),
        }
    }

    #[test]
    fn a_read_before_loading_names_the_row_and_writes_nothing() {
        let mut rows = Rows::default();
        let missing = run(&mut rows, |tx| {
            tx.schedule(
                &Job::Fulfill {
                    session_id: "cs_1".into(),
                    trigger: Trigger::Webhook,
                },
                9,
            )?;
            tx.load("cs_1")
        })
        .unwrap_err();
        assert_eq!(missing, HashSet::from([Need::Session("cs_1".into())]));
        assert!(
            rows.writes.is_empty(),
            "the failed run's schedule is dropped"
        );
        rows.sessions.insert("cs_1".into(), Some(session("cs_1")));
        let loaded = run(&mut rows, |tx| tx.load("cs_1")).unwrap().unwrap();
        assert_eq!(loaded.map(|s| s.rec.id).as_deref(), Some("cs_1"));
    }

    #[test]
    fn later_operations_see_earlier_ones_and_the_last_write_wins() {
        let mut rows = Rows::default();
        rows.events.insert("evt_1".into(), None);
        rows.jobs.insert("fulfill:cs_1".into(), None);
        run(&mut rows, |tx| tx.put_event(&event("evt_1", 1), b"{}"))
            .unwrap()
            .unwrap();
        let seen = run(&mut rows, |tx| {
            let mut e = tx.event("evt_1")?.expect("the first op's event");
            e.deliveries += 1;
            tx.update_event(&e)?;
            tx.schedule(
                &Job::Fulfill {
                    session_id: "cs_1".into(),
                    trigger: Trigger::Webhook,
                },
                7,
            )?;
            tx.unschedule("fulfill:cs_1")?;
            tx.job_due("fulfill:cs_1")
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen, None, "its own unschedule");
        match &rows.writes.events["evt_1"] {
            EventWrite::New(rec, raw) => {
                assert_eq!(rec.deliveries, 2);
                assert_eq!(raw, b"{}");
            }
            other => panic!("still a first delivery: {other:?}"),
        }
        assert!(matches!(rows.writes.jobs["fulfill:cs_1"], JobWrite::Remove));
        assert!(!rows.writes.queues_work());
    }

    #[test]
    fn a_failing_operation_leaves_the_batch_as_it_was() {
        let mut rows = Rows::default();
        rows.sessions.insert("cs_1".into(), Some(session("cs_1")));
        let out = run(&mut rows, |tx| {
            let mut s = tx.load("cs_1")?.unwrap();
            s.rec.state = crate::model::State::Failed;
            tx.store_over(None, &s)?;
            Err::<(), _>(StoreError::Refused("no".into()))
        })
        .unwrap();
        assert!(out.is_err());
        assert!(rows.writes.is_empty());
        assert_eq!(
            rows.sessions["cs_1"].as_ref().map(|s| s.rec.state),
            Some(session("cs_1").rec.state)
        );
    }

    #[test]
    fn a_row_that_does_not_decode_fails_only_its_reader_and_a_body_is_kept_apart() {
        let mut rows = Rows::default();
        rows.broken.insert(
            Need::Session("cs_bad".into()),
            "stored record cs_bad cannot be decoded".into(),
        );
        let out = run(&mut rows, |tx| tx.load("cs_bad")).unwrap();
        assert!(matches!(out, Err(StoreError::Corrupted(_))));
        assert!(rows.unknown([Need::Session("cs_bad".into())]).is_empty());
        let mut s = session("cs_2");
        s.detail.raw = Some(serde_json::json!({"id": "cs_2"}));
        run(&mut rows, |tx| tx.store_over(None, &s))
            .unwrap()
            .unwrap();
        assert!(rows.writes.bodies.contains_key("cs_2"));
        assert_eq!(rows.writes.sessions["cs_2"].detail.raw, None);
    }
}
