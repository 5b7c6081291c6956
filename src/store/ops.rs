//! The seam's write operations, shared by every backend: load, let the
//! domain decide, store what it decided and apply its effects, all inside
//! one of the backend's transactions (`Txn`). The rules live in `domain`;
//! this is the one place a domain step meets stored records.

use crate::{
    domain::{self, ChargeEvent, Effect, Env, Input, Reply, Session, ids::InstallationKey, outbox},
    model::{
        EventRecord, Job, Notification, NotificationKind, OutboxStatus, SessionRecord, fulfill_key,
        push_bounded,
    },
    store::{Ctx, Delivered, Ingested, NewEvent, Result},
};

/// What the shared operations need from a backend's transaction: one
/// atomic unit in which a session, its outbox, its events and its queued
/// jobs are read and written (redb: its write transaction; a backend on a
/// server: the locked rows of a batch). Reads see this transaction's own
/// writes.
pub trait Txn {
    /// The session and its detail, if stored.
    fn load(&self, id: &str) -> Result<Option<Session>>;
    /// Stores `s`; `old` is its record as loaded in this transaction (for
    /// the indexes), None when it is new.
    fn store_over(&mut self, old: Option<&SessionRecord>, s: &Session) -> Result<()>;
    fn notification(&self, id: &str) -> Result<Option<Notification>>;
    fn put_notification(&mut self, n: &Notification) -> Result<()>;
    /// Stores an outbox entry unless one with its id exists; true when new.
    fn put_notification_if_absent(&mut self, n: &Notification) -> Result<bool>;
    fn event(&self, id: &str) -> Result<Option<EventRecord>>;
    /// Records a first delivery with its body exactly as received.
    fn put_event(&mut self, rec: &EventRecord, raw: &[u8]) -> Result<()>;
    fn update_event(&mut self, rec: &EventRecord) -> Result<()>;
    /// When the job with this key is due, if queued.
    fn job_due(&self, key: &str) -> Result<Option<u64>>;
    /// Queues `job` (replacing one with its key) at `due_ms`.
    fn schedule(&mut self, job: &Job, due_ms: u64) -> Result<()>;
    fn unschedule(&mut self, key: &str) -> Result<()>;
    /// The session whose payment is `payment_intent`, if one is stored.
    fn session_for_payment(&self, payment_intent: &str) -> Result<Option<String>>;
    /// Charge events kept for `payment_intent` until its session arrives.
    fn unmatched(&self, payment_intent: &str) -> Result<Vec<ChargeEvent>>;
    /// Replaces them (none: removes the entry).
    fn put_unmatched(&mut self, payment_intent: &str, events: &[ChargeEvent]) -> Result<()>;
}

/// Charge events kept per payment intent while no session has it: more
/// than any real payment gets (a refund or two, a dispute's three events);
/// past it the oldest go, keeping the first.
pub const MAX_UNMATCHED: usize = 64;

/// Applies one input to session `id` (see `domain::step`).
pub fn transition(
    tx: &mut impl Txn,
    id: &str,
    input: Input,
    ctx: &Ctx,
    key: &InstallationKey,
) -> Result<Reply> {
    let current = tx.load(id)?;
    let old = current.as_ref().map(|s| s.rec.clone());
    let env = Env {
        now: ctx.now,
        entropy: ctx.entropy,
        policy: &ctx.policy,
        owner: &ctx.owner,
        key,
        job_queued: tx.job_due(&fulfill_key(id))?.is_some(),
    };
    let step = domain::step(id, current, input, &env);
    if let Some(s) = &step.session {
        tx.store_over(old.as_ref(), s)?;
    }
    let linked = step.session.as_ref().and_then(|s| {
        let pi = s.rec.payment_intent.as_deref()?;
        let old_pi = old.as_ref().and_then(|o| o.payment_intent.as_deref());
        (old_pi != Some(pi)).then(|| pi.to_string())
    });
    // Every row the effects will read, looked up before any is applied: a
    // backend that loads rows on demand (PostgreSQL's batches) then loads
    // them all in one go rather than one per run.
    let probes: Vec<Result<()>> = step
        .effects
        .iter()
        .map(|e| match e {
            Effect::Queue { notification, .. } => tx.notification(&notification.id).map(drop),
            Effect::UpdateNotification { id, .. } => tx.notification(id).map(drop),
            Effect::ScheduleFulfill { .. } => tx.job_due(&fulfill_key(id)).map(drop),
            Effect::CancelFulfill => Ok(()),
        })
        .collect();
    probes.into_iter().collect::<Result<()>>()?;
    for effect in step.effects {
        apply(tx, id, effect, ctx.now)?;
    }
    if let Some(pi) = linked {
        link_unmatched(tx, id, &pi, ctx, key)?;
    }
    Ok(step.reply)
}

