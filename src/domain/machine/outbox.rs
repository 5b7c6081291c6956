//! What a session's changes queue in the outbox: emails and alerts, once
//! per session and kind, only on the channels configured.

use serde_json::json;

use super::Machine;
use crate::{
    domain::{Effect, Session},
    model::{
        Notification, NotificationKind, OutboxStatus, SessionDetail, notification_id, push_bounded,
    },
};

impl Machine<'_, '_> {
    /// Records an outbox entry (once per id) and queues its delivery.
    pub(super) fn queue(&mut self, detail: &mut SessionDetail, n: Notification) {
        if detail.notifications.contains(&n.id) {
            return;
        }
        push_bounded(&mut detail.notifications, n.id.clone());
        self.effects.push(Effect::Queue {
            notification: n,
            deliver: true,
        });
    }

    pub(super) fn queue_kind(
        &mut self,
        s: &mut Session,
        kind: NotificationKind,
        to: String,
        facts: String,
    ) {
        let n = notification(kind, &s.rec.id, Some(to), facts, true, self.now());
        self.queue(&mut s.detail, n);
    }

    /// A delayed payment failed: tell the customer (how to pay again) and the merchant.
    pub(super) fn queue_payment_failed(&mut self, s: &mut Session) {
        let channels = &self.env.policy.channels;
        let customer = s.rec.customer_email.clone().filter(|_| channels.smtp);
        let merchant = channels.merchant_email.clone().filter(|_| channels.smtp);
        let alert = channels.alert_webhook;
        if let Some(to) = customer {
            self.queue_kind(s, NotificationKind::PaymentFailedEmail, to, "{}".into());
        }
        if let Some(to) = merchant {
            self.queue_kind(
                s,
                NotificationKind::PaymentFailedMerchantEmail,
                to,
                "{}".into(),
            );
        }
        if alert {
            self.queue_kind(
                s,
                NotificationKind::PaymentFailedAlert,
                "webhook".into(),
                "{}".into(),
            );
        }
    }

    /// Fulfillment gave up: tell the merchant, with the last error.
    pub(super) fn queue_stuck(&mut self, s: &mut Session, error: &str) {
        let channels = &self.env.policy.channels;
        let merchant = channels.merchant_email.clone().filter(|_| channels.smtp);
        let alert = channels.alert_webhook;
        let facts = json!({ "error": error }).to_string();
        if let Some(to) = merchant {
            self.queue_kind(s, NotificationKind::StuckMerchantEmail, to, facts.clone());
        }
        if alert {
            self.queue_kind(s, NotificationKind::StuckAlert, "webhook".into(), facts);
        }
    }

    /// The session is fulfilled: the customer's receipt, when configured.
    pub(super) fn queue_receipt(&mut self, s: &mut Session) {
        let channels = &self.env.policy.channels;
        if channels.receipt
            && channels.smtp
            && let Some(to) = s.rec.customer_email.clone()
        {
            self.queue_kind(s, NotificationKind::ReceiptEmail, to, "{}".into());
        }
    }
}

pub(super) fn notification(
    kind: NotificationKind,
    session_id: &str,
    recipient: Option<String>,
    body: String,
    refreshed: bool,
    now: u64,
) -> Notification {
    Notification {
        id: notification_id(kind, session_id),
        session_id: session_id.to_string(),
        kind,
        body,
        status: OutboxStatus::Queued,
        refreshed,
        recipient,
        attempts: 0,
        last_error: None,
        sent_at_ms: None,
        created_at_ms: now,
    }
}
