//! Table layout and typed access. Values are JSON (readable with any redb
//! tool, tolerant of added fields); keys are what the lookups need:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `sessions` | session id | `SessionRecord` (small: what lists show) |
//! | `session_details` | session id | `SessionDetail` (line items, history, raw object) |
//! | `events` | event id | `EventRecord`, then the raw body as received (dedup of Stripe deliveries) |
//! | `notifications` | notification id | `Notification` (outgoing callback bodies) |
//! | `sessions_by_state` | (state, created, id) | () |
//! | `sessions_by_term` | (`e:`lowercased email or `p:`payment intent, id) | () |
//! | `jobs` | (due ms, job key) | `Job` |
//! | `job_due` | job key | due ms (at most one job per key) |
//! | `state_counts` | state | number of sessions in it (the dashboard's tabs, without a scan) |
//! | `meta` | name | installation facts (`installation_key`: the secret fulfillment ids derive from) |
//!
//! Writes go through `Tx`; reads through `reader::Reader`.
//!
//! Every tree a write touches costs pages in its commit, so the webhook path
//! touches as few as it can: the newest-first list merges the per-state index
//! instead of keeping a second ordering, and both search keys share one tree.

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    domain::Session,
    model::{EventRecord, Job, Notification, SessionDetail, SessionRecord, State},
    store::{BackupStats, StoreError},
};

pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(super) const DETAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_details");
pub(super) const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
pub(super) const NOTIFICATIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("notifications");
pub(super) const BY_STATE: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("sessions_by_state");
pub(super) const BY_TERM: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("sessions_by_term");
pub(super) const JOBS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("jobs");
pub(super) const JOB_DUE: TableDefinition<&str, u64> = TableDefinition::new("job_due");
pub(super) const STATE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("state_counts");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Above every session id (ids are ASCII), for open-ended index ranges.
pub(super) const ID_MAX: &str = "\u{7f}";

pub(super) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::Encode)
}

pub(super) fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(v) => decode(key, v.value()).map(Some),
        None => Ok(None),
    }
}

