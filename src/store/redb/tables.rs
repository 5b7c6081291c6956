//! Table layout and typed access. Values are JSON (readable with any redb
//! tool, tolerant of added fields); keys are what the lookups need:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `sessions` | session id | the `SessionRecord`'s length (u32 LE), the record, then the `SessionDetail` (without the raw object) |
//! | `session_bodies` | session id | the Checkout Session as last retrieved, with its line items |
//! | `events` | event id | `EventRecord`'s length (u32 LE), the record, then the raw body as received (dedup of Stripe deliveries) |
//! | `notifications` | notification id | `Notification` (outgoing callback bodies) |
//! | `index` | (state, created, id) and (`e:`lowercased email, `p:`payment intent or `a:`connected account, 0, id) | () |
//! | `index` (flags) | (`f:refund_partial`, `f:refund_full` or `f:disputed`, created, id) | () |
//! | `unmatched_charges` | payment intent | charge events kept until a session has that payment (JSON list) |
//! | `jobs` | job key | due ms (u64 LE), then the `Job` (at most one job per key) |
//! | `meta` | name | installation facts (`installation_key`; `layout`) |
//!
//! Writes go through `Tx`; reads through `reader::Reader`.
//!
//! Every tree a write touches costs pages in its commit, so a webhook
//! touches as few as it can: the event, the session and the index (and the
//! queue when it makes work). The queue's due order and the per-state counts
//! live in memory (`memory`), rebuilt at open; the raw retrieved session is
//! written only when it changes, in a tree of its own.

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    acklog::Position,
    memory::{Changes, Counts, JobChange},
};
use crate::{
    domain::{ChargeEvent, Session},
    model::{EventRecord, Job, Notification, SessionRecord, State},
    store::{BackupStats, StoreError},
};

pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(super) const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("session_bodies");
pub(super) const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
pub(super) const NOTIFICATIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("notifications");
pub(super) const INDEX: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("index");
pub(super) const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
pub(super) const UNMATCHED: TableDefinition<&str, &[u8]> =
    TableDefinition::new("unmatched_charges");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The layout this code writes (`meta.layout`); see `migrate` for older ones.
pub(super) const LAYOUT: u8 = 3;

/// Above every session id (ids are ASCII), for open-ended index ranges.
pub(super) const ID_MAX: &str = "\u{7f}";

pub(super) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
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

