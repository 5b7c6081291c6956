//! The JSON the HTTP layer answers, as types (CONTRACT.md "The JSON API").
//!
//! Field names and values are the outside contract: renaming a field here is
//! a breaking change. The structs borrow from the records they show, so
//! building a response copies nothing but the formatted times.

use serde::Serialize;

use crate::{
    fulfill::Outcome,
    model::{
        AttemptRecord, DeliveryAttempt, EventRef, FulfillmentRecord, LineItemRecord, Notification,
        SessionDetail, SessionRecord, State,
    },
    time::{rfc3339_ms, rfc3339_secs},
};

/// `{"error": {"message": …}}`.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorMessage<'a>,
}

#[derive(Serialize)]
pub struct ErrorMessage<'a> {
    pub message: &'a str,
}

impl<'a> ErrorBody<'a> {
    pub fn new(message: &'a str) -> Self {
        ErrorBody {
            error: ErrorMessage { message },
        }
    }
}

/// A session as `GET /admin/api/sessions/{id}` shows it; in the list, without
/// the timeline (`attempts`, `events`, `deliveries`, `notifications`).
#[derive(Serialize)]
pub struct SessionJson<'a> {
    pub id: &'a str,
    pub livemode: bool,
    pub state: &'static str,
    pub payment_status: Option<&'a str>,
    pub status: Option<&'a str>,
    pub amount_total: Option<i64>,
    pub currency: Option<&'a str>,
    pub customer_email: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
    /// Checkout's `mode`: `payment`, `subscription` or `setup`.
    pub mode: Option<&'a str>,
    /// The connected account (Stripe Connect), or null.
    pub account: Option<&'a str>,
    /// The subscription a `subscription`-mode session created.
    pub subscription: Option<&'a str>,
    /// Refunded so far, in minor units of the payment's currency.
    pub amount_refunded: i64,
    /// `none`, `partial` or `full`.
    pub refund_status: &'static str,
    /// The payment's dispute, or null (`evidence_due_by`: Unix seconds, as Stripe gives it).
    pub dispute: Option<&'a crate::model::DisputeRecord>,
    /// Stripe's Unix timestamp, as in Stripe's API.
    pub created: i64,
    pub created_at: String,
    pub updated_at: String,
    pub last_error: Option<&'a str>,
    /// When the next attempt is due, while `retrying`.
    pub next_attempt_at: Option<String>,
    pub line_items: Vec<LineItemJson<'a>>,
    pub fulfillments: Vec<FulfillmentJson<'a>>,
    #[serde(flatten)]
    pub timeline: Option<TimelineJson<'a>>,
}

#[derive(Serialize)]
pub struct TimelineJson<'a> {
    pub attempts: Vec<AttemptJson<'a>>,
    pub events: Vec<EventJson<'a>>,
    pub deliveries: Vec<DeliveryJson<'a>>,
    pub notifications: Vec<NotificationJson<'a>>,
}

#[derive(Serialize)]
pub struct LineItemJson<'a> {
    pub id: &'a str,
    pub description: Option<&'a str>,
    pub quantity: Option<i64>,
    pub amount_total: i64,
    pub currency: Option<&'a str>,
    pub unit_amount: Option<i64>,
    pub price_id: Option<&'a str>,
    /// The price's product: what `[[delivery.products]]` matches.
    pub product_id: Option<&'a str>,
}

#[derive(Serialize)]
pub struct FulfillmentJson<'a> {
    pub id: &'a str,
    pub at: String,
    pub forced: bool,
    pub trigger: &'static str,
    pub actor: Option<&'a str>,
    pub delivered_at: Option<String>,
}

#[derive(Serialize)]
pub struct AttemptJson<'a> {
    pub at: String,
    pub trigger: &'static str,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
pub struct EventJson<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub received_at: String,
}

#[derive(Serialize)]
pub struct DeliveryJson<'a> {
    pub at: String,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub webhook_id: &'a str,
    pub status_code: Option<u16>,
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
pub struct NotificationJson<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub recipient: Option<&'a str>,
    pub status: &'a str,
    pub attempts: u32,
    pub last_error: Option<&'a str>,
    /// `null` for notifications recorded before the time was kept.
    pub created_at: Option<String>,
    pub sent_at: Option<String>,
}

