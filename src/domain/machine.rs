//! The transitions: one function per input, each taking the session as
//! stored and returning what to store (see `step`).

use serde_json::json;

use super::{ClaimToken, Effect, Env, EventKind, Fetched, Input, Reply, Session, Snapshot, Step};
use crate::{
    domain::ids::fulfillment_id,
    model::{
        AttemptRecord, EventRef, FulfillmentRecord, Lease, Notification, NotificationKind,
        OutboxStatus, RetryInfo, SessionDetail, SessionRecord, State, Trigger, notification_id,
        push_bounded,
    },
    time::rfc3339_ms,
};

/// Applies one input to the session `id` (`current`: as stored, None when
/// unknown). Pure: the same arguments always give the same step.
pub fn step(id: &str, current: Option<Session>, input: Input, env: &Env<'_>) -> Step {
    let mut m = Machine {
        env,
        effects: Vec::new(),
    };
    let current = current.map(normalise);
    let (session, reply) = match input {
        Input::Event {
            id: event_id,
            kind,
            snapshot,
            object,
        } => {
            let is_new = current.is_none();
            let s = current.unwrap_or_else(|| new_session(id, snapshot.created, env.now));
            m.event(s, is_new, &event_id, kind, &snapshot, object)
        }
        Input::Claim {
            trigger,
            force,
            actor,
            created,
        } => m.claim(id, current, trigger, force, actor, created),
        Input::TakeOver => match current {
            Some(s) => m.take_over(s),
            None => (None, Reply::Skipped(State::AwaitingPayment)),
        },
        Input::PaymentFailedCallbackGaveUp { error } => match current {
            Some(mut s) => {
                m.queue_stuck(&mut s, &error);
                let state = s.rec.state;
                (Some(s), Reply::Done(state))
            }
            None => (None, Reply::Skipped(State::Failed)),
        },
        Input::Reconcile { quiet_ms } => match current {
            Some(s) => m.reconcile(&s, quiet_ms),
            None => (None, Reply::Skipped(State::AwaitingPayment)),
        },
        other => match current {
            Some(s) => m.attempt_result(s, other),
            // A result for a session that is gone: nothing to record it on.
            None => (None, Reply::Overtaken(State::Failed)),
        },
    };
    Step {
        session,
        effects: m.effects,
        reply,
    }
}

/// Brings records written by earlier versions up to date.
fn normalise(mut s: Session) -> Session {
    let recorded = u32::try_from(s.detail.fulfillments.len()).unwrap_or(u32::MAX);
    s.rec.fulfillments = s.rec.fulfillments.max(recorded);
    s
}

fn new_session(id: &str, created: i64, now: u64) -> Session {
    let created = if created > 0 {
        created
    } else {
        (now / 1000) as i64
    };
    Session {
        rec: SessionRecord::new(id, created, now),
        detail: SessionDetail::default(),
    }
}

struct Machine<'e, 'a> {
    env: &'e Env<'a>,
    effects: Vec<Effect>,
}

type Out = (Option<Session>, Reply);

impl Machine<'_, '_> {
    fn now(&self) -> u64 {
        self.env.now
    }

    fn schedule(&mut self, trigger: Trigger, due: u64, earliest: bool) {
        self.effects.push(Effect::ScheduleFulfill {
            trigger,
            due,
            earliest,
        });
    }

