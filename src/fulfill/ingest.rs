//! Recording a webhook delivery: the event is parsed once into the domain's
//! input, and recorded with its session's transition in one commit.

use super::{Fulfiller, snapshot};
use crate::{
    domain::{ChargeEvent, ChargeFact, EventKind, Input, Snapshot},
    model::{DisputeRecord, EventRecord, SessionId},
    store::{Ingested, NewEvent, StoreError},
    stripe::{Event, types::ChargeObject, types::is_object_id},
};

impl Fulfiller {
    /// Records one webhook delivery durably; returns only after the commit.
    /// `raw` is the exact body received, `event` its parse.
    pub async fn ingest(&self, raw: String, event: Event) -> Result<Ingested, StoreError> {
        let ctx = self.ctx();
        let new = new_event(raw, event, ctx.now);
        // A job it queued wakes the worker through the store.
        self.store.ingest(new, ctx).await
    }

    /// Applies again what an earlier process acknowledged but did not make
    /// part of its tables before it stopped (see `Storage::replay`): each
    /// body is parsed as when it arrived.
    pub(super) async fn replay_acknowledged(&self) -> Result<usize, StoreError> {
        let to_event = |raw: Vec<u8>, received_at_ms: u64| {
            let parsed = String::from_utf8(raw)
                .map_err(|e| e.to_string())
                .and_then(|raw| {
                    Event::parse(&raw)
                        .map(|e| (raw, e))
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok((raw, event)) => Some(new_event(raw, event, received_at_ms)),
                Err(error) => {
                    tracing::error!(%error, "an acknowledged delivery no longer parses");
                    None
                }
            }
        };
        self.store.replay(self.ctx(), &to_event).await
    }
}

/// Why an event fulfilld would otherwise act on is ignored, for the
/// webhook's answer and log.
pub fn ignore_reason(event: &Event) -> Option<&'static str> {
    if event.kind.starts_with(crate::stripe::types::CHARGE_PREFIX) {
        return match (&event.charge, charge_event(event)) {
            (_, Some(_)) => None,
            (Some(o), None) if o.payment_intent_id().is_none() => {
                Some("the object names no payment_intent to match a session by")
            }
            (Some(_), None) if event.kind == "charge.refund.updated" => {
                Some("a refund update that changes no refunded amount")
            }
            _ => None,
        };
    }
    let session = event.session.as_ref()?;
    (EventKind::parse(&event.kind).is_some() && session.mode.as_deref() == Some("setup"))
        .then_some("mode=setup: a saved payment method is never fulfilled")
}

/// One of Stripe's enum words (a dispute's status or reason), kept short
/// whatever the body holds: it is shown on pages, in emails and alerts.
fn bounded(word: Option<&str>, default: &str) -> String {
    match word {
        Some(w) if !w.is_empty() => w.chars().take(64).collect(),
        _ => default.to_string(),
    }
}

/// The reason given for a charge event kept until its session arrives.
pub const UNMATCHED_REASON: &str =
    "no session has this payment_intent yet: kept, and applied when the session arrives";

/// What a `charge.*` event says about a payment, when fulfilld acts on it:
/// `charge.refunded`, `charge.refund.updated` (a refund that failed or was
/// canceled), `charge.dispute.created`, `.updated` and `.closed`.
fn charge_event(event: &Event) -> Option<ChargeEvent> {
    let o: &ChargeObject = event.charge.as_ref()?;
    let payment_intent = o.payment_intent_id()?.to_string();
    let fact = match (event.kind.as_str(), o.object.as_str()) {
        ("charge.refunded", "charge") => ChargeFact::Refunded {
            amount: o.amount,
            amount_refunded: o.amount_refunded,
            refunded: o.refunded,
        },
        ("charge.refund.updated", "refund")
            if matches!(o.status.as_deref(), Some("failed" | "canceled")) =>
        {
            ChargeFact::RefundReversed {
                refund: o.id.clone(),
                amount: o.amount,
            }
        }
        (
            kind @ ("charge.dispute.created" | "charge.dispute.updated" | "charge.dispute.closed"),
            "dispute",
        ) if is_object_id(&o.id, "dp_") || is_object_id(&o.id, "du_") => ChargeFact::Dispute {
            dispute: DisputeRecord {
                id: o.id.clone(),
                status: bounded(o.status.as_deref(), "needs_response"),
                reason: bounded(o.reason.as_deref(), "general"),
                amount: o.amount,
                currency: o.currency.clone(),
                evidence_due_by: o.evidence_details.as_ref().and_then(|e| e.due_by),
            },
            closed: kind == "charge.dispute.closed",
        },
        _ => return None,
    };
    Some(ChargeEvent {
        event_id: event.id.clone(),
        kind: event.kind.clone(),
        created: event.created,
        payment_intent,
        fact,
    })
}