/// The session just got its payment intent: charge events that arrived
/// before it (a refund ahead of `checkout.session.completed`) apply now,
/// oldest first, in this transaction.
fn link_unmatched(
    tx: &mut impl Txn,
    id: &str,
    pi: &str,
    ctx: &Ctx,
    key: &InstallationKey,
) -> Result<()> {
    let mut kept = tx.unmatched(pi)?;
    if kept.is_empty() {
        return Ok(());
    }
    tx.put_unmatched(pi, &[])?;
    kept.sort_by(|a, b| (a.created, &a.event_id).cmp(&(b.created, &b.event_id)));
    // Their records, all looked up first (see `transition`).
    let probes: Vec<Result<()>> = kept
        .iter()
        .map(|ev| tx.event(&ev.event_id).map(drop))
        .collect();
    probes.into_iter().collect::<Result<()>>()?;
    for ev in kept {
        if let Some(mut rec) = tx.event(&ev.event_id)? {
            rec.session_id = Some(id.to_string());
            tx.update_event(&rec)?;
        }
        transition(tx, id, Input::Charge(ev), ctx, key)?;
    }
    Ok(())
}

/// A refund or dispute: applied to the session with its payment intent,
/// or kept until one has it. True when it was applied.
fn charge(tx: &mut impl Txn, ev: &ChargeEvent, ctx: &Ctx, key: &InstallationKey) -> Result<bool> {
    if let Some(id) = tx.session_for_payment(&ev.payment_intent)? {
        transition(tx, &id, Input::Charge(ev.clone()), ctx, key)?;
        return Ok(true);
    }
    let mut kept = tx.unmatched(&ev.payment_intent)?;
    if !kept.iter().any(|k| k.event_id == ev.event_id) {
        push_capped(&mut kept, ev.clone(), MAX_UNMATCHED);
        tx.put_unmatched(&ev.payment_intent, &kept)?;
    }
    Ok(false)
}

fn push_capped<T>(list: &mut Vec<T>, item: T, cap: usize) {
    list.push(item);
    if list.len() > cap {
        list.remove(1);
    }
}

fn apply(tx: &mut impl Txn, id: &str, effect: Effect, now: u64) -> Result<()> {
    match effect {
        Effect::ScheduleFulfill {
            trigger,
            due,
            earliest,
        } => {
            let job = Job::Fulfill {
                session_id: id.to_string(),
                trigger,
            };
            match tx.job_due(&job.key())? {
                Some(existing) if earliest && existing <= due => Ok(()),
                _ => tx.schedule(&job, due),
            }
        }
        Effect::CancelFulfill => tx.unschedule(&fulfill_key(id)),
        Effect::Queue {
            notification,
            deliver,
        } => {
            if tx.put_notification_if_absent(&notification)? && deliver {
                let job = Job::Deliver {
                    session_id: id.to_string(),
                    notification_id: notification.id.clone(),
                    failures: 0,
                    first_failure_ms: None,
                };
                tx.schedule(&job, now)?;
            }
            Ok(())
        }
        Effect::UpdateNotification {
            id,
            status,
            error,
            sent_at,
        } => {
            let Some(mut n) = tx.notification(&id)? else {
                return Ok(());
            };
            n.status = status;
            n.attempts = n.attempts.saturating_add(1);
            if error.is_some() || status == OutboxStatus::Sent {
                n.last_error = error;
            }
            if sent_at.is_some() {
                n.sent_at_ms = sent_at;
            }
            tx.put_notification(&n)
        }
    }
}

