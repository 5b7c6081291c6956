//! The records fulfilld keeps about Checkout Sessions: pure data, shared by
//! the store (which persists them), fulfillment (which changes them) and the
//! HTTP layer (which shows them).

use serde::{Deserialize, Serialize};

/// Fulfillment state of a Checkout Session (CONTRACT.md "Fulfillment states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Completed, but the (delayed) payment is still processing.
    AwaitingPayment,
    /// Paid and queued, or claimed by a worker (see `SessionRecord::lease`).
    Fulfilling,
    Fulfilled,
    /// An attempt failed; another is scheduled.
    Retrying,
    /// Gave up; needs a person.
    Failed,
    /// The delayed payment failed.
    PaymentFailed,
    Expired,
}

impl State {
    pub const ALL: [State; 7] = [
        State::AwaitingPayment,
        State::Fulfilling,
        State::Fulfilled,
        State::Retrying,
        State::Failed,
        State::PaymentFailed,
        State::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::AwaitingPayment => "awaiting_payment",
            State::Fulfilling => "fulfilling",
            State::Fulfilled => "fulfilled",
            State::Retrying => "retrying",
            State::Failed => "failed",
            State::PaymentFailed => "payment_failed",
            State::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What asked for a fulfillment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Webhook,
    LandingPage,
    Admin,
    Retry,
    Reconcile,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::LandingPage => "landing_page",
            Trigger::Admin => "admin",
            Trigger::Retry => "retry",
            Trigger::Reconcile => "reconcile",
        }
    }
}

/// A claim on a session: held by one process (`owner` is its boot id) until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until_ms: u64,
}

/// The current series of failed attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryInfo {
    pub failures: u32,
    pub first_failure_ms: u64,
    pub next_at_ms: u64,
}

/// The small, frequently listed part of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub livemode: bool,
    pub state: State,
    pub payment_status: Option<String>,
    pub status: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub customer_email: Option<String>,
    pub payment_intent: Option<String>,
    /// Stripe's `created`, Unix seconds.
    pub created: i64,
    pub updated_at_ms: u64,
    pub lease: Option<Lease>,
    /// A fulfillment that is recorded but whose merchant callback has not been acknowledged.
    pub pending_fulfillment: Option<String>,
    pub retry: Option<RetryInfo>,
    pub last_error: Option<String>,
    /// Bumped by every new event about the session. An attempt that started
    /// at another version must not overwrite what those events decided.
    #[serde(default)]
    pub version: u64,
    /// Stripe reported the delayed payment as failed; a later fetch that
    /// shows the session merely unpaid does not make it `awaiting_payment` again.
    #[serde(default)]
    pub payment_failed: bool,
}

impl SessionRecord {
    pub fn new(id: &str, created: i64, now_ms: u64) -> Self {
        SessionRecord {
            id: id.to_string(),
            livemode: id.starts_with("cs_live_"),
            state: State::AwaitingPayment,
            payment_status: None,
            status: None,
            amount_total: None,
            currency: None,
            customer_email: None,
            payment_intent: None,
            created,
            updated_at_ms: now_ms,
            lease: None,
            pending_fulfillment: None,
            retry: None,
            last_error: None,
            version: 0,
            payment_failed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItemRecord {
    pub id: String,
    pub description: Option<String>,
    pub quantity: Option<i64>,
    pub amount_total: i64,
    pub amount_subtotal: i64,
    pub currency: Option<String>,
    pub price_id: Option<String>,
    pub unit_amount: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at_ms: u64,
    pub trigger: Trigger,
    /// The state the attempt left the session in (`fulfilled`, `retrying`, …).
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub received_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfillmentRecord {
    pub id: String,
    pub at_ms: u64,
    pub forced: bool,
    pub trigger: Trigger,
    /// Who forced it, for an audited re-fulfillment.
    pub actor: Option<String>,
    /// When the merchant callback acknowledged it (or when it was recorded, without a callback).
    pub delivered_at_ms: Option<u64>,
}

/// One attempt to deliver a merchant callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub at_ms: u64,
    /// `checkout.fulfilled` or `checkout.payment_failed`.
    pub kind: String,
    /// The `webhook-id` header: the fulfillment or notification id.
    pub webhook_id: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// Postal details the customer gave, for the landing page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryDetails {
    pub name: Option<String>,
    pub address_lines: Vec<String>,
}

/// Everything else about a session: line items, history and the raw Stripe object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDetail {
    pub line_items: Vec<LineItemRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub events: Vec<EventRef>,
    pub fulfillments: Vec<FulfillmentRecord>,
    pub deliveries: Vec<DeliveryAttempt>,
    pub delivery_details: DeliveryDetails,
    pub amount_subtotal: Option<i64>,
    /// Ids of notifications about the session other than fulfillment
    /// callbacks (whose ids are the fulfillment ids).
    #[serde(default)]
    pub notifications: Vec<String>,
    /// The Checkout Session as last retrieved, with every line item.
    pub raw: Option<serde_json::Value>,
}

/// Bounds on the history kept per session, so a session that is retried for
/// days or hammered with redeliveries cannot grow without limit.
pub const MAX_HISTORY: usize = 500;

/// Appends to a history list, dropping the oldest entries (but never the first) past `MAX_HISTORY`.
pub fn push_bounded<T>(list: &mut Vec<T>, item: T) {
    list.push(item);
    if list.len() > MAX_HISTORY {
        list.remove(1);
    }
}

/// A received Stripe event, stored exactly once per event id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub livemode: bool,
    pub created: i64,
    pub session_id: Option<String>,
    pub received_at_ms: u64,
    /// How many times Stripe delivered it (redeliveries change nothing else).
    pub deliveries: u32,
    /// `handled` or `ignored`.
    pub disposition: String,
}

/// Work in the durable queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Run `fulfill_checkout` for a session.
    Fulfill {
        session_id: String,
        trigger: Trigger,
    },
    /// Deliver a stored notification (a `checkout.payment_failed` callback).
    Deliver {
        session_id: String,
        notification_id: String,
        failures: u32,
        first_failure_ms: Option<u64>,
    },
}

