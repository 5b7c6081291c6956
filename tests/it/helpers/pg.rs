//! A PostgreSQL database of its own for one test, on the server `.ci/run`
//! starts (`TEST_DATABASE_URL` names a database to create others from).
//! Without that variable PostgreSQL tests skip, unless CI (`CI=true`) or
//! `REQUIRE_PG_TEST=1` says the server must be there: then they fail.
//! `TEST_STORAGE=postgres` runs the whole suite's apps on PostgreSQL.

use std::{
    io::Write,
    sync::atomic::{AtomicU32, Ordering},
};

use fulfilld::store::pg::Target;

const REQUIRE_VARS: [&str; 2] = ["CI", "REQUIRE_PG_TEST"];

/// The suite's apps keep their state in PostgreSQL (`TEST_STORAGE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("TEST_STORAGE").is_ok_and(|v| v == "postgres")
}

/// Says that `test` is about the redb file and does not apply on
/// PostgreSQL; true when the test should return now.
pub fn redb_only(test: &str) -> bool {
    if on_postgres() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test} on PostgreSQL: it is about the redb file"
        );
    }
    on_postgres()
}

/// A database of its own, dropped when this is.
pub struct FreshDb {
    pub target: Target,
    url: String,
    name: String,
}

impl FreshDb {
    /// None (with a note) when no server is configured and none is required.
    pub async fn create(test: &str) -> Option<FreshDb> {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            let required = on_postgres()
                || REQUIRE_VARS.iter().any(|v| {
                    std::env::var(v).is_ok_and(|x| x.eq_ignore_ascii_case("true") || x == "1")
                });
            assert!(
                !required,
                "{test}: TEST_DATABASE_URL is not set, and PostgreSQL is required here (CI, REQUIRE_PG_TEST or TEST_STORAGE=postgres); .ci/run starts one"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: set TEST_DATABASE_URL to a PostgreSQL server's database (.ci/run starts one) to run it"
            );
            return None;
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fulfilld_t_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = Target::parse(&url).unwrap().connect().await.unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut target = Target::parse(&url).unwrap();
        target.config.dbname(&name);
        Some(FreshDb { target, url, name })
    }

    /// The database's URL, as `storage.url` takes it.
    pub fn url(&self) -> String {
        let mut u = reqwest::Url::parse(&self.url).unwrap();
        u.set_path(&format!("/{}", self.name));
        u.to_string()
    }

    /// Waits until no replica has work due within `horizon_ms` and no
    /// session is being fulfilled: what `TestApp::settle` checks, read from
    /// the database every replica shares.
    pub async fn settle(&self, horizon_ms: i64) {
        let client = self.target.connect().await.unwrap();
        super::eventually("the replicas settle", || async {
            let now = i64::try_from(fulfilld::time::now_ms()).unwrap();
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM jobs WHERE due_ms <= $1)
                          + (SELECT count(*) FROM sessions WHERE state = 'fulfilling')",
                    &[&(now + horizon_ms)],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0) == 0).then_some(())
        })
        .await
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        // On a thread of its own: a test's runtime may be single-threaded
        // or already gone. Best effort: the server is the test run's own.
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = Target::parse(&url).ok()?.connect().await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}
