//! The results of a claimed attempt: a read, a failed read, the callback's
//! answer; and how an attempt ends.

use serde_json::json;

use super::{Machine, Out, apply_fetched, outbox::notification};
use crate::{
    domain::{ClaimToken, Effect, Fetched, Input, Reply, Session, ids::fulfillment_id},
    model::{
        AttemptRecord, FulfillmentRecord, NotificationKind, OutboxStatus, RetryInfo, State,
        Trigger, push_bounded,
    },
    time::rfc3339_ms,
};

impl Machine<'_, '_> {
    pub(super) fn attempt_result(&mut self, mut s: Session, input: Input) -> Out {
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
        // Events that settle a session (a failed payment) end every lease,
        // so this also keeps an attempt from undoing them.
        if !self.holds(&s.rec, &claim) {
            return self.overtaken(s, claim.trigger, "another attempt holds the claim");
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
    pub(super) fn overtaken(&mut self, mut s: Session, trigger: Trigger, why: &str) -> Out {
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

    pub(super) fn record_fulfillment(
        &mut self,
        mut s: Session,
        claim: &ClaimToken,
        fetched: Fetched,
    ) -> Out {
        let now = self.now();
        // The rule itself, not only its callers: one fulfillment per session
        // unless forced. A recorded one is delivered, never made again.
        if let Some(fid) = s.rec.pending_fulfillment.clone() {
            return (
                Some(s),
                Reply::Recorded {
                    fulfillment_id: fid,
                    delivered: false,
                },
            );
        }
        if s.rec.fulfillments > 0 && !claim.refulfil {
            s.rec.state = State::Fulfilled;
            self.settle(&mut s, claim.trigger, None);
            return (Some(s), Reply::Done(State::Fulfilled));
        }
        apply_fetched(&mut s, &fetched);
        // A paid read ends any series of re-checks or failed reads.
        s.rec.retry = None;
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

    pub(super) fn unpaid(&mut self, mut s: Session, claim: &ClaimToken, fetched: Fetched) -> Out {
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
            let retry = one_more_failure(&mut s.rec.retry, now);
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

    pub(super) fn delivered(&mut self, mut s: Session, trigger: Trigger, fid: &str) -> Out {
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
    pub(super) fn fail(
        &mut self,
        s: &mut Session,
        trigger: Trigger,
        error: String,
        permanent: bool,
    ) -> State {
        let now = self.now();
        let policy = self.env.policy;
        let retry = one_more_failure(&mut s.rec.retry, now);
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

    pub(super) fn take_over(&mut self, mut s: Session) -> Out {
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

    pub(super) fn reconcile(&mut self, s: &Session, quiet_ms: u64) -> Out {
        let now = self.now();
        let quiet = now.saturating_sub(s.rec.updated_at_ms) >= quiet_ms;
        if s.rec.state == State::AwaitingPayment && quiet && !self.env.job_queued {
            self.schedule(Trigger::Reconcile, now, true);
            return (None, Reply::Done(s.rec.state));
        }
        (None, Reply::Skipped(s.rec.state))
    }

    /// Ends an attempt for good: no lease, no retry series, no queued job.
    pub(super) fn settle(&mut self, s: &mut Session, trigger: Trigger, error: Option<String>) {
        if error.is_none() {
            s.rec.retry = None;
        }
        s.rec.last_error = error.clone();
        self.effects.push(Effect::CancelFulfill);
        self.end_attempt(s, trigger, error);
    }

    /// Ends an attempt, leaving the state, the series and the queue as they are.
    pub(super) fn release(&mut self, s: &mut Session, trigger: Trigger, error: Option<String>) {
        if error.is_some() {
            s.rec.last_error = error.clone();
        }
        self.end_attempt(s, trigger, error);
    }

    pub(super) fn end_attempt(&mut self, s: &mut Session, trigger: Trigger, error: Option<String>) {
        let now = self.now();
        s.rec.lease = None;
        s.rec.updated_at_ms = now;
        // A re-check by an open landing page or the reconciler that found
        // what the last attempt found is not news: the timeline keeps the
        // first (a tab left open would otherwise add one an hour a minute).
        let outcome = s.rec.state.as_str();
        let repeat = matches!(trigger, Trigger::LandingPage | Trigger::Reconcile)
            && error.is_none()
            && s.detail
                .attempts
                .last()
                .is_some_and(|a| a.outcome == outcome && a.error.is_none());
        if repeat {
            return;
        }
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
}

/// The session's series of failed attempts (or stale reads), one longer;
/// a new series starts at `now`.
fn one_more_failure(series: &mut Option<RetryInfo>, now: u64) -> &mut RetryInfo {
    let retry = series.get_or_insert(RetryInfo {
        failures: 0,
        first_failure_ms: now,
        next_at_ms: 0,
    });
    retry.failures = retry.failures.saturating_add(1);
    retry
}
