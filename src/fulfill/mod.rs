//! `fulfill_checkout`: the one entry point that fulfils a Checkout Session,
//! for the webhook worker, the landing page, the admin re-trigger and retries.
//! It follows Stripe's guide step by step; the rules of each step live in
//! `domain` and every write is one store transaction.
//!
//! How exactly-once holds:
//! 1. A durable claim: the session moves to `fulfilling` with a lease. A
//!    live lease is honoured whoever holds it, so at most one attempt works
//!    on a session at a time, across processes. A session that is already
//!    fulfilled is left alone.
//! 2. The session is retrieved fresh from Stripe with every line item; it is
//!    fulfilled only if `payment_status != "unpaid"`.
//! 3. The fulfillment (its id derived from the session, its line items and
//!    callback body) is recorded *before* anything leaves the process, only
//!    by the attempt that still holds the claim. From then on every later
//!    attempt delivers that same fulfillment with the same `webhook-id`.
//! 4. The merchant's 2xx moves it to `fulfilled`; failures are retried with
//!    backoff until `jobs.give_up_after_secs`, then `failed`.
//!
//! The per-session in-process mutex only saves Stripe calls: callers for one
//! session in this process wait for each other instead of finding it claimed.
//!
//! Events win over attempts: an attempt that an event overtook only records
//! itself, leaving the state and the queue as the event left them.

pub mod callback;
mod claim;
mod ingest;
pub mod locks;
pub mod outbox;
mod reconcile;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::{
    config::JobsConfig,
    domain::{ClaimToken, Fetched, Input, Policy, Reply, RetryPolicy, Snapshot},
    metrics::Metrics,
    model::{DeliveryAttempt, RngError, SessionId, State, Trigger, new_id},
    store::{Ctx, Store, StoreError},
    stripe::{self, Retrieved, StripeClient},
    time::{Clock, SystemClock},
};
use callback::{CallbackSender, DeliveryError};
use claim::Claimed;
use locks::SessionLocks;

pub use crate::domain::Channels;
pub use outbox::{Outbox, OutboxError};

#[derive(Debug, thiserror::Error)]
pub enum FulfillError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stripe(#[from] stripe::StripeError),
}

/// Extra wishes for one call.
#[derive(Default)]
pub struct FulfillOptions {
    /// Fulfil again even if already fulfilled (recorded as forced).
    pub force: bool,
    /// Who asked, for the audit trail of forced fulfillments.
    pub actor: Option<String>,
    /// A session the caller has just retrieved, to save a second call. Used
    /// only if the claim finds the session unknown (no event came since).
    pub prefetched: Option<Retrieved>,
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

impl Outcome {
    fn of(state: State, attempted: bool) -> Self {
        Outcome {
            state,
            fulfillment_id: None,
            error: None,
            attempted,
        }
    }
}

pub use crate::store::Ingested;

pub struct Fulfiller {
    store: Store,
    stripe: StripeClient,
    callback: Option<CallbackSender>,
    locks: SessionLocks,
    owner: Arc<str>,
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    outbox: Option<Arc<dyn Outbox>>,
}

/// The domain's retry policy from the `jobs` configuration.
pub fn retry_policy(jobs: &JobsConfig) -> RetryPolicy {
    RetryPolicy {
        base_ms: jobs.retry_base_ms,
        max_ms: jobs.retry_max_secs.saturating_mul(1000),
        give_up_ms: jobs.give_up_after_secs.saturating_mul(1000),
    }
}

impl Fulfiller {
    /// Fails only when no boot id can be drawn (the OS RNG failed).
    pub fn new(
        store: Store,
        stripe: StripeClient,
        callback: Option<CallbackSender>,
        jobs: JobsConfig,
    ) -> Result<Self, RngError> {
        let policy = Policy::new(
            retry_policy(&jobs),
            jobs.lease_secs.saturating_mul(1000),
            callback.is_some(),
            Channels::default(),
        );
        // The store's own signal: woken by commits that queue work due
        // sooner than anything queued, not by every write.
        let wake = store.queue_changed();
        Ok(Fulfiller {
            store,
            stripe,
            callback,
            locks: SessionLocks::default(),
            owner: new_id("boot")?.into(),
            policy: Arc::new(policy),
            clock: Arc::new(SystemClock),
            wake,
            metrics: Arc::new(Metrics::new()),
            outbox: None,
        })
    }

