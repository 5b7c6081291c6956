//! `fulfill_checkout`: the one entry point that fulfils a Checkout Session,
//! for the webhook worker, the landing page, the admin re-trigger and retries.
//! It follows Stripe's guide step by step; the rules of each step live in
//! `domain` and every write is one store transaction.
//!
//! How exactly-once holds:
//! 1. A session that is already fulfilled (or settled for this trigger) is
//!    left alone, decided from a read without a write.
//! 2. The session is retrieved fresh from Stripe with every line item; it is
//!    fulfilled only if `payment_status != "unpaid"`.
//! 3. A durable claim and what the read says, in one commit: the session
//!    moves to `fulfilling` with a lease, and the fulfillment (its id
//!    derived from the session, its line items and callback body) is
//!    recorded *before* anything leaves the process. A live lease is
//!    honoured whoever holds it, and a recorded fulfillment is never made
//!    again unforced, so two attempts (in any processes) that both read
//!    record one fulfillment; the loser's read is dropped. From then on
//!    every later attempt claims first and delivers that same fulfillment
//!    with the same `webhook-id`.
//! 4. The merchant's 2xx moves it to `fulfilled`; failures are retried with
//!    backoff until `jobs.give_up_after_secs`, then `failed`.
//!
//! Reading before claiming costs a wasted Stripe call when two processes
//! race for one session, and saves a commit (two syncs) on every order.
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
    domain::{
        ClaimToken, Fetched, Input, Policy, Read, Reply, RetryPolicy, Snapshot, claim_is_noop,
    },
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
pub use ingest::{UNMATCHED_REASON, ignore_reason};

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
        let metrics = Arc::new(Metrics::new().with_stripe(stripe.stats().clone()));
        Ok(Fulfiller {
            store,
            stripe,
            callback,
            locks: SessionLocks::default(),
            owner: new_id("boot")?.into(),
            policy: Arc::new(policy),
            clock: Arc::new(SystemClock),
            wake,
            metrics,
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

        // A settled session is decided from a read: reloading a fulfilled
        // order's page commits nothing.
        let known = self.store.session(id).await?;
        let account = known.as_ref().and_then(|r| r.account.clone());
        let account = account.as_deref();
        if let Some(rec) = &known
            && claim_is_noop(rec, trigger, opts.force, self.now(), &self.policy)
        {
            return Ok(Outcome::of(rec.state, false));
        }

        // 1. A fulfillment recorded earlier is delivered again, never made
        //    anew: claim the session durably, then deliver it.
        if known
            .as_ref()
            .is_some_and(|r| r.pending_fulfillment.is_some())
        {
            let Claimed { token, pending, .. } = match self.claim(id, trigger, &opts).await? {
                Ok(claimed) => claimed,
                Err(state) => return Ok(Outcome::of(state, false)),
            };
            if let Some(fid) = pending {
                return self.deliver_fulfillment(id, token, fid).await;
            }
            // Delivered meanwhile by another attempt: finish this claim
            // with an ordinary read (which fulfils again only if forced).
            let read = self.read(id, account, None).await;
            let (reply, error) = self.record_read(id, token.clone(), read).await?;
            return self.after_record(id, Some(token), reply, error).await;
        }

        // 2. Retrieve the session fresh, with every line item (a session the
        //    caller has just retrieved saves the call if none is stored).
        let prefetched = opts.prefetched.filter(|_| known.is_none());
        let read = self.read(id, account, prefetched).await;
        // 3. Claim it durably and, in the same commit, record what the read
        //    says: fulfil only if paid, the fulfillment recorded before
        //    anything leaves the process. A claim held elsewhere wins.
        let error = read.as_ref().err().map(|e| e.to_string());
        let input = Input::ClaimAndRecord {
            trigger,
            force: opts.force,
            actor: opts.actor.clone(),
            created: read.as_ref().ok().map(|r| r.snapshot.created),
            seen_version: known.as_ref().map_or(0, |r| r.version),
            read: read_input(read),
        };
        let (reply, claim, error) = match self.step(id, input).await? {
            // An event came during the read: it is dropped, and the claim
            // taken instead is used for a fresh read.
            Reply::Claimed {
                token,
                pending: None,
                ..
            } => {
                let read = self.read(id, account, None).await;
                let (reply, error) = self.record_read(id, token.clone(), read).await?;
                (reply, Some(token), error)
            }
            other => (other, None, error),
        };
        self.after_record(id, claim, reply, error).await
    }

    /// The session fresh from Stripe (or as the caller just retrieved it).
    /// `account`: the connected account it belongs to, as recorded.
    async fn read(
        &self,
        id: &SessionId,
        account: Option<&str>,
        prefetched: Option<Retrieved>,
    ) -> Result<Fetched, stripe::StripeError> {
        match prefetched {
            Some(p) => Ok(fetched(p)),
            None => self
                .stripe
                .retrieve_session(id.as_str(), account)
                .await
                .map(fetched),
        }
    }

    /// Records a read under a claim this attempt already holds.
    async fn record_read(
        &self,
        id: &SessionId,
        claim: ClaimToken,
        read: Result<Fetched, stripe::StripeError>,
    ) -> Result<(Reply, Option<String>), StoreError> {
        let error = read.as_ref().err().map(|e| e.to_string());
        let input = match read_input(read) {
            Read::Fetched(fetched) => Input::Fetched {
                claim,
                fetched: *fetched,
            },
            Read::Failed { error, permanent } => Input::FetchFailed {
                claim,
                error,
                permanent,
            },
        };
        Ok((self.step(id, input).await?, error))
    }

    /// Step 4: tell the merchant when a callback must follow; their 2xx
    /// completes it. `claim` is the token when the attempt took the claim
    /// before the read (`ClaimAndRecord` answers with its own token instead).
    async fn after_record(
        &self,
        id: &SessionId,
        claim: Option<ClaimToken>,
        reply: Reply,
        error: Option<String>,
    ) -> Result<Outcome, FulfillError> {
        match reply {
            Reply::Recorded {
                fulfillment_id,
                delivered: true,
            } => {
                tracing::info!(session = %id, fulfillment = %fulfillment_id, "fulfilled");
                Ok(Outcome {
                    state: State::Fulfilled,
                    fulfillment_id: Some(fulfillment_id),
                    error: None,
                    attempted: true,
                })
            }
            Reply::Claimed {
                token,
                pending: Some(fid),
                ..
            } => self.deliver_fulfillment(id, token, fid).await,
            Reply::Recorded {
                fulfillment_id,
                delivered: false,
            } => match claim {
                Some(token) => self.deliver_fulfillment(id, token, fulfillment_id).await,
                // `ClaimAndRecord` never answers so (see `Input`); were it to,
                // the lease's recovery job delivers it.
                None => Ok(Outcome {
                    state: State::Fulfilling,
                    fulfillment_id: Some(fulfillment_id),
                    error: None,
                    attempted: true,
                }),
            },
            Reply::Skipped(state) => Ok(Outcome::of(state, false)),
            other => Ok(self.ended(id, &other, error)),
        }
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
                    self.metrics.delivery("callback", sent.is_ok());
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
        customer_name: s
            .customer_details
            .as_ref()
            .and_then(|c| c.name.clone())
            .map(|n| n.chars().take(120).collect()),
        // A language tag is short; anything longer is not one.
        locale: s.locale.clone().filter(|l| l.len() <= 16),
        payment_intent: s.payment_intent_id(),
        mode: s.mode.clone(),
        subscription: s.subscription_id(),
        account: None,
    }
}

/// A read as the domain takes it. Only "no such session" can never change;
/// a `Stripe-Should-Retry: false` holds for that request only.
fn read_input(read: Result<Fetched, stripe::StripeError>) -> Read {
    match read {
        Ok(f) => Read::Fetched(Box::new(f)),
        Err(e) => Read::Failed {
            error: e.to_string(),
            permanent: e.is_not_found(),
        },
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