/// A webhook delivery: dedup by event id, the event with its raw body, and
/// its session's transition.
pub fn ingest(
    tx: &mut impl Txn,
    ev: &NewEvent,
    ctx: &Ctx,
    key: &InstallationKey,
) -> Result<Ingested> {
    if let Some(mut seen) = tx.event(&ev.record.id)? {
        seen.deliveries = seen.deliveries.saturating_add(1);
        tx.update_event(&seen)?;
        return Ok(Ingested::Duplicate);
    }
    if let Some(c) = &ev.charge {
        let mut rec = ev.record.clone();
        rec.session_id = tx.session_for_payment(&c.payment_intent)?;
        tx.put_event(&rec, &ev.raw)?;
        return Ok(if charge(tx, c, ctx, key)? {
            Ingested::Recorded
        } else {
            Ingested::Unmatched
        });
    }
    tx.put_event(&ev.record, &ev.raw)?;
    match &ev.session {
        None => Ok(Ingested::Ignored),
        Some((id, input)) => {
            transition(tx, id.as_str(), input.clone(), ctx, key)?;
            Ok(Ingested::Recorded)
        }
    }
}

/// One delivery attempt of an outbox entry and what follows it.
pub fn record_delivery(
    tx: &mut impl Txn,
    d: &Delivered,
    ctx: &Ctx,
    key: &InstallationKey,
) -> Result<()> {
    let Job::Deliver {
        session_id,
        notification_id,
        failures,
        first_failure_ms,
    } = &d.job
    else {
        return Ok(());
    };
    let Some(mut n) = tx.notification(notification_id)? else {
        if let Some(mut s) = tx.load(session_id)? {
            let old = s.rec.clone();
            push_bounded(&mut s.detail.deliveries, d.attempt.clone());
            tx.store_over(Some(&old), &s)?;
        }
        return tx.unschedule(&d.job.key());
    };
    if let Some(body) = &d.refreshed_body {
        n.body = body.clone();
        n.refreshed = true;
    }
    let series = outbox::Series {
        failures: *failures,
        first_failure_ms: *first_failure_ms,
    };
    let (next, gave_up) = outbox::after_attempt(
        &mut n,
        series,
        d.attempt.at_ms,
        &d.outcome,
        &ctx.policy.retry,
        ctx.entropy,
    );
    match next {
        outbox::Next::Done => tx.unschedule(&d.job.key())?,
        outbox::Next::Retry { due, series } => {
            let job = Job::Deliver {
                session_id: session_id.clone(),
                notification_id: notification_id.clone(),
                failures: series.failures,
                first_failure_ms: series.first_failure_ms,
            };
            tx.schedule(&job, due)?;
        }
    }
    tx.put_notification(&n)?;
    if let Some(mut s) = tx.load(session_id)? {
        let old = s.rec.clone();
        push_bounded(&mut s.detail.deliveries, d.attempt.clone());
        match n.status {
            OutboxStatus::Failed => s.rec.undelivered = Some(n.kind),
            OutboxStatus::Sent if s.rec.undelivered == Some(n.kind) => s.rec.undelivered = None,
            _ => {}
        }
        tx.store_over(Some(&old), &s)?;
    }
    if gave_up && n.kind == NotificationKind::PaymentFailedCallback {
        // A merchant callback that gives up needs a person, like a fulfillment that does.
        let error = format!(
            "the checkout.payment_failed callback gave up: {}",
            n.last_error.as_deref().unwrap_or("no answer")
        );
        transition(
            tx,
            session_id,
            Input::PaymentFailedCallbackGaveUp { error },
            ctx,
            key,
        )?;
    }
    Ok(())
}

/// Queues a `failed` outbox entry of `session_id` again.
pub fn resend(tx: &mut impl Txn, session_id: &str, id: &str, now: u64) -> Result<bool> {
    let Some(mut n) = tx.notification(id)? else {
        return Ok(false);
    };
    if !outbox::may_resend(&n, session_id) {
        return Ok(false);
    }
    n.status = OutboxStatus::Queued;
    tx.put_notification(&n)?;
    let job = Job::Deliver {
        session_id: session_id.to_string(),
        notification_id: id.to_string(),
        failures: 0,
        first_failure_ms: None,
    };
    tx.schedule(&job, now)?;
    Ok(true)
}