    /// Turns on emails and alerts: which ones, and what sends them.
    pub fn with_notifications(mut self, channels: Channels, outbox: Arc<dyn Outbox>) -> Self {
        let mut policy = (*self.policy).clone();
        policy.channels = channels;
        self.policy = Arc::new(policy);
        self.outbox = Some(outbox);
        self
    }

    /// Uses `clock` for every decision instead of the system's (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
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

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// This process's boot id: the owner of its leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Notified whenever work is queued.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// What a store transition needs from this process, at this moment.
    fn ctx(&self) -> Ctx {
        Ctx {
            policy: self.policy.clone(),
            owner: self.owner.clone(),
            now: self.now(),
            entropy: crate::time::jitter_entropy(),
        }
    }

    async fn step(&self, id: &SessionId, input: Input) -> Result<Reply, StoreError> {
        self.store.transition(id, input, self.ctx()).await
    }

    /// Fulfils `id` at most once (see the module docs); safe to call any
    /// number of times, concurrently, from any trigger and any process.
    pub async fn fulfill_checkout(
        &self,
        id: &SessionId,
        trigger: Trigger,
        opts: FulfillOptions,
    ) -> Result<Outcome, FulfillError> {
        let start = std::time::Instant::now();
        let result = self.attempt(id, trigger, opts).await;
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

    async fn attempt(
        &self,
        id: &SessionId,
        trigger: Trigger,
        opts: FulfillOptions,
    ) -> Result<Outcome, FulfillError> {
        // Callers for one session in this process take turns (saves Stripe calls).
        let _turn = self.locks.lock(id.as_str()).await;

        // 1. Claim the session durably, unless it needs nothing.
        let Claimed {
            token,
            pending,
            fresh,
        } = match self.claim(id, trigger, &opts).await? {
            Ok(claimed) => claimed,
            Err(state) => return Ok(Outcome::of(state, false)),
        };

        // 2. A fulfillment recorded earlier is delivered again, never made anew.
        let fulfillment_id = match pending {
            Some(fid) => fid,
            None => {
                // 3. Retrieve the session fresh, with every line item.
                let retrieved = match opts.prefetched.filter(|_| fresh) {
                    Some(p) => Ok(p),
                    None => self.stripe.retrieve_session(id.as_str()).await,
                };
                // 4. Fulfil only if paid: record the fulfillment first.
                let (reply, error) = match retrieved {
                    Ok(r) => {
                        let fetched = Input::Fetched {
                            claim: token.clone(),
                            fetched: fetched(r),
                        };
                        (self.step(id, fetched).await?, None)
                    }
                    Err(e) => {
                        let error = e.to_string();
                        let failed = Input::FetchFailed {
                            claim: token.clone(),
                            error: error.clone(),
                            // Only "no such session" can never change; a
                            // `Stripe-Should-Retry: false` holds for that request only.
                            permanent: e.is_not_found(),
                        };
                        (self.step(id, failed).await?, Some(error))
                    }
                };
                match reply {
                    Reply::Recorded {
                        fulfillment_id,
                        delivered: true,
                    } => {
                        tracing::info!(session = %id, fulfillment = %fulfillment_id, "fulfilled");
                        return Ok(Outcome {
                            state: State::Fulfilled,
                            fulfillment_id: Some(fulfillment_id),
                            error: None,
                            attempted: true,
                        });
                    }
                    Reply::Recorded { fulfillment_id, .. } => fulfillment_id,
                    other => return Ok(self.ended(id, &other, error)),
                }
            }
        };

        // 5. Tell the merchant; their 2xx completes the fulfillment.
        self.deliver_fulfillment(id, token, fulfillment_id).await
    }

    /// Sends the recorded fulfillment's callback and records the answer.
    async fn deliver_fulfillment(
        &self,
        id: &SessionId,
        claim: ClaimToken,
        fid: String,
    ) -> Result<Outcome, FulfillError> {
        let (input, error) = match &self.callback {
            // Configured when this fulfillment was recorded but not now: the
            // merchant turned it off, so it is complete.
            None => (
                Input::CallbackDelivered {
                    claim,
                    fulfillment_id: fid.clone(),
                    attempt: None,
                },
                None,
            ),
            Some(sender) => match self.store.notification(&fid).await? {
                None => {
                    let error = "the recorded callback body is missing".to_string();
                    let input = Input::CallbackFailed {
                        claim,
                        fulfillment_id: fid.clone(),
                        attempt: None,
                        error: error.clone(),
                        permanent: true,
                    };
                    (input, Some(error))
                }
                Some(n) => {
                    let started = self.now();
                    let sent = sender.send(&fid, &n.body).await;
                    self.metrics.delivery(sent.is_ok());
                    let attempt = Some(delivery(started, n.kind.as_str(), &fid, sent.as_ref()));
                    match sent {
                        Ok(_) => (
                            Input::CallbackDelivered {
                                claim,
                                fulfillment_id: fid.clone(),
                                attempt,
                            },
                            None,
                        ),
                        Err(e) => (
                            Input::CallbackFailed {
                                claim,
                                fulfillment_id: fid.clone(),
                                attempt,
                                error: e.message.clone(),
                                permanent: false,
                            },
                            Some(e.message),
                        ),
                    }
                }
            },
        };
        let reply = self.step(id, input).await?;
        if let Reply::Done(State::Fulfilled) = reply {
            tracing::info!(session = %id, fulfillment = %fid, "fulfilled");
            return Ok(Outcome {
                state: State::Fulfilled,
                fulfillment_id: Some(fid),
                error: None,
                attempted: true,
            });
        }
        Ok(self.ended(id, &reply, error))
    }

    /// The outcome of an attempt that did not fulfil, logged once.
    fn ended(&self, id: &SessionId, reply: &Reply, error: Option<String>) -> Outcome {
        let state = reply_state(reply);
        match (state, &error) {
            (State::Failed, Some(e)) => {
                tracing::error!(session = %id, error = %e, "fulfillment failed: a person needs to look at it");
                // Alerts were queued with the failure.
                self.wake.notify_one();
            }
            (State::Retrying, Some(e)) => {
                tracing::warn!(session = %id, error = %e, "fulfillment attempt failed; retry scheduled");
            }
            _ => {}
        }
        Outcome {
            state,
            fulfillment_id: None,
            error,
            attempted: true,
        }
    }
}

fn reply_state(reply: &Reply) -> State {
    match reply {
        Reply::Skipped(s) | Reply::Done(s) | Reply::Overtaken(s) => *s,
        Reply::Claimed { .. } | Reply::Recorded { .. } => State::Fulfilling,
    }
}

fn delivery(
    at_ms: u64,
    kind: &str,
    webhook_id: &str,
    result: Result<&u16, &DeliveryError>,
) -> DeliveryAttempt {
    let (status_code, error) = match result {
        Ok(status) => (Some(*status), None),
        Err(e) => (e.status, Some(e.message.clone())),
    };
    DeliveryAttempt {
        at_ms,
        kind: kind.into(),
        webhook_id: webhook_id.into(),
        status_code,
        error,
    }
}

/// What the domain needs of a Stripe session.
pub fn snapshot(s: &stripe::Session) -> Snapshot {
    Snapshot {
        livemode: s.livemode,
        created: s.created,
        status: s.status.clone(),
        payment_status: s.payment_status.clone(),
        amount_total: s.amount_total,
        currency: s.currency.clone(),
        customer_email: s.email(),
        payment_intent: s.payment_intent_id(),
    }
}

/// A retrieved session as the domain records it.
pub fn fetched(r: Retrieved) -> Fetched {
    Fetched {
        snapshot: snapshot(&r.session),
        line_items: r.line_items.iter().map(|i| i.record()).collect(),
        delivery_details: r.session.delivery_details(),
        amount_subtotal: r.session.amount_subtotal,
        raw: r.raw,
    }
}
