//! The rules of a Checkout Session's fulfillment, as pure functions.
//!
//! Nothing here does I/O, reads a clock or draws randomness: the store loads
//! a session, calls [`step`] with one [`Input`] and an [`Env`] (the time, some
//! entropy for jitter, the policy, who is asking), and writes back what the
//! returned [`Step`] says, in one transaction. Every write path that changes
//! a session goes through `step`, so the rules are in one place and are
//! tested here without a database (see `tests/`).
//!
//! Guarantees the rules keep (checked by the property test):
//! * at most one fulfillment per session unless forced, and a recorded
//!   fulfillment keeps its id (derived from the session, see [`ids`]);
//! * a fulfilled session leaves `fulfilled` only by force;
//! * an unpaid session is never fulfilled;
//! * a claim is honoured while its lease lives, whoever holds it; only the
//!   attempt that holds the claim may record a result;
//! * the newest event wins over an attempt that overlapped it.

pub mod delivery;
pub mod ids;
mod machine;
pub mod outbox;
pub mod policy;
#[cfg(test)]
mod tests;

use crate::model::{
    DeliveryAttempt, DeliveryDetails, LineItemRecord, Notification, SessionDetail, SessionRecord,
    State, Trigger,
};

pub use machine::{claim_is_noop, step};
pub use policy::{Channels, Policy, RetryPolicy};

/// The Checkout Session event types fulfilld acts on, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Completed,
    AsyncPaymentSucceeded,
    AsyncPaymentFailed,
    Expired,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Completed,
        EventKind::AsyncPaymentSucceeded,
        EventKind::AsyncPaymentFailed,
        EventKind::Expired,
    ];

    pub fn parse(kind: &str) -> Option<EventKind> {
        Some(match kind {
            "checkout.session.completed" => EventKind::Completed,
            "checkout.session.async_payment_succeeded" => EventKind::AsyncPaymentSucceeded,
            "checkout.session.async_payment_failed" => EventKind::AsyncPaymentFailed,
            "checkout.session.expired" => EventKind::Expired,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Completed => "checkout.session.completed",
            EventKind::AsyncPaymentSucceeded => "checkout.session.async_payment_succeeded",
            EventKind::AsyncPaymentFailed => "checkout.session.async_payment_failed",
            EventKind::Expired => "checkout.session.expired",
        }
    }
}

/// What a charge event (`charge.refunded`, `charge.refund.updated`,
/// `charge.dispute.created`, `charge.dispute.closed`) says about the
/// payment of a session, matched by `payment_intent`. Stored as it is while
/// no session has that payment yet, and applied when one does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChargeEvent {
    pub event_id: String,
    /// The event's type, as Stripe sent it.
    pub kind: String,
    /// The event's `created`, Unix seconds: newer facts win.
    pub created: i64,
    pub payment_intent: String,
    pub fact: ChargeFact,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChargeFact {
    /// A Charge (`charge.refunded`): the refunded total so far.
    Refunded {
        amount: i64,
        amount_refunded: i64,
        refunded: bool,
    },
    /// A Refund that failed or was canceled (`charge.refund.updated`): its
    /// amount is no longer refunded.
    RefundReversed { refund: String, amount: i64 },
    /// A Dispute (`charge.dispute.created` / `.closed`).
    Dispute {
        dispute: crate::model::DisputeRecord,
        closed: bool,
    },
}

/// The guide's rule: fulfil iff `payment_status != "unpaid"` (`paid` and
/// `no_payment_required` count; a missing status does not).
pub fn is_payable(payment_status: Option<&str>) -> bool {
    matches!(payment_status, Some(s) if s != "unpaid")
}

/// What Stripe said about a session (in an event, or in a fresh read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub livemode: bool,
    /// Stripe's `created`, Unix seconds (0 when missing).
    pub created: i64,
    pub status: Option<String>,
    pub payment_status: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub customer_email: Option<String>,
    /// The name the customer gave Checkout.
    pub customer_name: Option<String>,
    /// Checkout's `locale`.
    pub locale: Option<String>,
    pub payment_intent: Option<String>,
    pub mode: Option<String>,
    pub subscription: Option<String>,
    /// The connected account, from an event's envelope (a session object
    /// does not name it).
    pub account: Option<String>,
}

impl Snapshot {
    /// "Fulfil iff payment_status != unpaid": `paid` and
    /// `no_payment_required` count; a missing status does not. A `setup`
    /// session (saving a payment method, `no_payment_required`) sold
    /// nothing and is never fulfilled.
    pub fn is_payable(&self) -> bool {
        !self.is_setup() && is_payable(self.payment_status.as_deref())
    }

    pub fn is_setup(&self) -> bool {
        self.mode.as_deref() == Some("setup")
    }

    pub fn is_expired(&self) -> bool {
        self.status.as_deref() == Some("expired")
    }
}

/// A session as freshly retrieved from Stripe, with every line item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    pub snapshot: Snapshot,
    pub line_items: Vec<LineItemRecord>,
    pub delivery_details: DeliveryDetails,
    pub amount_subtotal: Option<i64>,
    /// The object as retrieved, for the callback body and the dashboard.
    pub raw: serde_json::Value,
}

/// What a read of the session from Stripe gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    Fetched(Box<Fetched>),
    /// `permanent` when no later read can succeed (no such session).
    Failed {
        error: String,
        permanent: bool,
    },
}

/// Identifies the attempt that made a claim; carried back with its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    /// The lease's `seq`: the attempt holds the claim while the lease has it.
    pub seq: u64,
    /// The session's version at the claim: events since then bump it.
    pub version: u64,
    pub trigger: Trigger,
    /// A forced second fulfillment.
    pub refulfil: bool,
    /// Who forced it, for the audit trail.
    pub actor: Option<String>,
}

