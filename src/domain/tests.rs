//! The rules without a database: every state against every input (a table),
//! the results of a claimed attempt, and random sequences of events, claims,
//! results, crashes and restarts checked against the invariants.

use proptest::prelude::*;

use super::*;
use crate::model::{Lease, OutboxStatus, RetryInfo, SessionDetail, SessionRecord, State, Trigger};

const ID: &str = "cs_test_machine";
const ME: &str = "boot_me";
const OTHER: &str = "boot_other";
const KEY: ids::InstallationKey = [7u8; 32];
const NOW: u64 = 1_000_000_000;

fn policy(callbacks: bool) -> Policy {
    Policy::new(
        RetryPolicy {
            base_ms: 1000,
            max_ms: 3_600_000,
            give_up_ms: 259_200_000,
        },
        60_000,
        callbacks,
        Channels {
            smtp: true,
            merchant_email: Some("shop@example.com".into()),
            alert_webhook: true,
            receipt: true,
        },
    )
}

fn env<'a>(policy: &'a Policy, owner: &'a str, now: u64) -> Env<'a> {
    Env {
        now,
        entropy: 0,
        policy,
        owner,
        key: &KEY,
        job_queued: false,
    }
}

fn snap(payment_status: &str, status: &str) -> Snapshot {
    Snapshot {
        livemode: false,
        created: 1_700_000_000,
        status: Some(status.into()),
        payment_status: Some(payment_status.into()),
        amount_total: Some(1200),
        currency: Some("eur".into()),
        customer_email: Some("buyer@example.com".into()),
        payment_intent: Some("pi_1".into()),
    }
}

fn fetched(payment_status: &str, status: &str) -> Fetched {
    Fetched {
        snapshot: snap(payment_status, status),
        raw: serde_json::json!({"id": ID}),
        ..Fetched::default()
    }
}

/// A stored session in `state`, as the rules leave it there.
fn in_state(state: State) -> Session {
    let mut rec = SessionRecord::new(ID, 1_700_000_000, NOW - 1000);
    rec.state = state;
    rec.version = 3;
    rec.claims = 2;
    match state {
        State::Fulfilling => {
            rec.lease = Some(Lease {
                owner: OTHER.into(),
                until_ms: NOW + 30_000,
                seq: 2,
            })
        }
        State::Fulfilled => rec.fulfillments = 1,
        State::Retrying | State::Failed => {
            rec.retry = Some(RetryInfo {
                failures: 1,
                first_failure_ms: NOW - 5000,
                next_at_ms: NOW + 5000,
            })
        }
        State::PaymentFailed => rec.payment_failed = true,
        State::AwaitingPayment | State::Expired => {}
    }
    Session {
        rec,
        detail: SessionDetail::default(),
    }
}

fn event(kind: EventKind, payment_status: &str) -> Input {
    Input::Event {
        id: format!("evt_{}", kind.as_str()),
        kind,
        snapshot: snap(payment_status, "complete"),
        object: serde_json::Value::Null,
    }
}

fn claim(trigger: Trigger, force: bool) -> Input {
    Input::Claim {
        trigger,
        force,
        actor: Some("admin".into()),
        created: None,
    }
}

/// The state a step leaves (the stored one when the session is unchanged).
fn after(state: State, input: Input) -> (State, Reply) {
    let p = policy(true);
    let s = in_state(state);
    let step = step(ID, Some(s.clone()), input, &env(&p, ME, NOW));
    let next = step.session.as_ref().map_or(s.rec.state, |s| s.rec.state);
    (next, step.reply)
}

