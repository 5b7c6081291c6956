//! Refunds and disputes: what each charge fact leaves on the session and
//! queues, once per change, whatever the order the events arrive in.

use super::*;
use crate::model::{DisputeRecord, NotificationKind, RefundStatus};

fn charge(event: &str, created: i64, fact: ChargeFact) -> Input {
    Input::Charge(ChargeEvent {
        event_id: event.into(),
        kind: "charge.refunded".into(),
        created,
        payment_intent: "pi_1".into(),
        fact,
    })
}

fn refunded(event: &str, created: i64, amount_refunded: i64) -> Input {
    charge(
        event,
        created,
        ChargeFact::Refunded {
            amount: 1200,
            amount_refunded,
            refunded: amount_refunded >= 1200,
        },
    )
}

fn dispute(event: &str, created: i64, status: &str, closed: bool) -> Input {
    charge(
        event,
        created,
        ChargeFact::Dispute {
            dispute: DisputeRecord {
                id: "dp_1".into(),
                status: status.into(),
                reason: "fraudulent".into(),
                amount: 1200,
                currency: Some("eur".into()),
                evidence_due_by: Some(1_800_000_000),
            },
            closed,
        },
    )
}

/// Applies `inputs` in order to a fulfilled session; returns it and the
/// outbox entries queued, by kind and id.
fn run(inputs: Vec<Input>, callbacks: bool) -> (Session, Vec<(NotificationKind, String)>) {
    let p = policy(callbacks);
    let mut s = in_state(State::Fulfilled);
    s.rec.amount_total = Some(1200);
    s.rec.payment_intent = Some("pi_1".into());
    s.rec.pending_fulfillment = Some("ful_x".into());
    let mut queued = Vec::new();
    for input in inputs {
        let step = step(ID, Some(s.clone()), input, &env(&p, ME, NOW));
        for e in &step.effects {
            if let Effect::Queue { notification, .. } = e {
                queued.push((notification.kind, notification.id.clone()));
            }
        }
        if let Some(next) = step.session {
            s = next;
        }
    }
    (s, queued)
}

#[test]
fn a_partial_then_a_full_refund_make_two_callbacks_with_distinct_ids() {
    let (s, queued) = run(
        vec![refunded("evt_a", 10, 500), refunded("evt_b", 20, 1200)],
        true,
    );
    assert_eq!(s.rec.amount_refunded, 1200);
    assert_eq!(s.rec.refund_status(), RefundStatus::Full);
    assert_eq!(
        s.rec.state,
        State::Fulfilled,
        "a refund does not undo a fulfillment"
    );
    let ids: Vec<_> = queued.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ntf_checkout_refunded_cs_test_machine_1",
            "ntf_checkout_refunded_cs_test_machine_2"
        ]
    );
    assert_eq!(s.detail.events.len(), 2);
}

#[test]
fn an_older_refund_event_arriving_late_changes_no_figure_and_sends_nothing() {
    let (s, queued) = run(
        vec![refunded("evt_b", 20, 1200), refunded("evt_a", 10, 500)],
        true,
    );
    assert_eq!(s.rec.amount_refunded, 1200);
    assert_eq!(queued.len(), 1);
    assert_eq!(s.detail.events.len(), 2, "both are in the history");
    // The same figure again (another event about the same change) sends nothing.
    let (_, queued) = run(
        vec![refunded("evt_a", 10, 500), refunded("evt_c", 10, 500)],
        true,
    );
    assert_eq!(queued.len(), 1);
}

#[test]
fn a_reversed_refund_lowers_the_figure_and_is_a_change() {
    let reversed = charge(
        "evt_r",
        30,
        ChargeFact::RefundReversed {
            refund: "re_1".into(),
            amount: 500,
        },
    );
    let (s, queued) = run(vec![refunded("evt_a", 10, 500), reversed], true);
    assert_eq!(s.rec.amount_refunded, 0);
    assert_eq!(s.rec.refund_status(), RefundStatus::None);
    assert_eq!(queued.len(), 2);
}

#[test]
fn a_dispute_opened_alerts_the_merchant_once_and_its_close_calls_back() {
    let (s, queued) = run(
        vec![
            dispute("evt_o", 10, "needs_response", false),
            dispute("evt_u", 15, "under_review", false),
            dispute("evt_c", 20, "won", true),
        ],
        true,
    );
    let d = s.rec.dispute.as_ref().unwrap();
    assert_eq!((d.status.as_str(), d.is_open()), ("won", false));
    let kinds: Vec<_> = queued.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            NotificationKind::DisputeOpenedCallback,
            NotificationKind::DisputeMerchantEmail,
            NotificationKind::DisputeAlert,
            NotificationKind::DisputeClosedCallback,
        ],
        "the update changes the status but sends nothing again"
    );
    assert!(queued.iter().all(|(_, id)| id.ends_with("_dp_1")));
}

#[test]
fn without_a_callback_url_only_the_alerts_go_and_the_figures_still_change() {
    let (s, queued) = run(
        vec![
            refunded("evt_a", 10, 300),
            dispute("evt_o", 10, "needs_response", false),
        ],
        false,
    );
    assert_eq!(s.rec.refund_status(), RefundStatus::Partial);
    assert_eq!(s.rec.refund_changes, 1);
    let kinds: Vec<_> = queued.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            NotificationKind::DisputeMerchantEmail,
            NotificationKind::DisputeAlert
        ]
    );
}

#[test]
fn a_charge_for_an_unknown_session_writes_nothing() {
    let p = policy(true);
    let step = step(ID, None, refunded("evt_a", 10, 500), &env(&p, ME, NOW));
    assert!(step.session.is_none() && step.effects.is_empty());
}

#[test]
fn a_callback_body_names_the_fulfillment_and_the_figures() {
    let p = policy(true);
    let mut s = in_state(State::Fulfilled);
    s.rec.amount_total = Some(1200);
    s.rec.pending_fulfillment = Some("ful_x".into());
    let step = step(ID, Some(s), refunded("evt_a", 10, 500), &env(&p, ME, NOW));
    let Some(Effect::Queue {
        notification,
        deliver,
    }) = step.effects.first()
    else {
        panic!("{:?}", step.effects)
    };
    assert!(*deliver && !notification.refreshed);
    let body: serde_json::Value = serde_json::from_str(&notification.body).unwrap();
    assert_eq!(body["type"], "checkout.refunded");
    assert_eq!(body["data"]["fulfillment_id"], "ful_x");
    assert_eq!(body["data"]["amount_refunded"], 500);
    assert_eq!(body["data"]["refund_status"], "partial");
}

#[test]
fn two_refunds_in_one_second_delivered_newest_first_keep_the_larger_total() {
    let (s, queued) = run(
        vec![refunded("evt_b", 10, 1000), refunded("evt_a", 10, 500)],
        true,
    );
    assert_eq!(s.rec.amount_refunded, 1000);
    assert_eq!(queued.len(), 1, "the older figure is no change");
}

#[test]
fn a_second_update_about_the_same_failed_refund_takes_nothing_off_again() {
    let reversed = |event: &str, created: i64| {
        charge(
            event,
            created,
            ChargeFact::RefundReversed {
                refund: "re_1".into(),
                amount: 300,
            },
        )
    };
    let (s, queued) = run(
        vec![
            refunded("evt_a", 10, 800),
            reversed("evt_r1", 20),
            reversed("evt_r2", 30),
        ],
        true,
    );
    assert_eq!(s.rec.amount_refunded, 500);
    assert_eq!(queued.len(), 2, "the refund, then its reversal once");
}