    /// The first delivery of an event. Redeliveries never reach here.
    fn event(
        &mut self,
        mut s: Session,
        is_new: bool,
        event_id: &str,
        kind: EventKind,
        snap: &Snapshot,
        object: serde_json::Value,
    ) -> Out {
        let now = self.now();
        push_bounded(
            &mut s.detail.events,
            EventRef {
                id: event_id.to_string(),
                kind: kind.as_str().to_string(),
                received_at_ms: now,
            },
        );
        // Any attempt in flight now finishes without overriding this event.
        s.rec.version = s.rec.version.wrapping_add(1);
        let settled = s.rec.state == State::Fulfilled || s.rec.pending_fulfillment.is_some();
        if is_new {
            apply_summary(&mut s.rec, snap);
        }
        match kind {
            EventKind::Completed | EventKind::AsyncPaymentSucceeded => {
                if kind == EventKind::AsyncPaymentSucceeded {
                    s.rec.payment_failed = false;
                }
                let late_completion =
                    s.rec.state == State::PaymentFailed && kind == EventKind::Completed;
                if settled || s.rec.state == State::Expired || late_completion {
                    // Already done, or a late completion of a payment known to have failed.
                } else if kind == EventKind::Completed && !snap.is_payable() {
                    if is_new || s.rec.state == State::AwaitingPayment {
                        apply_summary(&mut s.rec, snap);
                        s.rec.state = State::AwaitingPayment;
                    }
                } else {
                    s.rec.expect_paid = true;
                    s.rec.state = State::Fulfilling;
                    self.schedule(Trigger::Webhook, now, true);
                }
            }
            EventKind::AsyncPaymentFailed => {
                if !settled {
                    apply_summary(&mut s.rec, snap);
                    s.rec.state = State::PaymentFailed;
                    s.rec.payment_failed = true;
                    s.rec.expect_paid = false;
                    // Ends any attempt's claim: what it finds is no longer asked for.
                    s.rec.lease = None;
                    s.rec.retry = None;
                    self.effects.push(Effect::CancelFulfill);
                    if self.env.policy.callbacks {
                        let body = json!({
                            "type": NotificationKind::PaymentFailedCallback.as_str(),
                            "timestamp": rfc3339_ms(now),
                            "data": {"session": object},
                        });
                        let n = notification(
                            NotificationKind::PaymentFailedCallback,
                            &s.rec.id,
                            None,
                            body.to_string(),
                            false,
                            now,
                        );
                        self.queue(&mut s.detail, n);
                    }
                    self.queue_payment_failed(&mut s);
                }
            }
            EventKind::Expired => {
                // Every terminal decision comes from a fresh read: an expired
                // event right behind a completed one must not end a paid session.
                let terminal = matches!(s.rec.state, State::PaymentFailed | State::Expired);
                if !settled && !terminal {
                    self.schedule(Trigger::Webhook, now, true);
                }
            }
        }
        s.rec.updated_at_ms = now;
        let state = s.rec.state;
        (Some(s), Reply::Done(state))
    }

    fn claim(
        &mut self,
        id: &str,
        current: Option<Session>,
        trigger: Trigger,
        force: bool,
        actor: Option<String>,
        created: Option<i64>,
    ) -> Out {
        let now = self.now();
        if let Some(s) = &current {
            let rec = &s.rec;
            let claimable = match rec.state {
                State::Fulfilled => force,
                State::PaymentFailed | State::Expired => trigger == Trigger::Admin,
                // A live lease is honoured whoever holds it.
                State::Fulfilling => rec.lease.as_ref().is_none_or(|l| l.until_ms <= now),
                // A customer refreshing the page need not make Stripe be asked
                // more than every few seconds; retries and people are not throttled.
                State::AwaitingPayment | State::Retrying | State::Failed => {
                    trigger != Trigger::LandingPage
                        || now.saturating_sub(rec.updated_at_ms)
                            >= self.env.policy.landing_recheck_ms
                }
            };
            if !claimable {
                if rec.state == State::Fulfilling
                    && let Some(lease) = &rec.lease
                {
                    // Should the holder never finish, the session is picked
                    // up when its lease ends.
                    self.schedule(Trigger::Retry, lease.until_ms, true);
                }
                return (None, Reply::Skipped(rec.state));
            }
        }
        let fresh = current.is_none();
        let mut s = current.unwrap_or_else(|| new_session(id, created.unwrap_or(0), now));
        let was = s.rec.state;
        if trigger == Trigger::Admin {
            // A person asking again starts a fresh series of retries.
            s.rec.retry = None;
        }
        if force && was == State::Fulfilled {
            s.rec.refulfil_pending = true;
            s.rec.refulfil_actor = actor.clone();
        }
        s.rec.claims = s.rec.claims.wrapping_add(1);
        let until = now.saturating_add(self.env.policy.lease_ms);
        s.rec.state = State::Fulfilling;
        s.rec.lease = Some(Lease {
            owner: self.env.owner.to_string(),
            until_ms: until,
            seq: s.rec.claims,
        });
        s.rec.updated_at_ms = now;
        // The recovery point: should this attempt never finish, the session
        // is picked up here.
        self.schedule(Trigger::Retry, until, false);
        let token = ClaimToken {
            seq: s.rec.claims,
            version: s.rec.version,
            trigger,
            refulfil: s.rec.refulfil_pending,
            actor: s.rec.refulfil_actor.clone(),
        };
        let pending = s.rec.pending_fulfillment.clone();
        (
            Some(s),
            Reply::Claimed {
                token,
                pending,
                fresh,
            },
        )
    }