#[test]
fn every_state_against_every_input() {
    use State::*;
    let inputs: Vec<(&str, Input)> = vec![
        ("completed paid", event(EventKind::Completed, "paid")),
        ("completed unpaid", event(EventKind::Completed, "unpaid")),
        (
            "async succeeded",
            event(EventKind::AsyncPaymentSucceeded, "paid"),
        ),
        (
            "async failed",
            event(EventKind::AsyncPaymentFailed, "unpaid"),
        ),
        ("expired", event(EventKind::Expired, "unpaid")),
        ("claim webhook", claim(Trigger::Webhook, false)),
        ("claim landing", claim(Trigger::LandingPage, false)),
        ("claim admin", claim(Trigger::Admin, false)),
        ("claim force", claim(Trigger::Admin, true)),
        ("take over", Input::TakeOver),
        ("reconcile", Input::Reconcile { quiet_ms: 500 }),
    ];
    // One row per state, one column per input above: the state left behind.
    #[rustfmt::skip]
    let table: [(State, [State; 11]); 7] = [
        (AwaitingPayment, [Fulfilling, AwaitingPayment, Fulfilling, PaymentFailed, AwaitingPayment, Fulfilling, AwaitingPayment, Fulfilling, Fulfilling, AwaitingPayment, AwaitingPayment]),
        (Fulfilling,      [Fulfilling, Fulfilling, Fulfilling, PaymentFailed, Fulfilling, Fulfilling, Fulfilling, Fulfilling, Fulfilling, Fulfilling, Fulfilling]),
        (Fulfilled,       [Fulfilled, Fulfilled, Fulfilled, Fulfilled, Fulfilled, Fulfilled, Fulfilled, Fulfilled, Fulfilling, Fulfilled, Fulfilled]),
        (Retrying,        [Fulfilling, Retrying, Fulfilling, PaymentFailed, Retrying, Fulfilling, Retrying, Fulfilling, Fulfilling, Retrying, Retrying]),
        (Failed,          [Fulfilling, Failed, Fulfilling, PaymentFailed, Failed, Fulfilling, Failed, Fulfilling, Fulfilling, Failed, Failed]),
        (PaymentFailed,   [PaymentFailed, PaymentFailed, Fulfilling, PaymentFailed, PaymentFailed, PaymentFailed, PaymentFailed, Fulfilling, Fulfilling, PaymentFailed, PaymentFailed]),
        (Expired,         [Expired, Expired, Expired, PaymentFailed, Expired, Expired, Expired, Fulfilling, Fulfilling, Expired, Expired]),
    ];
    for (state, row) in table {
        for ((name, input), want) in inputs.iter().zip(row) {
            let (got, reply) = after(state, input.clone());
            assert_eq!(got, want, "{state:?} + {name}: {reply:?}");
        }
    }
}

#[test]
fn claims_honour_a_live_lease_of_any_owner_and_only_a_person_reopens_a_settled_session() {
    // Another process's live lease: nobody may claim, not even a person.
    for trigger in [Trigger::Webhook, Trigger::Retry, Trigger::Admin] {
        let (_, reply) = after(State::Fulfilling, claim(trigger, true));
        assert_eq!(reply, Reply::Skipped(State::Fulfilling), "{trigger:?}");
    }
    // Once it has expired, anyone may.
    let p = policy(true);
    let s = in_state(State::Fulfilling);
    let late = step(
        ID,
        Some(s),
        claim(Trigger::Retry, false),
        &env(&p, ME, NOW + 30_000),
    );
    let Reply::Claimed { token, .. } = late.reply else {
        panic!("{:?}", late.reply)
    };
    let lease = late.session.and_then(|s| s.rec.lease).unwrap();
    assert_eq!((lease.owner.as_str(), lease.seq, token.seq), (ME, 3, 3));
    // The skipped claim makes sure the holder's lease end is a recovery point.
    let skipped = step(
        ID,
        Some(in_state(State::Fulfilling)),
        claim(Trigger::Webhook, false),
        &env(&p, ME, NOW),
    );
    assert_eq!(
        skipped.effects,
        vec![Effect::ScheduleFulfill {
            trigger: Trigger::Retry,
            due: NOW + 30_000,
            earliest: true
        }]
    );
    assert!(
        skipped.session.is_none(),
        "a skipped claim writes no session"
    );
}

/// Claims the session in `state` as ME (by a person, so every state allows it).
fn claimed(state: State, callbacks: bool) -> (Policy, Session, ClaimToken) {
    let p = policy(callbacks);
    let mut s = in_state(state);
    s.rec.lease = None;
    let step = step(ID, Some(s), claim(Trigger::Admin, false), &env(&p, ME, NOW));
    let Reply::Claimed { token, .. } = step.reply else {
        panic!("{:?}", step.reply)
    };
    (p, step.session.unwrap(), token)
}

fn result(p: &Policy, s: &Session, input: Input, now: u64) -> Step {
    step(ID, Some(s.clone()), input, &env(p, ME, now))
}

