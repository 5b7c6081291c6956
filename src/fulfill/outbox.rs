//! Delivering the outbox: `checkout.payment_failed` callbacks, emails and
//! alerts, each recorded (with its session's change) before it is sent,
//! sent by a `Deliver` job, and retried by the domain's one retry policy
//! (`domain::outbox`). Fulfillment callbacks are delivered by the
//! fulfillment attempt itself.

use std::{future::Future, pin::Pin, time::Duration};

use serde_json::{Value, json};

use super::{Fulfiller, delivery};
use crate::{
    domain::outbox::Attempt,
    model::{
        DeliveryAttempt, Job, Notification, NotificationKind, SessionDetail, SessionId,
        SessionRecord,
    },
    store::{Delivered, StoreError},
    time::rfc3339_ms,
};

/// The longest one email or alert may take to send.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an email or alert was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OutboxError {
    pub message: String,
    /// Retrying cannot help (a refused recipient, a malformed address).
    pub permanent: bool,
}

/// Sends emails and alerts. Implemented above this layer (rendering and
/// transports live in `notify`); fulfillment only decides what to send,
/// records it durably, and retries.
pub trait Outbox: Send + Sync {
    fn send<'a>(
        &'a self,
        notification: &'a Notification,
        rec: &'a SessionRecord,
        detail: &'a SessionDetail,
    ) -> Pin<Box<dyn Future<Output = Result<(), OutboxError>> + Send + 'a>>;
}

impl Fulfiller {
    /// Delivers one outbox entry once, recording the answer and scheduling
    /// a retry on failure. A stale job (its entry settled already) sends nothing.
    pub async fn deliver_notification(&self, job: &Job) -> Result<(), StoreError> {
        let Job::Deliver {
            session_id,
            notification_id,
            ..
        } = job
        else {
            return Ok(());
        };
        let entry = self.store.notification(notification_id).await?;
        let Some(mut n) = entry.filter(|n| !n.status.is_final()) else {
            let key = job.key();
            let due = self.store.job_due(&key).await?;
            if let Some(due) = due {
                self.store.finish_job(&key, due).await?;
            }
            return Ok(());
        };
        let started = self.now();
        let (outcome, status, refreshed) = if n.kind.is_callback() {
            self.send_callback(&mut n, session_id, started).await
        } else {
            (self.send_message(&n, session_id).await, None, None)
        };
        let channel = if n.kind.is_callback() {
            "callback"
        } else if n.kind.is_alert() {
            "alert"
        } else {
            "email"
        };
        self.metrics.delivery(channel, outcome == Attempt::Sent);
        if let Attempt::Failed { error, .. } = &outcome {
            tracing::warn!(session = %session_id, notification = %n.kind, error = %error, "notification not delivered");
        }
        let attempt = DeliveryAttempt {
            at_ms: started,
            kind: n.kind.as_str().into(),
            webhook_id: n.id.clone(),
            status_code: status,
            error: match &outcome {
                Attempt::Failed { error, .. } => Some(error.clone()),
                Attempt::Sent => None,
            },
        };
        let delivered = Delivered {
            job: job.clone(),
            attempt,
            outcome,
            refreshed_body: refreshed,
        };
        self.store.record_delivery(delivered, self.ctx()).await
    }

    /// A callback other than a fulfillment's (`checkout.payment_failed`,
    /// `checkout.refunded`, `checkout.dispute_*`). It carries the session as
    /// retrieved, with every line item, like a fulfillment: fetched once,
    /// then kept so every retry sends the same body.
    async fn send_callback(
        &self,
        n: &mut Notification,
        session_id: &str,
        started: u64,
    ) -> (Attempt, Option<u16>, Option<String>) {
        let mut refreshed = None;
        let later = |error: String| {
            let attempt = Attempt::Failed {
                error,
                permanent: false,
            };
            (attempt, None, None)
        };
        if n.kind != NotificationKind::FulfilledCallback && !n.refreshed {
            // A connected account's session is fetched on that account.
            let account = match crate::model::SessionId::parse(session_id) {
                Some(id) => match self.store.session(&id).await {
                    Ok(rec) => rec.and_then(|r| r.account),
                    Err(e) => return later(format!("cannot read the session: {e}")),
                },
                None => None,
            };
            let session = match self
                .stripe
                .retrieve_session(session_id, account.as_deref())
                .await
            {
                Ok(r) => Some(r.raw),
                Err(e) if e.is_retryable() => {
                    return later(format!("cannot retrieve the session for the callback: {e}"));
                }
                // Stripe will not say more: send what is known.
                Err(_) => None,
            };
            let body = with_session(&n.body, session, session_id, started);
            n.body = body.clone();
            refreshed = Some(body);
        }
        let Some(sender) = &self.callback else {
            // Kept for when the merchant configures the callback again.
            let error = "fulfillment.callback_url is no longer configured".to_string();
            return (
                Attempt::Failed {
                    error,
                    permanent: false,
                },
                None,
                refreshed,
            );
        };
        let sent = sender.send(&n.id, &n.body).await;
        let status = delivery(started, n.kind.as_str(), &n.id, sent.as_ref()).status_code;
        let outcome = match sent {
            Ok(_) => Attempt::Sent,
            Err(e) => Attempt::Failed {
                error: e.message,
                permanent: false,
            },
        };
        (outcome, status, refreshed)
    }