    fn holds(&self, rec: &SessionRecord, token: &ClaimToken) -> bool {
        rec.lease
            .as_ref()
            .is_some_and(|l| l.seq == token.seq && l.owner == self.env.owner)
    }

    /// The result of a claimed attempt: a read, a failed read, or the callback's answer.
    fn attempt_result(&mut self, mut s: Session, input: Input) -> Out {
        let (claim, delivery) = match &input {
            Input::Fetched { claim, .. } | Input::FetchFailed { claim, .. } => {
                (claim.clone(), None)
            }
            Input::CallbackDelivered { claim, attempt, .. }
            | Input::CallbackFailed { claim, attempt, .. } => (claim.clone(), attempt.clone()),
            _ => return (None, Reply::Skipped(s.rec.state)),
        };
        if let Some(a) = delivery {
            push_bounded(&mut s.detail.deliveries, a);
        }
        // The merchant acknowledged the fulfillment: that stands whoever holds the claim.
        if let Input::CallbackDelivered { fulfillment_id, .. } = &input {
            return self.delivered(s, claim.trigger, fulfillment_id);
        }
        if !self.holds(&s.rec, &claim) {
            return self.overtaken(s, claim.trigger, "another attempt holds the claim");
        }
        if matches!(s.rec.state, State::PaymentFailed | State::Expired) {
            return self.overtaken(s, claim.trigger, "an event settled the session meanwhile");
        }
        match input {
            Input::Fetched { fetched, .. } if fetched.snapshot.is_payable() => {
                self.record_fulfillment(s, &claim, fetched)
            }
            Input::Fetched { fetched, .. } => self.unpaid(s, &claim, fetched),
            Input::FetchFailed {
                error, permanent, ..
            } => {
                let state = self.fail(&mut s, claim.trigger, error, permanent);
                (Some(s), Reply::Done(state))
            }
            Input::CallbackFailed {
                fulfillment_id,
                error,
                permanent,
                ..
            } if s.rec.pending_fulfillment.as_deref() == Some(fulfillment_id.as_str()) => {
                let state = self.fail(&mut s, claim.trigger, error, permanent);
                (Some(s), Reply::Done(state))
            }
            _ => self.overtaken(s, claim.trigger, "the fulfillment was completed meanwhile"),
        }
    }

    /// Records an attempt that no longer holds the claim, changing nothing else.
    fn overtaken(&mut self, mut s: Session, trigger: Trigger, why: &str) -> Out {
        let now = self.now();
        if s.rec.lease.is_none() && s.rec.state == State::Fulfilling && !self.env.job_queued {
            // Nobody works on it and nothing is queued: make it due.
            self.schedule(Trigger::Retry, now, true);
        }
        push_bounded(
            &mut s.detail.attempts,
            AttemptRecord {
                at_ms: now,
                trigger,
                outcome: s.rec.state.as_str().into(),
                error: Some(format!("overtaken: {why}")),
            },
        );
        let state = s.rec.state;
        (Some(s), Reply::Overtaken(state))
    }