#[test]
fn a_paid_read_records_one_fulfillment_before_the_callback() {
    let (p, s, token) = claimed(State::AwaitingPayment, true);
    let recorded = result(
        &p,
        &s,
        Input::Fetched {
            claim: token.clone(),
            fetched: fetched("paid", "complete"),
        },
        NOW + 10,
    );
    let fid = ids::fulfillment_id(&KEY, ID, 0);
    assert_eq!(
        recorded.reply,
        Reply::Recorded {
            fulfillment_id: fid.clone(),
            delivered: false
        }
    );
    let s = recorded.session.unwrap();
    assert_eq!(
        (s.rec.state, s.rec.pending_fulfillment.as_deref()),
        (State::Fulfilling, Some(fid.as_str()))
    );
    assert!(recorded.effects.iter().any(|e| matches!(e,
        Effect::Queue { notification, deliver: false } if notification.id == fid && notification.body.contains("\"checkout.fulfilled\""))));
    // The merchant's 2xx completes it, with the receipt queued once.
    let done = result(
        &p,
        &s,
        Input::CallbackDelivered {
            claim: token,
            fulfillment_id: fid.clone(),
            attempt: None,
        },
        NOW + 20,
    );
    assert_eq!(done.reply, Reply::Done(State::Fulfilled));
    let s = done.session.unwrap();
    assert_eq!(
        (
            s.rec.pending_fulfillment,
            s.rec.lease,
            s.detail.fulfillments.len()
        ),
        (None, None, 1)
    );
    assert!(done.effects.contains(&Effect::UpdateNotification {
        id: fid,
        status: OutboxStatus::Sent,
        error: None,
        sent_at: Some(NOW + 20)
    }));
    assert!(done.effects.iter().any(|e| matches!(e, Effect::Queue { notification, .. } if notification.kind == crate::model::NotificationKind::ReceiptEmail)));
    // Without a callback the record itself completes the fulfillment.
    let (p, s, token) = claimed(State::Retrying, false);
    let direct = result(
        &p,
        &s,
        Input::Fetched {
            claim: token,
            fetched: fetched("no_payment_required", "complete"),
        },
        NOW,
    );
    assert!(matches!(
        direct.reply,
        Reply::Recorded {
            delivered: true,
            ..
        }
    ));
    assert_eq!(direct.session.unwrap().rec.state, State::Fulfilled);
}

#[test]
fn unpaid_reads_wait_expire_or_recheck_soon_when_an_event_said_paid() {
    let (p, s, token) = claimed(State::AwaitingPayment, true);
    let unpaid = result(
        &p,
        &s,
        Input::Fetched {
            claim: token.clone(),
            fetched: fetched("unpaid", "complete"),
        },
        NOW,
    );
    assert_eq!(unpaid.reply, Reply::Done(State::AwaitingPayment));
    assert!(unpaid.effects.contains(&Effect::CancelFulfill));
    let expired = result(
        &p,
        &s,
        Input::Fetched {
            claim: token.clone(),
            fetched: fetched("unpaid", "expired"),
        },
        NOW,
    );
    assert_eq!(expired.reply, Reply::Done(State::Expired));
    // A stale read: the event said paid. Re-checked in seconds, not hours.
    let mut stale = s.clone();
    stale.rec.expect_paid = true;
    let recheck = result(
        &p,
        &stale,
        Input::Fetched {
            claim: token,
            fetched: fetched("unpaid", "complete"),
        },
        NOW,
    );
    assert_eq!(recheck.reply, Reply::Done(State::AwaitingPayment));
    assert!(
        recheck.effects.contains(&Effect::ScheduleFulfill {
            trigger: Trigger::Retry,
            due: NOW + 500,
            earliest: false
        }),
        "{:?}",
        recheck.effects
    );
    // A payment known to have failed stays failed.
    let (p, s, token) = claimed(State::PaymentFailed, true);
    let failed = result(
        &p,
        &s,
        Input::Fetched {
            claim: token,
            fetched: fetched("unpaid", "complete"),
        },
        NOW,
    );
    assert_eq!(failed.reply, Reply::Done(State::PaymentFailed));
}

