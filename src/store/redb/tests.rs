//! The redb backend against the faults that found defects: an empty or
//! foreign file, a damaged newest commit, a commit that fails.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use super::RedbStore;
use crate::{
    model::EventRecord,
    store::{Ctx, Ingested, NewEvent, Storage, StoreError},
};

fn ctx() -> Ctx {
    crate::store::test_ctx(1_000)
}

fn event(n: u32) -> NewEvent {
    NewEvent {
        record: EventRecord {
            id: format!("evt_{n}"),
            kind: "payment_intent.created".into(),
            livemode: false,
            created: 0,
            session_id: None,
            received_at_ms: 0,
            deliveries: 1,
            disposition: "ignored".into(),
        },
        raw: format!("{{\"id\":\"evt_{n}\",\"padding\":\"{}\"}}", "x".repeat(300)).into_bytes(),
        session: None,
        charge: None,
    }
}

/// Opens `path`, waiting while an earlier handle's writer thread still holds
/// the file (it closes once its last handle is gone).
pub(super) async fn reopen(path: &std::path::Path) -> Result<RedbStore, StoreError> {
    for _ in 0..500 {
        match RedbStore::open(path) {
            Err(StoreError::Locked) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
    RedbStore::open(path)
}

#[tokio::test]
async fn an_empty_or_foreign_file_is_refused_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    match RedbStore::open(&empty) {
        Err(e @ StoreError::NotADatabase { .. }) => {
            assert!(e.to_string().contains("empty"), "{e}");
            assert!(e.is_corruption());
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an empty file opened as a new database"),
    }
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "left as it was"
    );
    let foreign = dir.path().join("notes.redb");
    std::fs::write(&foreign, b"shopping list: milk, eggs").unwrap();
    assert!(matches!(
        RedbStore::open(&foreign),
        Err(StoreError::NotADatabase { .. })
    ));
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        b"shopping list: milk, eggs"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_folder_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("fulfilld.redb");
    let store = RedbStore::open(&path).unwrap();
    store.ingest(event(1), ctx()).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
}

/// A bit flip in the pages of the newest commit (the checkpoint that
/// holds an acknowledged event): redb's one-phase commit would fall back to
/// the commit before it at open and silently lose the event. With
/// two-phase commit the damage is found instead, so the store either
/// refuses to open or still has the event. (Damage to the log: `acklog`.)
#[tokio::test]
async fn a_damaged_newest_commit_never_opens_without_its_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.redb");
    let store = RedbStore::open_with(&path, false).unwrap();
    for n in 0..20 {
        store.ingest(event(n), ctx()).await.unwrap();
    }
    store.checkpoint().await.unwrap();
    let before = std::fs::read(&path).unwrap();
    assert_eq!(
        store.ingest(event(20), ctx()).await.unwrap(),
        Ingested::Ignored
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "logged, not committed"
    );
    store.checkpoint().await.unwrap();
    let after = std::fs::read(&path).unwrap();
    drop(store);
    // The bytes the newest commit wrote, past the file's first header bytes.
    let changed: Vec<usize> = (512..after.len())
        .filter(|&i| before.get(i) != Some(&after[i]))
        .collect();
    assert!(!changed.is_empty());
    let step = (changed.len() / 40).max(1);
    let mut refused = 0;
    for (n, &offset) in changed.iter().step_by(step).enumerate() {
        let mut damaged = after.clone();
        damaged[offset] ^= 0x10;
        let copy = dir.path().join(format!("damaged-{n}.redb"));
        std::fs::write(&copy, &damaged).unwrap();
        match reopen(&copy).await {
            Ok(s) => assert!(
                s.event("evt_20").await.unwrap().is_some(),
                "byte {offset} flipped: opened without the acknowledged event"
            ),
            Err(e) => {
                assert!(e.is_corruption(), "byte {offset}: {e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no flipped byte was noticed at all");
}

/// Storage whose syncs fail on demand.
#[derive(Debug)]
struct Flaky {
    inner: redb::backends::InMemoryBackend,
    fail: Arc<AtomicBool>,
}

impl redb::StorageBackend for Flaky {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected: the disk is gone"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
}

#[tokio::test]
async fn a_failed_commit_stops_every_later_write() {
    let fail = Arc::new(AtomicBool::new(false));
    let store = RedbStore::open_on(Flaky {
        inner: redb::backends::InMemoryBackend::new(),
        fail: fail.clone(),
    })
    .unwrap();
    store.ingest(event(1), ctx()).await.unwrap();
    assert!(!store.failed().is_cancelled());
    fail.store(true, Ordering::SeqCst);
    let err = store.ingest(event(2), ctx()).await.unwrap_err();
    assert!(matches!(err, StoreError::CommitUnknown(_)), "{err}");
    assert!(store.failed().is_cancelled(), "the process is told to stop");
    // Even once the disk answers again, nothing more is written.
    fail.store(false, Ordering::SeqCst);
    let again = store.ingest(event(3), ctx()).await.unwrap_err();
    assert!(matches!(again, StoreError::Stopped), "{again}");
    assert!(store.probe().await.is_err());
    // Reads still answer (the dashboard can show what is there).
    assert!(store.event("evt_1").await.unwrap().is_some());
}

#[tokio::test]
async fn another_programs_redb_file_is_refused_and_a_first_start_leaves_no_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&other).unwrap();
        let w = db.begin_write().unwrap();
        let t: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("things");
        w.open_table(t).unwrap().insert("a", 1).unwrap();
        w.commit().unwrap();
    }
    match RedbStore::open(&other) {
        Err(e @ StoreError::NotADatabase { .. }) => {
            assert!(e.to_string().contains("not fulfilld's"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("another program's database was taken over"),
    }
    // A leftover of a first start that died half way does not block the next.
    let path = dir.path().join("fulfilld.redb");
    std::fs::write(dir.path().join(".fulfilld.redb.creating"), b"").unwrap();
    let store = RedbStore::open(&path).unwrap();
    store.ingest(event(1), ctx()).await.unwrap();
    assert!(!dir.path().join(".fulfilld.redb.creating").exists());
    drop(store);
    let again = reopen(&path).await.unwrap();
    assert!(again.event("evt_1").await.unwrap().is_some());
}

#[tokio::test]
async fn due_jobs_of_one_kind_are_found_behind_a_backlog_of_the_other() {
    use crate::model::{Job, JobKind, Trigger};
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("q.redb")).unwrap();
    store
        .write(|tx| {
            for n in 0..500u64 {
                let job = Job::Deliver {
                    session_id: format!("cs_test_{n}"),
                    notification_id: format!("ntf_{n}"),
                    failures: 0,
                    first_failure_ms: None,
                };
                tx.schedule(&job, n)?;
            }
            let job = Job::Fulfill {
                session_id: "cs_test_late".into(),
                trigger: Trigger::Webhook,
            };
            tx.schedule(&job, 1_000)
        })
        .await
        .unwrap();
    let fulfills = store.due_jobs(2_000, 64, JobKind::Fulfill).await.unwrap();
    assert_eq!(fulfills.len(), 1, "found behind 500 earlier deliveries");
    assert!(matches!(fulfills[0], (1_000, Job::Fulfill { .. })));
    let deliveries = store.due_jobs(2_000, 64, JobKind::Deliver).await.unwrap();
    assert_eq!(deliveries.len(), 64);
    assert!(deliveries.iter().all(|(_, j)| j.kind() == JobKind::Deliver));
}

/// redb's header flag that makes the next open walk the whole file.
const RECOVERY_REQUIRED: u8 = 2;
const GOD_BYTE: usize = 9;

#[tokio::test]
async fn a_closed_store_leaves_a_clean_file_that_opens_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clean.redb");
    let store = RedbStore::open(&path).unwrap();
    for n in 0..10 {
        store.ingest(event(n), ctx()).await.unwrap();
    }
    let open = std::fs::read(&path).unwrap()[GOD_BYTE];
    assert_ne!(
        open & RECOVERY_REQUIRED,
        0,
        "an open database is marked: {open}"
    );
    store.close().await;
    let closed = std::fs::read(&path).unwrap()[GOD_BYTE];
    assert_eq!(closed & RECOVERY_REQUIRED, 0, "closed cleanly: {closed}");
    // Nothing more goes through the closed handle...
    assert!(matches!(
        store.ingest(event(99), ctx()).await,
        Err(StoreError::Stopped)
    ));
    assert!(matches!(
        store.event("evt_1").await,
        Err(StoreError::Stopped)
    ));
    // ...and the file lock is free: a new handle opens it straight away.
    let again = RedbStore::open(&path).unwrap();
    assert!(again.event("evt_9").await.unwrap().is_some());
}

#[tokio::test]
async fn a_panic_in_the_writer_stops_the_process_like_a_failed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("p.redb")).unwrap();
    let died = store
        .write(|_| -> crate::store::Result<()> { panic!("injected: a bug in an operation") })
        .await;
    assert!(matches!(died, Err(StoreError::Stopped)), "{died:?}");
    assert!(store.failed().is_cancelled(), "the process is told to stop");
    assert!(matches!(
        store.ingest(event(1), ctx()).await,
        Err(StoreError::Stopped)
    ));
}