/// Two parts in one value: the first's length (u32, little endian), the
/// first, then the second. A reader that needs only the first stops there.
fn join(first: &[u8], second: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = u32::try_from(first.len())
        .map_err(|_| StoreError::Refused("a record over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(4 + first.len() + second.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    Ok(out)
}

/// Splits a value made by `join`.
pub(super) fn split<'v>(key: &str, bytes: &'v [u8]) -> Result<(&'v [u8], &'v [u8]), StoreError> {
    let corrupt = || StoreError::Corrupted(format!("{key}: the stored value is truncated"));
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let first = bytes.get(4..4 + len).ok_or_else(corrupt)?;
    Ok((first, &bytes[4 + len..]))
}

pub(super) fn get_event(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<(EventRecord, Vec<u8>)>, StoreError> {
    match table.get(id)? {
        Some(v) => {
            let (rec, raw) = split(id, v.value())?;
            Ok(Some((decode(id, rec)?, raw.to_vec())))
        }
        None => Ok(None),
    }
}

/// The record part of a stored session.
pub(super) fn get_record(
    sessions: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    match sessions.get(id)? {
        Some(v) => decode(id, split(id, v.value())?.0).map(Some),
        None => Ok(None),
    }
}

/// A stored session, record and detail; `detail.raw` is not read (see `Tx::store`).
pub(super) fn load_session(
    sessions: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Session>, StoreError> {
    match sessions.get(id)? {
        Some(v) => {
            let (rec, detail) = split(id, v.value())?;
            Ok(Some(Session {
                rec: decode(id, rec)?,
                detail: decode(id, detail)?,
            }))
        }
        None => Ok(None),
    }
}

/// A session's stored value.
pub(super) fn encode_session(s: &Session) -> Result<Vec<u8>, StoreError> {
    join(&encode(&s.rec)?, &encode(&s.detail)?)
}

/// A job's stored value.
pub(super) fn encode_job(due: u64, job: &Job) -> Result<Vec<u8>, StoreError> {
    let mut out = due.to_le_bytes().to_vec();
    out.extend_from_slice(&encode(job)?);
    Ok(out)
}

/// A job's due time alone: a job whose body no longer decodes still has one,
/// so its session's writes (and webhooks) never fail over it.
fn job_due_of(key: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let due: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            StoreError::Corrupted(format!("job {key}: the stored value is truncated"))
        })?;
    Ok(u64::from_le_bytes(due))
}

pub(super) fn decode_job(key: &str, bytes: &[u8]) -> Result<(u64, Job), StoreError> {
    Ok((job_due_of(key, bytes)?, decode(key, &bytes[8..])?))
}

pub(super) fn email_term(email: &str) -> String {
    format!("e:{}", email.to_lowercase())
}

pub(super) fn pi_term(pi: &str) -> String {
    format!("p:{pi}")
}

/// Index terms of the connected account a session belongs to.
pub(super) const ACCOUNT_PREFIX: &str = "a:";

/// Index terms of the words a search finds a session by.
pub(super) fn word_term(word: &str) -> String {
    format!("w:{word}")
}

pub(super) fn account_term(account: &str) -> String {
    format!("{ACCOUNT_PREFIX}{account}")
}

/// The list filters a session matches, as index terms (keyed by created,
/// like states, so a filtered list walks its own range newest first).
pub(super) const FLAG_REFUND_PARTIAL: &str = "f:refund_partial";
pub(super) const FLAG_REFUND_FULL: &str = "f:refund_full";
pub(super) const FLAG_DISPUTED: &str = "f:disputed";

pub(super) fn flags(rec: &SessionRecord) -> Vec<&'static str> {
    let mut f = Vec::new();
    match rec.refund_status() {
        crate::model::RefundStatus::Partial => f.push(FLAG_REFUND_PARTIAL),
        crate::model::RefundStatus::Full => f.push(FLAG_REFUND_FULL),
        crate::model::RefundStatus::None => {}
    }
    if rec.disputed() {
        f.push(FLAG_DISPUTED);
    }
    f
}

/// The index range of one state's entries.
pub(super) fn state_range(s: &str) -> std::ops::RangeInclusive<(&str, i64, &str)> {
    (s, i64::MIN, "")..=(s, i64::MAX, ID_MAX)
}

/// A write transaction with typed operations that keep the index, and the
/// in-memory queue and counts (through `changes`, applied after the
/// commit), in step. Every table is opened once per transaction (opening is
/// not free in redb, and a batch runs hundreds of operations).
pub struct Tx<'t> {
    sessions: Table<'t, &'static str, &'static [u8]>,
    bodies: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, &'static str, &'static [u8]>,
    notifications: Table<'t, &'static str, &'static [u8]>,
    index: Table<'t, (&'static str, i64, &'static str), ()>,
    jobs: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
    unmatched: Table<'t, &'static str, &'static [u8]>,
    pub(super) changes: Changes,
    /// Something was written: a transaction that wrote nothing is not
    /// committed (a commit costs two syncs even when empty).
    pub(super) dirty: bool,
}