#[test]
fn failures_retry_until_the_limit_and_only_a_missing_session_is_permanent() {
    let (p, s, token) = claimed(State::AwaitingPayment, true);
    let failed = |permanent, now| {
        result(
            &p,
            &s,
            Input::FetchFailed {
                claim: token.clone(),
                error: "Stripe answered 400".into(),
                permanent,
            },
            now,
        )
    };
    let retry = failed(false, NOW);
    assert_eq!(retry.reply, Reply::Done(State::Retrying));
    assert!(retry.effects.contains(&Effect::ScheduleFulfill {
        trigger: Trigger::Retry,
        due: NOW + 500,
        earliest: false
    }));
    assert_eq!(failed(true, NOW).reply, Reply::Done(State::Failed));
    // A series older than the give-up limit fails, and alerts once.
    let mut old = s.clone();
    old.rec.retry = Some(RetryInfo {
        failures: 9,
        first_failure_ms: NOW - p.retry.give_up_ms,
        next_at_ms: 0,
    });
    let gave_up = result(
        &p,
        &old,
        Input::FetchFailed {
            claim: token,
            error: "down".into(),
            permanent: false,
        },
        NOW,
    );
    assert_eq!(gave_up.reply, Reply::Done(State::Failed));
    let alerts = gave_up
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Queue { .. }))
        .count();
    assert_eq!(alerts, 2, "merchant email and alert: {:?}", gave_up.effects);
}

#[test]
fn an_attempt_that_lost_its_claim_or_was_overtaken_changes_nothing() {
    let (p, s, token) = claimed(State::AwaitingPayment, true);
    // Another attempt took the claim after this one's lease ended.
    let mut taken = s.clone();
    taken.rec.lease = Some(Lease {
        owner: OTHER.into(),
        until_ms: NOW + 60_000,
        seq: token.seq + 1,
    });
    let late = result(
        &p,
        &taken,
        Input::Fetched {
            claim: token.clone(),
            fetched: fetched("paid", "complete"),
        },
        NOW,
    );
    assert_eq!(late.reply, Reply::Overtaken(State::Fulfilling));
    let kept = late.session.unwrap();
    assert_eq!(
        (kept.rec.fulfillments, kept.rec.lease.map(|l| l.seq)),
        (0, Some(token.seq + 1))
    );
    assert!(late.effects.is_empty());
    // An async failure arrived while Stripe was asked: it stands.
    let p2 = policy(true);
    let failed_event = step(
        ID,
        Some(s.clone()),
        event(EventKind::AsyncPaymentFailed, "unpaid"),
        &env(&p2, ME, NOW),
    );
    let s2 = failed_event.session.unwrap();
    let stale = result(
        &p,
        &s2,
        Input::Fetched {
            claim: token.clone(),
            fetched: fetched("paid", "complete"),
        },
        NOW,
    );
    assert_eq!(stale.reply, Reply::Overtaken(State::PaymentFailed));
    // A paid event arrived during an unpaid read: re-check at once.
    let paid_event = step(
        ID,
        Some(s),
        event(EventKind::AsyncPaymentSucceeded, "paid"),
        &env(&p2, ME, NOW),
    );
    let s3 = paid_event.session.unwrap();
    let unpaid = result(
        &p,
        &s3,
        Input::Fetched {
            claim: token,
            fetched: fetched("unpaid", "complete"),
        },
        NOW,
    );
    assert_eq!(unpaid.reply, Reply::Overtaken(State::Fulfilling));
    assert!(unpaid.effects.contains(&Effect::ScheduleFulfill {
        trigger: Trigger::Retry,
        due: NOW,
        earliest: true
    }));
}

#[test]
fn forced_refulfilments_get_their_own_ids_even_through_retries() {
    let p = policy(false);
    let mut s = in_state(State::Fulfilled);
    s.rec.fulfillments = 1;
    let forced = step(ID, Some(s), claim(Trigger::Admin, true), &env(&p, ME, NOW));
    let Reply::Claimed { token, .. } = forced.reply else {
        panic!()
    };
    assert!(token.refulfil);
    // The forced attempt fails; its retry (not forced itself) records it as forced.
    let failed = result(
        &p,
        &forced.session.unwrap(),
        Input::FetchFailed {
            claim: token,
            error: "503".into(),
            permanent: false,
        },
        NOW,
    );
    let s = failed.session.unwrap();
    let retry = step(
        ID,
        Some(s),
        claim(Trigger::Retry, false),
        &env(&p, ME, NOW + 1000),
    );
    let Reply::Claimed { token, .. } = retry.reply else {
        panic!()
    };
    let recorded = result(
        &p,
        &retry.session.unwrap(),
        Input::Fetched {
            claim: token,
            fetched: fetched("paid", "complete"),
        },
        NOW + 1001,
    );
    let s = recorded.session.unwrap();
    let f = s.detail.fulfillments.last().unwrap();
    assert_eq!(
        (f.id.clone(), f.forced, f.actor.as_deref()),
        (ids::fulfillment_id(&KEY, ID, 1), true, Some("admin"))
    );
    assert_eq!(
        (s.rec.state, s.rec.refulfil_pending),
        (State::Fulfilled, false)
    );
}