#[tokio::test]
async fn counts_and_the_queue_follow_commits_only_and_are_rebuilt_at_open() {
    use crate::{
        domain::Session,
        model::{Job, SessionDetail, SessionRecord, State, Trigger},
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let store = RedbStore::open(&path).unwrap();
    let sessions = (0..40u32)
        .map(|i| {
            let mut rec = SessionRecord::new(&format!("cs_test_{i}"), i64::from(i), 0);
            rec.state = State::ALL[i as usize % State::ALL.len()];
            Session {
                rec,
                detail: SessionDetail::default(),
            }
        })
        .collect::<Vec<_>>();
    store.import(sessions.clone()).await.unwrap();
    // Every other session moves to `fulfilled`, some are rewritten unchanged.
    let moved = sessions
        .iter()
        .step_by(2)
        .map(|s| {
            let mut s = s.clone();
            s.rec.state = State::Fulfilled;
            s
        })
        .collect::<Vec<_>>();
    store.import(moved).await.unwrap();
    store.import(sessions[1..4].to_vec()).await.unwrap();
    // A write that fails leaves memory as it was.
    let failed = store
        .write(|tx| {
            tx.schedule(
                &Job::Fulfill {
                    session_id: "cs_test_1".into(),
                    trigger: Trigger::Retry,
                },
                5,
            )?;
            Err::<(), _>(StoreError::Refused("no".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(store.queue_stats().await.unwrap().queued, 0);
    store
        .write(|tx| {
            tx.schedule(
                &Job::Fulfill {
                    session_id: "cs_test_3".into(),
                    trigger: Trigger::Retry,
                },
                7,
            )
        })
        .await
        .unwrap();
    let scanned = |store: RedbStore| async move {
        let mut out = Vec::new();
        for s in State::ALL {
            out.push((s, store.ids_in_state(s).await.unwrap().len() as u64));
        }
        out
    };
    let counts = store.state_counts().await.unwrap();
    assert_eq!(counts, scanned(store.clone()).await);
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 40);
    store.close().await;
    drop(store);
    let again = reopen(&path).await.unwrap();
    assert_eq!(again.state_counts().await.unwrap(), counts);
    assert_eq!(again.job_due("fulfill:cs_test_3").await.unwrap(), Some(7));
    assert_eq!(again.queue_stats().await.unwrap().queued, 1);
}

/// Storage that counts its syncs.
#[derive(Debug)]
struct CountsSyncs {
    inner: redb::backends::InMemoryBackend,
    syncs: Arc<std::sync::atomic::AtomicUsize>,
}

impl redb::StorageBackend for CountsSyncs {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
}

#[tokio::test]
async fn a_write_that_changes_nothing_costs_no_sync_and_a_probe_still_commits() {
    use crate::model::{Job, Trigger};
    let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = RedbStore::open_on(CountsSyncs {
        inner: redb::backends::InMemoryBackend::new(),
        syncs: syncs.clone(),
    })
    .unwrap();
    let count = || syncs.load(Ordering::SeqCst);
    let before = count();
    // Nothing written; a job that is not there finished again.
    store.write(|_| Ok(())).await.unwrap();
    store.finish_job("fulfill:cs_test_none", 5).await.unwrap();
    store
        .write(|tx| tx.unschedule("fulfill:cs_test_none"))
        .await
        .unwrap();
    assert_eq!(
        count(),
        before,
        "no commit for a write that changed nothing"
    );
    store
        .write(|tx| {
            tx.schedule(
                &Job::Fulfill {
                    session_id: "cs_test_one".into(),
                    trigger: Trigger::Retry,
                },
                5,
            )
        })
        .await
        .unwrap();
    let after_schedule = count();
    assert!(
        after_schedule > before,
        "a write that changed something syncs"
    );
    store.probe().await.unwrap();
    assert!(count() > after_schedule, "a probe proves a committed write");
}

/// Events turned back from the bodies `event` makes (replay's `to_event`).
fn from_raw(raw: Vec<u8>, received_at_ms: u64) -> Option<NewEvent> {
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let n: u32 = v["id"].as_str()?.strip_prefix("evt_")?.parse().ok()?;
    let mut e = event(n);
    e.record.received_at_ms = received_at_ms;
    Some(e)
}

/// A crash after webhooks were acknowledged but before a checkpoint: the
/// files as the disk has them then (the tables at their last durable
/// commit, the log synced) open without the events, and replay brings
/// each back once, in order, with the time it was received.
#[tokio::test]
async fn acknowledged_deliveries_survive_a_crash_before_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.redb");
    let store = RedbStore::open_with(&path, false).unwrap();
    store.ingest(event(0), ctx()).await.unwrap();
    store.checkpoint().await.unwrap();
    for n in 1..=30 {
        let ctx = crate::store::test_ctx(2_000 + u64::from(n));
        assert_eq!(
            store.ingest(event(n), ctx).await.unwrap(),
            Ingested::Ignored
        );
    }
    // A redelivery, logged too.
    assert_eq!(
        store.ingest(event(7), ctx()).await.unwrap(),
        Ingested::Duplicate
    );
    assert_eq!(
        store.event_count().await.unwrap(),
        31,
        "readers see logged commits"
    );
    // What a power cut leaves: the database file, then the log (the order
    // a crash image has them in, since every reply waited for the log).
    let crashed = dir.path().join("crashed.redb");
    std::fs::copy(&path, &crashed).unwrap();
    std::fs::copy(
        super::acklog::path_for(&path),
        super::acklog::path_for(&crashed),
    )
    .unwrap();
    let err = super::backup_file(&crashed, &dir.path().join("offline.redb")).unwrap_err();
    assert!(
        err.to_string()
            .contains("31 acknowledged webhook deliveries"),
        "{err}"
    );

    let again = RedbStore::open_with(&crashed, false).unwrap();
    assert_eq!(
        again.event_count().await.unwrap(),
        1,
        "only the checkpoint's"
    );
    assert!(again.event("evt_5").await.unwrap().is_none());
    // Until the replay nothing is logged: a write meanwhile is durable and
    // keeps the log's entries for the replay.
    again.ingest(event(100), ctx()).await.unwrap();
    assert_eq!(again.replay(ctx(), &from_raw).await.unwrap(), 31);
    assert_eq!(again.event_count().await.unwrap(), 32);
    let e5 = again.event("evt_5").await.unwrap().unwrap();
    assert_eq!(e5.received_at_ms, 2_005);
    assert_eq!(again.event("evt_7").await.unwrap().unwrap().deliveries, 2);
    assert_eq!(again.replay(ctx(), &from_raw).await.unwrap(), 0, "once");
    // Logging again; a clean close checkpoints, so the next open applies nothing.
    again.ingest(event(101), ctx()).await.unwrap();
    again.close().await;
    drop(again);
    let reopened = reopen(&crashed).await.unwrap();
    assert_eq!(reopened.replay(ctx(), &from_raw).await.unwrap(), 0);
    assert_eq!(reopened.event_count().await.unwrap(), 33);
    assert!(
        super::backup_file(&crashed, &dir.path().join("offline2.redb")).is_err(),
        "open: locked"
    );
}

/// A store dropped without `close` (a panic at shutdown): redb may make
/// its last non-durable commits durable on its own as it closes the file.
/// Each records how far into the log it is, so whichever way it went, the
/// next start has every event once and counts no delivery twice.
#[tokio::test]
async fn a_drop_without_a_checkpoint_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.redb");
    let store = RedbStore::open_with(&path, false).unwrap();
    for n in 1..=3 {
        store.ingest(event(n), ctx()).await.unwrap();
    }
    assert_eq!(
        store.ingest(event(2), ctx()).await.unwrap(),
        Ingested::Duplicate
    );
    drop(store);
    let store = reopen(&path).await.unwrap();
    let before = store.event_count().await.unwrap();
    let replayed = store.replay(ctx(), &from_raw).await.unwrap();
    assert_eq!(
        (before, replayed),
        if before == 0 { (0, 4) } else { (3, 0) },
        "either redb kept the commits or the log has them, never part of both"
    );
    assert_eq!(store.event_count().await.unwrap(), 3);
    assert_eq!(store.event("evt_1").await.unwrap().unwrap().deliveries, 1);
    assert_eq!(store.event("evt_2").await.unwrap().unwrap().deliveries, 2);
}

/// A delivery the log holds but that no longer turns into an event (a new
/// version parses stricter) is not lost at the checkpoint: its body and
/// receipt time are written beside the log for a person; the rest apply.
#[tokio::test]
async fn a_delivery_replay_cannot_apply_is_set_aside_for_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.redb");
    let store = RedbStore::open_with(&path, false).unwrap();
    store.ingest(event(0), ctx()).await.unwrap();
    store.checkpoint().await.unwrap();
    for n in 1..=3 {
        let ctx = crate::store::test_ctx(5_000 + u64::from(n));
        store.ingest(event(n), ctx).await.unwrap();
    }
    let crashed = dir.path().join("crashed.redb");
    std::fs::copy(&path, &crashed).unwrap();
    let log = super::acklog::path_for(&crashed);
    std::fs::copy(super::acklog::path_for(&path), &log).unwrap();
    let again = RedbStore::open_with(&crashed, false).unwrap();
    let stricter = |raw: Vec<u8>, at: u64| {
        if String::from_utf8_lossy(&raw).contains("evt_2") {
            None
        } else {
            from_raw(raw, at)
        }
    };
    assert_eq!(again.replay(ctx(), &stricter).await.unwrap(), 2);
    assert!(again.event("evt_2").await.unwrap().is_none());
    assert!(again.event("evt_3").await.unwrap().is_some());
    // Generation 2: the checkpoint after evt_0 moved the log on from 1.
    let aside = log.with_file_name("crashed.redb.acklog.unapplied-2.jsonl");
    let lines = std::fs::read_to_string(&aside).unwrap();
    let kept: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kept.len(), 1, "{lines}");
    assert_eq!(kept[0]["received_at_ms"], 5_002);
    assert!(
        kept[0]["body"]
            .as_str()
            .unwrap()
            .contains("\"id\":\"evt_2\"")
    );
    assert_eq!(
        again.replay(ctx(), &stricter).await.unwrap(),
        0,
        "checkpointed"
    );
}