impl<'t> Tx<'t> {
    /// Opens (creating where needed) every table in `w`.
    pub(super) fn open(w: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tx {
            sessions: w.open_table(SESSIONS)?,
            bodies: w.open_table(BODIES)?,
            events: w.open_table(EVENTS)?,
            notifications: w.open_table(NOTIFICATIONS)?,
            index: w.open_table(INDEX)?,
            jobs: w.open_table(JOBS)?,
            meta: w.open_table(META)?,
            unmatched: w.open_table(UNMATCHED)?,
            changes: Changes::default(),
            dirty: false,
        })
    }

    /// The installation's secret, made on first use.
    pub(super) fn installation_key(
        &mut self,
    ) -> Result<crate::domain::ids::InstallationKey, StoreError> {
        if let Some(v) = self.meta.get(INSTALLATION_KEY)? {
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
        self.meta.insert(INSTALLATION_KEY, key.as_slice())?;
        self.dirty = true;
        Ok(key)
    }

    pub(super) fn set_layout(&mut self) -> Result<(), StoreError> {
        self.meta.insert("layout", [LAYOUT].as_slice())?;
        self.dirty = true;
        Ok(())
    }

    /// The session and its detail, if stored (`detail.raw` is not read).
    pub fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        load_session(&self.sessions, id)
    }

    /// Stores a session and moves its index entries to match. The raw
    /// retrieved object is written only when `detail.raw` is set (a read
    /// just brought it); `None` leaves the stored one as it is.
    pub fn store(&mut self, s: &Session) -> Result<(), StoreError> {
        let old = get_record(&self.sessions, &s.rec.id)?;
        self.store_over(old.as_ref(), s)
    }

    /// `store`, for a caller that loaded the session in this transaction
    /// and passes its record as it was (saves decoding it again).
    pub fn store_over(
        &mut self,
        old: Option<&SessionRecord>,
        s: &Session,
    ) -> Result<(), StoreError> {
        self.dirty = true;
        self.reindex(old, &s.rec)?;
        self.sessions
            .insert(s.rec.id.as_str(), encode_session(s)?.as_slice())?;
        if let Some(raw) = &s.detail.raw {
            self.bodies
                .insert(s.rec.id.as_str(), encode(raw)?.as_slice())?;
        }
        Ok(())
    }

    /// Stores an outbox entry unless one with its id exists; true when new.
    pub fn put_notification_if_absent(&mut self, n: &Notification) -> Result<bool, StoreError> {
        if self.notifications.get(n.id.as_str())?.is_some() {
            return Ok(false);
        }
        self.put_notification(n)?;
        Ok(true)
    }

    /// Moves a session's index entries (and counts) from `old` to `rec`.
    fn reindex(
        &mut self,
        old: Option<&SessionRecord>,
        rec: &SessionRecord,
    ) -> Result<(), StoreError> {
        let id = rec.id.as_str();
        let state_key = |r: &SessionRecord| (r.state, r.created);
        let terms = |r: &SessionRecord| {
            let mut t: Vec<String> = Vec::with_capacity(8);
            t.extend(r.customer_email.as_deref().map(email_term));
            t.extend(r.payment_intent.as_deref().map(pi_term));
            t.extend(r.account.as_deref().map(account_term));
            t.extend(r.search_words().iter().map(|w| word_term(w)));
            t
        };
        let new_terms = terms(rec);
        let old_terms = old.map(terms).unwrap_or_default();
        if old.is_none_or(|o| state_key(o) != state_key(rec)) {
            if let Some(o) = old {
                self.index.remove((o.state.as_str(), o.created, id))?;
            }
            self.index
                .insert((rec.state.as_str(), rec.created, id), ())?;
        }
        let old_flags: Vec<_> = old
            .map(|o| flags(o).into_iter().map(|f| (f, o.created)).collect())
            .unwrap_or_default();
        let new_flags: Vec<_> = flags(rec).into_iter().map(|f| (f, rec.created)).collect();
        for (flag, created) in old_flags.iter().filter(|f| !new_flags.contains(f)) {
            self.index.remove((*flag, *created, id))?;
        }
        for (flag, created) in new_flags.iter().filter(|f| !old_flags.contains(f)) {
            self.index.insert((*flag, *created, id), ())?;
        }
        for term in old_terms.iter().filter(|t| !new_terms.contains(t)) {
            self.index.remove((term.as_str(), 0, id))?;
        }
        for term in new_terms.iter().filter(|t| !old_terms.contains(t)) {
            self.index.insert((term.as_str(), 0, id), ())?;
        }
        match old {
            Some(o) if o.state == rec.state => {}
            Some(o) => {
                self.changes.count(o.state, -1);
                self.changes.count(rec.state, 1);
            }
            None => self.changes.count(rec.state, 1),
        }
        Ok(())
    }

    /// How far into the acknowledgement log this commit's tables are
    /// (`acklog`); the start of generation 1 in a database that has none.
    pub(super) fn log_position(&mut self) -> Result<Position, StoreError> {
        match self.meta.get(LOG_POSITION)? {
            Some(v) => Position::from_bytes(v.value()).ok_or_else(bad_position),
            None => Ok(Position::FIRST),
        }
    }

    pub(super) fn set_log_position(&mut self, at: Position) -> Result<(), StoreError> {
        self.meta.insert(LOG_POSITION, at.to_bytes().as_slice())?;
        self.dirty = true;
        Ok(())
    }

    /// Records that the database answers writes (`Storage::probe`).
    pub(super) fn touch(&mut self, now_ms: u64) -> Result<(), StoreError> {
        self.meta
            .insert("probed_at_ms", now_ms.to_le_bytes().as_slice())?;
        self.dirty = true;
        Ok(())
    }

    /// Index entries (and counts) of a session new to the index.
    pub(super) fn index_new(&mut self, rec: &SessionRecord) -> Result<(), StoreError> {
        self.reindex(None, rec)
    }

    /// Layout 2 → 3: the index terms layout 3 added (connected accounts,
    /// search words) for every stored session; `reindex` adds only what
    /// changed, so sessions written before would never get them. Returns
    /// how many sessions were looked at. A record that does not decode is
    /// skipped (it is reported wherever it is read).
    pub(super) fn add_v3_terms(&mut self) -> Result<u64, StoreError> {
        let mut n = 0;
        for entry in self.sessions.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            let Ok(rec) = split(id, v.value()).and_then(|(r, _)| decode::<SessionRecord>(id, r))
            else {
                continue;
            };
            n += 1;
            let words = rec.search_words();
            let terms = rec
                .account
                .as_deref()
                .map(account_term)
                .into_iter()
                .chain(words.iter().map(|w| word_term(w)));
            for term in terms {
                self.index.insert((term.as_str(), 0, id), ())?;
            }
        }
        if n > 0 {
            self.dirty = true;
        }
        Ok(n)
    }

    pub fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        Ok(get_event(&self.events, id)?.map(|(rec, _)| rec))
    }

    /// Stores an event's record with the exact body it arrived with.
    pub fn put_event(&mut self, rec: &EventRecord, raw: &[u8]) -> Result<(), StoreError> {
        self.dirty = true;
        self.events
            .insert(rec.id.as_str(), join(&encode(rec)?, raw)?.as_slice())?;
        Ok(())
    }

    /// Removes an event's raw body if it is still there and was received
    /// before `before_ms`, keeping its record; true when removed.
    pub(super) fn prune_event(&mut self, id: &str, before_ms: u64) -> Result<bool, StoreError> {
        match get_event(&self.events, id)? {
            Some((rec, raw)) if !raw.is_empty() && rec.received_at_ms < before_ms => {
                self.put_event(&rec, &[])?;
                Ok(true)
            }
            _ => Ok(false),
        }
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
        self.dirty = true;
        self.notifications
            .insert(n.id.as_str(), encode(n)?.as_slice())?;
        Ok(())
    }

    /// When the job with this key is due, if it is queued (as of this transaction).
    pub fn job_due(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.jobs.get(key)? {
            // A value too short to hold even a due time is treated as due
            // now, so the next schedule replaces it.
            Some(v) => Ok(Some(job_due_of(key, v.value()).unwrap_or(0))),
            None => Ok(None),
        }
    }

    /// Queues `job` at `due_ms`, replacing any queued job with the same key.
    pub fn schedule(&mut self, job: &Job, due_ms: u64) -> Result<(), StoreError> {
        let key = job.key();
        self.dirty = true;
        self.jobs
            .insert(key.as_str(), encode_job(due_ms, job)?.as_slice())?;
        self.changes.jobs.push(JobChange::Put {
            due: due_ms,
            job: job.clone(),
        });
        Ok(())
    }

    /// Removes the job with this key, if any.
    pub fn unschedule(&mut self, key: &str) -> Result<(), StoreError> {
        if self.jobs.remove(key)?.is_some() {
            self.dirty = true;
            self.changes.jobs.push(JobChange::Remove {
                key: key.to_string(),
            });
        }
        Ok(())
    }
}