    fn record_fulfillment(&mut self, mut s: Session, claim: &ClaimToken, fetched: Fetched) -> Out {
        let now = self.now();
        apply_fetched(&mut s, &fetched);
        let fid = fulfillment_id(self.env.key, &s.rec.id, s.rec.fulfillments);
        s.rec.fulfillments = s.rec.fulfillments.saturating_add(1);
        let callbacks = self.env.policy.callbacks;
        push_bounded(
            &mut s.detail.fulfillments,
            FulfillmentRecord {
                id: fid.clone(),
                at_ms: now,
                forced: claim.refulfil,
                trigger: claim.trigger,
                actor: claim.actor.clone(),
                delivered_at_ms: (!callbacks).then_some(now),
            },
        );
        s.rec.expect_paid = false;
        s.rec.refulfil_pending = false;
        s.rec.refulfil_actor = None;
        if callbacks {
            let body = json!({
                "type": NotificationKind::FulfilledCallback.as_str(),
                "timestamp": rfc3339_ms(now),
                "data": {"fulfillment_id": fid, "forced": claim.refulfil, "session": fetched.raw},
            });
            let mut n = notification(
                NotificationKind::FulfilledCallback,
                &s.rec.id,
                None,
                body.to_string(),
                true,
                now,
            );
            n.id = fid.clone();
            // Delivered by this attempt (and by every later one until acknowledged).
            self.effects.push(Effect::Queue {
                notification: n,
                deliver: false,
            });
            s.rec.pending_fulfillment = Some(fid.clone());
            let until = now.saturating_add(self.env.policy.lease_ms);
            if let Some(lease) = s.rec.lease.as_mut() {
                lease.until_ms = until;
            }
            self.schedule(Trigger::Retry, until, false);
            s.rec.updated_at_ms = now;
            (
                Some(s),
                Reply::Recorded {
                    fulfillment_id: fid,
                    delivered: false,
                },
            )
        } else {
            s.rec.state = State::Fulfilled;
            self.queue_receipt(&mut s);
            self.settle(&mut s, claim.trigger, None);
            (
                Some(s),
                Reply::Recorded {
                    fulfillment_id: fid,
                    delivered: true,
                },
            )
        }
    }

    fn unpaid(&mut self, mut s: Session, claim: &ClaimToken, fetched: Fetched) -> Out {
        let now = self.now();
        if s.rec.version != claim.version {
            // An event arrived while Stripe was asked: what it decided stands.
            // If it left the session to be fulfilled, re-check right away.
            if s.rec.state == State::Fulfilling {
                self.schedule(Trigger::Retry, now, true);
            }
            self.release(&mut s, claim.trigger, None);
            let state = s.rec.state;
            return (Some(s), Reply::Overtaken(state));
        }
        apply_fetched(&mut s, &fetched);
        if fetched.snapshot.is_expired() {
            s.rec.state = State::Expired;
            s.rec.expect_paid = false;
            self.settle(&mut s, claim.trigger, None);
        } else if s.rec.payment_failed {
            s.rec.state = State::PaymentFailed;
            self.settle(&mut s, claim.trigger, None);
        } else if s.rec.expect_paid {
            // An event (or an earlier read) said paid: this read is likely
            // stale. Re-check soon, with backoff, rather than wait hours.
            s.rec.state = State::AwaitingPayment;
            let policy = self.env.policy;
            let retry = s.rec.retry.get_or_insert(RetryInfo {
                failures: 0,
                first_failure_ms: now,
                next_at_ms: 0,
            });
            retry.failures = retry.failures.saturating_add(1);
            if policy.retry.gave_up(retry.first_failure_ms, now) {
                // Long enough: leave it to the periodic reconciliation.
                s.rec.expect_paid = false;
                self.settle(&mut s, claim.trigger, None);
            } else {
                let delay = policy.retry.delay_ms(
                    retry.failures,
                    self.env.entropy,
                    policy.stale_read_recheck_max_ms,
                );
                retry.next_at_ms = now.saturating_add(delay);
                let due = retry.next_at_ms;
                self.schedule(Trigger::Retry, due, false);
                self.release(&mut s, claim.trigger, None);
            }
        } else {
            s.rec.state = State::AwaitingPayment;
            self.settle(&mut s, claim.trigger, None);
        }
        let state = s.rec.state;
        (Some(s), Reply::Done(state))
    }