/// An event value: the record's JSON length (u32, little endian), the
/// record, then the raw body exactly as received.
fn encode_event(rec: &EventRecord, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
    let json = encode(rec)?;
    let len = u32::try_from(json.len())
        .map_err(|_| StoreError::Refused("an event record over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(4 + json.len() + raw.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(raw);
    Ok(out)
}

/// Splits an event value into its record and its raw body.
fn decode_event(key: &str, bytes: &[u8]) -> Result<(EventRecord, Vec<u8>), StoreError> {
    let corrupt = || StoreError::Corrupted(format!("event {key}: the stored value is truncated"));
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let json = bytes.get(4..4 + len).ok_or_else(corrupt)?;
    Ok((decode(key, json)?, bytes[4 + len..].to_vec()))
}

pub(super) fn get_event(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<(EventRecord, Vec<u8>)>, StoreError> {
    match table.get(id)? {
        Some(v) => decode_event(id, v.value()).map(Some),
        None => Ok(None),
    }
}

/// A session and its detail from their tables (a detail never written reads as empty).
pub(super) fn load_session(
    sessions: &impl ReadableTable<&'static str, &'static [u8]>,
    details: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Session>, StoreError> {
    let Some(rec) = get_json(sessions, id)? else {
        return Ok(None);
    };
    let detail = get_json(details, id)?.unwrap_or_default();
    Ok(Some(Session { rec, detail }))
}

pub(super) fn email_term(email: &str) -> String {
    format!("e:{}", email.to_lowercase())
}

pub(super) fn pi_term(pi: &str) -> String {
    format!("p:{pi}")
}

/// A write transaction with typed operations that keep the indexes in step.
/// Every table is opened once per transaction (opening is not free in redb,
/// and a batch runs hundreds of operations).
pub struct Tx<'t> {
    sessions: Table<'t, &'static str, &'static [u8]>,
    details: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, &'static str, &'static [u8]>,
    notifications: Table<'t, &'static str, &'static [u8]>,
    by_state: Table<'t, (&'static str, i64, &'static str), ()>,
    by_term: Table<'t, (&'static str, &'static str), ()>,
    jobs: Table<'t, (u64, &'static str), &'static [u8]>,
    job_due: Table<'t, &'static str, u64>,
    state_counts: Table<'t, &'static str, u64>,
    meta: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tx<'t> {
    /// Opens (creating where needed) every table in `w`.
    pub(super) fn open(w: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tx {
            sessions: w.open_table(SESSIONS)?,
            details: w.open_table(DETAILS)?,
            events: w.open_table(EVENTS)?,
            notifications: w.open_table(NOTIFICATIONS)?,
            by_state: w.open_table(BY_STATE)?,
            by_term: w.open_table(BY_TERM)?,
            jobs: w.open_table(JOBS)?,
            job_due: w.open_table(JOB_DUE)?,
            state_counts: w.open_table(STATE_COUNTS)?,
            meta: w.open_table(META)?,
        })
    }

    /// The installation's secret, made on first use.
    pub(super) fn installation_key(
        &mut self,
    ) -> Result<crate::domain::ids::InstallationKey, StoreError> {
        const NAME: &str = "installation_key";
        if let Some(v) = self.meta.get(NAME)? {
            return <[u8; 32]>::try_from(v.value()).map_err(|_| {
                StoreError::Corrupted("the installation key has the wrong length".into())
            });
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            StoreError::Refused(format!(
                "the operating system's random number generator failed: {e}"
            ))
        })?;
        self.meta.insert(NAME, key.as_slice())?;
        Ok(key)
    }

    /// The session and its detail, if stored.
    pub fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        load_session(&self.sessions, &self.details, id)
    }

    /// Stores a session and its detail.
    pub fn store(&mut self, s: &Session) -> Result<(), StoreError> {
        self.put_session(&s.rec)?;
        self.put_detail(&s.rec.id, &s.detail)
    }

    /// Stores an outbox entry unless one with its id exists; true when new.
    pub fn put_notification_if_absent(&mut self, n: &Notification) -> Result<bool, StoreError> {
        if self.notifications.get(n.id.as_str())?.is_some() {
            return Ok(false);
        }
        self.put_notification(n)?;
        Ok(true)
    }

    /// Rebuilds the per-state counts from the state index when they are
    /// missing (a database from before they existed). Runs once at open.
    pub(super) fn ensure_state_counts(&mut self) -> Result<(), StoreError> {
        if !self.state_counts.is_empty()? || self.by_state.is_empty()? {
            return Ok(());
        }
        for state in State::ALL {
            let s = state.as_str();
            let n = self
                .by_state
                .range((s, i64::MIN, "")..=(s, i64::MAX, ID_MAX))?
                .count() as u64;
            self.state_counts.insert(s, n)?;
        }
        Ok(())
    }

    fn bump_state_count(&mut self, state: State, up: bool) -> Result<(), StoreError> {
        let s = state.as_str();
        let n = self.state_counts.get(s)?.map(|v| v.value()).unwrap_or(0);
        let n = if up { n + 1 } else { n.saturating_sub(1) };
        self.state_counts.insert(s, n)?;
        Ok(())
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        get_json(&self.sessions, id)
    }

    /// Stores a session and moves its index entries to match.
    pub fn put_session(&mut self, rec: &SessionRecord) -> Result<(), StoreError> {
        let old = self.session(&rec.id)?;
        let id = rec.id.as_str();
        let state_key = |r: &SessionRecord| (r.state, r.created);
        let terms = |r: &SessionRecord| {
            let mut t: Vec<String> = Vec::with_capacity(2);
            t.extend(r.customer_email.as_deref().map(email_term));
            t.extend(r.payment_intent.as_deref().map(pi_term));
            t
        };
        let new_terms = terms(rec);
        let old_terms = old.as_ref().map(terms).unwrap_or_default();
        if let Some(old) = &old
            && state_key(old) != state_key(rec)
        {
            self.by_state
                .remove((old.state.as_str(), old.created, id))?;
        }
        for term in old_terms.iter().filter(|t| !new_terms.contains(t)) {
            self.by_term.remove((term.as_str(), id))?;
        }
        self.sessions.insert(id, encode(rec)?.as_slice())?;
        if old.as_ref().is_none_or(|o| state_key(o) != state_key(rec)) {
            self.by_state
                .insert((rec.state.as_str(), rec.created, id), ())?;
        }
        for term in new_terms.iter().filter(|t| !old_terms.contains(t)) {
            self.by_term.insert((term.as_str(), id), ())?;
        }
        match &old {
            Some(o) if o.state == rec.state => {}
            Some(o) => {
                self.bump_state_count(o.state, false)?;
                self.bump_state_count(rec.state, true)?;
            }
            None => self.bump_state_count(rec.state, true)?,
        }
        Ok(())
    }

    pub fn detail(&self, id: &str) -> Result<SessionDetail, StoreError> {
        Ok(get_json(&self.details, id)?.unwrap_or_default())
    }

    pub fn put_detail(&mut self, id: &str, detail: &SessionDetail) -> Result<(), StoreError> {
        self.details.insert(id, encode(detail)?.as_slice())?;
        Ok(())
    }

    pub fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        Ok(get_event(&self.events, id)?.map(|(rec, _)| rec))
    }

    /// Stores an event's record with the exact body it arrived with.
    pub fn put_event(&mut self, rec: &EventRecord, raw: &[u8]) -> Result<(), StoreError> {
        self.events
            .insert(rec.id.as_str(), encode_event(rec, raw)?.as_slice())?;
        Ok(())
    }

    /// Updates an event's record, keeping its body.
    pub fn update_event(&mut self, rec: &EventRecord) -> Result<(), StoreError> {
        let raw = get_event(&self.events, &rec.id)?
            .map(|(_, raw)| raw)
            .unwrap_or_default();
        self.put_event(rec, &raw)
    }

    pub fn notification(&self, id: &str) -> Result<Option<Notification>, StoreError> {
        get_json(&self.notifications, id)
    }

    pub fn put_notification(&mut self, n: &Notification) -> Result<(), StoreError> {
        self.notifications
            .insert(n.id.as_str(), encode(n)?.as_slice())?;
        Ok(())
    }

    /// When the job with this key is due, if it is queued.
    pub fn job_due(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.job_due.get(key)?.map(|v| v.value()))
    }

    /// Queues `job` at `due_ms`, replacing any queued job with the same key.
    pub fn schedule(&mut self, job: &Job, due_ms: u64) -> Result<(), StoreError> {
        let key = job.key();
        self.unschedule(&key)?;
        self.jobs
            .insert((due_ms, key.as_str()), encode(job)?.as_slice())?;
        self.job_due.insert(key.as_str(), due_ms)?;
        Ok(())
    }

    /// Removes the job with this key, if any.
    pub fn unschedule(&mut self, key: &str) -> Result<(), StoreError> {
        let due = self.job_due.remove(key)?.map(|v| v.value());
        if let Some(due) = due {
            self.jobs.remove((due, key))?;
        }
        Ok(())
    }
}

