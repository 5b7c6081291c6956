//! The core across processes and time, driven step by step: fulfillers that
//! share one store but no locks, a controllable clock for backoff, give-up
//! and lease expiry (`worker::try_run_once`, no background worker), backups
//! that keep fulfillment ids, and a store that cannot write.

use std::{sync::Arc, time::Duration};

use fulfilld::{
    config::{DEFAULT_STRIPE_API_VERSION, JobsConfig, Secret},
    domain::Session,
    fulfill::{FulfillOptions, Fulfiller, callback::CallbackSender},
    model::{SessionId, State, Trigger, fulfill_key},
    store::{Store, open_redb},
    stripe::{
        Event, StripeClient,
        double::{SampleSession, Scripted, StripeDouble, event_body},
    },
    time::ManualClock,
    worker::try_run_once,
};
use serde_json::Value;

use crate::helpers::*;

/// Some fixed moment, far from the real clock.
const START: u64 = 1_900_000_000_000;
const FULFILLED: &str = "checkout.fulfilled";

/// One store, the Stripe double and the merchant's receiver, and a clock
/// that moves only when told; processes are made with `process()`.
struct Core {
    dir: tempfile::TempDir,
    store: Store,
    stripe: StripeDouble,
    receiver: Receiver,
    clock: Arc<ManualClock>,
    jobs: JobsConfig,
}

impl Core {
    async fn new() -> Core {
        let dir = tempfile::tempdir().unwrap();
        let store = open_redb(&dir.path().join("core.redb")).unwrap();
        Core {
            store,
            stripe: StripeDouble::start(SECRET_KEY).await.unwrap(),
            receiver: Receiver::start().await,
            clock: Arc::new(ManualClock::new(START)),
            jobs: JobsConfig {
                retry_base_ms: 1000,
                retry_max_secs: 60,
                give_up_after_secs: 600,
                lease_secs: 60,
            },
            dir,
        }
    }

    /// A fulfiller as another process would have: its own boot id and
    /// locks, the shared store and clock.
    fn process_on(&self, store: &Store) -> Arc<Fulfiller> {
        let stripe = StripeClient::new(
            self.stripe.url(),
            Secret::new(SECRET_KEY),
            DEFAULT_STRIPE_API_VERSION,
            Duration::from_millis(5),
        )
        .unwrap();
        let callback = CallbackSender::new(&self.receiver.url, CALLBACK_SECRET).unwrap();
        let f = Fulfiller::new(store.clone(), stripe, Some(callback), self.jobs.clone()).unwrap();
        Arc::new(f.with_clock(self.clock.clone()))
    }

    fn process(&self) -> Arc<Fulfiller> {
        self.process_on(&self.store)
    }

    fn seed(&self, sample: &SampleSession) -> Value {
        let (session, items) = sample.build();
        self.stripe.insert(session.clone(), items);
        session
    }

    async fn deliver(&self, f: &Fulfiller, event_id: &str, kind: &str, session: &Value) {
        let raw = event_body(event_id, kind, session);
        let event = Event::parse(&raw).unwrap();
        f.ingest(raw, event).await.unwrap();
    }

    async fn session_on(store: &Store, id: &str) -> Session {
        let id = SessionId::parse(id).unwrap();
        store.session_full(&id).await.unwrap().unwrap()
    }

    async fn session(&self, id: &str) -> Session {
        Self::session_on(&self.store, id).await
    }

    /// When the session's fulfill job is due, relative to now.
    async fn due_in(&self, id: &str) -> Option<i64> {
        let due = self.store.job_due(&fulfill_key(id)).await.unwrap()?;
        Some(due as i64 - self.clock_now() as i64)
    }