impl<'a> SessionJson<'a> {
    /// The list's row: no timeline.
    pub fn summary(rec: &'a SessionRecord, detail: &'a SessionDetail) -> Self {
        SessionJson {
            id: &rec.id,
            livemode: rec.livemode,
            state: rec.state.as_str(),
            payment_status: rec.payment_status.as_deref(),
            status: rec.status.as_deref(),
            amount_total: rec.amount_total,
            currency: rec.currency.as_deref(),
            customer_email: rec.customer_email.as_deref(),
            payment_intent: rec.payment_intent.as_deref(),
            mode: rec.mode.as_deref(),
            account: rec.account.as_deref(),
            subscription: rec.subscription.as_deref(),
            amount_refunded: rec.amount_refunded,
            refund_status: rec.refund_status().as_str(),
            dispute: rec.dispute.as_ref(),
            created: rec.created,
            created_at: rfc3339_secs(rec.created),
            updated_at: rfc3339_ms(rec.updated_at_ms),
            last_error: rec.last_error.as_deref(),
            next_attempt_at: rec
                .retry
                .as_ref()
                .filter(|_| rec.state == State::Retrying)
                .map(|r| rfc3339_ms(r.next_at_ms)),
            line_items: detail.line_items.iter().map(LineItemJson::from).collect(),
            fulfillments: detail
                .fulfillments
                .iter()
                .map(FulfillmentJson::from)
                .collect(),
            timeline: None,
        }
    }

    /// One session with everything that happened to it.
    pub fn full(
        rec: &'a SessionRecord,
        detail: &'a SessionDetail,
        notifications: &'a [Notification],
    ) -> Self {
        SessionJson {
            timeline: Some(TimelineJson {
                attempts: detail.attempts.iter().map(AttemptJson::from).collect(),
                events: detail.events.iter().map(EventJson::from).collect(),
                deliveries: detail.deliveries.iter().map(DeliveryJson::from).collect(),
                notifications: notifications.iter().map(NotificationJson::from).collect(),
            }),
            ..SessionJson::summary(rec, detail)
        }
    }
}

impl<'a> From<&'a LineItemRecord> for LineItemJson<'a> {
    fn from(i: &'a LineItemRecord) -> Self {
        LineItemJson {
            id: &i.id,
            description: i.description.as_deref(),
            quantity: i.quantity,
            amount_total: i.amount_total,
            currency: i.currency.as_deref(),
            unit_amount: i.unit_amount,
            price_id: i.price_id.as_deref(),
            product_id: i.product_id.as_deref(),
        }
    }
}

impl<'a> From<&'a FulfillmentRecord> for FulfillmentJson<'a> {
    fn from(f: &'a FulfillmentRecord) -> Self {
        FulfillmentJson {
            id: &f.id,
            at: rfc3339_ms(f.at_ms),
            forced: f.forced,
            trigger: f.trigger.as_str(),
            actor: f.actor.as_deref(),
            delivered_at: f.delivered_at_ms.map(rfc3339_ms),
        }
    }
}

impl<'a> From<&'a AttemptRecord> for AttemptJson<'a> {
    fn from(a: &'a AttemptRecord) -> Self {
        AttemptJson {
            at: rfc3339_ms(a.at_ms),
            trigger: a.trigger.as_str(),
            outcome: &a.outcome,
            error: a.error.as_deref(),
        }
    }
}

impl<'a> From<&'a EventRef> for EventJson<'a> {
    fn from(e: &'a EventRef) -> Self {
        EventJson {
            id: &e.id,
            kind: &e.kind,
            received_at: rfc3339_ms(e.received_at_ms),
        }
    }
}

impl<'a> From<&'a DeliveryAttempt> for DeliveryJson<'a> {
    fn from(d: &'a DeliveryAttempt) -> Self {
        DeliveryJson {
            at: rfc3339_ms(d.at_ms),
            kind: &d.kind,
            webhook_id: &d.webhook_id,
            status_code: d.status_code,
            error: d.error.as_deref(),
        }
    }
}

impl<'a> From<&'a Notification> for NotificationJson<'a> {
    fn from(n: &'a Notification) -> Self {
        NotificationJson {
            id: &n.id,
            kind: n.kind.as_str(),
            recipient: n.recipient.as_deref(),
            status: n.status.as_str(),
            attempts: n.attempts,
            last_error: n.last_error.as_deref(),
            created_at: (n.created_at_ms > 0).then(|| rfc3339_ms(n.created_at_ms)),
            sent_at: n.sent_at_ms.map(rfc3339_ms),
        }
    }
}

