//! `fulfill_checkout`: the one entry point that fulfils a Checkout Session,
//! for the webhook worker, the landing page, the admin re-trigger and retries.
//!
//! How exactly-once holds:
//! 1. Callers for one session queue on a per-session in-process mutex.
//! 2. The holder makes a durable claim in one redb transaction: the session
//!    moves to `fulfilling` with a lease owned by this process. A session that
//!    is already fulfilled (or claimed by a live lease) is left alone.
//! 3. The session is retrieved fresh from Stripe with every line item; it is
//!    fulfilled only if `payment_status != "unpaid"`.
//! 4. The fulfillment (id, line items, callback body) is recorded in one
//!    transaction *before* anything leaves the process. From then on the
//!    session has a pending fulfillment, and every later attempt (a retry, a
//!    restart after `kill -9`, another trigger) delivers that same fulfillment
//!    with the same `webhook-id` instead of creating a new one.
//! 5. The merchant's 2xx moves it to `fulfilled`. Failures schedule a retry in
//!    the durable job queue with jittered exponential backoff, until
//!    `jobs.give_up_after_secs`, then `failed`.
//!
//! A claim also schedules a recovery job at the lease's expiry; a process that
//! starts takes over claims of earlier processes at once.
//!
//! Events win over attempts: every new event bumps the session's version, and
//! an attempt that finishes at another version than it claimed only records
//! itself, leaving the state and the queue as the event left them.

pub mod callback;
pub mod locks;

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{
    config::JobsConfig,
    metrics::Metrics,
    model::{
        AttemptRecord, DeliveryAttempt, EventRecord, EventRef, FulfillmentRecord, Job, Lease,
        Notification, NotificationKind, RetryInfo, SessionDetail, SessionRecord, State, Trigger,
        fulfill_key, new_id, notification_id, push_bounded,
    },
    store::{Store, StoreError, Tx},
    stripe::{self, Event, Retrieved, Session, StripeClient},
    time::{now_ms, rfc3339_ms},
};
use callback::{CallbackSender, DeliveryError};
use locks::SessionLocks;

pub const FULFILLED_CALLBACK: &str = "checkout.fulfilled";
/// How often a landing page may re-check a session that is not yet fulfilled.
const LANDING_RECHECK_MS: u64 = 10_000;
pub const PAYMENT_FAILED_CALLBACK: &str = "checkout.payment_failed";
/// The longest one email or alert may take to send.
const OUTBOX_SEND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FulfillError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not a Checkout Session id")]
    BadId,
    #[error("Stripe: {0}")]
    Stripe(#[from] stripe::StripeError),
}

/// Extra wishes for one call.
#[derive(Default)]
pub struct FulfillOptions {
    /// Fulfil again even if already fulfilled (recorded as forced).
    pub force: bool,
    /// Who asked, for the audit trail of forced fulfillments.
    pub actor: Option<String>,
    /// A session the caller has just retrieved, to save a second call.
    pub prefetched: Option<Retrieved>,
}

/// Which emails and alerts this instance sends, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// `smtp.url` is set: customers can be emailed.
    pub smtp: bool,
    /// `notifications.merchant_email` (with `smtp.url`).
    pub merchant_email: Option<String>,
    /// `notifications.webhook_url` is set.
    pub alert_webhook: bool,
    /// `fulfillment.receipt_email` (with `smtp.url`).
    pub receipt: bool,
}

/// Why an email or alert was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OutboxError {
    pub message: String,
    /// Retrying cannot help (a refused recipient, a malformed address).
    pub permanent: bool,
}

/// Sends emails and alerts from the outbox. Implemented above this layer
/// (rendering and transports live in `notify`); fulfillment only decides
/// what to send, records it durably, and retries.
pub trait Outbox: Send + Sync {
    fn send<'a>(
        &'a self,
        notification: &'a Notification,
        rec: &'a SessionRecord,
        detail: &'a SessionDetail,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), OutboxError>> + Send + 'a>>;
}

/// What a call left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: State,
    /// The fulfillment this call created or delivered, if any.
    pub fulfillment_id: Option<String>,
    pub error: Option<String>,
    /// False when the call found nothing to do (already settled, or claimed elsewhere).
    pub attempted: bool,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// First delivery of this event id, acted on.
    Recorded,
    /// First delivery of an event type fulfilld does not act on.
    Ignored,
    /// A redelivery: nothing changed.
    Duplicate,
}

pub struct Fulfiller {
    store: Store,
    stripe: StripeClient,
    callback: Option<CallbackSender>,
    locks: SessionLocks,
    boot_id: String,
    jobs: JobsConfig,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    channels: Channels,
    outbox: Option<Arc<dyn Outbox>>,
}

enum Claim {
    /// Nothing to do: the session is already where it should be.
    Skip(SessionRecord),
    /// This call holds the claim. `refulfil` is a forced second fulfillment.
    /// `fresh`: the session was unknown before this claim.
    Claimed {
        rec: SessionRecord,
        refulfil: bool,
        fresh: bool,
    },
}

