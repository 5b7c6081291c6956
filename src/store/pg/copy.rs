//! `fulfilld migrate-to`: every record of a stopped redb file into an
//! empty PostgreSQL database, in one transaction (a copy that fails
//! leaves the database as it was), written by the same statements as the
//! writer's batches.
//!
//! The installation key is copied too, so fulfillment ids, callback
//! `webhook-id`s and device cookies stay what they were. A database that
//! already holds records, or another installation's key (a replica was
//! started on it), is refused: two keys would mean two fulfillment ids
//! for one session.

use tokio::sync::mpsc;
use tokio_postgres::Transaction;

use super::{
    Target, migrate, pg_error,
    txn::{EventWrite, JobWrite, Writes},
    writer::{Statements, write_back},
};
use crate::store::{Copied, Result, Row, StoreError};

/// Rows written per round of statements.
const CHUNK: usize = 500;

/// Copies the rows `rows` yields (the installation key first) into the
/// database at `target`, migrating its schema first. Commits only once
/// `finished` says the reader got to the end (a reader that stopped early
/// also closes the channel).
pub async fn copy_into(
    target: &Target,
    mut rows: mpsc::Receiver<Row>,
    finished: impl std::future::Future<Output = Result<()>>,
) -> Result<Copied> {
    let mut client = target.connect().await.map_err(pg_error)?;
    migrate::migrate(&mut client).await.map_err(pg_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    // No statement limit: a large file takes as long as it takes.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(pg_error)?;
    let Some(Row::InstallationKey(key)) = rows.recv().await else {
        return Err(StoreError::Refused(
            "the redb file yielded no installation key".into(),
        ));
    };
    claim_empty(&tx, &key).await?;
    let mut copied = Copied::default();
    let mut writes = Writes::default();
    let mut pending = 0;
    let mut st = Statements::default();
    while let Some(row) = rows.recv().await {
        match row {
            Row::InstallationKey(_) => {
                return Err(StoreError::Refused("a second installation key".into()));
            }
            Row::Session(s) => {
                copied.sessions += 1;
                writes.sessions.insert(s.rec.id.clone(), *s);
            }
            Row::Body(id, body) => {
                writes.bodies.insert(id, body);
            }
            Row::Event(rec, raw) => {
                copied.events += 1;
                writes
                    .events
                    .insert(rec.id.clone(), EventWrite::New(rec, raw));
            }
            Row::Notification(n) => {
                copied.notifications += 1;
                writes.notifications.insert(n.id.clone(), n);
            }
            Row::Job(key, due, job) => {
                copied.jobs += 1;
                writes.jobs.insert(key, JobWrite::Put(due, job));
            }
            Row::Unmatched(pi, kept) => {
                writes.unmatched.insert(pi, kept);
            }
        }
        pending += 1;
        if pending == CHUNK {
            write_back(&tx, &mut st, &std::mem::take(&mut writes)).await?;
            pending = 0;
        }
    }
    write_back(&tx, &mut st, &writes).await?;
    finished.await?;
    // Every row arrived, none merged into another: the counts agree.
    let found = counts(&tx).await?;
    if found != copied {
        return Err(StoreError::Refused(format!(
            "the copy holds {found:?}, the file {copied:?}; nothing was committed"
        )));
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(copied)
}

/// Refuses a database with records or another installation's key, and
/// writes this one's key. The key's row stays locked until the commit, so
/// a replica starting meanwhile waits for it and then uses it.
async fn claim_empty(tx: &Transaction<'_>, key: &[u8; 32]) -> Result<()> {
    let held = counts(tx).await?;
    if held != Copied::default() {
        return Err(StoreError::Refused(format!(
            "the database already holds {} sessions, {} events, {} notifications and {} jobs; migrate-to fills only an empty database",
            held.sessions, held.events, held.notifications, held.jobs
        )));
    }
    let inserted = tx
        .execute(
            "INSERT INTO meta (name, value) VALUES ('installation_key', $1) ON CONFLICT (name) DO NOTHING",
            &[&key.as_slice()],
        )
        .await
        .map_err(pg_error)?;
    if inserted == 0 {
        let row = tx
            .query_one(
                "SELECT value FROM meta WHERE name = 'installation_key'",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let theirs: Vec<u8> = row.get(0);
        if theirs != key.as_slice() {
            return Err(StoreError::Refused(
                "a fulfilld replica already started on this database and made its own installation key; copy into a new, empty database (no replica may start on it before the copy)".into(),
            ));
        }
    }
    Ok(())
}

async fn counts(tx: &Transaction<'_>) -> Result<Copied> {
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM events),
                    (SELECT count(*) FROM notifications), (SELECT count(*) FROM jobs)",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(Copied {
        sessions: n(0),
        events: n(1),
        notifications: n(2),
        jobs: n(3),
    })
}
