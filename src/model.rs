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

/// A claim on a session: held by one attempt of one process (`owner` is its
/// boot id; `seq` numbers the session's claims) until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until_ms: u64,
    /// The session's claim number when this lease was taken: an attempt holds
    /// the claim only while the lease still carries its number.
    #[serde(default)]
    pub seq: u64,
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
    /// Claims ever taken on the session (numbers `Lease::seq`).
    #[serde(default)]
    pub claims: u64,
    /// Fulfillments ever recorded, forced ones included: the next one's
    /// sequence number, from which its id is derived.
    #[serde(default)]
    pub fulfillments: u32,
    /// An event or an earlier read said the session was paid, so a fresh read
    /// that says unpaid is likely stale and is re-checked soon.
    #[serde(default)]
    pub expect_paid: bool,
    /// A person forced a re-fulfillment that is not recorded yet: the
    /// attempt that records it (maybe a retry) marks it forced.
    #[serde(default)]
    pub refulfil_pending: bool,
    #[serde(default)]
    pub refulfil_actor: Option<String>,
    /// Checkout's `mode`: `payment`, `subscription` or `setup`.
    #[serde(default)]
    pub mode: Option<String>,
    /// The connected account the session belongs to (Stripe Connect): every
    /// call to Stripe about it carries `Stripe-Account`.
    #[serde(default)]
    pub account: Option<String>,
    /// The subscription a `subscription`-mode session created.
    #[serde(default)]
    pub subscription: Option<String>,
    /// Refunded so far, in the charge's minor units (Stripe's
    /// `charge.amount_refunded`, as of `refund_as_of`).
    #[serde(default)]
    pub amount_refunded: i64,
    /// The charge's `amount`, once a charge event named it.
    #[serde(default)]
    pub charge_amount: Option<i64>,
    /// The charge said `refunded: true` (fully refunded).
    #[serde(default)]
    pub refunded_fully: bool,
    /// Stripe's `created` of the event the refund figures come from: an
    /// older event arriving later does not undo a newer one.
    #[serde(default)]
    pub refund_as_of: i64,
    /// Refund changes recorded: numbers the `checkout.refunded` callbacks.
    #[serde(default)]
    pub refund_changes: u32,
    /// The payment's dispute, as the newest dispute event described it.
    #[serde(default)]
    pub dispute: Option<DisputeRecord>,
    #[serde(default)]
    pub dispute_as_of: i64,
    /// For the list: who bought (the name they gave Checkout), what (the
    /// first line item's description) and how many line items in all.
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub first_item: Option<String>,
    #[serde(default)]
    pub item_count: u32,
    /// The words of the other line items' descriptions (lowercased, each
    /// once, at most `MAX_OTHER_ITEM_WORDS`), so a search finds an order by
    /// any item it holds, not only the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_item_words: Option<String>,
    /// Checkout's `locale` (`auto`, `de`, `fr-CA`…): the customer's pages
    /// speak it when they can.
    #[serde(default)]
    pub locale: Option<String>,
    /// An email, alert or callback about the session that could not be
    /// delivered (its kind): shown on the list so a bounced receipt does
    /// not hide behind a green "fulfilled". Cleared when it is sent.
    #[serde(default)]
    pub undelivered: Option<NotificationKind>,
}

/// Words indexed per session for search (`SessionRecord::search_words`).
pub const MAX_SEARCH_WORDS: usize = 24;
/// Words kept from the line items after the first (`other_item_words`).
pub const MAX_OTHER_ITEM_WORDS: usize = 8;

/// The words of `text` a search matches: split at anything not a letter or
/// digit, lowercased, 2 to 40 characters.
fn words_of(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| (2..=40).contains(&w.chars().count()))
}

/// `other_item_words` for a session whose line items have these descriptions.
pub fn other_item_words<'a>(descriptions: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    for w in descriptions.flat_map(words_of) {
        if words.len() == MAX_OTHER_ITEM_WORDS {
            break;
        }
        if !words.contains(&w) {
            words.push(w);
        }
    }
    (!words.is_empty()).then(|| words.join(" "))
}