impl Fulfiller {
    pub fn new(
        store: Store,
        stripe: StripeClient,
        callback: Option<CallbackSender>,
        jobs: JobsConfig,
    ) -> Self {
        Fulfiller {
            store,
            stripe,
            callback,
            locks: SessionLocks::default(),
            boot_id: new_id("boot"),
            jobs,
            wake: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new()),
            channels: Channels::default(),
            outbox: None,
        }
    }

    /// Turns on emails and alerts: which ones, and what sends them.
    pub fn with_notifications(mut self, channels: Channels, outbox: Arc<dyn Outbox>) -> Self {
        self.channels = channels;
        self.outbox = Some(outbox);
        self
    }

    /// The counters `GET /metrics` shows.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    /// Notified whenever work is queued.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Records one webhook delivery durably; returns only after the commit.
    /// `raw` is the exact body received, `event` its parse.
    pub async fn ingest(&self, raw: String, event: Event) -> Result<Ingested, StoreError> {
        let now = now_ms();
        let callbacks = self.callback.is_some();
        let channels = self.channels.clone();
        let result = self
            .store
            .write(move |tx| ingest_op(tx, &raw, &event, now, callbacks, &channels))
            .await?;
        if result == Ingested::Recorded {
            self.wake.notify_one();
        }
        Ok(result)
    }

    /// Fulfils `session_id` at most once (see the module docs); safe to call
    /// any number of times, concurrently, from any trigger.
    pub async fn fulfill_checkout(
        &self,
        session_id: &str,
        trigger: Trigger,
        opts: FulfillOptions,
    ) -> Result<Outcome, FulfillError> {
        let start = std::time::Instant::now();
        let result = self.fulfill_once(session_id, trigger, opts).await;
        if let Ok(o) = &result {
            if o.attempted {
                self.metrics
                    .fulfillment(o.state.as_str(), Some(start.elapsed()));
            } else {
                self.metrics.fulfillment("skipped", None);
            }
        }
        result
    }

    async fn fulfill_once(
        &self,
        session_id: &str,
        trigger: Trigger,
        opts: FulfillOptions,
    ) -> Result<Outcome, FulfillError> {
        if !crate::model::is_session_id(session_id) {
            return Err(FulfillError::BadId);
        }
        let _guard = self.locks.lock(session_id).await;
        let id = session_id.to_string();
        let now = now_ms();
        let lease_ms = self.jobs.lease_secs.saturating_mul(1000);
        let boot = self.boot_id.clone();
        let force = opts.force;
        let created = opts.prefetched.as_ref().map(|p| p.session.created);
        let claim = self
            .store
            .write({
                let id = id.clone();
                move |tx| claim_op(tx, &id, trigger, force, created, now, lease_ms, &boot)
            })
            .await?;
        let (rec, refulfil, fresh) = match claim {
            Claim::Skip(rec) => {
                return Ok(Outcome {
                    state: rec.state,
                    fulfillment_id: None,
                    error: None,
                    attempted: false,
                });
            }
            Claim::Claimed {
                rec,
                refulfil,
                fresh,
            } => (rec, refulfil, fresh),
        };

        let fulfillment_id = match rec.pending_fulfillment.clone() {
            Some(pending) => pending,
            None => {
                // A session fetched before the lock is only as good as the
                // claim that finds it still unknown; an event may have come since.
                let retrieved = match opts.prefetched.filter(|_| fresh) {
                    Some(p) => p,
                    None => match self.stripe.retrieve_session(&id).await {
                        Ok(r) => r,
                        Err(e) => {
                            return self
                                .record_failure(
                                    &id,
                                    trigger,
                                    &e.to_string(),
                                    e.is_retryable(),
                                    None,
                                    Some(rec.version),
                                )
                                .await;
                        }
                    },
                };
                if !retrieved.session.is_payable_now() {
                    return self
                        .record_unpaid(&id, trigger, rec.version, retrieved)
                        .await;
                }
                let (fid, delivered) = self
                    .record_fulfillment(&id, trigger, retrieved, refulfil, opts.actor)
                    .await?;
                if delivered {
                    return Ok(Outcome {
                        state: State::Fulfilled,
                        fulfillment_id: Some(fid),
                        error: None,
                        attempted: true,
                    });
                }
                fid
            }
        };
        self.deliver_fulfillment(&id, trigger, &fulfillment_id)
            .await
    }

    /// Stores an unpaid session: awaiting its delayed payment, or expired, or
    /// (if an event arrived during the attempt) whatever that event decided.
    async fn record_unpaid(
        &self,
        id: &str,
        trigger: Trigger,
        claimed_version: u64,
        retrieved: Retrieved,
    ) -> Result<Outcome, FulfillError> {
        let now = now_ms();
        let id = id.to_string();
        let state = self
            .store
            .write(move |tx| {
                let mut rec = tx
                    .session(&id)?
                    .unwrap_or_else(|| SessionRecord::new(&id, retrieved.session.created, now));
                let mut detail = tx.detail(&id)?;
                if rec.version != claimed_version {
                    // An event arrived while Stripe was asked: what it decided
                    // (and any job it queued) stands. If it left the session
                    // to be fulfilled, the next attempt re-checks right away.
                    if rec.state == State::Fulfilling {
                        schedule_earliest(tx, &id, Trigger::Retry, now)?;
                    }
                    release(tx, &mut rec, &mut detail, trigger, now, None)?;
                    return Ok(rec.state);
                }
                apply_retrieved(&mut rec, &mut detail, &retrieved);
                rec.state = if retrieved.session.status.as_deref() == Some("expired") {
                    State::Expired
                } else if rec.payment_failed {
                    State::PaymentFailed
                } else {
                    State::AwaitingPayment
                };
                settle(tx, &mut rec, &mut detail, trigger, now, None)?;
                Ok(rec.state)
            })
            .await?;
        Ok(Outcome {
            state,
            fulfillment_id: None,
            error: None,
            attempted: true,
        })
    }

    /// Records a fulfillment durably before anything is sent. Returns its id
    /// and whether it is already complete (no merchant callback configured).
    async fn record_fulfillment(
        &self,
        id: &str,
        trigger: Trigger,
        retrieved: Retrieved,
        forced: bool,
        actor: Option<String>,
    ) -> Result<(String, bool), FulfillError> {
        let now = now_ms();
        let session_id = id.to_string();
        let id = session_id.clone();
        let callbacks = self.callback.is_some();
        let channels = self.channels.clone();
        let lease_until = now.saturating_add(self.jobs.lease_secs.saturating_mul(1000));
        let result = self
            .store
            .write(move |tx| {
                let mut rec = tx
                    .session(&id)?
                    .unwrap_or_else(|| SessionRecord::new(&id, retrieved.session.created, now));
                let mut detail = tx.detail(&id)?;
                apply_retrieved(&mut rec, &mut detail, &retrieved);
                let fid = new_id("ful");
                push_bounded(
                    &mut detail.fulfillments,
                    FulfillmentRecord {
                        id: fid.clone(),
                        at_ms: now,
                        forced,
                        trigger,
                        actor: actor.clone(),
                        delivered_at_ms: (!callbacks).then_some(now),
                    },
                );
                if callbacks {
                    let body = json!({
                        "type": FULFILLED_CALLBACK,
                        "timestamp": rfc3339_ms(now),
                        "data": {"fulfillment_id": fid, "forced": forced, "session": retrieved.raw},
                    });
                    tx.put_notification(&Notification {
                        id: fid.clone(),
                        session_id: id.clone(),
                        kind: FULFILLED_CALLBACK.into(),
                        body: body.to_string(),
                        status: "queued".into(),
                        refreshed: true,
                        recipient: None,
                        attempts: 0,
                        last_error: None,
                        sent_at_ms: None,
                        created_at_ms: now,
                    })?;
                    rec.pending_fulfillment = Some(fid.clone());
                    if let Some(lease) = rec.lease.as_mut() {
                        lease.until_ms = lease_until;
                    }
                    rec.updated_at_ms = now;
                    tx.put_session(&rec)?;
                    tx.put_detail(&id, &detail)?;
                    Ok((fid, false))
                } else {
                    rec.state = State::Fulfilled;
                    queue_receipt(tx, &rec, &mut detail, &channels, now)?;
                    settle(tx, &mut rec, &mut detail, trigger, now, None)?;
                    Ok((fid, true))
                }
            })
            .await?;
        if result.1 {
            tracing::info!(session = %session_id, fulfillment = %result.0, "fulfilled");
        }
        Ok(result)
    }

    /// Sends the pending fulfillment's callback and records the answer.
    async fn deliver_fulfillment(
        &self,
        id: &str,
        trigger: Trigger,
        fid: &str,
    ) -> Result<Outcome, FulfillError> {
        let Some(sender) = &self.callback else {
            // The callback was configured when this fulfillment was recorded
            // but is not now: the merchant turned it off, so it is complete.
            return self.complete_delivery(id, trigger, fid, None).await;
        };
        let fid_owned = fid.to_string();
        let notification = self.store.read(move |r| r.notification(&fid_owned)).await?;
        let Some(notification) = notification else {
            return self
                .record_failure(
                    id,
                    trigger,
                    "the recorded callback body is missing",
                    false,
                    None,
                    None,
                )
                .await;
        };
        let started = now_ms();
        let sent = sender.send(fid, &notification.body).await;
        self.metrics.delivery(sent.is_ok());
        match sent {
            Ok(status) => {
                let attempt = delivery(started, FULFILLED_CALLBACK, fid, Ok(status));
                self.complete_delivery(id, trigger, fid, Some(attempt))
                    .await
            }
            Err(e) => {
                let attempt = delivery(started, FULFILLED_CALLBACK, fid, Err(&e));
                self.record_failure(id, trigger, &e.message, true, Some(attempt), None)
                    .await
            }
        }
    }

    async fn complete_delivery(
        &self,
        id: &str,
        trigger: Trigger,
        fid: &str,
        attempt: Option<DeliveryAttempt>,
    ) -> Result<Outcome, FulfillError> {
        let now = now_ms();
        let (id_owned, fid_owned) = (id.to_string(), fid.to_string());
        let channels = self.channels.clone();
        self.store
            .write(move |tx| {
                let Some(mut rec) = tx.session(&id_owned)? else {
                    return Ok(());
                };
                let mut detail = tx.detail(&id_owned)?;
                if let Some(a) = &attempt {
                    push_bounded(&mut detail.deliveries, a.clone());
                }
                if let Some(f) = detail.fulfillments.iter_mut().find(|f| f.id == fid_owned) {
                    f.delivered_at_ms = Some(now);
                }
                if let Some(mut n) = tx.notification(&fid_owned)? {
                    n.status = "sent".into();
                    n.attempts += 1;
                    n.sent_at_ms = Some(now);
                    tx.put_notification(&n)?;
                }
                rec.pending_fulfillment = None;
                rec.state = State::Fulfilled;
                queue_receipt(tx, &rec, &mut detail, &channels, now)?;
                settle(tx, &mut rec, &mut detail, trigger, now, None)
            })
            .await?;
        tracing::info!(session = %id, fulfillment = %fid, "fulfilled");
        Ok(Outcome {
            state: State::Fulfilled,
            fulfillment_id: Some(fid.to_string()),
            error: None,
            attempted: true,
        })
    }

    /// Records a failed attempt: `retrying` with a scheduled job, or `failed`
    /// once the error is permanent or the series is older than the give-up limit.
    async fn record_failure(
        &self,
        id: &str,
        trigger: Trigger,
        error: &str,
        retryable: bool,
        attempt: Option<DeliveryAttempt>,
        claimed_version: Option<u64>,
    ) -> Result<Outcome, FulfillError> {
        let now = now_ms();
        let jobs = self.jobs.clone();
        let channels = self.channels.clone();
        let (id_owned, error_owned) = (id.to_string(), error.to_string());
        let state = self
            .store
            .write(move |tx| {
                let Some(mut rec) = tx.session(&id_owned)? else {
                    return Ok(State::Failed);
                };
                let mut detail = tx.detail(&id_owned)?;
                if let Some(a) = &attempt {
                    push_bounded(&mut detail.deliveries, a.clone());
                }
                let overtaken = claimed_version.is_some_and(|v| v != rec.version);
                if overtaken && matches!(rec.state, State::PaymentFailed | State::Expired) {
                    // An event settled the session while this attempt ran.
                    release(
                        tx,
                        &mut rec,
                        &mut detail,
                        trigger,
                        now,
                        Some(error_owned.clone()),
                    )?;
                    return Ok(rec.state);
                }
                let retry = rec.retry.get_or_insert(RetryInfo {
                    failures: 0,
                    first_failure_ms: now,
                    next_at_ms: 0,
                });
                retry.failures += 1;
                let expired = now.saturating_sub(retry.first_failure_ms)
                    >= jobs.give_up_after_secs.saturating_mul(1000);
                let status;
                if retryable && !expired {
                    let delay = stripe::backoff(
                        Duration::from_millis(jobs.retry_base_ms),
                        retry.failures,
                        Duration::from_secs(jobs.retry_max_secs),
                    );
                    retry.next_at_ms = now.saturating_add(delay.as_millis() as u64);
                    let next = retry.next_at_ms;
                    rec.state = State::Retrying;
                    status = "retrying";
                    // Keeps the series (`rec.retry`) going.
                    release(
                        tx,
                        &mut rec,
                        &mut detail,
                        trigger,
                        now,
                        Some(error_owned.clone()),
                    )?;
                    tx.schedule(
                        &Job::Fulfill {
                            session_id: id_owned.clone(),
                            trigger: Trigger::Retry,
                        },
                        next,
                    )?;
                } else {
                    rec.state = State::Failed;
                    status = "failed";
                    queue_stuck(tx, &rec, &mut detail, &channels, &error_owned, now)?;
                    settle(
                        tx,
                        &mut rec,
                        &mut detail,
                        trigger,
                        now,
                        Some(error_owned.clone()),
                    )?;
                }
                if let Some(fid) = &rec.pending_fulfillment
                    && let Some(mut n) = tx.notification(fid)?
                {
                    n.status = status.into();
                    n.attempts += 1;
                    n.last_error = Some(error_owned.clone());
                    tx.put_notification(&n)?;
                }
                Ok(rec.state)
            })
            .await?;
        if state == State::Failed {
            tracing::error!(session = %id, error = %error, "fulfillment failed: a person needs to look at it");
            self.wake.notify_one();
        } else {
            tracing::warn!(session = %id, error = %error, "fulfillment attempt failed; retry scheduled");
        }
        Ok(Outcome {
            state,
            fulfillment_id: None,
            error: Some(error.to_string()),
            attempted: true,
        })
    }

    /// Delivers one outbox entry (a `checkout.payment_failed` callback, an
    /// email or an alert) once, recording the answer and scheduling a retry
    /// on failure.
    pub async fn deliver_notification(&self, job: &Job) -> Result<(), StoreError> {
        let Job::Deliver {
            session_id,
            notification_id,
            ..
        } = job.clone()
        else {
            return Ok(());
        };
        let nid = notification_id.clone();
        let Some(mut notification) = self.store.read(move |r| r.notification(&nid)).await? else {
            let key = job.key();
            return self.store.write(move |tx| tx.unschedule(&key)).await;
        };
        if notification.status == "sent" || notification.status == "failed" {
            // Settled already (a stale job): never send twice.
            let key = job.key();
            return self.store.write(move |tx| tx.unschedule(&key)).await;
        }
        if NotificationKind::parse(&notification.kind).is_some() {
            return self
                .deliver_from_outbox(job, notification, &session_id)
                .await;
        }
        let started = now_ms();
        // A failed-payment callback carries the session as retrieved, with
        // every line item, like a fulfillment: fetched once, then kept so
        // every retry sends the same body.
        let mut refreshed_body = None;
        let mut fetch_error = None;
        if notification.kind == PAYMENT_FAILED_CALLBACK && !notification.refreshed {
            match self.stripe.retrieve_session(&session_id).await {
                Ok(r) => {
                    let timestamp = serde_json::from_str::<Value>(&notification.body)
                        .ok()
                        .and_then(|b| b.get("timestamp").cloned())
                        .unwrap_or_else(|| Value::String(rfc3339_ms(started)));
                    let body = json!({
                        "type": PAYMENT_FAILED_CALLBACK,
                        "timestamp": timestamp,
                        "data": {"session": r.raw},
                    })
                    .to_string();
                    notification.body = body.clone();
                    refreshed_body = Some(body);
                }
                Err(e) if e.is_retryable() => fetch_error = Some(e),
                // Stripe will not say more: send the event's snapshot as it is.
                Err(_) => refreshed_body = Some(notification.body.clone()),
            }
        }
        let result = match (&self.callback, fetch_error) {
            (_, Some(e)) => Err(DeliveryError {
                status: None,
                message: format!("cannot retrieve the session for the callback: {e}"),
            }),
            (Some(sender), None) => {
                let sent = sender.send(&notification.id, &notification.body).await;
                self.metrics.delivery(sent.is_ok());
                sent
            }
            (None, None) => Err(DeliveryError {
                status: None,
                message: "fulfillment.callback_url is no longer configured".into(),
            }),
        };
        let attempt = delivery(
            started,
            &notification.kind,
            &notification.id,
            result.as_ref().map(|s| *s),
        );
        let outcome = result.map(|_| ()).map_err(|e| (e.message, false));
        self.record_delivery(job, started, attempt, outcome, refreshed_body)
            .await
    }

    /// Sends an email or alert from the outbox once.
    async fn deliver_from_outbox(
        &self,
        job: &Job,
        notification: Notification,
        session_id: &str,
    ) -> Result<(), StoreError> {
        let started = now_ms();
        let id = session_id.to_string();
        let session = self
            .store
            .read(move |r| Ok(r.session(&id)?.map(|rec| (rec, r.detail(&id)))))
            .await?;
        let outcome = match (&self.outbox, session) {
            (_, None) => Err(("the session is no longer stored".to_string(), true)),
            // Kept for when the merchant configures email again.
            (None, _) => Err(("email and alerts are not configured".to_string(), false)),
            (Some(outbox), Some((rec, detail))) => {
                let detail = detail?;
                // lettre bounds only the connect: a server that accepts and
                // then stalls must not hold the slot forever.
                let send = outbox.send(&notification, &rec, &detail);
                match tokio::time::timeout(OUTBOX_SEND_TIMEOUT, send).await {
                    Ok(sent) => sent.map_err(|e| (e.message, e.permanent)),
                    Err(_) => Err((
                        format!("no answer within {} s", OUTBOX_SEND_TIMEOUT.as_secs()),
                        false,
                    )),
                }
            }
        };
        self.metrics.delivery(outcome.is_ok());
        let attempt = DeliveryAttempt {
            at_ms: started,
            kind: notification.kind.clone(),
            webhook_id: notification.id.clone(),
            status_code: None,
            error: outcome.as_ref().err().map(|(m, _)| m.clone()),
        };
        if let Err((message, _)) = &outcome {
            tracing::warn!(session = %session_id, notification = %notification.kind, error = %message, "notification not delivered");
        }
        self.record_delivery(job, started, attempt, outcome, None)
            .await
    }

    /// Records one delivery attempt of an outbox entry: `sent`, or a retry
    /// with backoff, or `failed` once permanent or past the give-up limit.
    async fn record_delivery(
        &self,
        job: &Job,
        started: u64,
        attempt: DeliveryAttempt,
        outcome: Result<(), (String, bool)>,
        refreshed_body: Option<String>,
    ) -> Result<(), StoreError> {
        let Job::Deliver {
            session_id,
            notification_id,
            failures,
            first_failure_ms,
        } = job.clone()
        else {
            return Ok(());
        };
        let jobs = self.jobs.clone();
        let channels = self.channels.clone();
        self.store
            .write(move |tx| {
                let mut detail = tx.detail(&session_id)?;
                push_bounded(&mut detail.deliveries, attempt.clone());
                let Some(mut n) = tx.notification(&notification_id)? else {
                    tx.put_detail(&session_id, &detail)?;
                    return Ok(());
                };
                if let Some(body) = &refreshed_body {
                    n.body = body.clone();
                    n.refreshed = true;
                }
                n.attempts = n.attempts.saturating_add(1);
                let job = Job::Deliver {
                    session_id: session_id.clone(),
                    notification_id: notification_id.clone(),
                    failures: failures + 1,
                    first_failure_ms: first_failure_ms.or(Some(started)),
                };
                let first = first_failure_ms.unwrap_or(started);
                match &outcome {
                    Ok(()) => {
                        n.status = "sent".into();
                        n.sent_at_ms = Some(started);
                        n.last_error = None;
                        tx.unschedule(&job.key())?;
                    }
                    Err((message, permanent)) => {
                        n.last_error = Some(message.clone());
                        if *permanent
                            || started.saturating_sub(first)
                                >= jobs.give_up_after_secs.saturating_mul(1000)
                        {
                            n.status = "failed".into();
                            tx.unschedule(&job.key())?;
                            // A merchant callback that gives up needs a person,
                            // like a fulfillment that does.
                            if n.kind == PAYMENT_FAILED_CALLBACK
                                && let Some(rec) = tx.session(&session_id)?
                            {
                                let error = format!(
                                    "the checkout.payment_failed callback gave up: {message}"
                                );
                                queue_stuck(tx, &rec, &mut detail, &channels, &error, started)?;
                            }
                        } else {
                            n.status = "retrying".into();
                            let delay = stripe::backoff(
                                Duration::from_millis(jobs.retry_base_ms),
                                failures + 1,
                                Duration::from_secs(jobs.retry_max_secs),
                            );
                            tx.schedule(&job, started.saturating_add(delay.as_millis() as u64))?;
                        }
                    }
                }
                tx.put_detail(&session_id, &detail)?;
                tx.put_notification(&n)
            })
            .await
    }

    /// Recovers Checkout Session events Stripe could not deliver (the endpoint
    /// was down longer than Stripe retries, or fulfilld was): lists them with
    /// `GET /v1/events?delivery_success=false` since `since_secs`, oldest
    /// first, and records each through the same idempotent path as a webhook.
    /// Events already received are duplicates and change nothing. Returns how
    /// many were new.
    pub async fn reconcile_missed_events(
        &self,
        since_secs: i64,
        max_events: usize,
    ) -> Result<usize, FulfillError> {
        let mut events: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self
                .stripe
                .list_undelivered_events(since_secs, after.as_deref())
                .await?;
            after = page
                .last()
                .and_then(|e| e.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            events.extend(page);
            if !more || after.is_none() {
                break;
            }
            if events.len() >= max_events {
                tracing::warn!(
                    max_events,
                    "more undelivered events than one round takes; the rest come next round"
                );
                break;
            }
        }
        // Stripe lists newest first; events are applied in the order they happened.
        events.reverse();
        let mut recovered = 0;
        for value in events {
            let raw = value.to_string();
            let Ok(event) = serde_json::from_value::<Event>(value) else {
                continue;
            };
            let has_session = event
                .data
                .as_ref()
                .and_then(|d| Session::from_value(&d.object))
                .is_some();
            if event.id.is_empty() || event.id.len() > 255 || !has_session {
                continue;
            }
            let id = event.id.clone();
            if self.ingest(raw, event).await? == Ingested::Recorded {
                tracing::info!(event = %id, "recovered an event Stripe could not deliver");
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// Queues a `failed` outbox entry (an email, alert or payment-failed
    /// callback) for delivery again, e.g. after the merchant fixed their mail
    /// settings. Returns false when there is nothing to resend. Fulfillment
    /// callbacks are re-sent by re-triggering fulfillment instead.
    pub async fn resend_notification(
        &self,
        session_id: &str,
        notification_id: &str,
    ) -> Result<bool, StoreError> {
        let (sid, nid) = (session_id.to_string(), notification_id.to_string());
        let now = now_ms();
        let queued = self
            .store
            .write(move |tx| {
                let Some(mut n) = tx.notification(&nid)? else {
                    return Ok(false);
                };
                if n.session_id != sid || n.status != "failed" || n.kind == FULFILLED_CALLBACK {
                    return Ok(false);
                }
                n.status = "queued".into();
                tx.put_notification(&n)?;
                tx.schedule(
                    &Job::Deliver {
                        session_id: sid.clone(),
                        notification_id: nid.clone(),
                        failures: 0,
                        first_failure_ms: None,
                    },
                    now,
                )?;
                Ok(true)
            })
            .await?;
        if queued {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Queues a re-check, with trigger `reconcile`, of up to `limit` sessions
    /// that have awaited their payment, untouched, for at least `quiet_ms`:
    /// the backstop for an `async_payment_succeeded` or `_failed` webhook that
    /// never arrived (an endpoint down longer than Stripe retries). Returns
    /// how many it queued.
    pub async fn reconcile_awaiting(
        &self,
        quiet_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let ids = self
            .store
            .read(|r| r.ids_in_state(State::AwaitingPayment))
            .await?;
        let queued = self
            .store
            .write(move |tx| {
                let mut n = 0;
                for id in &ids {
                    if n >= limit {
                        break;
                    }
                    let Some(rec) = tx.session(id)? else { continue };
                    let quiet = now.saturating_sub(rec.updated_at_ms) >= quiet_ms;
                    if rec.state == State::AwaitingPayment
                        && quiet
                        && tx.job_due(&fulfill_key(id))?.is_none()
                    {
                        tx.schedule(
                            &Job::Fulfill {
                                session_id: id.clone(),
                                trigger: Trigger::Reconcile,
                            },
                            now,
                        )?;
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await?;
        if queued > 0 {
            tracing::info!(queued, "re-checking sessions that await their payment");
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Makes every claim left by an earlier process due now, so a restart
    /// finishes what a crash interrupted without waiting for leases to expire.
    pub async fn take_over_claims(&self) -> Result<usize, StoreError> {
        let ids = self
            .store
            .read(|r| r.ids_in_state(State::Fulfilling))
            .await?;
        let boot = self.boot_id.clone();
        let now = now_ms();
        let count = self
            .store
            .write(move |tx| {
                let mut n = 0;
                for id in &ids {
                    let Some(rec) = tx.session(id)? else { continue };
                    if rec.state == State::Fulfilling
                        && rec.lease.as_ref().is_none_or(|l| l.owner != boot)
                    {
                        schedule_earliest(tx, id, Trigger::Retry, now)?;
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await?;
        if count > 0 {
            tracing::info!(
                count,
                "taking over fulfillments interrupted by an earlier stop"
            );
            self.wake.notify_one();
        }
        Ok(count)
    }
}

/// Ends an attempt: no lease, no retry series, no queued job; records the attempt.
fn settle(
    tx: &mut Tx<'_>,
    rec: &mut SessionRecord,
    detail: &mut SessionDetail,
    trigger: Trigger,
    now: u64,
    error: Option<String>,
) -> Result<(), StoreError> {
    if error.is_none() {
        rec.retry = None;
    }
    rec.last_error = error.clone();
    tx.unschedule(&fulfill_key(&rec.id))?;
    end_attempt(tx, rec, detail, trigger, now, error)
}

/// Ends an attempt that an event overtook: drops this attempt's lease and
/// records it, leaving the state and the queue as the event left them.
fn release(
    tx: &mut Tx<'_>,
    rec: &mut SessionRecord,
    detail: &mut SessionDetail,
    trigger: Trigger,
    now: u64,
    error: Option<String>,
) -> Result<(), StoreError> {
    if error.is_some() {
        rec.last_error = error.clone();
    }
    end_attempt(tx, rec, detail, trigger, now, error)
}

/// Drops the attempt's lease, records the attempt with the state it left
/// behind, and stores both records.
fn end_attempt(
    tx: &mut Tx<'_>,
    rec: &mut SessionRecord,
    detail: &mut SessionDetail,
    trigger: Trigger,
    now: u64,
    error: Option<String>,
) -> Result<(), StoreError> {
    rec.lease = None;
    rec.updated_at_ms = now;
    push_bounded(
        &mut detail.attempts,
        AttemptRecord {
            at_ms: now,
            trigger,
            outcome: rec.state.as_str().into(),
            error,
        },
    );
    tx.put_session(rec)?;
    tx.put_detail(&rec.id, detail)
}

fn delivery(
    at_ms: u64,
    kind: &str,
    webhook_id: &str,
    result: Result<u16, &DeliveryError>,
) -> DeliveryAttempt {
    match result {
        Ok(status) => DeliveryAttempt {
            at_ms,
            kind: kind.into(),
            webhook_id: webhook_id.into(),
            status_code: Some(status),
            error: None,
        },
        Err(e) => DeliveryAttempt {
            at_ms,
            kind: kind.into(),
            webhook_id: webhook_id.into(),
            status_code: e.status,
            error: Some(e.message.clone()),
        },
    }
}

/// Queues a fulfill job for `id` at `due` unless one is already due sooner.
fn schedule_earliest(
    tx: &mut Tx<'_>,
    id: &str,
    trigger: Trigger,
    due: u64,
) -> Result<(), StoreError> {
    let job = Job::Fulfill {
        session_id: id.to_string(),
        trigger,
    };
    match tx.job_due(&job.key())? {
        Some(existing) if existing <= due => Ok(()),
        _ => tx.schedule(&job, due),
    }
}

#[allow(clippy::too_many_arguments)]
fn claim_op(
    tx: &mut Tx<'_>,
    id: &str,
    trigger: Trigger,
    force: bool,
    created: Option<i64>,
    now: u64,
    lease_ms: u64,
    boot: &str,
) -> Result<Claim, StoreError> {
    let existing = tx.session(id)?;
    if let Some(rec) = &existing {
        let claim = match rec.state {
            State::Fulfilled => force,
            State::PaymentFailed | State::Expired => trigger == Trigger::Admin,
            State::Fulfilling => !rec
                .lease
                .as_ref()
                .is_some_and(|l| l.owner == boot && l.until_ms > now),
            // A customer refreshing the page need not ask Stripe more than
            // every few seconds; retries and people are not throttled.
            State::AwaitingPayment | State::Retrying | State::Failed => {
                trigger != Trigger::LandingPage
                    || now.saturating_sub(rec.updated_at_ms) >= LANDING_RECHECK_MS
            }
        };
        if !claim {
            if rec.state == State::Fulfilling
                && let Some(lease) = &rec.lease
            {
                // Another attempt of ours holds it; make sure that, should it
                // never finish, the session is picked up when its lease ends.
                schedule_earliest(tx, id, Trigger::Retry, lease.until_ms)?;
            }
            return Ok(Claim::Skip(rec.clone()));
        }
    }
    let fresh = existing.is_none();
    let mut rec = existing
        .unwrap_or_else(|| SessionRecord::new(id, created.unwrap_or((now / 1000) as i64), now));
    let was = rec.state;
    if trigger == Trigger::Admin {
        // A person asking again starts a fresh series of retries.
        rec.retry = None;
    }
    rec.state = State::Fulfilling;
    rec.lease = Some(Lease {
        owner: boot.to_string(),
        until_ms: now.saturating_add(lease_ms),
    });
    rec.updated_at_ms = now;
    tx.put_session(&rec)?;
    // The recovery point: if this process dies, the claim is picked up here.
    tx.schedule(
        &Job::Fulfill {
            session_id: id.to_string(),
            trigger: Trigger::Retry,
        },
        now.saturating_add(lease_ms),
    )?;
    Ok(Claim::Claimed {
        rec,
        refulfil: force && was == State::Fulfilled,
        fresh,
    })
}

/// Copies what Stripe returned into the records.
fn apply_retrieved(rec: &mut SessionRecord, detail: &mut SessionDetail, r: &Retrieved) {
    apply_summary(rec, &r.session);
    detail.line_items = r.line_items.iter().map(|i| i.record()).collect();
    detail.delivery_details = r.session.delivery_details();
    detail.amount_subtotal = r.session.amount_subtotal;
    detail.raw = Some(r.raw.clone());
}

fn apply_summary(rec: &mut SessionRecord, s: &Session) {
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
    if let Some(e) = s.email() {
        rec.customer_email = Some(e);
    }
    if let Some(pi) = s.payment_intent_id() {
        rec.payment_intent = Some(pi);
    }
}

/// Records an email or alert in the outbox (once per session and kind) and
/// queues its delivery. Returns whether it was new.
fn queue_notification(
    tx: &mut Tx<'_>,
    detail: &mut SessionDetail,
    kind: NotificationKind,
    session_id: &str,
    recipient: String,
    facts: Value,
    now: u64,
) -> Result<bool, StoreError> {
    let id = notification_id(kind, session_id);
    if tx.notification(&id)?.is_some() {
        return Ok(false);
    }
    tx.put_notification(&Notification {
        id: id.clone(),
        session_id: session_id.to_string(),
        kind: kind.as_str().into(),
        body: facts.to_string(),
        status: "queued".into(),
        refreshed: true,
        recipient: Some(recipient),
        attempts: 0,
        last_error: None,
        sent_at_ms: None,
        created_at_ms: now,
    })?;
    push_bounded(&mut detail.notifications, id.clone());
    tx.schedule(
        &Job::Deliver {
            session_id: session_id.to_string(),
            notification_id: id,
            failures: 0,
            first_failure_ms: None,
        },
        now,
    )?;
    Ok(true)
}

/// A delayed payment failed: tell the customer (how to pay again) and the merchant.
fn queue_payment_failed(
    tx: &mut Tx<'_>,
    rec: &SessionRecord,
    detail: &mut SessionDetail,
    channels: &Channels,
    now: u64,
) -> Result<(), StoreError> {
    if channels.smtp
        && let Some(email) = &rec.customer_email
    {
        queue_notification(
            tx,
            detail,
            NotificationKind::PaymentFailedEmail,
            &rec.id,
            email.clone(),
            json!({}),
            now,
        )?;
    }
    if channels.smtp
        && let Some(merchant) = &channels.merchant_email
    {
        queue_notification(
            tx,
            detail,
            NotificationKind::PaymentFailedMerchantEmail,
            &rec.id,
            merchant.clone(),
            json!({}),
            now,
        )?;
    }
    if channels.alert_webhook {
        queue_notification(
            tx,
            detail,
            NotificationKind::PaymentFailedAlert,
            &rec.id,
            "webhook".into(),
            json!({}),
            now,
        )?;
    }
    Ok(())
}

/// Fulfillment gave up: tell the merchant, with the last error.
fn queue_stuck(
    tx: &mut Tx<'_>,
    rec: &SessionRecord,
    detail: &mut SessionDetail,
    channels: &Channels,
    error: &str,
    now: u64,
) -> Result<(), StoreError> {
    let facts = json!({ "error": error });
    if channels.smtp
        && let Some(merchant) = &channels.merchant_email
    {
        queue_notification(
            tx,
            detail,
            NotificationKind::StuckMerchantEmail,
            &rec.id,
            merchant.clone(),
            facts.clone(),
            now,
        )?;
    }
    if channels.alert_webhook {
        queue_notification(
            tx,
            detail,
            NotificationKind::StuckAlert,
            &rec.id,
            "webhook".into(),
            facts,
            now,
        )?;
    }
    Ok(())
}

/// The session is fulfilled: the customer's receipt, when configured.
fn queue_receipt(
    tx: &mut Tx<'_>,
    rec: &SessionRecord,
    detail: &mut SessionDetail,
    channels: &Channels,
    now: u64,
) -> Result<(), StoreError> {
    if channels.receipt
        && let Some(email) = &rec.customer_email
    {
        queue_notification(
            tx,
            detail,
            NotificationKind::ReceiptEmail,
            &rec.id,
            email.clone(),
            json!({}),
            now,
        )?;
    }
    Ok(())
}

/// The webhook's transaction: dedupe by event id, record the event, and move
/// the session on (queue fulfillment, mark a failed or expired payment).
fn ingest_op(
    tx: &mut Tx<'_>,
    raw: &str,
    event: &Event,
    now: u64,
    callbacks: bool,
    channels: &Channels,
) -> Result<Ingested, StoreError> {
    if let Some(mut seen) = tx.event(&event.id)? {
        seen.deliveries = seen.deliveries.saturating_add(1);
        tx.update_event(&seen)?;
        return Ok(Ingested::Duplicate);
    }
    let kind = event.kind.as_str();
    let acted_on = matches!(
        kind,
        stripe::types::SESSION_COMPLETED
            | stripe::types::SESSION_ASYNC_SUCCEEDED
            | stripe::types::SESSION_ASYNC_FAILED
            | stripe::types::SESSION_EXPIRED
    );
    let session = event
        .data
        .as_ref()
        .and_then(|d| Session::from_value(&d.object))
        .filter(|_| acted_on);
    let record = EventRecord {
        id: event.id.clone(),
        kind: event.kind.clone(),
        livemode: event.livemode,
        created: event.created,
        session_id: session.as_ref().map(|s| s.id.clone()),
        received_at_ms: now,
        deliveries: 1,
        disposition: if session.is_some() {
            "handled"
        } else {
            "ignored"
        }
        .into(),
    };
    tx.put_event(&record, raw.as_bytes())?;
    let Some(session) = session else {
        return Ok(Ingested::Ignored);
    };
    let id = session.id.as_str();
    let existing = tx.session(id)?;
    let is_new = existing.is_none();
    let mut rec = existing.unwrap_or_else(|| SessionRecord::new(id, session.created, now));
    let mut detail = tx.detail(id)?;
    push_bounded(
        &mut detail.events,
        EventRef {
            id: event.id.clone(),
            kind: event.kind.clone(),
            received_at_ms: now,
        },
    );
    // Any attempt in flight now finishes without overriding this event.
    rec.version = rec.version.wrapping_add(1);
    let settled = rec.state == State::Fulfilled || rec.pending_fulfillment.is_some();
    if is_new {
        apply_summary(&mut rec, &session);
    }
    if kind == stripe::types::SESSION_ASYNC_SUCCEEDED {
        rec.payment_failed = false;
    }
    match kind {
        stripe::types::SESSION_COMPLETED | stripe::types::SESSION_ASYNC_SUCCEEDED => {
            let unpaid_completion =
                kind == stripe::types::SESSION_COMPLETED && !session.is_payable_now();
            if settled
                || matches!(rec.state, State::Expired)
                || (rec.state == State::PaymentFailed && kind == stripe::types::SESSION_COMPLETED)
            {
                // Already done, or a late completion of a payment known to have failed.
            } else if unpaid_completion {
                if is_new || rec.state == State::AwaitingPayment {
                    apply_summary(&mut rec, &session);
                    rec.state = State::AwaitingPayment;
                }
            } else {
                if rec.state != State::Fulfilling {
                    rec.state = State::Fulfilling;
                }
                schedule_earliest(tx, id, Trigger::Webhook, now)?;
            }
        }
        stripe::types::SESSION_ASYNC_FAILED => {
            if !settled {
                apply_summary(&mut rec, &session);
                rec.state = State::PaymentFailed;
                rec.payment_failed = true;
                rec.lease = None;
                rec.retry = None;
                tx.unschedule(&fulfill_key(id))?;
                if callbacks {
                    let nid = new_id("ntf");
                    let body = json!({
                        "type": PAYMENT_FAILED_CALLBACK,
                        "timestamp": rfc3339_ms(now),
                        "data": {"session": event.data.as_ref().map(|d| d.object.clone()).unwrap_or(Value::Null)},
                    });
                    push_bounded(&mut detail.notifications, nid.clone());
                    tx.put_notification(&Notification {
                        id: nid.clone(),
                        session_id: id.to_string(),
                        kind: PAYMENT_FAILED_CALLBACK.into(),
                        body: body.to_string(),
                        status: "queued".into(),
                        refreshed: false,
                        recipient: None,
                        attempts: 0,
                        last_error: None,
                        sent_at_ms: None,
                        created_at_ms: now,
                    })?;
                    tx.schedule(
                        &Job::Deliver {
                            session_id: id.to_string(),
                            notification_id: nid,
                            failures: 0,
                            first_failure_ms: None,
                        },
                        now,
                    )?;
                }
                queue_payment_failed(tx, &rec, &mut detail, channels, now)?;
            }
        }
        _ => {
            // checkout.session.expired: an open session can no longer be paid.
            let leased = rec.lease.as_ref().is_some_and(|l| l.until_ms > now);
            if !settled && !leased {
                apply_summary(&mut rec, &session);
                rec.state = State::Expired;
                rec.retry = None;
                tx.unschedule(&fulfill_key(id))?;
            }
        }
    }
    rec.updated_at_ms = now;
    tx.put_session(&rec)?;
    tx.put_detail(id, &detail)?;
    Ok(Ingested::Recorded)
}