/// The record of one delivery of `event` (`raw` as received at `now`), with
/// its session's input when fulfilld acts on it.
fn new_event(raw: String, event: Event, now: u64) -> NewEvent {
    let charge = charge_event(&event);
    let Event {
        id: event_id,
        kind: event_kind,
        created,
        livemode,
        account,
        session,
        failed_object,
        charge: _,
    } = event;
    let acted_on = EventKind::parse(&event_kind).and_then(|kind| {
        // A setup session saved a payment method and sold nothing: its
        // events are recorded as ignored (`ignore_reason` says why).
        let session = session.filter(|s| s.mode.as_deref() != Some("setup"))?;
        let id = SessionId::parse(&session.id)?;
        Some((kind, session, id))
    });
    let record = EventRecord {
        id: event_id.clone(),
        kind: event_kind,
        livemode,
        created,
        session_id: acted_on.as_ref().map(|(_, _, id)| id.as_str().to_string()),
        received_at_ms: now,
        deliveries: 1,
        disposition: if acted_on.is_some() || charge.is_some() {
            "handled"
        } else {
            "ignored"
        }
        .into(),
    };
    let session = acted_on.map(|(kind, session, id)| {
        let input = Input::Event {
            id: event_id,
            kind,
            snapshot: Snapshot {
                account,
                ..snapshot(&session)
            },
            // Only a failed payment's callback carries the event's object.
            object: if kind == EventKind::AsyncPaymentFailed {
                failed_object
            } else {
                serde_json::Value::Null
            },
        };
        (id, input)
    });
    NewEvent {
        record,
        raw: raw.into_bytes(),
        session,
        charge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Event {
        let path = format!(
            "{}/tests/fixtures/stripe/synthetic/{name}.event.json",
            env!("CARGO_MANIFEST_DIR")
        );
        Event::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn charge_events_in_stripe_shapes_become_facts_about_their_payment() {
        let refunded = charge_event(&fixture("charge.refunded")).unwrap();
        assert_eq!(refunded.payment_intent, "pi_3TestPaymentIntent0001");
        assert_eq!(
            refunded.fact,
            ChargeFact::Refunded {
                amount: 3000,
                amount_refunded: 1000,
                refunded: false
            }
        );
        let failed = charge_event(&fixture("charge.refund.updated")).unwrap();
        assert_eq!(
            failed.fact,
            ChargeFact::RefundReversed {
                refund: "re_3TestRefund000001".into(),
                amount: 1000
            }
        );
        let opened = charge_event(&fixture("charge.dispute.created")).unwrap();
        let ChargeFact::Dispute { dispute, closed } = &opened.fact else {
            panic!("{opened:?}")
        };
        assert!(!closed);
        assert_eq!(
            (
                dispute.id.as_str(),
                dispute.reason.as_str(),
                dispute.amount,
                dispute.evidence_due_by
            ),
            (
                "dp_1TestDispute0000001",
                "fraudulent",
                3000,
                Some(1_700_863_199)
            )
        );
        let won = charge_event(&fixture("charge.dispute.closed")).unwrap();
        assert!(
            matches!(&won.fact, ChargeFact::Dispute { dispute, closed: true } if dispute.status == "won")
        );
        for name in ["charge.refunded", "charge.dispute.created"] {
            let e = fixture(name);
            assert_eq!(ignore_reason(&e), None, "{name}");
            let new = new_event(String::new(), e, 5);
            assert_eq!(new.record.disposition, "handled");
            assert!(new.session.is_none() && new.charge.is_some());
        }
    }

    #[test]
    fn a_refund_update_that_changes_nothing_and_a_charge_without_a_payment_are_ignored_with_a_reason()
     {
        let mut e = fixture("charge.refund.updated");
        if let Some(o) = e.charge.as_mut() {
            o.status = Some("succeeded".into());
        }
        assert!(charge_event(&e).is_none());
        assert!(
            ignore_reason(&e)
                .unwrap()
                .contains("changes no refunded amount")
        );
        let mut e = fixture("charge.refunded");
        if let Some(o) = e.charge.as_mut() {
            o.payment_intent = Some("not an id".into());
        }
        assert!(ignore_reason(&e).unwrap().contains("payment_intent"));
        assert_eq!(new_event(String::new(), e, 5).record.disposition, "ignored");
    }
}