/// A snapshot's `Tx::log_position`, and its installation key (none in a
/// database that has never been opened for writing).
pub(super) fn log_position_of(
    r: &ReadTransaction,
) -> Result<(Position, Option<Vec<u8>>), StoreError> {
    let meta = match r.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Position::FIRST, None)),
        Err(e) => return Err(e.into()),
    };
    let at = match meta.get(LOG_POSITION)? {
        Some(v) => Position::from_bytes(v.value()).ok_or_else(bad_position)?,
        None => Position::FIRST,
    };
    let key = meta.get(INSTALLATION_KEY)?.map(|v| v.value().to_vec());
    Ok((at, key))
}

const LOG_POSITION: &str = "ack_log_position";
const INSTALLATION_KEY: &str = "installation_key";

fn bad_position() -> StoreError {
    StoreError::Corrupted("the acknowledgement log position has the wrong length".into())
}

/// Reads what memory holds (every queued job, the per-state counts) from a
/// snapshot. A job that does not decode is logged and left out: one bad row
/// must not keep the rest of the queue from running.
pub(super) fn read_memory(r: &ReadTransaction) -> Result<(Vec<(u64, Job)>, Counts), StoreError> {
    let mut jobs = Vec::new();
    for entry in r.open_table(JOBS)?.iter()? {
        let (k, v) = entry?;
        match decode_job(k.value(), v.value()) {
            Ok(job) => jobs.push(job),
            Err(e) => tracing::error!(job = k.value(), error = %e, "skipping an unreadable job"),
        }
    }
    let index = r.open_table(INDEX)?;
    let mut counts: Counts = Default::default();
    for (n, state) in counts.iter_mut().zip(State::ALL) {
        for entry in index.range(state_range(state.as_str()))? {
            entry?;
            *n += 1;
        }
    }
    Ok((jobs, counts))
}

