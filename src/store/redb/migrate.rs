//! Upgrading a file written by an earlier layout, in the one transaction
//! that opens it: either every record is in the new layout, or (on any
//! failure) the file is as it was.
//!
//! Layout 1 (before `meta.layout` existed) kept a session's record and its
//! detail (with the raw retrieved object) in two trees, a state index and a
//! search index in two more, the queue in two (by due time and by key) and
//! the per-state counts in a seventh. Layout 2 is described in `tables`.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::Deserialize;

use super::tables::{
    BODIES, EVENTS, LAYOUT, META, NOTIFICATIONS, SESSIONS, Tx, copy_table, decode, encode,
    encode_job, encode_session,
};
use crate::{
    domain::Session,
    model::{Job, SessionDetail, SessionRecord, State, Trigger},
    store::{BackupStats, StoreError},
};

const V1_DETAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_details");
const V1_BY_STATE: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("sessions_by_state");
const V1_BY_TERM: TableDefinition<(&str, &str), ()> = TableDefinition::new("sessions_by_term");
const V1_JOBS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("jobs");
const V1_JOB_DUE: TableDefinition<&str, u64> = TableDefinition::new("job_due");
const V1_STATE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("state_counts");

/// Sessions converted per pass over the table (bounds the memory a large
/// file's upgrade takes).
const CHUNK: usize = 512;

/// The layout `w`'s file is in: `None` for a new, empty file.
fn layout(w: &WriteTransaction) -> Result<Option<u8>, StoreError> {
    use redb::TableHandle;
    let meta = w.open_table(META)?;
    if let Some(v) = meta.get("layout")? {
        return Ok(v.value().first().copied());
    }
    drop(meta);
    let has_sessions = w.list_tables()?.any(|t| t.name() == SESSIONS.name());
    Ok(has_sessions.then_some(1))
}

/// Brings the file up to `LAYOUT` and records it. Returns the number of
/// sessions converted (0 when nothing needed doing).
pub(super) fn upgrade(w: &WriteTransaction) -> Result<u64, StoreError> {
    match layout(w)? {
        Some(LAYOUT) => return Ok(0),
        Some(2) => {
            let mut tx = Tx::open(w)?;
            let n = tx.add_v3_terms()?;
            tx.set_layout()?;
            return Ok(n);
        }
        Some(1) => {}
        None => {
            Tx::open(w)?.set_layout()?;
            return Ok(0);
        }
        Some(other) => {
            return Err(StoreError::Refused(format!(
                "the database was written by a newer fulfilld (layout {other}; this version reads up to {LAYOUT}); run that version, or restore a backup"
            )));
        }
    }
    let jobs = take_v1_jobs(w)?;
    w.delete_table(V1_BY_STATE)?;
    w.delete_table(V1_BY_TERM)?;
    w.delete_table(V1_JOB_DUE)?;
    w.delete_table(V1_STATE_COUNTS)?;
    let (converted, pending) = convert_sessions(w)?;
    w.delete_table(V1_DETAILS)?;
    let mut tx = Tx::open(w)?;
    for (due, job) in jobs {
        tx.schedule(&job, due)?;
    }
    // Never stuck: a session to be fulfilled or retried whose job was lost
    // (an unreadable row) is due at once.
    for id in pending {
        let job = Job::Fulfill {
            session_id: id,
            trigger: Trigger::Retry,
        };
        if tx.job_due(&job.key())?.is_none() {
            tx.schedule(&job, 0)?;
        }
    }
    tx.set_layout()?;
    Ok(converted)
}

/// Copies a layout-1 snapshot table by table, as it is.
pub(super) fn copy_v1(
    from: &redb::ReadTransaction,
    to: &WriteTransaction,
) -> Result<BackupStats, StoreError> {
    let sessions = copy_table(from, to, SESSIONS)?;
    let events = copy_table(from, to, EVENTS)?;
    let rows = sessions
        + events
        + copy_table(from, to, V1_DETAILS)?
        + copy_table(from, to, NOTIFICATIONS)?
        + copy_table(from, to, V1_BY_STATE)?
        + copy_table(from, to, V1_BY_TERM)?
        + copy_table(from, to, V1_JOBS)?
        + copy_table(from, to, V1_JOB_DUE)?
        + copy_table(from, to, V1_STATE_COUNTS)?
        + copy_table(from, to, META)?;
    Ok(BackupStats {
        sessions,
        events,
        rows,
    })
}

