//! After the sale: what a refund or a dispute of the session's payment
//! changes. Neither touches fulfillment (a refunded order stays fulfilled;
//! what to take back is the merchant's call): they update the session's
//! refund figures and dispute, and queue the merchant's callbacks and
//! alerts, each once per change.
//!
//! Charge events may arrive in any order: a fact older (by the event's
//! `created`) than the one the session has is recorded in its history and
//! changes nothing else.

use serde_json::json;

use super::{Machine, Out, outbox::notification};
use crate::{
    domain::{ChargeEvent, ChargeFact, Reply, Session},
    model::{EventRef, NotificationKind, notification_id_of, push_bounded},
    time::rfc3339_ms,
};

impl Machine<'_, '_> {
    pub(super) fn charge(&mut self, mut s: Session, ev: ChargeEvent) -> Out {
        let now = self.now();
        push_bounded(
            &mut s.detail.events,
            EventRef {
                id: ev.event_id.clone(),
                kind: ev.kind.clone(),
                received_at_ms: now,
            },
        );
        match ev.fact {
            ChargeFact::Refunded {
                amount,
                amount_refunded,
                refunded,
            } => {
                // Newer news wins; within one second (Stripe's resolution)
                // the larger refunded total, which only grows between reversals.
                let newer = ev.created > s.rec.refund_as_of
                    || (ev.created == s.rec.refund_as_of
                        && amount_refunded >= s.rec.amount_refunded);
                if newer {
                    let rec = &mut s.rec;
                    rec.charge_amount = Some(amount);
                    rec.refund_as_of = ev.created;
                    let changed =
                        amount_refunded != rec.amount_refunded || refunded != rec.refunded_fully;
                    rec.amount_refunded = amount_refunded.max(0);
                    rec.refunded_fully = refunded;
                    if changed {
                        self.refund_changed(&mut s);
                    }
                }
            }
            ChargeFact::RefundReversed { refund, amount } => {
                // A refund fails once: a later update about it (its metadata,
                // say) must not take its amount off a second time.
                let seen = s.detail.reversed_refunds.contains(&refund);
                if !seen && ev.created >= s.rec.refund_as_of && s.rec.amount_refunded > 0 {
                    push_bounded(&mut s.detail.reversed_refunds, refund);
                    let rec = &mut s.rec;
                    rec.refund_as_of = ev.created;
                    rec.amount_refunded = rec.amount_refunded.saturating_sub(amount).max(0);
                    rec.refunded_fully = false;
                    self.refund_changed(&mut s);
                }
            }
            ChargeFact::Dispute { dispute, closed } => {
                let same = s.rec.dispute.as_ref().is_some_and(|d| d.id == dispute.id);
                if ev.created >= s.rec.dispute_as_of || !same {
                    s.rec.dispute_as_of = ev.created;
                    s.rec.dispute = Some(dispute.clone());
                    self.dispute_changed(&mut s, &dispute, closed);
                }
            }
        }
        s.rec.updated_at_ms = now;
        let state = s.rec.state;
        (Some(s), Reply::Done(state))
    }

    /// The fulfillment the merchant knows the session by, if any.
    fn fulfillment_id(s: &Session) -> Option<String> {
        s.rec
            .pending_fulfillment
            .clone()
            .or_else(|| s.detail.fulfillments.last().map(|f| f.id.clone()))
    }

    fn refund_changed(&mut self, s: &mut Session) {
        s.rec.refund_changes = s.rec.refund_changes.saturating_add(1);
        if !self.env.policy.callbacks {
            return;
        }
        let data = json!({
            "fulfillment_id": Self::fulfillment_id(s),
            "amount_refunded": s.rec.amount_refunded,
            "refund_status": s.rec.refund_status().as_str(),
        });
        let change = s.rec.refund_changes.to_string();
        self.queue_callback(s, NotificationKind::RefundedCallback, &change, data);
    }

    fn dispute_changed(
        &mut self,
        s: &mut Session,
        dispute: &crate::model::DisputeRecord,
        closed: bool,
    ) {
        let kind = if closed {
            NotificationKind::DisputeClosedCallback
        } else {
            NotificationKind::DisputeOpenedCallback
        };
        if self.env.policy.callbacks {
            let data = json!({
                "fulfillment_id": Self::fulfillment_id(s),
                "dispute": dispute,
            });
            self.queue_callback(s, kind, &dispute.id, data);
        }
        if closed {
            return;
        }
        // The merchant has days, not weeks, to answer: tell them now.
        let channels = &self.env.policy.channels;
        let merchant = channels.merchant_email.clone().filter(|_| channels.smtp);
        let alert = channels.alert_webhook;
        let facts = json!({ "dispute": dispute }).to_string();
        let now = self.now();
        if let Some(to) = merchant {
            let id = notification_id_of(
                NotificationKind::DisputeMerchantEmail,
                &s.rec.id,
                &dispute.id,
            );
            let n = notification(
                NotificationKind::DisputeMerchantEmail,
                &s.rec.id,
                Some(to),
                facts.clone(),
                true,
                now,
            );
            self.queue(&mut s.detail, crate::model::Notification { id, ..n });
        }
        if alert {
            let id = notification_id_of(NotificationKind::DisputeAlert, &s.rec.id, &dispute.id);
            let n = notification(
                NotificationKind::DisputeAlert,
                &s.rec.id,
                Some("webhook".into()),
                facts,
                true,
                now,
            );
            self.queue(&mut s.detail, crate::model::Notification { id, ..n });
        }
    }

    /// A merchant callback about the session, once per (kind, change). Its
    /// `data.session` is filled with the session as retrieved when it is
    /// sent (`refreshed` false), like a `checkout.payment_failed` callback.
    fn queue_callback(
        &mut self,
        s: &mut Session,
        kind: NotificationKind,
        change: &str,
        data: serde_json::Value,
    ) {
        let now = self.now();
        let body = json!({
            "type": kind.as_str(),
            "timestamp": rfc3339_ms(now),
            "data": data,
        });
        let id = notification_id_of(kind, &s.rec.id, change);
        let n = notification(kind, &s.rec.id, None, body.to_string(), false, now);
        self.queue(&mut s.detail, crate::model::Notification { id, ..n });
    }
}