/// `GET /admin/api/sessions`.
#[derive(Serialize)]
pub struct SessionList<'a> {
    pub data: Vec<SessionJson<'a>>,
    pub next_cursor: Option<String>,
}

/// `POST /admin/api/sessions/{id}/fulfill`: what the call did, and the
/// session afterwards.
#[derive(Serialize)]
pub struct FulfillResponse<'a> {
    pub result: FulfillResult<'a>,
    pub session: SessionJson<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum FulfillResult<'a> {
    /// The attempt finished within the wait.
    Done {
        state: &'static str,
        fulfillment_id: Option<&'a str>,
        error: Option<&'a str>,
    },
    /// Still running (answered with `202`): `{"state": "fulfilling", "pending": true}`.
    Pending { state: &'static str, pending: bool },
}

impl<'a> FulfillResult<'a> {
    pub fn done(outcome: &'a Outcome) -> Self {
        FulfillResult::Done {
            state: outcome.state.as_str(),
            fulfillment_id: outcome.fulfillment_id.as_deref(),
            error: outcome.error.as_deref(),
        }
    }

    pub fn pending() -> Self {
        FulfillResult::Pending {
            state: State::Fulfilling.as_str(),
            pending: true,
        }
    }
}

/// `POST /admin/api/backup`.
#[derive(Serialize)]
pub struct BackupJson<'a> {
    pub path: &'a str,
    pub sessions: u64,
    pub events: u64,
    pub bytes: u64,
}