/// Every queued job of layout 1; its two queue tables are then deleted.
fn take_v1_jobs(w: &WriteTransaction) -> Result<Vec<(u64, Job)>, StoreError> {
    let mut jobs = Vec::new();
    match w.open_table(V1_JOBS) {
        Ok(table) => {
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (due, key) = k.value();
                match decode::<Job>(key, v.value()) {
                    Ok(job) => jobs.push((due, job)),
                    Err(e) => {
                        tracing::error!(job = key, error = %e, "dropping an unreadable job while upgrading the database")
                    }
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    w.delete_table(V1_JOBS)?;
    // Jobs are kept in layout 2's form by `upgrade`; make sure the values
    // would encode before anything is deleted for good.
    for (due, job) in &jobs {
        encode_job(*due, job)?;
    }
    Ok(jobs)
}

/// The raw object from a layout-1 detail, which layout 2 keeps apart.
#[derive(Deserialize)]
struct RawOnly {
    #[serde(default)]
    raw: Option<serde_json::Value>,
}

/// Rewrites every session as one value, its raw object into `session_bodies`,
/// and builds the index, `CHUNK` sessions at a time. A record that does not
/// decode is logged and left as it is (it reads as damaged, as before),
/// never a reason to refuse the whole file. Returns how many were converted
/// and the ids of those to be fulfilled or retried.
fn convert_sessions(w: &WriteTransaction) -> Result<(u64, Vec<String>), StoreError> {
    let mut converted = 0u64;
    let mut pending = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let chunk: Vec<(String, Vec<u8>)> = {
            let sessions = w.open_table(SESSIONS)?;
            let range = match &after {
                Some(a) => sessions.range::<&str>((
                    std::ops::Bound::Excluded(a.as_str()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => sessions.range::<&str>(..)?,
            };
            range
                .take(CHUNK)
                .map(|e| e.map(|(k, v)| (k.value().to_string(), v.value().to_vec())))
                .collect::<Result<_, _>>()?
        };
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = Some(last.clone());
        let details = match w.open_table(V1_DETAILS) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut sessions = Vec::with_capacity(chunk.len());
        for (id, rec) in chunk {
            let rec: SessionRecord = match decode(&id, &rec) {
                Ok(rec) => rec,
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "leaving a session record that cannot be read as it is while upgrading the database");
                    continue;
                }
            };
            let stored = details
                .as_ref()
                .map(|d| d.get(id.as_str()))
                .transpose()?
                .flatten();
            let (mut detail, raw) = match stored {
                Some(v) => match (
                    decode::<SessionDetail>(&id, v.value()),
                    decode::<RawOnly>(&id, v.value()),
                ) {
                    (Ok(detail), Ok(raw)) => (detail, raw.raw),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(session = %id, error = %e, "a session's history cannot be read; upgrading its record without it");
                        (SessionDetail::default(), None)
                    }
                },
                None => (SessionDetail::default(), None),
            };
            detail.raw = raw;
            if matches!(rec.state, State::Fulfilling | State::Retrying) {
                pending.push(rec.id.clone());
            }
            sessions.push(Session { rec, detail });
        }
        drop(details);
        // Written straight (not through `Tx::store`): the old record is in
        // layout 1's form, and the index starts empty.
        let mut table = w.open_table(SESSIONS)?;
        let mut bodies = w.open_table(BODIES)?;
        for s in &sessions {
            table.insert(s.rec.id.as_str(), encode_session(s)?.as_slice())?;
            if let Some(raw) = &s.detail.raw {
                bodies.insert(s.rec.id.as_str(), encode(raw)?.as_slice())?;
            }
        }
        drop((table, bodies));
        let mut tx = Tx::open(w)?;
        for s in &sessions {
            tx.index_new(&s.rec)?;
        }
        converted += sessions.len() as u64;
    }
    Ok((converted, pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{EventRef, LineItemRecord, State, Trigger},
        store::{ListQuery, Storage, redb::RedbStore},
    };

    /// Writes a layout-1 file as the previous version did.
    fn write_v1(path: &std::path::Path, n: usize) {
        let db = redb::Database::create(path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut sessions = w.open_table(SESSIONS).unwrap();
            let mut details = w.open_table(V1_DETAILS).unwrap();
            let mut by_state = w.open_table(V1_BY_STATE).unwrap();
            let mut by_term = w.open_table(V1_BY_TERM).unwrap();
            let mut jobs = w.open_table(V1_JOBS).unwrap();
            let mut job_due = w.open_table(V1_JOB_DUE).unwrap();
            let mut counts = w.open_table(V1_STATE_COUNTS).unwrap();
            for i in 0..n {
                let id = format!("cs_test_v1_{i:05}");
                let mut rec = SessionRecord::new(&id, 1_700_000_000 + i as i64, 5);
                rec.state = if i % 3 == 0 {
                    State::Fulfilled
                } else {
                    State::Retrying
                };
                rec.customer_email = Some(format!("Buyer{i}@Example.com"));
                sessions
                    .insert(id.as_str(), serde_json::to_vec(&rec).unwrap().as_slice())
                    .unwrap();
                let detail = serde_json::json!({
                    "line_items": [LineItemRecord { id: "li_1".into(), description: Some("Mug".into()), quantity: Some(2), amount_total: 2400, amount_subtotal: 2400, currency: Some("eur".into()), price_id: None, unit_amount: Some(1200), product_id: None }],
                    "attempts": [], "fulfillments": [], "deliveries": [],
                    "events": [EventRef { id: format!("evt_{i}"), kind: "checkout.session.completed".into(), received_at_ms: 7 }],
                    "delivery_details": {"name": null, "address_lines": []},
                    "amount_subtotal": 2400,
                    "raw": {"id": id, "object": "checkout.session"},
                });
                details
                    .insert(id.as_str(), serde_json::to_vec(&detail).unwrap().as_slice())
                    .unwrap();
                by_state
                    .insert((rec.state.as_str(), rec.created, id.as_str()), ())
                    .unwrap();
                by_term
                    .insert(
                        (format!("e:buyer{i}@example.com").as_str(), id.as_str()),
                        (),
                    )
                    .unwrap();
                if rec.state == State::Retrying {
                    let job = Job::Fulfill {
                        session_id: id.clone(),
                        trigger: Trigger::Retry,
                    };
                    let key = job.key();
                    jobs.insert(
                        (900 + i as u64, key.as_str()),
                        serde_json::to_vec(&job).unwrap().as_slice(),
                    )
                    .unwrap();
                    job_due.insert(key.as_str(), 900 + i as u64).unwrap();
                }
            }
            counts.insert("fulfilled", 1).unwrap();
            // One record that no longer decodes, and one retrying session
            // whose job row is unreadable.
            sessions
                .insert("cs_test_v1_broken", b"{not json".as_slice())
                .unwrap();
            let mut rec = SessionRecord::new("cs_test_v1_lostjob", 1_600_000_000, 5);
            rec.state = State::Retrying;
            sessions
                .insert(
                    "cs_test_v1_lostjob",
                    serde_json::to_vec(&rec).unwrap().as_slice(),
                )
                .unwrap();
            by_state
                .insert(("retrying", rec.created, "cs_test_v1_lostjob"), ())
                .unwrap();
            jobs.insert((5, "fulfill:cs_test_v1_lostjob"), b"??".as_slice())
                .unwrap();
            job_due.insert("fulfill:cs_test_v1_lostjob", 5).unwrap();
        }
        w.commit().unwrap();
    }

    #[tokio::test]
    async fn a_layout_1_file_is_upgraded_with_every_session_job_and_raw_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        // More than one chunk, so the pass-by-pass conversion is exercised.
        let n = CHUNK * 2 + 7;
        write_v1(&path, n);
        // An offline backup of the old file copies it as it is...
        let backup = dir.path().join("backup.redb");
        let copied = super::super::backup_file(&path, &backup).unwrap();
        assert_eq!(copied.sessions, n as u64 + 2);
        // ...and both upgrade when opened.
        let restored = RedbStore::open(&backup).unwrap();
        assert_eq!(restored.session_count().await.unwrap(), n as u64 + 2);
        restored.close().await;
        let store = RedbStore::open(&path).unwrap();
        // The unreadable record stays (and reads as damaged); the rest upgrade.
        assert_eq!(store.session_count().await.unwrap(), n as u64 + 2);
        let broken = crate::model::SessionId::parse("cs_test_v1_broken").unwrap();
        assert!(store.session(&broken).await.is_err());
        let counts = store.state_counts().await.unwrap();
        let fulfilled = n.div_ceil(3) as u64;
        let retrying = n as u64 - fulfilled + 1;
        assert!(
            counts.contains(&(State::Fulfilled, fulfilled)),
            "{counts:?}"
        );
        assert!(counts.contains(&(State::Retrying, retrying)), "{counts:?}");
        // The retrying session whose job was unreadable is due at once.
        let stats = store.queue_stats().await.unwrap();
        assert_eq!(stats.queued, retrying);
        assert_eq!(stats.next_due, Some(0));
        assert_eq!(
            store.job_due("fulfill:cs_test_v1_lostjob").await.unwrap(),
            Some(0)
        );
        let id = crate::model::SessionId::parse("cs_test_v1_00001").unwrap();
        let view = store.session_view(&id).await.unwrap().unwrap();
        assert_eq!(view.session.detail.line_items[0].amount_total, 2400);
        assert_eq!(view.session.detail.events[0].id, "evt_1");
        assert_eq!(
            view.session
                .detail
                .raw
                .as_ref()
                .and_then(|r| r.get("object")),
            Some(&serde_json::json!("checkout.session"))
        );
        let found = store
            .list(ListQuery {
                q: Some("buyer1000@".into()),
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(found.sessions.len(), 1, "the search index was rebuilt");
        let retrying = store
            .list(ListQuery {
                state: Some(State::Retrying),
                limit: 5,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(retrying.sessions.len(), 5);
        assert_eq!(retrying.sessions[0].id, format!("cs_test_v1_{:05}", n - 1));
        store.close().await;
        drop(store);
        // Opening again finds layout 2 and changes nothing.
        let again = super::super::tests::reopen(&path).await.unwrap();
        assert_eq!(again.session_count().await.unwrap(), n as u64 + 2);
        assert_eq!(again.queue_stats().await.unwrap(), stats);
    }

    /// A layout-2 file (the previous version's): opening it adds the index
    /// terms layout 3 searches by, for sessions written before.
    #[tokio::test]
    async fn a_layout_2_file_gets_the_search_and_account_terms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.redb");
        let store = RedbStore::open(&path).unwrap();
        let mut rec = SessionRecord::new("cs_test_v2_words", 1_700_000_000, 0);
        rec.customer_email = Some("maria.garcia@example.com".into());
        rec.account = Some("acct_1Old".into());
        store
            .import(vec![Session {
                rec,
                detail: Default::default(),
            }])
            .await
            .unwrap();
        store.close().await;
        drop(store);
        // As the previous version left it: no such terms, layout 2.
        {
            let db = redb::Database::open(&path).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut index = w.open_table(super::super::tables::INDEX).unwrap();
                for term in ["w:maria", "w:garcia", "w:example", "w:com", "a:acct_1Old"] {
                    index.remove((term, 0, "cs_test_v2_words")).unwrap();
                }
                let mut meta = w.open_table(META).unwrap();
                meta.insert("layout", [2u8].as_slice()).unwrap();
            }
            w.commit().unwrap();
        }
        let store = super::super::tests::reopen(&path).await.unwrap();
        let found = store
            .list(ListQuery {
                q: Some("garcia".into()),
                limit: 5,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(found.sessions.len(), 1);
        assert_eq!(store.accounts(10).await.unwrap(), ["acct_1Old"]);
    }
}