    /// An email or an alert.
    async fn send_message(&self, n: &Notification, session_id: &str) -> Attempt {
        let session = match SessionId::parse(session_id) {
            Some(id) => self.store.session_full(&id).await,
            None => Ok(None),
        };
        match (&self.outbox, session) {
            (_, Err(e)) => Attempt::Failed {
                error: format!("cannot read the session: {e}"),
                permanent: false,
            },
            (_, Ok(None)) => Attempt::Failed {
                error: "the session is no longer stored".into(),
                permanent: true,
            },
            // Kept for when the merchant configures email again.
            (None, _) => Attempt::Failed {
                error: "email and alerts are not configured".into(),
                permanent: false,
            },
            (Some(outbox), Ok(Some(s))) => {
                // lettre bounds only the connect: a server that accepts and
                // then stalls must not hold the slot forever.
                let send = outbox.send(n, &s.rec, &s.detail);
                match tokio::time::timeout(SEND_TIMEOUT, send).await {
                    Ok(Ok(())) => Attempt::Sent,
                    Ok(Err(e)) => Attempt::Failed {
                        error: e.message,
                        permanent: e.permanent,
                    },
                    Err(_) => Attempt::Failed {
                        error: format!("no answer within {} s", SEND_TIMEOUT.as_secs()),
                        permanent: false,
                    },
                }
            }
        }
    }

    /// Queues a `failed` outbox entry for delivery again, e.g. after the
    /// merchant fixed their mail settings. Returns false when there is
    /// nothing to resend. Fulfillment callbacks are re-sent by re-triggering
    /// fulfillment instead.
    pub async fn resend_notification(
        &self,
        session_id: &SessionId,
        notification_id: &str,
    ) -> Result<bool, StoreError> {
        let queued = self
            .store
            .resend(session_id, notification_id, self.now())
            .await?;
        if queued {
            self.wake.notify_one();
        }
        Ok(queued)
    }
}

/// A callback body as queued, with `data.session` set to the session as
/// retrieved (`None`: Stripe would not give it; the event's snapshot, if
/// the body has one, stays, else the session's id).
fn with_session(body: &str, session: Option<Value>, session_id: &str, now: u64) -> String {
    let mut b: Value = serde_json::from_str(body).unwrap_or_else(|_| json!({}));
    if !b.get("timestamp").is_some_and(Value::is_string) {
        b["timestamp"] = Value::String(rfc3339_ms(now));
    }
    if !b.get("data").is_some_and(Value::is_object) {
        b["data"] = json!({});
    }
    match session {
        Some(s) => b["data"]["session"] = s,
        None if b["data"].get("session").is_some_and(Value::is_object) => {}
        None => b["data"]["session"] = json!({"id": session_id, "object": "checkout.session"}),
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retrieved_session_joins_the_queued_data() {
        let queued = r#"{"type":"checkout.refunded","timestamp":"2026-12-03T00:00:00.000Z","data":{"fulfillment_id":"ful_1","amount_refunded":500,"refund_status":"partial"}}"#;
        let b: Value = serde_json::from_str(&with_session(
            queued,
            Some(json!({"id": "cs_test_1", "amount_total": 1000})),
            "cs_test_1",
            0,
        ))
        .unwrap();
        assert_eq!(b["type"], "checkout.refunded");
        assert_eq!(b["timestamp"], "2026-12-03T00:00:00.000Z");
        assert_eq!(b["data"]["amount_refunded"], 500);
        assert_eq!(b["data"]["session"]["amount_total"], 1000);
        let snapshot =
            r#"{"type":"checkout.payment_failed","data":{"session":{"id":"cs_test_2","x":1}}}"#;
        let b: Value = serde_json::from_str(&with_session(snapshot, None, "cs_test_2", 0)).unwrap();
        assert_eq!(b["data"]["session"]["x"], 1, "the event's snapshot stays");
        assert_eq!(b["timestamp"], "1970-01-01T00:00:00.000Z");
        let b: Value = serde_json::from_str(&with_session(queued, None, "cs_test_1", 0)).unwrap();
        assert_eq!(b["data"]["session"]["id"], "cs_test_1");
    }
}