#[test]
fn an_expired_event_is_checked_with_a_fresh_read_and_take_over_is_explicit() {
    let p = policy(true);
    let s = in_state(State::AwaitingPayment);
    let expired = step(
        ID,
        Some(s),
        event(EventKind::Expired, "unpaid"),
        &env(&p, ME, NOW),
    );
    assert_eq!(expired.session.unwrap().rec.state, State::AwaitingPayment);
    assert!(expired.effects.contains(&Effect::ScheduleFulfill {
        trigger: Trigger::Webhook,
        due: NOW,
        earliest: true
    }));
    // Taking over ends only a lease of another (gone) process.
    let over = step(
        ID,
        Some(in_state(State::Fulfilling)),
        Input::TakeOver,
        &env(&p, ME, NOW),
    );
    assert_eq!(over.reply, Reply::Done(State::Fulfilling));
    assert_eq!(over.session.unwrap().rec.lease, None);
    let mut mine = in_state(State::Fulfilling);
    mine.rec.lease.as_mut().unwrap().owner = ME.into();
    assert!(matches!(
        step(ID, Some(mine), Input::TakeOver, &env(&p, ME, NOW)).reply,
        Reply::Skipped(_)
    ));
}

// --- Random sequences -------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Stripe sends an event of this kind about the session (truth permitting).
    Event(u8),
    /// The customer's delayed payment settles: 0 paid, 1 failed.
    Settle(u8),
    /// Process `p` asks to fulfil (trigger index; force).
    Claim(u8, u8, bool),
    /// Process `p`'s attempt gets its read: 0 true, 1 stale unpaid, 2 transient error, 3 not found.
    Read(u8, u8),
    /// Process `p`'s callback: acknowledged or not.
    Callback(u8, bool),
    /// Every process crashes; a new one starts and takes over.
    Restart,
    /// Time passes.
    Wait(u32),
    Reconcile,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Event),
        (0u8..2).prop_map(Op::Settle),
        (0u8..2, 0u8..5, proptest::bool::weighted(0.1)).prop_map(|(p, t, f)| Op::Claim(p, t, f)),
        (0u8..2, 0u8..4).prop_map(|(p, r)| Op::Read(p, r)),
        (0u8..2, any::<bool>()).prop_map(|(p, ok)| Op::Callback(p, ok)),
        Just(Op::Restart),
        (0u32..120_000).prop_map(Op::Wait),
        Just(Op::Reconcile),
    ]
}

