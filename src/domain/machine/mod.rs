//! The transitions: one function per input, each taking the session as
//! stored and returning what to store (see `step`). Events and claims are
//! here; the results of a claimed attempt in `attempt`; what is queued for
//! the outbox in `outbox`.

mod attempt;
mod charge;
mod outbox;

use serde_json::json;

use super::{
    ClaimToken, Effect, Env, EventKind, Fetched, Input, Read, Reply, Session, Snapshot, Step,
};
use crate::{
    model::{
        EventRef, Lease, NotificationKind, SessionDetail, SessionRecord, State, Trigger,
        push_bounded,
    },
    time::rfc3339_ms,
};
use outbox::notification;

/// Applies one input to the session `id` (`current`: as stored, None when
/// unknown). Pure: the same arguments always give the same step.
pub fn step(id: &str, current: Option<Session>, input: Input, env: &Env<'_>) -> Step {
    let input = match input {
        Input::ClaimAndRecord {
            trigger,
            force,
            actor,
            created,
            seen_version,
            read,
        } => {
            let claim = Input::Claim {
                trigger,
                force,
                actor,
                created,
            };
            return claim_and_record(id, current, claim, seen_version, read, env);
        }
        other => other,
    };
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
        Input::Charge(ev) => match current {
            Some(s) => m.charge(s, ev),
            // The store keeps a charge event until its session exists.
            None => (None, Reply::Skipped(State::AwaitingPayment)),
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

/// `Input::ClaimAndRecord`: the claim's step, then, if it granted the claim
/// with nothing pending, the read's step on the claimed session, as one.
fn claim_and_record(
    id: &str,
    current: Option<Session>,
    claim: Input,
    seen_version: u64,
    read: Read,
    env: &Env<'_>,
) -> Step {
    let first = step(id, current, claim, env);
    let (token, fresh) = match &first.reply {
        // The read started before an event that moved the session on: the
        // event wins, the read is dropped, and the caller, holding the
        // claim, reads again.
        Reply::Claimed { token, .. } if token.version != seen_version => return first,
        Reply::Claimed {
            token,
            pending: None,
            fresh,
        } => (token.clone(), *fresh),
        _ => return first,
    };
    let Some(claimed) = first.session.clone() else {
        return first;
    };
    // What the claim's own effects did to the session's job.
    let job_queued = first
        .effects
        .iter()
        .fold(env.job_queued, |queued, e| match e {
            Effect::ScheduleFulfill { .. } => true,
            Effect::CancelFulfill => false,
            _ => queued,
        });
    let env = Env { job_queued, ..*env };
    let result = match read {
        Read::Fetched(fetched) => Input::Fetched {
            claim: token.clone(),
            fetched: *fetched,
        },
        Read::Failed { error, permanent } => Input::FetchFailed {
            claim: token.clone(),
            error,
            permanent,
        },
    };
    let second = step(id, Some(claimed.clone()), result, &env);
    let reply = match second.reply {
        Reply::Recorded {
            fulfillment_id,
            delivered: false,
        } => Reply::Claimed {
            token,
            pending: Some(fulfillment_id),
            fresh,
        },
        other => other,
    };
    let mut effects = first.effects;
    effects.extend(second.effects);
    Step {
        session: second.session.or(Some(claimed)),
        effects,
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
    pub(super) fn now(&self) -> u64 {
        self.env.now
    }

    pub(super) fn schedule(&mut self, trigger: Trigger, due: u64, earliest: bool) {
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
                    // News from Stripe starts a fresh series: the give-up
                    // clock of earlier failures does not apply to it.
                    s.rec.retry = None;
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
            // One rule for what a claim may take (`claim_is_noop`), plus: a
            // live lease is honoured whoever holds it.
            let live_lease = rec.lease.as_ref().is_some_and(|l| l.until_ms > now);
            let skipped = claim_is_noop(rec, trigger, force, now, self.env.policy)
                || (rec.state == State::Fulfilling && live_lease);
            if skipped {
                if rec.state == State::Fulfilling
                    && let Some(lease) = &rec.lease
                {
                    // Should the holder never finish, the session is picked
                    // up when its lease ends. This replaces a job due sooner
                    // (the one running this claim, say): that job is then
                    // not taken for done and removed, and the holder makes
                    // the session due again itself if an event overtakes it.
                    self.schedule(Trigger::Retry, lease.until_ms, false);
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

    pub(super) fn holds(&self, rec: &SessionRecord, token: &ClaimToken) -> bool {
        rec.lease
            .as_ref()
            .is_some_and(|l| l.seq == token.seq && l.owner == self.env.owner)
    }
}

/// Copies what Stripe said into the listed record.
pub(super) fn apply_summary(rec: &mut SessionRecord, s: &Snapshot) {
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
    if let Some(n) = &s.customer_name {
        rec.customer_name = Some(n.clone());
    }
    if let Some(l) = &s.locale {
        rec.locale = Some(l.clone());
    }
    if let Some(pi) = &s.payment_intent {
        rec.payment_intent = Some(pi.clone());
    }
    if let Some(m) = &s.mode {
        rec.mode = Some(m.clone());
    }
    if let Some(sub) = &s.subscription {
        rec.subscription = Some(sub.clone());
    }
    if let Some(a) = &s.account {
        rec.account = Some(a.clone());
    }
}

pub(super) fn apply_fetched(s: &mut Session, f: &Fetched) {
    apply_summary(&mut s.rec, &f.snapshot);
    s.detail.line_items = f.line_items.clone();
    s.rec.first_item = f
        .line_items
        .first()
        .and_then(|i| i.description.clone())
        .map(|d| d.chars().take(120).collect());
    s.rec.item_count = u32::try_from(f.line_items.len()).unwrap_or(u32::MAX);
    s.rec.other_item_words = crate::model::other_item_words(
        f.line_items
            .iter()
            .skip(1)
            .filter_map(|i| i.description.as_deref()),
    );
    s.detail.delivery_details = f.delivery_details.clone();
    s.detail.amount_subtotal = f.amount_subtotal;
    s.detail.raw = Some(f.raw.clone());
}

/// Whether a claim by `trigger` at `now` would be skipped: a session settled
/// for it (fulfilled without force, a failed payment for anyone but a
/// person), or, for a landing page, one re-checked moments ago or claimed by
/// a live attempt (whose recovery job is already queued). Callers then skip
/// the write entirely: a customer reloading the page commits nothing.
pub fn claim_is_noop(
    rec: &SessionRecord,
    trigger: Trigger,
    force: bool,
    now: u64,
    policy: &super::Policy,
) -> bool {
    let landing = trigger == Trigger::LandingPage;
    match rec.state {
        State::Fulfilled => !force,
        State::PaymentFailed | State::Expired => trigger != Trigger::Admin,
        State::Fulfilling => landing && rec.lease.as_ref().is_some_and(|l| l.until_ms > now),
        State::AwaitingPayment | State::Retrying | State::Failed => {
            landing && now.saturating_sub(rec.updated_at_ms) < policy.landing_recheck_ms
        }
    }
}