/// How much of a session's payment was refunded (CONTRACT.md "After the sale").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    None,
    Partial,
    Full,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 3] = [
        RefundStatus::None,
        RefundStatus::Partial,
        RefundStatus::Full,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::None => "none",
            RefundStatus::Partial => "partial",
            RefundStatus::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<RefundStatus> {
        RefundStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A dispute (chargeback) on a session's payment, as Stripe described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeRecord {
    /// `dp_…`
    pub id: String,
    /// Stripe's status: `needs_response`, `under_review`, `won`, `lost`, …
    pub status: String,
    /// Stripe's reason: `fraudulent`, `product_not_received`, …
    pub reason: String,
    /// Disputed amount, in minor units of `currency`.
    pub amount: i64,
    pub currency: Option<String>,
    /// The evidence deadline, Unix seconds UTC.
    pub evidence_due_by: Option<i64>,
}

impl DisputeRecord {
    /// Still open: the merchant may still respond or wait for the outcome.
    pub fn is_open(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "won" | "lost" | "warning_closed" | "prevented"
        )
    }
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
            claims: 0,
            fulfillments: 0,
            expect_paid: false,
            refulfil_pending: false,
            refulfil_actor: None,
            mode: None,
            account: None,
            subscription: None,
            amount_refunded: 0,
            charge_amount: None,
            refunded_fully: false,
            refund_as_of: 0,
            refund_changes: 0,
            dispute: None,
            dispute_as_of: 0,
            customer_name: None,
            first_item: None,
            item_count: 0,
            other_item_words: None,
            locale: None,
            undelivered: None,
        }
    }

    /// `none`, `partial` or `full`: full when the charge says so, or the
    /// refunded amount reaches the charge's (else the session's) total.
    pub fn refund_status(&self) -> RefundStatus {
        if self.amount_refunded <= 0 {
            return RefundStatus::None;
        }
        let total = self.charge_amount.or(self.amount_total);
        if self.refunded_fully || total.is_some_and(|t| self.amount_refunded >= t) {
            RefundStatus::Full
        } else {
            RefundStatus::Partial
        }
    }

    pub fn disputed(&self) -> bool {
        self.dispute.is_some()
    }

    /// The words a search finds the session by: those of the customer's
    /// name, their email (both halves) and the line items, lowercased, at
    /// most `MAX_SEARCH_WORDS` of 2 to 40 characters.
    pub fn search_words(&self) -> Vec<String> {
        let sources = [
            self.customer_name.as_deref(),
            self.customer_email.as_deref(),
            self.first_item.as_deref(),
            self.other_item_words.as_deref(),
        ];
        let mut words: Vec<String> = Vec::new();
        for w in sources.into_iter().flatten().flat_map(words_of) {
            if words.len() == MAX_SEARCH_WORDS {
                break;
            }
            if !words.contains(&w) {
                words.push(w);
            }
        }
        words
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
    /// The price's product (`prod_…`), which digital delivery matches on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
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
    /// The notification kind (`checkout.fulfilled`, `email.receipt`, …).
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
    /// Refunds that failed or were canceled, already taken off `amount_refunded`.
    #[serde(default)]
    pub reversed_refunds: Vec<String>,
    /// The Checkout Session as last retrieved, with every line item. Stored
    /// apart from the rest (it is large and changes only with a read): set
    /// when a read brought it, and loaded only by the views that show it;
    /// a session written with `None` keeps the stored one.
    #[serde(skip)]
    pub raw: Option<serde_json::Value>,
}

/// Something a fulfilled session hands the customer: a file to download or
/// a license key (CONTRACT.md "Digital delivery").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `gr_1`, `gr_2`, … in the order the line items earned them.
    pub id: String,
    pub line_item: String,
    /// The entry that matched: `prod_…` or `price_…`.
    pub product: String,
    pub what: Granted,
    /// Downloads counted so far (a resumed download counts once).
    pub downloads: u32,
    pub max_downloads: u32,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub revoked_at_ms: Option<u64>,
    /// Bumped when fresh links are sent: a link carries the generation it
    /// was issued with.
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Granted {
    /// A file, by its name relative to `delivery.files_dir`.
    File { name: String },
    /// A key from the pool (the key file's name); `None` while the pool is empty.
    LicenseKey { pool: String, key: Option<String> },
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

/// The two kinds of job, each with worker slots of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Fulfill,
    Deliver,
}

impl JobKind {
    pub const ALL: [JobKind; 2] = [JobKind::Fulfill, JobKind::Deliver];