/// Copies `def` from a snapshot into a write transaction; returns the rows copied.
pub(super) fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
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

/// The layout a snapshot's file is in (`None`: no layout recorded).
pub(super) fn layout_of(r: &ReadTransaction) -> Result<Option<u8>, StoreError> {
    match r.open_table(META) {
        Ok(meta) => Ok(meta.get("layout")?.and_then(|v| v.value().first().copied())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The installation key a snapshot holds.
pub(super) fn installation_key_of(
    r: &ReadTransaction,
) -> Result<Option<crate::domain::ids::InstallationKey>, StoreError> {
    let (_, key) = log_position_of(r)?;
    key.map(|k| {
        <[u8; 32]>::try_from(k.as_slice())
            .map_err(|_| StoreError::Corrupted("the installation key has the wrong length".into()))
    })
    .transpose()
}

/// Every session, retrieved body, event, notification and job of a
/// snapshot, table by table, to `send`. The index is not sent: it is
/// derived from the sessions.
pub(super) fn each_row(
    r: &ReadTransaction,
    send: &mut dyn FnMut(crate::store::Row) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    use crate::store::Row;
    fn each(
        r: &ReadTransaction,
        def: TableDefinition<&'static str, &'static [u8]>,
        mut f: impl FnMut(&str, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let table = match r.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for entry in table.iter()? {
            let (k, v) = entry?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }
    each(r, SESSIONS, |id, v| {
        let (rec, detail) = split(id, v)?;
        send(Row::Session(Box::new(Session {
            rec: decode(id, rec)?,
            detail: decode(id, detail)?,
        })))
    })?;
    each(r, BODIES, |id, v| {
        send(Row::Body(id.to_string(), decode(id, v)?))
    })?;
    each(r, EVENTS, |id, v| {
        let (rec, raw) = split(id, v)?;
        send(Row::Event(decode(id, rec)?, raw.to_vec()))
    })?;
    each(r, NOTIFICATIONS, |id, v| {
        send(Row::Notification(decode(id, v)?))
    })?;
    each(r, JOBS, |key, v| {
        let (due, job) = decode_job(key, v)?;
        send(Row::Job(key.to_string(), due, job))
    })?;
    each(r, UNMATCHED, |pi, v| {
        send(Row::Unmatched(pi.to_string(), decode(pi, v)?))
    })
}

/// Copies every table of one snapshot into `to` (a fresh database), in the
/// layout it is in (a stopped file of an older version is copied as it is,
/// and upgraded when it is first opened).
pub(super) fn copy_all(
    from: &ReadTransaction,
    to: &WriteTransaction,
) -> Result<BackupStats, StoreError> {
    // Layout 2 has layout 3's tables (3 added index terms, written when the
    // copy is first opened); layout 1 is copied as it is.
    if !matches!(layout_of(from)?, Some(2 | LAYOUT)) {
        return super::migrate::copy_v1(from, to);
    }
    let sessions = copy_table(from, to, SESSIONS)?;
    let events = copy_table(from, to, EVENTS)?;
    let rows = sessions
        + events
        + copy_table(from, to, BODIES)?
        + copy_table(from, to, NOTIFICATIONS)?
        + copy_table(from, to, INDEX)?
        + copy_table(from, to, JOBS)?
        + copy_table(from, to, META)?
        + copy_table(from, to, UNMATCHED)?;
    Ok(BackupStats {
        sessions,
        events,
        rows,
    })
}

/// The shared operations (`store::ops`) on a redb write transaction.
impl crate::store::ops::Txn for Tx<'_> {
    fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Tx::load(self, id)
    }
    fn store_over(&mut self, old: Option<&SessionRecord>, s: &Session) -> Result<(), StoreError> {
        Tx::store_over(self, old, s)
    }
    fn notification(&self, id: &str) -> Result<Option<Notification>, StoreError> {
        Tx::notification(self, id)
    }
    fn put_notification(&mut self, n: &Notification) -> Result<(), StoreError> {
        Tx::put_notification(self, n)
    }
    fn put_notification_if_absent(&mut self, n: &Notification) -> Result<bool, StoreError> {
        Tx::put_notification_if_absent(self, n)
    }
    fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        Tx::event(self, id)
    }
    fn put_event(&mut self, rec: &EventRecord, raw: &[u8]) -> Result<(), StoreError> {
        Tx::put_event(self, rec, raw)
    }
    fn update_event(&mut self, rec: &EventRecord) -> Result<(), StoreError> {
        Tx::update_event(self, rec)
    }
    fn job_due(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Tx::job_due(self, key)
    }
    fn schedule(&mut self, job: &Job, due_ms: u64) -> Result<(), StoreError> {
        Tx::schedule(self, job, due_ms)
    }
    fn unschedule(&mut self, key: &str) -> Result<(), StoreError> {
        Tx::unschedule(self, key)
    }
    fn session_for_payment(&self, payment_intent: &str) -> Result<Option<String>, StoreError> {
        let term = pi_term(payment_intent);
        let mut range = self
            .index
            .range((term.as_str(), 0, "")..=(term.as_str(), 0, ID_MAX))?;
        Ok(match range.next() {
            Some(entry) => Some(entry?.0.value().2.to_string()),
            None => None,
        })
    }
    fn unmatched(&self, payment_intent: &str) -> Result<Vec<ChargeEvent>, StoreError> {
        Ok(get_json(&self.unmatched, payment_intent)?.unwrap_or_default())
    }
    fn put_unmatched(
        &mut self,
        payment_intent: &str,
        events: &[ChargeEvent],
    ) -> Result<(), StoreError> {
        self.dirty = true;
        if events.is_empty() {
            self.unmatched.remove(payment_intent)?;
        } else {
            self.unmatched
                .insert(payment_intent, encode(&events)?.as_slice())?;
        }
        Ok(())
    }
}