    fn delivered(&mut self, mut s: Session, trigger: Trigger, fid: &str) -> Out {
        let now = self.now();
        if s.rec.pending_fulfillment.as_deref() != Some(fid) {
            let state = s.rec.state;
            return (Some(s), Reply::Overtaken(state));
        }
        if let Some(f) = s.detail.fulfillments.iter_mut().find(|f| f.id == fid) {
            f.delivered_at_ms = Some(now);
        }
        self.effects.push(Effect::UpdateNotification {
            id: fid.to_string(),
            status: OutboxStatus::Sent,
            error: None,
            sent_at: Some(now),
        });
        s.rec.pending_fulfillment = None;
        s.rec.state = State::Fulfilled;
        self.queue_receipt(&mut s);
        self.settle(&mut s, trigger, None);
        (Some(s), Reply::Done(State::Fulfilled))
    }

    /// A failed attempt: `retrying` with a scheduled retry, or `failed` once
    /// the error is permanent or the series is older than the give-up limit.
    fn fail(&mut self, s: &mut Session, trigger: Trigger, error: String, permanent: bool) -> State {
        let now = self.now();
        let policy = self.env.policy;
        let retry = s.rec.retry.get_or_insert(RetryInfo {
            failures: 0,
            first_failure_ms: now,
            next_at_ms: 0,
        });
        retry.failures = retry.failures.saturating_add(1);
        let status = if !permanent && !policy.retry.gave_up(retry.first_failure_ms, now) {
            let delay = policy
                .retry
                .delay_ms(retry.failures, self.env.entropy, u64::MAX);
            retry.next_at_ms = now.saturating_add(delay);
            let due = retry.next_at_ms;
            s.rec.state = State::Retrying;
            self.schedule(Trigger::Retry, due, false);
            // Keeps the series (`rec.retry`) going.
            self.release(s, trigger, Some(error.clone()));
            OutboxStatus::Retrying
        } else {
            s.rec.state = State::Failed;
            self.queue_stuck(s, &error);
            self.settle(s, trigger, Some(error.clone()));
            OutboxStatus::Failed
        };
        if let Some(fid) = &s.rec.pending_fulfillment {
            self.effects.push(Effect::UpdateNotification {
                id: fid.clone(),
                status,
                error: Some(error),
                sent_at: None,
            });
        }
        s.rec.state
    }

    fn take_over(&mut self, mut s: Session) -> Out {
        let now = self.now();
        if s.rec.state != State::Fulfilling {
            return (None, Reply::Skipped(s.rec.state));
        }
        match &s.rec.lease {
            Some(lease) if lease.owner != self.env.owner => {
                s.rec.lease = None;
                self.schedule(Trigger::Retry, now, true);
                (Some(s), Reply::Done(State::Fulfilling))
            }
            None if !self.env.job_queued => {
                self.schedule(Trigger::Retry, now, true);
                (None, Reply::Done(State::Fulfilling))
            }
            _ => (None, Reply::Skipped(State::Fulfilling)),
        }
    }

    fn reconcile(&mut self, s: &Session, quiet_ms: u64) -> Out {
        let now = self.now();
        let quiet = now.saturating_sub(s.rec.updated_at_ms) >= quiet_ms;
        if s.rec.state == State::AwaitingPayment && quiet && !self.env.job_queued {
            self.schedule(Trigger::Reconcile, now, true);
            return (None, Reply::Done(s.rec.state));
        }
        (None, Reply::Skipped(s.rec.state))
    }

