//! The schema, versioned: each version is one SQL file applied once, in
//! order, in one transaction with the version's row in `fulfilld_schema`.
//! The transaction first takes an advisory lock, so replicas that start
//! together apply each version once; the others wait, then find it done.
//! A database whose schema is newer than this build, or whose applied
//! version differs from this build's file, is refused rather than used.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::PgError;

/// Every version, in order: (number, SQL).
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("schema/0001_initial.sql")),
    (2, include_str!("schema/0002_after_the_sale.sql")),
];

/// The newest version this build knows.
pub const LATEST: i32 = 2;

/// The advisory lock migrations hold: any fixed number, the same in every
/// replica.
const LOCK: i64 = i64::from_be_bytes(*b"fulfilld");

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Brings the schema up to `LATEST`; returns how many versions it applied.
pub async fn migrate(client: &mut Client) -> Result<usize, PgError> {
    let tx = client.transaction().await?;
    // A migration may take longer than the usual limits, and a replica
    // starting beside it waits for it, however long it takes.
    tx.batch_execute("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0")
        .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS fulfilld_schema (
            version    integer PRIMARY KEY,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: Vec<(i32, String)> = tx
        .query(
            "SELECT version, checksum FROM fulfilld_schema ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if let Some(&(found, _)) = applied.last()
        && found > LATEST
    {
        return Err(PgError::NewerSchema {
            found,
            known: LATEST,
        });
    }
    let mut count = 0;
    for &(version, sql) in MIGRATIONS {
        let expected = checksum(sql);
        match applied.iter().find(|(v, _)| *v == version) {
            Some((_, found)) if *found == expected => continue,
            Some((_, found)) => {
                return Err(PgError::ChangedMigration {
                    version,
                    found: found.clone(),
                    expected,
                });
            }
            None => {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO fulfilld_schema (version, checksum) VALUES ($1, $2)",
                    &[&version, &expected],
                )
                .await?;
                count += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(count)
}

/// The schema version the database is at (None: fulfilld never migrated
/// it), for `check-config` and startup checks.
pub async fn schema_version(client: &Client) -> Result<Option<i32>, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('fulfilld_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_one("SELECT max(version) FROM fulfilld_schema", &[])
        .await?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_in_order_up_to_latest() {
        let numbers: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let expected: Vec<i32> = (1..=LATEST).collect();
        assert_eq!(numbers, expected);
        assert_eq!(checksum("a").len(), 64);
    }
}