#[derive(Default)]
struct Proc {
    owner: String,
    token: Option<ClaimToken>,
    pending: Option<String>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_sequence(ops in proptest::collection::vec(op(), 1..60), callbacks in any::<bool>()) {
        let p = policy(callbacks);
        let mut now = NOW;
        let mut session: Option<Session> = None;
        // What Stripe knows: 0 unpaid (processing), 1 paid, 2 failed.
        let mut truth = 0u8;
        let mut boots = 0;
        let mut procs = [Proc { owner: "boot_0a".into(), ..Proc::default() }, Proc { owner: "boot_0b".into(), ..Proc::default() }];
        let mut forced_claims = 0;
        let mut events = 0;
        for op in ops {
            let before = session.as_ref().map(|s| s.rec.state);
            let fulfillments_before = session.as_ref().map_or(0, |s| s.detail.fulfillments.len());
            let (owner, input) = match op.clone() {
                Op::Event(k) => {
                    events += 1;
                    let (kind, status) = match (k, truth) {
                        (0, 0) => (EventKind::Completed, "unpaid"),
                        (0, 1) => (EventKind::Completed, "paid"),
                        (_, 1) => (EventKind::AsyncPaymentSucceeded, "paid"),
                        (_, 2) => (EventKind::AsyncPaymentFailed, "unpaid"),
                        _ => (EventKind::Completed, "unpaid"),
                    };
                    let input = Input::Event { id: format!("evt_{events}"), kind, snapshot: snap(status, "complete"), object: serde_json::Value::Null };
                    (procs[0].owner.clone(), input)
                }
                Op::Settle(outcome) => {
                    if truth == 0 { truth = 1 + outcome; }
                    continue;
                }
                Op::Claim(i, t, force) => {
                    let trigger = [Trigger::Webhook, Trigger::LandingPage, Trigger::Admin, Trigger::Retry, Trigger::Reconcile][t as usize];
                    let force = force && trigger == Trigger::Admin;
                    if procs[i as usize].token.is_some() { continue; }
                    if force && before == Some(State::Fulfilled) { forced_claims += 1; }
                    (procs[i as usize].owner.clone(), Input::Claim { trigger, force, actor: None, created: None })
                }
                Op::Read(i, r) => {
                    let proc = &procs[i as usize];
                    let Some(claim) = proc.token.clone().filter(|_| proc.pending.is_none()) else { continue };
                    let status = if truth == 1 && r != 1 { "paid" } else { "unpaid" };
                    let input = match r {
                        2 => Input::FetchFailed { claim, error: "503".into(), permanent: false },
                        3 => Input::FetchFailed { claim, error: "404".into(), permanent: true },
                        _ => Input::Fetched { claim, fetched: fetched(status, "complete") },
                    };
                    (proc.owner.clone(), input)
                }
                Op::Callback(i, ok) => {
                    let proc = &procs[i as usize];
                    let (Some(claim), Some(fid)) = (proc.token.clone(), proc.pending.clone()) else { continue };
                    let input = if ok {
                        Input::CallbackDelivered { claim, fulfillment_id: fid, attempt: None }
                    } else {
                        Input::CallbackFailed { claim, fulfillment_id: fid, attempt: None, error: "502".into(), permanent: false }
                    };
                    (proc.owner.clone(), input)
                }
                Op::Restart => {
                    boots += 1;
                    procs = [Proc { owner: format!("boot_{boots}a"), ..Proc::default() }, Proc { owner: format!("boot_{boots}b"), ..Proc::default() }];
                    (procs[0].owner.clone(), Input::TakeOver)
                }
                Op::Wait(ms) => { now += u64::from(ms); continue; }
                Op::Reconcile => (procs[0].owner.clone(), Input::Reconcile { quiet_ms: 60_000 }),
            };
            let e = Env { now, entropy: 0, policy: &p, owner: &owner, key: &KEY, job_queued: false };
            let result = step(ID, session.clone(), input.clone(), &e);
            if let Some(s) = result.session { session = Some(s); }
            let i = procs.iter().position(|pr| pr.owner == owner).unwrap_or(0);
            match &result.reply {
                Reply::Claimed { token, pending, .. } => { procs[i].token = Some(token.clone()); procs[i].pending = pending.clone(); }
                Reply::Recorded { fulfillment_id, delivered } => {
                    if *delivered { procs[i].token = None; } else { procs[i].pending = Some(fulfillment_id.clone()); }
                }
                Reply::Done(_) | Reply::Overtaken(_) if !matches!(input, Input::Event { .. } | Input::TakeOver | Input::Reconcile { .. }) => {
                    procs[i].token = None;
                    procs[i].pending = None;
                }
                _ => {}
            }
            let Some(s) = &session else { continue };
            let recorded = &s.detail.fulfillments;
            // At most one fulfillment unless forced; forced ones only after a forced claim.
            let forced = recorded.iter().filter(|f| f.forced).count();
            prop_assert!(recorded.len() - forced <= 1, "{recorded:?}");
            prop_assert!(forced <= forced_claims, "{recorded:?}");
            // Ids follow the sequence: never repeated, never random.
            for (n, f) in recorded.iter().enumerate() {
                prop_assert_eq!(&f.id, &ids::fulfillment_id(&KEY, ID, n as u32));
            }
            // Only a read that says paid records a fulfillment.
            if recorded.len() > fulfillments_before {
                let paid_read = matches!(&input, Input::Fetched { fetched, .. } if fetched.snapshot.is_payable());
                prop_assert!(paid_read, "{input:?}");
            }
            // A fulfilled session leaves `fulfilled` only by force.
            if before == Some(State::Fulfilled) && s.rec.state != State::Fulfilled {
                prop_assert!(matches!(input, Input::Claim { force: true, .. }), "{input:?}");
            }
            // The newest event wins: an attempt's result never undoes a failed payment.
            if before == Some(State::PaymentFailed) && matches!(input, Input::Fetched { .. } | Input::FetchFailed { .. } | Input::CallbackDelivered { .. } | Input::CallbackFailed { .. }) {
                prop_assert_eq!(s.rec.state, State::PaymentFailed);
            }
            // One lease at a time, held by a live process or none.
            if let Some(lease) = &s.rec.lease {
                prop_assert_eq!(s.rec.state, State::Fulfilling);
                prop_assert!(lease.seq == s.rec.claims);
            }
        }
    }
}