impl Job {
    /// The job's identity in the queue: at most one job per key.
    pub fn key(&self) -> String {
        match self {
            Job::Fulfill { session_id, .. } => fulfill_key(session_id),
            Job::Deliver {
                notification_id, ..
            } => format!("deliver:{notification_id}"),
        }
    }
}

/// The queue key of a session's fulfill job.
pub fn fulfill_key(session_id: &str) -> String {
    format!("fulfill:{session_id}")
}

/// One entry of the durable outbox: a merchant callback, an email or an
/// alert, recorded before it is sent. A callback's id is its stable
/// `webhook-id`; an email's or alert's id is derived from its kind and the
/// session (`notification_id`), so each session gets at most one of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub session_id: String,
    /// A callback type (`checkout.fulfilled`, `checkout.payment_failed`) or
    /// one of the `NotificationKind` names (`email.receipt`, `alert.stuck`, …).
    pub kind: String,
    /// The callback body; for emails and alerts, extra facts to render
    /// (e.g. the last error of a stuck fulfillment) as JSON.
    pub body: String,
    /// `queued`, `sent`, `retrying` or `failed`.
    pub status: String,
    /// The body holds the session as retrieved from Stripe (with every line
    /// item), not only an event's snapshot.
    #[serde(default)]
    pub refreshed: bool,
    /// Where it goes: an email address, or `webhook` for the alert URL.
    #[serde(default)]
    pub recipient: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub sent_at_ms: Option<u64>,
    #[serde(default)]
    pub created_at_ms: u64,
}

/// Emails and alerts fulfilld sends (callbacks are separate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    /// To the customer: the delayed payment failed, how to pay again.
    PaymentFailedEmail,
    /// To the merchant: a customer's delayed payment failed.
    PaymentFailedMerchantEmail,
    PaymentFailedAlert,
    /// To the customer, on fulfillment (`fulfillment.receipt_email`).
    ReceiptEmail,
    /// To the merchant: fulfillment gave up (`failed`).
    StuckMerchantEmail,
    StuckAlert,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 6] = [
        NotificationKind::PaymentFailedEmail,
        NotificationKind::PaymentFailedMerchantEmail,
        NotificationKind::PaymentFailedAlert,
        NotificationKind::ReceiptEmail,
        NotificationKind::StuckMerchantEmail,
        NotificationKind::StuckAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::PaymentFailedEmail => "email.payment_failed",
            NotificationKind::PaymentFailedMerchantEmail => "email.merchant.payment_failed",
            NotificationKind::PaymentFailedAlert => "alert.payment_failed",
            NotificationKind::ReceiptEmail => "email.receipt",
            NotificationKind::StuckMerchantEmail => "email.merchant.stuck",
            NotificationKind::StuckAlert => "alert.stuck",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationKind> {
        NotificationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Sent as an alert to `notifications.webhook_url` (else an email).
    pub fn is_alert(self) -> bool {
        matches!(
            self,
            NotificationKind::PaymentFailedAlert | NotificationKind::StuckAlert
        )
    }
}

/// The outbox id of a session's email or alert of `kind`: the same on
/// every redelivery, landing-page hit or retry, so it is created once.
pub fn notification_id(kind: NotificationKind, session_id: &str) -> String {
    format!("ntf_{}_{session_id}", kind.as_str().replace('.', "_"))
}

/// A random identifier with a prefix, e.g. `ful_3f9c…` (128 bits).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    // The OS RNG failing is not recoverable in a meaningful way; fall back to
    // time-derived bytes rather than crash, since ids only need uniqueness.
    if getrandom::fill(&mut bytes).is_err() {
        let t = crate::time::now_ms().to_le_bytes();
        let n = std::process::id().to_le_bytes();
        bytes[..8].copy_from_slice(&t);
        bytes[8..12].copy_from_slice(&n);
    }
    let mut out = String::with_capacity(prefix.len() + 33);
    out.push_str(prefix);
    out.push('_');
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A Checkout Session id has the shape `cs_<letters, digits, underscores>`.
/// Checked before any lookup so nothing else reaches the store, Stripe or a page.
pub fn is_session_id(s: &str) -> bool {
    s.len() > 3
        && s.len() <= 255
        && s.starts_with("cs_")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(State::parse("nope"), None);
    }

    #[test]
    fn session_ids_are_checked() {
        assert!(is_session_id("cs_test_a1Zb2Yc3"));
        assert!(!is_session_id("cs_"));
        assert!(!is_session_id("<script>alert(1)</script>"));
        assert!(!is_session_id("cs_test/../x"));
        assert!(!is_session_id(&format!("cs_{}", "a".repeat(300))));
    }

    #[test]
    fn history_is_bounded_but_keeps_the_first() {
        let mut v = Vec::new();
        for i in 0..(MAX_HISTORY + 10) {
            push_bounded(&mut v, i);
        }
        assert_eq!(v.len(), MAX_HISTORY);
        assert_eq!(v[0], 0);
        assert_eq!(*v.last().unwrap(), MAX_HISTORY + 9);
    }

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = new_id("ful");
        assert!(a.starts_with("ful_") && a.len() == 36);
        assert_ne!(a, new_id("ful"));
    }
}
