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
    store::{BackupStats, ListQuery, Page, StoreError},
};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const DETAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_details");
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const NOTIFICATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("notifications");
const BY_STATE: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("sessions_by_state");
const BY_TERM: TableDefinition<(&str, &str), ()> = TableDefinition::new("sessions_by_term");
const JOBS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("jobs");
const JOB_DUE: TableDefinition<&str, u64> = TableDefinition::new("job_due");
const STATE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("state_counts");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Above every session id (ids are ASCII), for open-ended index ranges.
const ID_MAX: &str = "\u{7f}";

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::Encode)
}

fn get_json<T: DeserializeOwned>(
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

fn get_event(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<(EventRecord, Vec<u8>)>, StoreError> {
    match table.get(id)? {
        Some(v) => decode_event(id, v.value()).map(Some),
        None => Ok(None),
    }
}

fn email_term(email: &str) -> String {
    format!("e:{}", email.to_lowercase())
}

fn pi_term(pi: &str) -> String {
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
        match self.session(id)? {
            Some(rec) => Ok(Some(Session {
                rec,
                detail: self.detail(id)?,
            })),
            None => Ok(None),
        }
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

/// A read snapshot with typed lookups.
pub struct Reader {
    r: ReadTransaction,
}

/// The most prefix matches a search looks at.
const SEARCH_CAP: usize = 1000;

impl Reader {
    pub(super) fn new(r: ReadTransaction) -> Self {
        Reader { r }
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        get_json(&self.r.open_table(SESSIONS)?, id)
    }

    pub fn detail(&self, id: &str) -> Result<SessionDetail, StoreError> {
        Ok(get_json(&self.r.open_table(DETAILS)?, id)?.unwrap_or_default())
    }

    pub fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        Ok(get_event(&self.r.open_table(EVENTS)?, id)?.map(|(rec, _)| rec))
    }

    /// The exact body of an event as received.
    pub fn event_payload(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(get_event(&self.r.open_table(EVENTS)?, id)?.map(|(_, raw)| raw))
    }

    pub fn notification(&self, id: &str) -> Result<Option<Notification>, StoreError> {
        get_json(&self.r.open_table(NOTIFICATIONS)?, id)
    }

    pub fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        match self.session(id)? {
            Some(rec) => Ok(Some(Session {
                rec,
                detail: self.detail(id)?,
            })),
            None => Ok(None),
        }
    }

    /// Every outbox entry about a session: its fulfillments' callbacks, then
    /// its other notifications (emails, alerts, failed-payment callbacks).
    pub fn session_notifications(
        &self,
        detail: &SessionDetail,
    ) -> Result<Vec<Notification>, StoreError> {
        let table = self.r.open_table(NOTIFICATIONS)?;
        let ids = detail
            .fulfillments
            .iter()
            .map(|f| f.id.as_str())
            .chain(detail.notifications.iter().map(String::as_str));
        let mut out = Vec::new();
        for id in ids {
            if let Some(n) = get_json(&table, id)? {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Jobs due at or before `now_ms`, earliest first.
    pub fn due_jobs(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, Job)>, StoreError> {
        let table = self.r.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in table.range((0u64, "")..=(now_ms, ID_MAX))? {
            let (k, v) = entry?;
            let (due, key) = k.value();
            match decode(key, v.value()) {
                Ok(job) => out.push((due, job)),
                // One unreadable row must not stop every other job.
                Err(e) => tracing::error!(job = key, error = %e, "skipping an unreadable job"),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// When the job with this key is due, if it is queued.
    pub fn job_due(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.r.open_table(JOB_DUE)?.get(key)?.map(|v| v.value()))
    }

    /// When the earliest queued job is due.
    pub fn next_due(&self) -> Result<Option<u64>, StoreError> {
        let table = self.r.open_table(JOBS)?;
        Ok(table.first()?.map(|(k, _)| k.value().0))
    }

    /// Number of distinct events recorded.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        Ok(self.r.open_table(EVENTS)?.len()?)
    }

    /// Number of sessions known.
    pub fn session_count(&self) -> Result<u64, StoreError> {
        Ok(self.r.open_table(SESSIONS)?.len()?)
    }

    /// Number of queued jobs.
    pub fn queued_jobs(&self) -> Result<u64, StoreError> {
        Ok(self.r.open_table(JOB_DUE)?.len()?)
    }

    /// How many sessions are in each state.
    pub fn state_counts(&self) -> Result<Vec<(State, u64)>, StoreError> {
        let table = self.r.open_table(STATE_COUNTS)?;
        State::ALL
            .into_iter()
            .map(|st| Ok((st, table.get(st.as_str())?.map(|v| v.value()).unwrap_or(0))))
            .collect()
    }

    /// Ids of every session in `state`.
    pub fn ids_in_state(&self, state: State) -> Result<Vec<String>, StoreError> {
        let table = self.r.open_table(BY_STATE)?;
        let s = state.as_str();
        let mut out = Vec::new();
        for entry in table.range((s, i64::MIN, "")..=(s, i64::MAX, ID_MAX))? {
            out.push(entry?.0.value().2.to_string());
        }
        Ok(out)
    }

    /// Sessions newest first, filtered by state and/or a search, after a cursor.
    /// Without a search this walks an index from the cursor: no full scan.
    pub fn list(&self, query: &ListQuery) -> Result<Page<SessionRecord>, StoreError> {
        let limit = query.limit.max(1);
        let before = query.cursor.clone();
        let mut ids: Vec<(i64, String)> = Vec::new();
        match (&query.q, query.state) {
            (Some(q), _) => {
                let mut found = self.search(q)?;
                found.sort_by(|a, b| b.cmp(a));
                ids.extend(
                    found
                        .into_iter()
                        .filter(|k| before.as_ref().is_none_or(|c| k < c)),
                );
            }
            (None, Some(state)) => ids = self.newest(&[state], before.as_ref(), limit + 1)?,
            (None, None) => ids = self.newest(&State::ALL, before.as_ref(), limit + 1)?,
        }
        let sessions_table = self.r.open_table(SESSIONS)?;
        let mut sessions = Vec::with_capacity(limit);
        let mut more = false;
        for (_, id) in ids {
            let Some(rec) = get_json::<SessionRecord>(&sessions_table, &id)? else {
                continue;
            };
            if query.state.is_some_and(|s| s != rec.state) {
                continue;
            }
            if sessions.len() == limit {
                more = true;
                break;
            }
            sessions.push(rec);
        }
        let next_cursor = if more {
            sessions.last().map(|s| format!("{}:{}", s.created, s.id))
        } else {
            None
        };
        Ok(Page {
            sessions,
            next_cursor,
        })
    }

    /// Up to `want` (created, id) of sessions in `states`, newest first, strictly
    /// before `before`: a merge of the per-state index ranges, so each page
    /// reads about `want` index entries whatever the table's size.
    fn newest(
        &self,
        states: &[State],
        before: Option<&(i64, String)>,
        want: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        use std::ops::Bound;
        let table = self.r.open_table(BY_STATE)?;
        let mut ranges = Vec::with_capacity(states.len());
        for state in states {
            let s = state.as_str();
            let upper = match before {
                Some((c, id)) => Bound::Excluded((s, *c, id.as_str())),
                None => Bound::Included((s, i64::MAX, ID_MAX)),
            };
            let lower = Bound::Included((s, i64::MIN, ""));
            ranges.push(table.range::<(&str, i64, &str)>((lower, upper))?.rev());
        }
        let mut next = |i: usize| -> Result<Option<(i64, String)>, StoreError> {
            match ranges[i].next() {
                Some(entry) => {
                    let (k, _) = entry?;
                    let (_, created, id) = k.value();
                    Ok(Some((created, id.to_string())))
                }
                None => Ok(None),
            }
        };
        let mut heads = (0..states.len())
            .map(&mut next)
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let newest = heads
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.as_ref().map(|h| (i, h)))
                .max_by(|a, b| a.1.cmp(b.1))
                .map(|(i, _)| i);
            let Some(i) = newest else { break };
            if let Some(head) = heads[i].take() {
                out.push(head);
            }
            heads[i] = next(i)?;
        }
        Ok(out)
    }

    /// (created, id) of sessions whose id, payment intent or email starts with `q`.
    fn search(&self, q: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let q = q.trim();
        let mut ids: Vec<String> = Vec::new();
        if q.starts_with("cs_") {
            let table = self.r.open_table(SESSIONS)?;
            for entry in table.range(q..)? {
                let (k, _) = entry?;
                if !k.value().starts_with(q) || ids.len() >= SEARCH_CAP {
                    break;
                }
                ids.push(k.value().to_string());
            }
        } else {
            let prefix = if q.starts_with("pi_") {
                pi_term(q)
            } else {
                email_term(q)
            };
            let table = self.r.open_table(BY_TERM)?;
            for entry in table.range((prefix.as_str(), "")..)? {
                let k = entry?.0;
                let (term, id) = k.value();
                if !term.starts_with(prefix.as_str()) || ids.len() >= SEARCH_CAP {
                    break;
                }
                ids.push(id.to_string());
            }
        }
        let table = self.r.open_table(SESSIONS)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(rec) = get_json::<SessionRecord>(&table, &id)? {
                out.push((rec.created, id));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
