//! The seam's write operations, shared by every backend: load, let the
//! domain decide, store what it decided and apply its effects, all inside
//! one of the backend's transactions (`Txn`). The rules live in `domain`;
//! this is the one place a domain step meets stored records.

use crate::{
    domain::{self, Effect, Env, Input, Reply, Session, ids::InstallationKey, outbox},
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
}

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
    for effect in step.effects {
        apply(tx, id, effect, ctx.now)?;
    }
    Ok(step.reply)
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
    if let Some(mut s) = tx.load(session_id)? {
        let old = s.rec.clone();
        push_bounded(&mut s.detail.deliveries, d.attempt.clone());
        tx.store_over(Some(&old), &s)?;
    }
    let Some(mut n) = tx.notification(notification_id)? else {
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