/// `POST /webhook`, once the event is durable.
#[derive(Serialize)]
pub struct WebhookAck {
    pub received: bool,
    pub outcome: &'static str,
    /// Why an event about a Checkout Session was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_and_results_have_the_contract_shape() {
        assert_eq!(
            serde_json::to_value(ErrorBody::new("no such session")).unwrap(),
            json!({"error": {"message": "no such session"}})
        );
        assert_eq!(
            serde_json::to_value(FulfillResult::pending()).unwrap(),
            json!({"state": "fulfilling", "pending": true})
        );
        let outcome = Outcome {
            state: State::Fulfilled,
            fulfillment_id: Some("ful_1".into()),
            error: None,
            attempted: true,
        };
        assert_eq!(
            serde_json::to_value(FulfillResult::done(&outcome)).unwrap(),
            json!({"state": "fulfilled", "fulfillment_id": "ful_1", "error": null})
        );
    }

    /// How the JSON was built before these types (with `json!`): the typed
    /// structs must give exactly the same fields and values.
    fn legacy(
        rec: &SessionRecord,
        detail: &SessionDetail,
        notifications: Option<&[Notification]>,
    ) -> serde_json::Value {
        let mut v = json!({
            "id": rec.id, "livemode": rec.livemode, "state": rec.state.as_str(),
            "payment_status": rec.payment_status, "status": rec.status,
            "amount_total": rec.amount_total, "currency": rec.currency,
            "customer_email": rec.customer_email, "payment_intent": rec.payment_intent,
            "mode": rec.mode, "account": rec.account, "subscription": rec.subscription,
            "amount_refunded": rec.amount_refunded, "refund_status": rec.refund_status().as_str(),
            "dispute": rec.dispute,
            "created": rec.created, "created_at": rfc3339_secs(rec.created),
            "updated_at": rfc3339_ms(rec.updated_at_ms), "last_error": rec.last_error,
            "next_attempt_at": rec.retry.as_ref().filter(|_| rec.state == State::Retrying).map(|r| rfc3339_ms(r.next_at_ms)),
            "line_items": detail.line_items.iter().map(|i| json!({
                "id": i.id, "description": i.description, "quantity": i.quantity,
                "amount_total": i.amount_total, "currency": i.currency,
                "unit_amount": i.unit_amount, "price_id": i.price_id,
                "product_id": i.product_id,
            })).collect::<Vec<_>>(),
            "fulfillments": detail.fulfillments.iter().map(|f| json!({
                "id": f.id, "at": rfc3339_ms(f.at_ms), "forced": f.forced,
                "trigger": f.trigger.as_str(), "actor": f.actor,
                "delivered_at": f.delivered_at_ms.map(rfc3339_ms),
            })).collect::<Vec<_>>(),
        });
        if let Some(notifications) = notifications {
            let obj = v.as_object_mut().unwrap();
            obj.insert("attempts".into(), detail.attempts.iter().map(|a| json!({"at": rfc3339_ms(a.at_ms), "trigger": a.trigger.as_str(), "outcome": a.outcome, "error": a.error})).collect());
            obj.insert("events".into(), detail.events.iter().map(|e| json!({"id": e.id, "type": e.kind, "received_at": rfc3339_ms(e.received_at_ms)})).collect());
            obj.insert("deliveries".into(), detail.deliveries.iter().map(|d| json!({"at": rfc3339_ms(d.at_ms), "type": d.kind, "webhook_id": d.webhook_id, "status_code": d.status_code, "error": d.error})).collect());
            obj.insert("notifications".into(), notifications.iter().map(|n| json!({"id": n.id, "kind": n.kind, "recipient": n.recipient, "status": n.status, "attempts": n.attempts, "last_error": n.last_error, "created_at": (n.created_at_ms > 0).then(|| rfc3339_ms(n.created_at_ms)), "sent_at": n.sent_at_ms.map(rfc3339_ms)})).collect());
        }
        v
    }

    fn sample() -> (SessionRecord, SessionDetail, Vec<Notification>) {
        use crate::model::{RetryInfo, Trigger};
        let mut rec = SessionRecord::new("cs_test_a1", 1_700_000_000, 1_700_000_123_456);
        rec.state = State::Retrying;
        rec.payment_status = Some("paid".into());
        rec.status = Some("complete".into());
        rec.amount_total = Some(4200);
        rec.currency = Some("eur".into());
        rec.customer_email = Some("a@example.com".into());
        rec.last_error = Some("merchant answered 500".into());
        rec.retry = Some(RetryInfo {
            failures: 2,
            first_failure_ms: 1_700_000_100_000,
            next_at_ms: 1_700_000_200_000,
        });
        let detail = SessionDetail {
            line_items: vec![LineItemRecord {
                id: "li_1".into(),
                description: Some("T-shirt".into()),
                quantity: Some(2),
                amount_total: 4200,
                amount_subtotal: 4200,
                currency: Some("eur".into()),
                price_id: None,
                unit_amount: Some(2100),
                product_id: None,
            }],
            attempts: vec![AttemptRecord {
                at_ms: 1_700_000_150_000,
                trigger: Trigger::Webhook,
                outcome: "retrying".into(),
                error: Some("timeout".into()),
            }],
            events: vec![EventRef {
                id: "evt_1".into(),
                kind: "checkout.session.completed".into(),
                received_at_ms: 1_700_000_001_000,
            }],
            fulfillments: vec![FulfillmentRecord {
                id: "ful_1".into(),
                at_ms: 1_700_000_160_000,
                forced: true,
                trigger: Trigger::Admin,
                actor: Some("admin".into()),
                delivered_at_ms: None,
            }],
            deliveries: vec![DeliveryAttempt {
                at_ms: 1_700_000_170_000,
                kind: "checkout.fulfilled".into(),
                webhook_id: "ful_1".into(),
                status_code: Some(500),
                error: None,
            }],
            ..SessionDetail::default()
        };
        let notification = |id: &str, created_at_ms, sent_at_ms| Notification {
            id: id.into(),
            session_id: rec.id.clone(),
            kind: crate::model::NotificationKind::ReceiptEmail,
            body: "{}".into(),
            status: crate::model::OutboxStatus::Sent,
            refreshed: false,
            recipient: Some("a@example.com".into()),
            attempts: 1,
            last_error: None,
            sent_at_ms,
            created_at_ms,
        };
        let notifications = vec![
            notification("n_old", 0, None),
            notification("n_new", 1_700_000_180_000, Some(1_700_000_181_000)),
        ];
        (rec, detail, notifications)
    }

    #[test]
    fn sessions_serialise_exactly_as_before() {
        let (rec, detail, notifications) = sample();
        assert_eq!(
            serde_json::to_value(SessionJson::full(&rec, &detail, &notifications)).unwrap(),
            legacy(&rec, &detail, Some(&notifications))
        );
        assert_eq!(
            serde_json::to_value(SessionJson::summary(&rec, &detail)).unwrap(),
            legacy(&rec, &detail, None)
        );
        let mut fulfilled = rec.clone();
        fulfilled.state = State::Fulfilled;
        let empty = SessionDetail::default();
        assert_eq!(
            serde_json::to_value(SessionJson::full(&fulfilled, &empty, &[])).unwrap(),
            legacy(&fulfilled, &empty, Some(&[]))
        );
    }
}