    /// How the keys of this kind's jobs start.
    pub fn key_prefix(self) -> &'static str {
        match self {
            JobKind::Fulfill => "fulfill:",
            JobKind::Deliver => "deliver:",
        }
    }
}

impl Job {
    pub fn kind(&self) -> JobKind {
        match self {
            Job::Fulfill { .. } => JobKind::Fulfill,
            Job::Deliver { .. } => JobKind::Deliver,
        }
    }
}

/// The queue key of a session's fulfill job.
pub fn fulfill_key(session_id: &str) -> String {
    format!("fulfill:{session_id}")
}

/// One entry of the durable outbox: a merchant callback, an email or an
/// alert, recorded before it is sent. A fulfillment callback's id is the
/// fulfillment id (its `webhook-id`); every other entry's id is derived from
/// its kind and the session (`notification_id`), so each session gets at
/// most one of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub session_id: String,
    pub kind: NotificationKind,
    /// The callback body; for emails and alerts, extra facts to render
    /// (e.g. the last error of a stuck fulfillment) as JSON.
    pub body: String,
    pub status: OutboxStatus,
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

/// Where an outbox entry stands. Stored and shown by these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Queued,
    Sent,
    Retrying,
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Queued => "queued",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Retrying => "retrying",
            OutboxStatus::Failed => "failed",
        }
    }

    /// Settled: nothing more will be sent unless a person asks.
    pub fn is_final(self) -> bool {
        matches!(self, OutboxStatus::Sent | OutboxStatus::Failed)
    }
}

