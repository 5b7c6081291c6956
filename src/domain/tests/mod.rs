//! The rules without a database: every state against every input (a table),
//! the results of a claimed attempt, and random sequences of events, claims,
//! results, crashes and restarts checked against the invariants.

mod charges;
mod sequences;
mod table;

use super::*;
use crate::model::{Lease, OutboxStatus, RetryInfo, SessionDetail, SessionRecord, State, Trigger};

pub(super) const ID: &str = "cs_test_machine";

pub(super) const ME: &str = "boot_me";
const OTHER: &str = "boot_other";
pub(super) const KEY: ids::InstallationKey = [7u8; 32];
pub(super) const NOW: u64 = 1_000_000_000;

pub(super) fn policy(callbacks: bool) -> Policy {
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

pub(super) fn env<'a>(policy: &'a Policy, owner: &'a str, now: u64) -> Env<'a> {
    Env {
        now,
        entropy: 0,
        policy,
        owner,
        key: &KEY,
        job_queued: false,
    }
}

pub(super) fn snap(payment_status: &str, status: &str) -> Snapshot {
    Snapshot {
        livemode: false,
        created: 1_700_000_000,
        status: Some(status.into()),
        payment_status: Some(payment_status.into()),
        amount_total: Some(1200),
        currency: Some("eur".into()),
        customer_email: Some("buyer@example.com".into()),
        customer_name: Some("Ana Buyer".into()),
        locale: None,
        payment_intent: Some("pi_1".into()),
        mode: Some("payment".into()),
        subscription: None,
        account: None,
    }
}

pub(super) fn fetched(payment_status: &str, status: &str) -> Fetched {
    Fetched {
        snapshot: snap(payment_status, status),
        raw: serde_json::json!({"id": ID}),
        ..Fetched::default()
    }
}

/// A stored session in `state`, as the rules leave it there.
pub(super) fn in_state(state: State) -> Session {
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

pub(super) fn event(kind: EventKind, payment_status: &str) -> Input {
    Input::Event {
        id: format!("evt_{}", kind.as_str()),
        kind,
        snapshot: snap(payment_status, "complete"),
        object: serde_json::Value::Null,
    }
}

pub(super) fn claim(trigger: Trigger, force: bool) -> Input {
    Input::Claim {
        trigger,
        force,
        actor: Some("admin".into()),
        created: None,
    }
}

/// The state a step leaves (the stored one when the session is unchanged).
pub(super) fn after(state: State, input: Input) -> (State, Reply) {
    let p = policy(true);
    let s = in_state(state);
    let step = step(ID, Some(s.clone()), input, &env(&p, ME, NOW));
    let next = step.session.as_ref().map_or(s.rec.state, |s| s.rec.state);
    (next, step.reply)
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
            earliest: false
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

fn claim_and_record(trigger: Trigger, read: Read) -> Input {
    Input::ClaimAndRecord {
        trigger,
        force: false,
        actor: None,
        created: None,
        seen_version: in_state(State::Fulfilling).rec.version,
        read,
    }
}

#[test]
fn a_claim_and_its_read_are_one_step_that_a_live_lease_or_a_settled_session_refuses() {
    let paid = || Read::Fetched(Box::new(fetched("paid", "complete")));
    // No callback: claimed, recorded and fulfilled in one step, job gone.
    let p = policy(false);
    let mut s = in_state(State::Fulfilling);
    s.rec.lease = None;
    let one = step(
        ID,
        Some(s.clone()),
        claim_and_record(Trigger::Webhook, paid()),
        &env(&p, ME, NOW),
    );
    assert!(
        matches!(
            one.reply,
            Reply::Recorded {
                delivered: true,
                ..
            }
        ),
        "{:?}",
        one.reply
    );
    let done = one.session.unwrap();
    assert_eq!(
        (
            done.rec.state,
            done.rec.lease.as_ref(),
            done.detail.fulfillments.len()
        ),
        (State::Fulfilled, None, 1)
    );
    assert_eq!(one.effects.last(), Some(&Effect::CancelFulfill));
    // With a callback: the claim is held and the recorded fulfillment is
    // answered as pending, so the caller delivers it under that claim.
    let p = policy(true);
    let two = step(
        ID,
        Some(s.clone()),
        claim_and_record(Trigger::Webhook, paid()),
        &env(&p, ME, NOW),
    );
    let Reply::Claimed {
        token,
        pending: Some(fid),
        ..
    } = two.reply
    else {
        panic!("{:?}", two.reply)
    };
    let held = two.session.unwrap();
    assert_eq!(held.rec.pending_fulfillment.as_deref(), Some(fid.as_str()));
    assert_eq!(held.rec.lease.as_ref().map(|l| l.seq), Some(token.seq));
    assert_eq!(fid, ids::fulfillment_id(&KEY, ID, 0));
    // Another owner's live lease: nothing recorded, the read is dropped.
    let live = step(
        ID,
        Some(in_state(State::Fulfilling)),
        claim_and_record(Trigger::Webhook, paid()),
        &env(&p, ME, NOW),
    );
    assert_eq!(live.reply, Reply::Skipped(State::Fulfilling));
    assert!(live.session.is_none());
    // A fulfilled session is never fulfilled again by a read.
    let again = step(
        ID,
        Some(done),
        claim_and_record(Trigger::LandingPage, paid()),
        &env(&p, ME, NOW),
    );
    assert_eq!(again.reply, Reply::Skipped(State::Fulfilled));
    // A failed read under the claim schedules a retry in the same step.
    let failed = Read::Failed {
        error: "stripe: 500".into(),
        permanent: false,
    };
    let retry = step(
        ID,
        Some(s),
        claim_and_record(Trigger::Webhook, failed),
        &env(&p, ME, NOW),
    );
    assert_eq!(retry.reply, Reply::Done(State::Retrying));
    let r = retry.session.unwrap();
    assert_eq!((r.rec.lease, r.rec.claims), (None, 3));
    assert!(retry.effects.iter().any(
        |e| matches!(e, Effect::ScheduleFulfill { trigger: Trigger::Retry, due, .. } if *due > NOW)
    ));

    // An event during the read wins over it: the read is dropped and the
    // claim alone is taken, for a fresh read under it.
    let mut moved = in_state(State::Fulfilling);
    moved.rec.lease = None;
    moved.rec.version += 1;
    let stale = Input::ClaimAndRecord {
        trigger: Trigger::Webhook,
        force: false,
        actor: None,
        created: None,
        seen_version: moved.rec.version - 1,
        read: Read::Fetched(Box::new(fetched("unpaid", "complete"))),
    };
    let over = step(ID, Some(moved), stale, &env(&p, ME, NOW));
    assert!(
        matches!(over.reply, Reply::Claimed { pending: None, .. }),
        "{:?}",
        over.reply
    );
    let s = over.session.unwrap();
    assert_eq!(
        (
            s.rec.state,
            s.detail.fulfillments.len(),
            s.rec.lease.map(|l| l.owner)
        ),
        (State::Fulfilling, 0, Some(ME.to_string()))
    );
}

#[test]
fn a_setup_session_is_never_payable_and_a_read_of_one_fulfils_nothing() {
    let setup = Snapshot {
        mode: Some("setup".into()),
        ..snap("no_payment_required", "complete")
    };
    assert!(!setup.is_payable());
    assert!(snap("no_payment_required", "complete").is_payable());
    let sub = Snapshot {
        mode: Some("subscription".into()),
        subscription: Some("sub_1".into()),
        ..snap("paid", "complete")
    };
    assert!(sub.is_payable());
}

#[test]
fn an_open_landing_page_rechecking_an_unpaid_session_adds_no_history() {
    // Without a callback, a paid read is fulfilled (and its attempt recorded) at once.
    let p = policy(false);
    let mut s = in_state(State::AwaitingPayment);
    let mut now = NOW;
    for _ in 0..5 {
        now += 61_000;
        let claimed = step(
            ID,
            Some(s.clone()),
            claim(Trigger::LandingPage, false),
            &env(&p, ME, now),
        );
        let Reply::Claimed { token, .. } = claimed.reply else {
            panic!("{:?}", claimed.reply)
        };
        let read = step(
            ID,
            claimed.session,
            Input::Fetched {
                claim: token,
                fetched: fetched("unpaid", "complete"),
            },
            &env(&p, ME, now + 5),
        );
        s = read.session.unwrap();
        assert_eq!(s.rec.state, State::AwaitingPayment);
    }
    assert_eq!(s.detail.attempts.len(), 1, "{:?}", s.detail.attempts);
    // News is recorded: the payment arrived.
    now += 61_000;
    let claimed = step(
        ID,
        Some(s),
        claim(Trigger::LandingPage, false),
        &env(&p, ME, now),
    );
    let Reply::Claimed { token, .. } = claimed.reply else {
        panic!("{:?}", claimed.reply)
    };
    let paid = step(
        ID,
        claimed.session,
        Input::Fetched {
            claim: token,
            fetched: fetched("paid", "complete"),
        },
        &env(&p, ME, now + 5),
    );
    let s = paid.session.unwrap();
    assert_eq!(s.rec.state, State::Fulfilled);
    assert_eq!(s.detail.attempts.len(), 2, "{:?}", s.detail.attempts);
}