    fn clock_now(&self) -> u64 {
        use fulfilld::time::Clock;
        self.clock.now_ms()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_one_store_without_locks_fulfil_once() {
    let core = Core::new().await;
    let (a, b) = (core.process(), core.process());
    let id = session_id("twoprocs");
    let session = core.seed(&SampleSession::paid(&id, 3));
    core.deliver(&a, "evt_tp_1", "checkout.session.completed", &session)
        .await;
    let sid = SessionId::parse(&id).unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        for (f, trigger) in [(&a, Trigger::Webhook), (&b, Trigger::LandingPage)] {
            let (f, sid) = (f.clone(), sid.clone());
            tasks.push(tokio::spawn(async move {
                tokio::task::yield_now().await;
                let trigger = if i % 5 == 0 { Trigger::Retry } else { trigger };
                f.fulfill_checkout(&sid, trigger, FulfillOptions::default())
                    .await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Whatever a skipped caller left for the queue runs now.
    while try_run_once(&a).await.unwrap() > 0 {}
    let s = core.session(&id).await;
    assert_eq!(s.rec.state, State::Fulfilled);
    assert_eq!(s.detail.fulfillments.len(), 1);
    let callbacks = core.receiver.of_kind(FULFILLED);
    assert_eq!(callbacks.len(), 1, "one callback");
    assert_eq!(callbacks[0].webhook_id, s.detail.fulfillments[0].id);
}

#[tokio::test]
async fn retries_back_off_by_the_clock_and_give_up_at_the_limit() {
    let core = Core::new().await;
    let f = core.process();
    let id = session_id("backoff");
    let session = core.seed(&SampleSession::paid(&id, 1));
    // Every read fails (each call tries 3 times).
    core.stripe
        .script(&id, (0..60).map(|_| Scripted::Status(500)));
    core.deliver(&f, "evt_bo_1", "checkout.session.completed", &session)
        .await;
    assert_eq!(try_run_once(&f).await.unwrap(), 1);
    let s = core.session(&id).await;
    assert_eq!(s.rec.state, State::Retrying);
    let first = core.due_in(&id).await.unwrap();
    assert!((500..=1000).contains(&first), "first retry in {first} ms");
    // Nothing is due before its time.
    core.clock.advance(Duration::from_millis(first as u64 - 1));
    assert_eq!(try_run_once(&f).await.unwrap(), 0);
    core.clock.advance(Duration::from_millis(1));
    assert_eq!(try_run_once(&f).await.unwrap(), 1);
    let second = core.due_in(&id).await.unwrap();
    assert!(
        (1000..=2000).contains(&second),
        "second retry in {second} ms"
    );
    assert_eq!(core.session(&id).await.rec.retry.unwrap().failures, 2);
    // Past `give_up_after_secs` the next failure ends the series.
    core.clock.advance(Duration::from_secs(600));
    assert_eq!(try_run_once(&f).await.unwrap(), 1);
    let s = core.session(&id).await;
    assert_eq!(s.rec.state, State::Failed);
    assert!(s.rec.last_error.unwrap().contains("500"));
    assert_eq!(core.due_in(&id).await, None, "nothing more is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_stale_attempt_changes_nothing() {
    let core = Core::new().await;
    let (a, b) = (core.process(), core.process());
    let id = session_id("lease");
    let session = core.seed(&SampleSession::paid(&id, 2));
    core.deliver(&a, "evt_ls_1", "checkout.session.completed", &session)
        .await;
    // A claims, records the fulfillment and stalls on the merchant's callback.
    core.receiver.hang();
    let sid = SessionId::parse(&id).unwrap();
    let stalled = tokio::spawn({
        let (a, sid) = (a.clone(), sid.clone());
        async move {
            a.fulfill_checkout(&sid, Trigger::Webhook, FulfillOptions::default())
                .await
        }
    });
    let fid = eventually(
        "A holds the claim with the fulfillment recorded",
        || async {
            let rec = core.session(&id).await.rec;
            rec.lease
                .filter(|l| l.owner == a.owner())
                .and(rec.pending_fulfillment)
        },
    )
    .await;
    eventually("A's callback is in flight", || async {
        (!core.receiver.received().is_empty()).then_some(())
    })
    .await;
    // B finds the claim live and leaves it alone...
    let early = b
        .fulfill_checkout(&sid, Trigger::LandingPage, FulfillOptions::default())
        .await
        .unwrap();
    assert!(!early.attempted);
    // An event while A delivers keeps the recovery job at the lease's end
    // (the fulfillment is recorded; only its callback is outstanding), and
    // nothing runs before then.
    core.deliver(
        &a,
        "evt_ls_2",
        "checkout.session.async_payment_succeeded",
        &session,
    )
    .await;
    assert_eq!(core.due_in(&id).await, Some(60_000));
    assert_eq!(try_run_once(&b).await.unwrap(), 0);
    // ...until the lease ends: its recovery job is then due, and B takes it,
    // delivering the same fulfillment.
    core.clock.advance(Duration::from_secs(61));
    core.receiver.respond_with(200);
    assert!(try_run_once(&b).await.unwrap() >= 1);
    let s = core.session(&id).await;
    assert_eq!(s.rec.state, State::Fulfilled);
    // A's callback comes back late, without the claim: the merchant's 2xx
    // is kept as a delivery of the same fulfillment, and nothing else moves.
    core.receiver.release();
    let late = stalled.await.unwrap().unwrap();
    assert_eq!(late.state, State::Fulfilled);
    let s = core.session(&id).await;
    assert_eq!(
        (s.rec.state, s.detail.fulfillments.len(), s.rec.lease),
        (State::Fulfilled, 1, None)
    );
    assert_eq!(s.detail.deliveries.len(), 2, "{:?}", s.detail.deliveries);
    assert_eq!(
        s.detail.attempts.len(),
        1,
        "only B's attempt: {:?}",
        s.detail.attempts
    );
    let ids: Vec<String> = core
        .receiver
        .of_kind(FULFILLED)
        .into_iter()
        .map(|r| r.webhook_id)
        .collect();
    assert_eq!(ids.len(), 2, "A's, then B's: one fulfillment, same id");
    assert!(ids.iter().all(|w| *w == fid), "{ids:?} vs {fid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_interrupted_mid_way_is_finished_elsewhere_with_the_same_id() {
    let core = Core::new().await;
    let (a, b) = (core.process(), core.process());
    let id = session_id("midcall");
    let session = core.seed(&SampleSession::paid(&id, 1));
    core.deliver(&a, "evt_mc_1", "checkout.session.completed", &session)
        .await;
    core.receiver.hang();
    let sid = SessionId::parse(&id).unwrap();
    let stuck = tokio::spawn({
        let (a, sid) = (a.clone(), sid.clone());
        async move {
            a.fulfill_checkout(&sid, Trigger::Webhook, FulfillOptions::default())
                .await
        }
    });
    let fid = eventually("A recorded the fulfillment", || async {
        core.session(&id).await.rec.pending_fulfillment
    })
    .await;
    core.clock.advance(Duration::from_secs(61));
    let taken = tokio::spawn({
        let b = b.clone();
        async move { try_run_once(&b).await }
    });
    eventually(
        "B took the claim over and is sending the callback",
        || async {
            core.session(&id)
                .await
                .rec
                .lease
                .filter(|l| l.owner == b.owner())
        },
    )
    .await;
    core.receiver.release();
    taken.await.unwrap().unwrap();
    stuck.await.unwrap().unwrap();
    let s = core.session(&id).await;
    assert_eq!(
        (s.rec.state, s.detail.fulfillments.len()),
        (State::Fulfilled, 1)
    );
    let ids: Vec<String> = core
        .receiver
        .of_kind(FULFILLED)
        .into_iter()
        .map(|r| r.webhook_id)
        .collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|w| *w == fid), "{ids:?} vs {fid}");
}

#[tokio::test]
async fn a_restored_backup_fulfils_again_under_the_same_webhook_id() {
    let core = Core::new().await;
    let f = core.process();
    let id = session_id("restore");
    let session = core.seed(&SampleSession::paid(&id, 2));
    core.deliver(&f, "evt_rs_1", "checkout.session.completed", &session)
        .await;
    // The backup is taken before the session is fulfilled...
    let backup = core.dir.path().join("backup.redb");
    core.store.backup(&backup).await.unwrap();
    assert_eq!(try_run_once(&f).await.unwrap(), 1);
    let first = core.receiver.of_kind(FULFILLED);
    assert_eq!(first.len(), 1);
    // ...and restored: the session is fulfilled again, under the same id,
    // so the merchant's idempotency key still matches.
    let restored = open_redb(&backup).unwrap();
    let g = core.process_on(&restored);
    assert_eq!(try_run_once(&g).await.unwrap(), 1);
    let s = Core::session_on(&restored, &id).await;
    assert_eq!(s.rec.state, State::Fulfilled);
    let both = core.receiver.of_kind(FULFILLED);
    assert_eq!(both.len(), 2);
    assert_eq!(both[1].webhook_id, first[0].webhook_id);
    assert_eq!(s.detail.fulfillments[0].id, first[0].webhook_id);
}

#[tokio::test]
async fn a_stale_unpaid_read_after_a_paid_event_is_rechecked_within_seconds() {
    let core = Core::new().await;
    let f = core.process();
    let id = session_id("stale");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    let mut session = core.seed(&sample);
    // The event says paid; Stripe's read, a moment behind, says unpaid.
    session["payment_status"] = "paid".into();
    core.deliver(&f, "evt_st_1", "checkout.session.completed", &session)
        .await;
    assert_eq!(try_run_once(&f).await.unwrap(), 1);
    assert_eq!(core.session(&id).await.rec.state, State::AwaitingPayment);
    let recheck = core.due_in(&id).await.expect("a re-check is queued");
    assert!(recheck <= 1000, "re-checked in {recheck} ms, not hours");
    core.stripe
        .update(&id, serde_json::json!({"payment_status": "paid"}));
    core.clock.advance(Duration::from_millis(recheck as u64));
    assert_eq!(try_run_once(&f).await.unwrap(), 1);
    assert_eq!(core.session(&id).await.rec.state, State::Fulfilled);
}

#[tokio::test]
async fn an_expired_event_right_behind_a_completion_does_not_end_a_paid_session() {
    let core = Core::new().await;
    let f = core.process();
    let id = session_id("expbehind");
    let session = core.seed(&SampleSession::paid(&id, 1));
    core.deliver(&f, "evt_eb_1", "checkout.session.completed", &session)
        .await;
    let mut expired = session.clone();
    expired["status"] = "expired".into();
    core.deliver(&f, "evt_eb_2", "checkout.session.expired", &expired)
        .await;
    while try_run_once(&f).await.unwrap() > 0 {}
    let s = core.session(&id).await;
    assert_eq!(
        (s.rec.state, s.detail.fulfillments.len()),
        (State::Fulfilled, 1)
    );
    // A session that really expired is expired, by the same fresh read.
    let gone = session_id("reallyexpired");
    let mut sample = SampleSession::paid(&gone, 1);
    sample.payment_status = "unpaid";
    sample.status = "expired";
    let obj = core.seed(&sample);
    core.deliver(&f, "evt_eb_3", "checkout.session.expired", &obj)
        .await;
    while try_run_once(&f).await.unwrap() > 0 {}
    assert_eq!(core.session(&gone).await.rec.state, State::Expired);
}
