//! The PostgreSQL backend against a real server (issue 12, first step: the
//! connection and the versioned schema). The server is the one `.ci/run`
//! starts; `TEST_DATABASE_URL` names a database the tests may create
//! databases from. Without it these tests skip, unless CI (`CI=true`) or
//! `REQUIRE_PG_TEST=1` says PostgreSQL must be there: then they fail.

use fulfilld::store::pg::{
    PgError, Target,
    migrate::{LATEST, migrate, schema_version},
};

use crate::helpers::pg::FreshDb as Fresh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_end_with_one_schema() {
    let Some(db) = Fresh::create("replicas_migrating_at_once_end_with_one_schema").await else {
        return;
    };
    let mut starts = Vec::new();
    for _ in 0..3 {
        let target = db.target.clone();
        starts.push(tokio::spawn(async move {
            let mut client = target.connect().await.unwrap();
            migrate(&mut client).await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for s in starts {
        applied.push(s.await.unwrap());
    }
    applied.sort();
    assert_eq!(
        applied,
        vec![0, 0, LATEST as usize],
        "one replica applied the schema"
    );
    let mut client = db.target.connect().await.unwrap();
    assert_eq!(schema_version(&client).await.unwrap(), Some(LATEST));
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('sessions','events','jobs','notifications','meta')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 5);
    assert_eq!(
        migrate(&mut client).await.unwrap(),
        0,
        "a restart applies nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_or_changed_schema_is_refused() {
    let Some(db) = Fresh::create("a_newer_or_changed_schema_is_refused").await else {
        return;
    };
    let mut client = db.target.connect().await.unwrap();
    assert_eq!(
        schema_version(&client).await.unwrap(),
        None,
        "a new database"
    );
    migrate(&mut client).await.unwrap();
    client
        .execute(
            "UPDATE fulfilld_schema SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    match migrate(&mut client).await {
        Err(e @ PgError::ChangedMigration { version: 1, .. }) => {
            assert!(e.to_string().contains("changed by hand"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    client
        .execute(
            "INSERT INTO fulfilld_schema (version, checksum) VALUES ($1, 'future')",
            &[&(LATEST + 1)],
        )
        .await
        .unwrap();
    match migrate(&mut client).await {
        Err(e @ PgError::NewerSchema { .. }) => {
            assert!(e.to_string().contains("newer than this fulfilld"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(schema_version(&client).await.unwrap(), Some(LATEST + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_server_or_one_without_required_tls_is_a_connect_error() {
    let Some(db) =
        Fresh::create("an_absent_server_or_one_without_required_tls_is_a_connect_error").await
    else {
        return;
    };
    let mut nowhere = db.target.clone();
    nowhere.config.port(1);
    // The test server has no TLS: `require` must not fall back to plain text.
    let mut plain_only = db.target.clone();
    plain_only
        .config
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    plain_only.tls = true;
    for target in [nowhere, plain_only] {
        match target.connect().await {
            Err(e @ PgError::Connect(_)) => {
                assert!(e.to_string().contains("cannot connect"), "{e}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}

fn ctx() -> fulfilld::store::Ctx {
    use fulfilld::domain::{Channels, Policy, RetryPolicy};
    let retry = RetryPolicy {
        base_ms: 1000,
        max_ms: 60_000,
        give_up_ms: 600_000,
    };
    fulfilld::store::Ctx {
        policy: std::sync::Arc::new(Policy::new(retry, 60_000, false, Channels::default())),
        owner: "boot_pg_test".into(),
        now: fulfilld::time::now_ms(),
        entropy: 0,
    }
}

/// Background roles go to one replica at a time and pass on when it stops;
/// work queued on one replica wakes the others (LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_each_role_and_queued_work_wakes_the_others() {
    use fulfilld::{
        domain::Input,
        model::{SessionId, Trigger},
        store::{Storage, pg::PgStore},
    };
    let Some(db) =
        Fresh::create("one_replica_leads_each_role_and_queued_work_wakes_the_others").await
    else {
        return;
    };
    let a = PgStore::open(db.target.clone()).await.unwrap();
    let b = PgStore::open(db.target.clone()).await.unwrap();
    assert!(a.lead("reconcile").await.unwrap());
    assert!(a.lead("reconcile").await.unwrap(), "held, not taken twice");
    assert!(!b.lead("reconcile").await.unwrap(), "one leader at a time");
    assert!(b.lead("retention").await.unwrap(), "roles are apart");
    assert_eq!(
        a.derived_key("x"),
        b.derived_key("x"),
        "one installation key"
    );

    let woken = b.queue_changed();
    let notified = woken.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let id = SessionId::parse("cs_test_pg_wake").unwrap();
    let claim = Input::Claim {
        trigger: Trigger::Admin,
        force: false,
        actor: None,
        created: Some(1),
    };
    a.transition(&id, claim, ctx()).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), notified)
        .await
        .expect("the other replica is woken by the queued job");
    let due = b.job_due("fulfill:cs_test_pg_wake").await.unwrap();
    assert!(due.is_some(), "the claim's job is queued for every replica");

    a.close().await;
    crate::helpers::eventually("the role passes on", || async {
        b.lead("reconcile").await.unwrap().then_some(())
    })
    .await;
}

/// `/healthz` on PostgreSQL reads and writes the database: once the
/// database is gone it answers 503, not 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_when_the_database_is_gone() {
    let Some(db) = Fresh::create("healthz_fails_when_the_database_is_gone").await else {
        return;
    };
    let target = db.target.clone();
    let app = crate::helpers::spawn_app_with(move |c| {
        c.storage.url = Some(fulfilld::config::Secret::from_value(target));
    })
    .await;
    let health = || async {
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(health().await, 200);
    let admin = Target::parse(&std::env::var("TEST_DATABASE_URL").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let name = db.target.config.get_dbname().unwrap().to_string();
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    // A success vouches for a second (`PROBE_CACHE`): poll past it.
    crate::helpers::eventually("/healthz answers 503", || async {
        (health().await == 503).then_some(())
    })
    .await;
}

fn admin_claim() -> fulfilld::domain::Input {
    fulfilld::domain::Input::Claim {
        trigger: fulfilld::model::Trigger::Admin,
        force: false,
        actor: None,
        created: Some(1),
    }
}

/// A write PostgreSQL refuses for its own data fails alone: the writes
/// batched with it still commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_write_fails_alone() {
    use fulfilld::{
        model::SessionId,
        store::{Storage, pg::PgStore},
    };
    let Some(db) = Fresh::create("one_refused_write_fails_alone").await else {
        return;
    };
    let store = PgStore::open(db.target.clone()).await.unwrap();
    let model = SessionId::parse("cs_test_alone_model").unwrap();
    store
        .transition(&model, admin_claim(), ctx())
        .await
        .unwrap();
    let mut bad = store.session_full(&model).await.unwrap().unwrap();
    // Text PostgreSQL cannot hold (no edge lets one in; the store must
    // still fail only this write).
    bad.rec.id = "cs_test_alone_\0".into();
    let mut writes = tokio::task::JoinSet::new();
    for round in 0..5 {
        for i in 0..20 {
            let store = store.clone();
            writes.spawn(async move {
                let id = SessionId::parse(&format!("cs_test_alone_{round}_{i}")).unwrap();
                store
                    .transition(&id, admin_claim(), ctx())
                    .await
                    .map(|_| ())
            });
        }
        let (store, bad) = (store.clone(), bad.clone());
        writes.spawn(async move {
            let refused = store.import(vec![bad]).await;
            assert!(refused.is_err(), "the NUL id is refused");
            Ok(())
        });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap().expect("a good write committed");
    }
    assert_eq!(store.session_count().await.unwrap(), 101);
}

/// A replica frozen inside a transaction (a stopped process, a lost
/// network) holds the locks it took only until PostgreSQL ends its
/// session (`idle_in_transaction_session_timeout`); the others' writes
/// wait for it, then go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_in_a_transaction_holds_nobody_up_for_long() {
    use fulfilld::{
        model::SessionId,
        store::{Storage, pg::PgStore},
    };
    let Some(db) = Fresh::create("a_replica_frozen_in_a_transaction").await else {
        return;
    };
    let store = PgStore::open(db.target.clone()).await.unwrap();
    let mut frozen = db.target.connect().await.unwrap();
    let tx = frozen.transaction().await.unwrap();
    // The session's lock, as a batch on another replica takes it.
    tx.batch_execute("SELECT pg_advisory_xact_lock(1, hashtext('cs_test_frozen'))")
        .await
        .unwrap();
    let id = SessionId::parse("cs_test_frozen").unwrap();
    let claimed = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        store.transition(&id, admin_claim(), ctx()),
    )
    .await
    .expect("the frozen transaction was ended, not waited for forever");
    claimed.expect("the claim committed once the lock was free");
    assert!(
        tx.batch_execute("SELECT 1").await.is_err(),
        "PostgreSQL ended the frozen session"
    );
}

/// A job one replica took waits for that replica, unless handed back; the
/// queue's "next free" says when it can be taken, so nobody polls a job
/// another replica holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_job_is_free_when_its_hold_ends_or_it_is_handed_back() {
    use fulfilld::{
        model::{JobKind, SessionId},
        store::{Storage, pg::PgStore, pg::TAKE_MS},
    };
    let Some(db) = Fresh::create("a_taken_job_is_free_when_handed_back").await else {
        return;
    };
    let a = PgStore::open(db.target.clone()).await.unwrap();
    let b = PgStore::open(db.target.clone()).await.unwrap();
    let id = SessionId::parse("cs_test_taken").unwrap();
    a.transition(&id, admin_claim(), ctx()).await.unwrap();
    // The claim's job, due when its lease ends.
    let now = a.job_due("fulfill:cs_test_taken").await.unwrap().unwrap();
    let taken = a.due_jobs(now + 1, 8, JobKind::Fulfill).await.unwrap();
    assert_eq!(taken.len(), 1);
    let (due, job) = taken[0].clone();
    assert!(
        b.due_jobs(now + 1, 8, JobKind::Fulfill)
            .await
            .unwrap()
            .is_empty()
    );
    let stats = b.queue_stats().await.unwrap();
    assert_eq!(stats.next_due, Some(due));
    assert!(stats.next_free.unwrap() >= now + 1 + TAKE_MS, "{stats:?}");
    // Held again while it runs: still not free when the first hold ends.
    a.hold_jobs(vec![job.key()], now + 10_000).await.unwrap();
    let past_first = now + 2 + TAKE_MS;
    assert!(
        b.due_jobs(past_first, 8, JobKind::Fulfill)
            .await
            .unwrap()
            .is_empty()
    );
    // Another replica's hold changes nothing.
    b.hold_jobs(vec![job.key()], now + 1_000_000).await.unwrap();
    assert_eq!(
        b.queue_stats().await.unwrap().next_free,
        Some(now + 10_000 + TAKE_MS)
    );
    a.hold_jobs(vec![job.key()], now + 1).await.unwrap();
    // Handed back by another replica than the taker: nothing changes.
    b.release_job(&job.key(), due).await.unwrap();
    assert!(
        b.due_jobs(now + 1, 8, JobKind::Fulfill)
            .await
            .unwrap()
            .is_empty()
    );
    a.release_job(&job.key(), due).await.unwrap();
    assert_eq!(b.queue_stats().await.unwrap().next_free, Some(due));
    let again = b.due_jobs(now + 1, 8, JobKind::Fulfill).await.unwrap();
    assert_eq!(again.len(), 1, "free for every replica once handed back");
    // And past the hold, a job its taker never finished is free again.
    assert!(
        a.due_jobs(now + 1, 8, JobKind::Fulfill)
            .await
            .unwrap()
            .is_empty()
    );
    let later = now + 2 + TAKE_MS;
    assert_eq!(
        a.due_jobs(later, 8, JobKind::Fulfill).await.unwrap().len(),
        1
    );
}