/// Something that happened to one session.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The first delivery of a Checkout Session event (redeliveries never get here).
    Event {
        id: String,
        kind: EventKind,
        snapshot: Snapshot,
        /// The event's session object, for a `checkout.payment_failed` callback.
        object: serde_json::Value,
    },
    /// A trigger asks to fulfil the session.
    Claim {
        trigger: Trigger,
        force: bool,
        actor: Option<String>,
        /// Stripe's `created` if the caller knows it (the session may be new).
        created: Option<i64>,
    },
    /// A claim and the read it was taken for, as one step (one commit):
    /// the attempt read the session first, and the read is recorded only if
    /// the claim is granted with no fulfillment pending. A fulfillment
    /// recorded with its callback still to follow is answered `Claimed`
    /// with it `pending`, as a claim that found it would be.
    ClaimAndRecord {
        trigger: Trigger,
        force: bool,
        actor: Option<String>,
        created: Option<i64>,
        /// The session's `version` when the read started (0 when it was
        /// unknown). When an event has moved it since, the read is dropped:
        /// the step is the claim alone (`Claimed`, nothing pending), and the
        /// caller reads again under it.
        seen_version: u64,
        read: Read,
    },
    /// The claim's fresh read of the session.
    Fetched { claim: ClaimToken, fetched: Fetched },
    /// The claim's read failed; `permanent` when no later read can succeed
    /// (Stripe says the session does not exist).
    FetchFailed {
        claim: ClaimToken,
        error: String,
        permanent: bool,
    },
    /// The merchant acknowledged the fulfillment callback.
    CallbackDelivered {
        claim: ClaimToken,
        fulfillment_id: String,
        attempt: Option<DeliveryAttempt>,
    },
    /// The fulfillment callback failed (`permanent`: it cannot be sent at all).
    CallbackFailed {
        claim: ClaimToken,
        fulfillment_id: String,
        attempt: Option<DeliveryAttempt>,
        error: String,
        permanent: bool,
    },
    /// The process that holds the session's lease is known to be gone (a
    /// redb file lock proves it): end its lease and make the session due.
    TakeOver,
    /// A periodic re-check of a session that waits for its payment.
    Reconcile { quiet_ms: u64 },
    /// A `checkout.payment_failed` callback gave up: a person must look.
    PaymentFailedCallbackGaveUp { error: String },
    /// The first delivery of a charge event about the session's payment (or
    /// one kept until the session arrived).
    Charge(ChargeEvent),
}

impl Input {
    /// The payment intent this input may give the session (or is about): a
    /// backend shared by replicas locks it, so that a refund arriving
    /// before its session is linked exactly once.
    pub fn payment_intent(&self) -> Option<&str> {
        match self {
            Input::Event { snapshot, .. } => snapshot.payment_intent.as_deref(),
            Input::Fetched { fetched, .. } => fetched.snapshot.payment_intent.as_deref(),
            Input::ClaimAndRecord {
                read: Read::Fetched(f),
                ..
            } => f.snapshot.payment_intent.as_deref(),
            Input::Charge(ev) => Some(&ev.payment_intent),
            _ => None,
        }
    }
}

/// Everything a step needs besides the session: nothing here is read from
/// a clock or a random source, so a step is reproducible.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub now: u64,
    /// Uniform random bits for retry jitter.
    pub entropy: u64,
    pub policy: &'a Policy,
    /// Boot id of the process taking the step.
    pub owner: &'a str,
    /// The installation's secret for deriving fulfillment ids.
    pub key: &'a ids::InstallationKey,
    /// A fulfill job for the session is queued right now.
    pub job_queued: bool,
}

/// A session as stored: the listed record and its detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub rec: SessionRecord,
    pub detail: SessionDetail,
}

/// A change outside the session's own records, applied in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Queue the session's fulfill job at `due` (replacing any queued one),
    /// or, with `earliest`, only if none is queued sooner.
    ScheduleFulfill {
        trigger: Trigger,
        due: u64,
        earliest: bool,
    },
    /// Remove the session's fulfill job.
    CancelFulfill,
    /// A new outbox entry, unless one with its id exists; with `deliver`, its
    /// delivery job is queued now (a fulfillment callback is sent by the
    /// fulfill job instead).
    Queue {
        notification: Notification,
        deliver: bool,
    },
    /// An existing outbox entry after an attempt on it.
    UpdateNotification {
        id: String,
        status: crate::model::OutboxStatus,
        error: Option<String>,
        sent_at: Option<u64>,
    },
}

/// What a step tells its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Nothing to do: the session is where it should be, or another attempt holds it.
    Skipped(State),
    /// The caller holds the claim. `pending` is a fulfillment recorded
    /// earlier whose callback is still to be acknowledged.
    Claimed {
        token: ClaimToken,
        pending: Option<String>,
        /// The session was unknown before this claim.
        fresh: bool,
    },
    /// A fulfillment is recorded; `delivered` when no callback must follow.
    Recorded {
        fulfillment_id: String,
        delivered: bool,
    },
    /// The step ended the attempt (or recorded the event) leaving this state.
    Done(State),
    /// The attempt no longer holds the claim (its lease ended or an event
    /// overtook it): only the attempt itself was recorded.
    Overtaken(State),
}

/// The result of a step: the session to store (None: unchanged, nothing to
/// write), the effects, and the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub session: Option<Session>,
    pub effects: Vec<Effect>,
    pub reply: Reply,
}
