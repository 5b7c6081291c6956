//! Every state against every input, and the no-op claims the store may skip.

use super::*;

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

fn s_lease_end(state: State) -> Option<u64> {
    in_state(state).rec.lease.map(|l| l.until_ms)
}

#[test]
fn a_claim_called_a_noop_is_one_the_rules_skip_without_a_write() {
    let p = policy(true);
    let triggers = [
        Trigger::Webhook,
        Trigger::LandingPage,
        Trigger::Admin,
        Trigger::Retry,
        Trigger::Reconcile,
    ];
    let mut noops = 0;
    for state in State::ALL {
        for trigger in triggers {
            for force in [false, true] {
                let s = in_state(state);
                if !claim_is_noop(&s.rec, trigger, force, NOW, &p) {
                    continue;
                }
                noops += 1;
                let step = step(ID, Some(s), claim(trigger, force), &env(&p, ME, NOW));
                assert!(
                    step.session.is_none() && matches!(step.reply, Reply::Skipped(_)),
                    "{state:?} {trigger:?} force={force}: {step:?}"
                );
                // At most the recovery point at the live lease's end, which
                // the holder's own claim queued already.
                let lease_end = s_lease_end(state);
                assert!(
                    step.effects
                        .iter()
                        .all(|e| matches!(e, Effect::ScheduleFulfill { due, .. } if Some(*due) == lease_end)),
                    "{state:?} {trigger:?}: {:?}",
                    step.effects
                );
            }
        }
    }
    assert!(noops >= 10, "{noops}");
}