/// Copies `def` from a snapshot into a write transaction; returns the rows copied.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let src = match from.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut dst = to.open_table(def)?;
    let mut rows = 0;
    for entry in src.iter()? {
        let (k, v) = entry?;
        dst.insert(k.value(), v.value())?;
        rows += 1;
    }
    Ok(rows)
}

/// Copies every table of one snapshot into `to` (a fresh database).
pub(super) fn copy_all(
    from: &ReadTransaction,
    to: &WriteTransaction,
) -> Result<BackupStats, StoreError> {
    let sessions = copy_table(from, to, SESSIONS)?;
    let events = copy_table(from, to, EVENTS)?;
    let rows = sessions
        + events
        + copy_table(from, to, DETAILS)?
        + copy_table(from, to, NOTIFICATIONS)?
        + copy_table(from, to, BY_STATE)?
        + copy_table(from, to, BY_TERM)?
        + copy_table(from, to, JOBS)?
        + copy_table(from, to, JOB_DUE)?
        + copy_table(from, to, STATE_COUNTS)?
        + copy_table(from, to, META)?;
    Ok(BackupStats {
        sessions,
        events,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::reader::Reader;
    use redb::ReadableDatabase;

    fn counts(db: &redb::Database) -> Vec<(State, u64)> {
        Reader::new(db.begin_read().unwrap())
            .state_counts()
            .unwrap()
    }

    fn scanned(db: &redb::Database) -> Vec<(State, u64)> {
        let r = Reader::new(db.begin_read().unwrap());
        State::ALL
            .into_iter()
            .map(|s| (s, r.ids_in_state(s).unwrap().len() as u64))
            .collect()
    }

    #[test]
    fn state_counts_follow_every_change_and_can_be_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut tx = Tx::open(&w).unwrap();
            for i in 0..50u32 {
                let mut rec = SessionRecord::new(&format!("cs_test_{i}"), i64::from(i), 0);
                rec.state = State::ALL[i as usize % State::ALL.len()];
                tx.put_session(&rec).unwrap();
                // Every other session moves on; some are rewritten unchanged.
                if i % 2 == 0 {
                    rec.state = State::Fulfilled;
                    tx.put_session(&rec).unwrap();
                }
                tx.put_session(&rec).unwrap();
            }
        }
        w.commit().unwrap();
        assert_eq!(counts(&db), scanned(&db));
        assert_eq!(counts(&db).iter().map(|(_, n)| n).sum::<u64>(), 50);

        // A database from before the counts existed gets them at open.
        let w = db.begin_write().unwrap();
        w.delete_table(STATE_COUNTS).unwrap();
        w.commit().unwrap();
        let w = db.begin_write().unwrap();
        Tx::open(&w).unwrap().ensure_state_counts().unwrap();
        w.commit().unwrap();
        assert_eq!(counts(&db), scanned(&db));
    }
}