    /// Ends an attempt for good: no lease, no retry series, no queued job.
    fn settle(&mut self, s: &mut Session, trigger: Trigger, error: Option<String>) {
        if error.is_none() {
            s.rec.retry = None;
        }
        s.rec.last_error = error.clone();
        self.effects.push(Effect::CancelFulfill);
        self.end_attempt(s, trigger, error);
    }

    /// Ends an attempt, leaving the state, the series and the queue as they are.
    fn release(&mut self, s: &mut Session, trigger: Trigger, error: Option<String>) {
        if error.is_some() {
            s.rec.last_error = error.clone();
        }
        self.end_attempt(s, trigger, error);
    }

    fn end_attempt(&mut self, s: &mut Session, trigger: Trigger, error: Option<String>) {
        let now = self.now();
        s.rec.lease = None;
        s.rec.updated_at_ms = now;
        push_bounded(
            &mut s.detail.attempts,
            AttemptRecord {
                at_ms: now,
                trigger,
                outcome: s.rec.state.as_str().into(),
                error,
            },
        );
    }

    /// Records an outbox entry (once per id) and queues its delivery.
    fn queue(&mut self, detail: &mut SessionDetail, n: Notification) {
        if detail.notifications.contains(&n.id) {
            return;
        }
        push_bounded(&mut detail.notifications, n.id.clone());
        self.effects.push(Effect::Queue {
            notification: n,
            deliver: true,
        });
    }

    fn queue_kind(&mut self, s: &mut Session, kind: NotificationKind, to: String, facts: String) {
        let n = notification(kind, &s.rec.id, Some(to), facts, true, self.now());
        self.queue(&mut s.detail, n);
    }

    /// A delayed payment failed: tell the customer (how to pay again) and the merchant.
    fn queue_payment_failed(&mut self, s: &mut Session) {
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
    fn queue_stuck(&mut self, s: &mut Session, error: &str) {
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
    fn queue_receipt(&mut self, s: &mut Session) {
        let channels = &self.env.policy.channels;
        if channels.receipt
            && channels.smtp
            && let Some(to) = s.rec.customer_email.clone()
        {
            self.queue_kind(s, NotificationKind::ReceiptEmail, to, "{}".into());
        }
    }
}

fn notification(
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

/// Copies what Stripe said into the listed record.
fn apply_summary(rec: &mut SessionRecord, s: &Snapshot) {
    rec.livemode = s.livemode;
    if s.created > 0 {
        rec.created = s.created;
    }
    if s.payment_status.is_some() {
        rec.payment_status = s.payment_status.clone();
    }
    if s.status.is_some() {
        rec.status = s.status.clone();
    }
    if s.amount_total.is_some() {
        rec.amount_total = s.amount_total;
    }
    if s.currency.is_some() {
        rec.currency = s.currency.clone();
    }
    if let Some(e) = &s.customer_email {
        rec.customer_email = Some(e.clone());
    }
    if let Some(pi) = &s.payment_intent {
        rec.payment_intent = Some(pi.clone());
    }
}

fn apply_fetched(s: &mut Session, f: &Fetched) {
    apply_summary(&mut s.rec, &f.snapshot);
    s.detail.line_items = f.line_items.clone();
    s.detail.delivery_details = f.delivery_details.clone();
    s.detail.amount_subtotal = f.amount_subtotal;
    s.detail.raw = Some(f.raw.clone());
}

/// Whether a claim by `trigger` could change anything: false for a session
/// that is settled for it (a fulfilled session without force, a failed
/// payment for anyone but a person), so callers may skip the write entirely.
pub fn claim_is_noop(rec: &SessionRecord, trigger: Trigger, force: bool) -> bool {
    match rec.state {
        State::Fulfilled => !force,
        State::PaymentFailed | State::Expired => trigger != Trigger::Admin,
        _ => false,
    }
}