impl std::fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What fulfilld sends: merchant callbacks, emails and alerts. Stored and
/// shown by the names `as_str` gives (callbacks by their `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotificationKind {
    /// `checkout.fulfilled` to `fulfillment.callback_url`.
    #[serde(rename = "checkout.fulfilled")]
    FulfilledCallback,
    /// `checkout.payment_failed` to `fulfillment.callback_url`.
    #[serde(rename = "checkout.payment_failed")]
    PaymentFailedCallback,
    /// To the customer: the delayed payment failed, how to pay again.
    #[serde(rename = "email.payment_failed")]
    PaymentFailedEmail,
    /// To the merchant: a customer's delayed payment failed.
    #[serde(rename = "email.merchant.payment_failed")]
    PaymentFailedMerchantEmail,
    #[serde(rename = "alert.payment_failed")]
    PaymentFailedAlert,
    /// To the customer, on fulfillment (`fulfillment.receipt_email`).
    #[serde(rename = "email.receipt")]
    ReceiptEmail,
    /// To the merchant: fulfillment gave up (`failed`).
    #[serde(rename = "email.merchant.stuck")]
    StuckMerchantEmail,
    #[serde(rename = "alert.stuck")]
    StuckAlert,
    /// `checkout.refunded` to `fulfillment.callback_url`: once per refund change.
    #[serde(rename = "checkout.refunded")]
    RefundedCallback,
    /// `checkout.dispute_opened` / `checkout.dispute_closed`: once per dispute each.
    #[serde(rename = "checkout.dispute_opened")]
    DisputeOpenedCallback,
    #[serde(rename = "checkout.dispute_closed")]
    DisputeClosedCallback,
    /// To the merchant: a customer disputed the payment (with the deadline).
    #[serde(rename = "email.merchant.dispute")]
    DisputeMerchantEmail,
    #[serde(rename = "alert.dispute")]
    DisputeAlert,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 13] = [
        NotificationKind::FulfilledCallback,
        NotificationKind::PaymentFailedCallback,
        NotificationKind::PaymentFailedEmail,
        NotificationKind::PaymentFailedMerchantEmail,
        NotificationKind::PaymentFailedAlert,
        NotificationKind::ReceiptEmail,
        NotificationKind::StuckMerchantEmail,
        NotificationKind::StuckAlert,
        NotificationKind::RefundedCallback,
        NotificationKind::DisputeOpenedCallback,
        NotificationKind::DisputeClosedCallback,
        NotificationKind::DisputeMerchantEmail,
        NotificationKind::DisputeAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::FulfilledCallback => "checkout.fulfilled",
            NotificationKind::PaymentFailedCallback => "checkout.payment_failed",
            NotificationKind::PaymentFailedEmail => "email.payment_failed",
            NotificationKind::PaymentFailedMerchantEmail => "email.merchant.payment_failed",
            NotificationKind::PaymentFailedAlert => "alert.payment_failed",
            NotificationKind::ReceiptEmail => "email.receipt",
            NotificationKind::StuckMerchantEmail => "email.merchant.stuck",
            NotificationKind::StuckAlert => "alert.stuck",
            NotificationKind::RefundedCallback => "checkout.refunded",
            NotificationKind::DisputeOpenedCallback => "checkout.dispute_opened",
            NotificationKind::DisputeClosedCallback => "checkout.dispute_closed",
            NotificationKind::DisputeMerchantEmail => "email.merchant.dispute",
            NotificationKind::DisputeAlert => "alert.dispute",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationKind> {
        NotificationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A signed POST to the merchant's `fulfillment.callback_url`.
    pub fn is_callback(self) -> bool {
        matches!(
            self,
            NotificationKind::FulfilledCallback
                | NotificationKind::PaymentFailedCallback
                | NotificationKind::RefundedCallback
                | NotificationKind::DisputeOpenedCallback
                | NotificationKind::DisputeClosedCallback
        )
    }

    /// Sent as an alert to `notifications.webhook_url`.
    pub fn is_alert(self) -> bool {
        matches!(
            self,
            NotificationKind::PaymentFailedAlert
                | NotificationKind::StuckAlert
                | NotificationKind::DisputeAlert
        )
    }
}

/// The outbox id of a session's entry of `kind` (other than a fulfillment
/// callback): the same on every redelivery, landing-page hit, retry or
/// restore from a backup, so it is created once.
pub fn notification_id(kind: NotificationKind, session_id: &str) -> String {
    format!("ntf_{}_{session_id}", kind.as_str().replace('.', "_"))
}

/// The outbox id of an entry of `kind` that a session may get more than
/// once, one per `change` (a refund change's number, a dispute's id):
/// derived, so a redelivery or a second event about the same change makes
/// no second entry.
pub fn notification_id_of(kind: NotificationKind, session_id: &str, change: &str) -> String {
    format!("{}_{change}", notification_id(kind, session_id))
}

/// The operating system's random number generator failed: nothing secret
/// can be made without it.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RngError(getrandom::Error);

/// 128 random bits from the OS, as hex.
pub fn random_hex() -> Result<String, RngError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(RngError)?;
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// A random identifier with a prefix, e.g. `boot_3f9c…` (128 bits). Fails
/// rather than make a guessable one when the OS RNG fails.
pub fn new_id(prefix: &str) -> Result<String, RngError> {
    Ok(format!("{prefix}_{}", random_hex()?))
}

/// A Checkout Session id, checked once at the edge (`parse`), so nothing
/// malformed reaches the store, Stripe or a page.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(s: &str) -> Option<SessionId> {
        is_session_id(s).then(|| SessionId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
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
    fn search_words_cover_every_item_each_word_once_within_the_caps() {
        let mut rec = SessionRecord::new("cs_test_w", 0, 0);
        rec.customer_name = Some("Lucía Fernández".into());
        rec.customer_email = Some("lucia@example.com".into());
        rec.first_item = Some("Pour-over dripper".into());
        rec.other_item_words =
            other_item_words(["Paper filters, pack of 100", "A dripper stand"].into_iter());
        assert_eq!(
            rec.other_item_words.as_deref(),
            Some("paper filters pack of 100 dripper stand"),
            "one-letter words dropped, each word once"
        );
        let words = rec.search_words();
        for w in ["lucía", "fernández", "example", "pour", "filters", "stand"] {
            assert!(words.iter().any(|x| x == w), "{w} in {words:?}");
        }
        assert_eq!(
            words.iter().filter(|w| *w == "dripper").count(),
            1,
            "{words:?}"
        );
        let long: Vec<String> = (0..50).map(|i| format!("word{i}")).collect();
        let many = other_item_words(long.iter().map(String::as_str));
        assert_eq!(
            many.as_deref().map(|w| w.split(' ').count()),
            Some(MAX_OTHER_ITEM_WORDS)
        );
        rec.customer_name = Some(long.join(" "));
        assert_eq!(rec.search_words().len(), MAX_SEARCH_WORDS);
        assert_eq!(other_item_words(["", "—"].into_iter()), None);
    }

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
        let a = new_id("ful").unwrap();
        assert!(a.starts_with("ful_") && a.len() == 36);
        assert_ne!(a, new_id("ful").unwrap());
    }
}
