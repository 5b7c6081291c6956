//! The session page: what was bought, the payment, and one timeline of
//! events, attempts, fulfillments and deliveries, with the actions that
//! can succeed.

use std::collections::HashMap;

use maud::{Markup, html};

use super::*;
use crate::{
    model::{
        EventRecord, Notification, NotificationKind, OutboxStatus, SessionDetail, SessionRecord,
        State,
    },
    money,
    stripe::links as stripe_links,
    time::{display_ms, display_secs},
};

/// The outcome of a re-trigger, shown after the redirect (`?result=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flash {
    Fulfilled,
    Forced,
    AlreadyFulfilled,
    /// A second submit of one force form: the first already forced.
    AlreadyForced,
    Unpaid,
    Retrying,
    Failed,
    Pending,
    PaymentFailed,
    Expired,
    Error,
    Resent,
    NotResent,
}

impl Flash {
    pub const ALL: [Flash; 13] = [
        Flash::Fulfilled,
        Flash::Forced,
        Flash::AlreadyFulfilled,
        Flash::AlreadyForced,
        Flash::Unpaid,
        Flash::Retrying,
        Flash::Failed,
        Flash::Pending,
        Flash::PaymentFailed,
        Flash::Expired,
        Flash::Error,
        Flash::Resent,
        Flash::NotResent,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Flash::Fulfilled => "fulfilled",
            Flash::Forced => "forced",
            Flash::AlreadyFulfilled => "already_fulfilled",
            Flash::AlreadyForced => "already_forced",
            Flash::Unpaid => "unpaid",
            Flash::Retrying => "retrying",
            Flash::Failed => "failed",
            Flash::Pending => "pending",
            Flash::PaymentFailed => "payment_failed",
            Flash::Expired => "expired",
            Flash::Error => "error",
            Flash::Resent => "resent",
            Flash::NotResent => "not_resent",
        }
    }

    pub fn parse(s: &str) -> Option<Flash> {
        Flash::ALL.into_iter().find(|f| f.code() == s)
    }

    fn message(self) -> (&'static str, &'static str) {
        match self {
            Flash::Fulfilled => (
                "ok",
                "Fulfilled: one fulfillment was recorded and sent on to your callback, if one is set.",
            ),
            Flash::Forced => (
                "ok",
                "Re-fulfilled. A new, forced fulfillment was recorded in your name.",
            ),
            Flash::AlreadyForced => (
                "wait",
                "Already done: this re-fulfillment was recorded by an earlier submit of the same form, so nothing more was sent.",
            ),
            Flash::AlreadyFulfilled => (
                "wait",
                "Already fulfilled, so nothing was done. Use “Force re-fulfill” to send it again.",
            ),
            Flash::Unpaid => (
                "wait",
                "Stripe says this session is not paid yet, so it was not fulfilled.",
            ),
            Flash::Retrying => (
                "bad",
                "The attempt failed; another one is scheduled. See the timeline for the error.",
            ),
            Flash::Failed => ("bad", "The attempt failed. See the timeline for the error."),
            Flash::Pending => (
                "wait",
                "Still working on it: the attempt is taking a while. Reload to see its outcome.",
            ),
            Flash::PaymentFailed => (
                "bad",
                "The payment failed, so the session was not fulfilled.",
            ),
            Flash::Expired => (
                "bad",
                "This session expired without payment, so it was not fulfilled.",
            ),
            Flash::Error => (
                "bad",
                "The attempt could not be recorded (database unavailable). Nothing was sent; try again.",
            ),
            Flash::Resent => (
                "ok",
                "Queued again: it is being sent now. Its status shows how it went.",
            ),
            Flash::NotResent => ("wait", "Nothing to resend: it is no longer marked failed."),
        }
    }
}

/// What the session page shows.
pub struct DetailView<'a> {
    pub rec: &'a SessionRecord,
    pub detail: &'a SessionDetail,
    /// Stored records of the session's events (for delivery counts).
    pub events: &'a HashMap<String, EventRecord>,
    pub notifications: &'a [Notification],
    pub flash: Option<Flash>,
}

/// One line of the timeline.
struct Moment {
    at_ms: u64,
    tone: &'static str,
    icon: &'static str,
    title: String,
    lines: Vec<String>,
}

fn timeline(v: &DetailView<'_>) -> Vec<Moment> {
    let d = v.detail;
    let mut out = Vec::new();
    for e in &d.events {
        let deliveries = v.events.get(&e.id).map(|r| r.deliveries).unwrap_or(1);
        let mut lines = vec![format!("event {}", e.id)];
        if deliveries > 1 {
            lines.push(format!(
                "delivered {deliveries} times by Stripe (redeliveries changed nothing)"
            ));
        }
        // A dispute wants the merchant's attention; a refund is news.
        let tone = if e.kind.starts_with("charge.dispute.") {
            "bad"
        } else if e.kind.starts_with("charge.refund") {
            "wait"
        } else {
            "info"
        };
        out.push(Moment {
            at_ms: e.received_at_ms,
            tone,
            icon: "event",
            title: format!("Stripe event {}", e.kind),
            lines,
        });
    }
    // A fulfillment callback is sent by the attempt that recorded the
    // fulfillment: its tries are shown inside that attempt's entry (the
    // first attempt at or after them), so a failing callback reads as one
    // attempt with its tries, not as a dozen entries around a "Fulfilled".
    let callback_kind = NotificationKind::FulfilledCallback.as_str();
    let mut callbacks: Vec<&crate::model::DeliveryAttempt> = d
        .deliveries
        .iter()
        .filter(|c| c.kind == callback_kind)
        .collect();
    callbacks.sort_by_key(|c| c.at_ms);
    let mut next_callback = 0;
    for a in &d.attempts {
        let tone = match a.outcome.as_str() {
            "fulfilled" => "ok",
            "retrying" | "failed" => "bad",
            _ => "wait",
        };
        let mut lines = Vec::new();
        while let Some(c) = callbacks.get(next_callback).filter(|c| c.at_ms <= a.at_ms) {
            lines.push(format!(
                "callback {} → {}{}",
                c.webhook_id,
                c.status_code
                    .map(|s| format!("HTTP {s}"))
                    .unwrap_or_else(|| "no answer".into()),
                c.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
            next_callback += 1;
        }
        if let Some(err) = &a.error {
            lines.push(err.clone());
        }
        out.push(Moment {
            at_ms: a.at_ms,
            tone,
            icon: "attempt",
            title: format!(
                "Fulfillment attempt ({}) → {}",
                a.trigger.as_str(),
                state_words(State::parse(&a.outcome).unwrap_or(State::Fulfilling)).to_lowercase()
            ),
            lines,
        });
    }
    for f in &d.fulfillments {
        let mut lines = vec![format!("fulfillment {}", f.id)];
        if let Some(actor) = &f.actor {
            lines.push(format!("by {actor}"));
        }
        if f.delivered_at_ms.is_none() {
            lines.push("its callback is not acknowledged yet".into());
        }
        out.push(Moment {
            at_ms: f.at_ms,
            // Green only once the merchant has it: until then it is news, not done.
            tone: if f.delivered_at_ms.is_some() {
                "ok"
            } else {
                "info"
            },
            icon: "check",
            title: if f.forced {
                format!("Forced fulfillment recorded ({})", f.trigger.as_str())
            } else {
                format!("Fulfillment recorded ({})", f.trigger.as_str())
            },
            lines,
        });
    }
    // Callback tries after the last attempt (one still under way), and
    // every other delivery: emails, alerts, other callbacks.
    let rest = callbacks[next_callback..]
        .iter()
        .copied()
        .chain(d.deliveries.iter().filter(|c| c.kind != callback_kind));
    for c in rest {
        // Emails and alerts are judged by their error, callbacks by their status code.
        let outbox = crate::model::NotificationKind::parse(&c.kind).filter(|k| !k.is_callback());
        let ok = match outbox {
            Some(_) => c.error.is_none(),
            None => c.status_code.is_some_and(|s| (200..300).contains(&s)),
        };
        let mut lines = vec![match outbox {
            Some(_) => format!("outbox entry {}", c.webhook_id),
            None => format!("webhook-id {}", c.webhook_id),
        }];
        if let Some(err) = &c.error {
            lines.push(err.clone());
        }
        let title = match outbox {
            Some(k) if k.is_alert() => format!(
                "Alert {} → {}",
                c.kind,
                if ok { "delivered" } else { "not delivered" }
            ),
            Some(_) => format!(
                "Email {} → {}",
                c.kind,
                if ok { "sent" } else { "not sent" }
            ),
            None => format!(
                "Callback {} → {}",
                c.kind,
                c.status_code
                    .map(|s| format!("HTTP {s}"))
                    .unwrap_or_else(|| "no answer".into())
            ),
        };
        out.push(Moment {
            at_ms: c.at_ms,
            tone: if ok { "ok" } else { "bad" },
            icon: "send",
            title,
            lines,
        });
    }
    // In time order; at the same millisecond the attempt, which says where
    // the session ended up, comes last (the sort is stable otherwise).
    out.sort_by_key(|m| (m.at_ms, m.icon == "attempt"));
    out
}

pub fn detail(chrome: &Chrome<'_>, v: &DetailView<'_>) -> Markup {
    let rec = v.rec;
    let d = v.detail;
    let currency = rec.currency.clone().unwrap_or_else(|| "usd".into());
    let fulfilled = rec.state == State::Fulfilled || !d.fulfillments.is_empty();
    let action = format!("/admin/sessions/{}/fulfill", rec.id);
    let raw = d
        .raw
        .as_ref()
        .and_then(|r| serde_json::to_string_pretty(r).ok());
    admin_page(
        &format!("Session {}", short_id(&rec.id)),
        chrome,
        html! {
            p class="crumbs" { a href="/admin" { "← Sessions" } }
            @if let Some(f) = v.flash {
                @let (tone, text) = f.message();
                div class={ "flash flash-" (tone) } id="flash" role="status" data-result=(f.code()) { (text) }
            }
            div class="page-head" {
                div {
                    h1 class="mono break" { (rec.id) }
                    p class="muted" { "Created " (display_secs(rec.created)) " · updated " (display_ms(rec.updated_at_ms)) }
                }
                div class="badges" {
                    span id="session-state" class={ "badge badge-" (tone(rec.state)) } data-state=(rec.state.as_str()) { (state_words(rec.state)) }
                    (after_sale_badges(rec))
                    (mode_badge(rec.livemode))
                }
            }
            div class="cols" {
                section class="panel" {
                    h2 { "Summary" }
                    dl class="facts" {
                        dt { "Amount" } dd { strong { (amount(rec)) } }
                        dt { "Payment" } dd { (payment_badge(rec.payment_status.as_deref())) }
                        dt { "Checkout status" } dd { (rec.status.as_deref().unwrap_or("—")) }
                        dt { "Customer" } dd class="break" { (rec.customer_email.as_deref().unwrap_or("—")) }
                        dt { "Payment intent" } dd class="mono break" {
                            @match (rec.payment_intent.as_deref(), stripe_links::payment(rec)) {
                                (Some(pi), Some(url)) => a href=(url) target="_blank" rel="noopener noreferrer" id="stripe-payment" { (pi) " ↗" },
                                (Some(pi), None) => (pi),
                                (None, _) => "—",
                            }
                        }
                        dt { "Mode" } dd { (rec.mode.as_deref().unwrap_or("—")) }
                        @if let Some(sub) = &rec.subscription {
                            dt { "Subscription" } dd class="mono break" {
                                @match stripe_links::subscription(rec) {
                                    Some(url) => a href=(url) target="_blank" rel="noopener noreferrer" { (sub) " ↗" },
                                    None => (sub),
                                }
                            }
                        }
                        @if let Some(acct) = &rec.account {
                            dt { "Connected account" } dd class="mono break" { (acct) }
                        }
                        dt { "In Stripe" } dd { a href=(stripe_links::session(rec)) target="_blank" rel="noopener noreferrer" id="stripe-session" { "Open in Stripe's Dashboard ↗" } }
                        @if let Some(err) = &rec.last_error {
                            dt { "Last error" } dd class="bad-text break" { (err) }
                        }
                        @if let (State::Retrying, Some(r)) = (rec.state, &rec.retry) {
                            dt { "Next attempt" } dd { (display_ms(r.next_at_ms)) " (" (r.failures) " failed so far)" }
                        }
                    }
                }
                section class="panel actions" {
                    h2 { "Fulfillment" }
                    @if !fulfilled && matches!(rec.state, State::PaymentFailed | State::Expired) {
                        // Nothing to fulfil unless Stripe now says otherwise: no primary action.
                        p class="muted" {
                            @if rec.state == State::PaymentFailed { "The payment failed, so there is nothing to fulfil." }
                            @else { "The checkout expired unpaid, so there is nothing to fulfil." }
                            " If the customer paid after all, ask Stripe again: a paid session is then fulfilled once."
                        }
                        form method="post" action=(action) id="fulfill-now" {
                            input type="hidden" name="csrf" value=(chrome.csrf);
                            button type="submit" class="small-button" { "Check with Stripe again" }
                        }
                    } @else if !fulfilled {
                        p class="muted" { "Runs the same exactly-once fulfillment as a webhook would: a fresh look at Stripe, then at most one fulfillment." }
                        form method="post" action=(action) id="fulfill-now" {
                            input type="hidden" name="csrf" value=(chrome.csrf);
                            button type="submit" class="primary" { (icon("bolt")) "Fulfill now" }
                        }
                    } @else {
                        p { (d.fulfillments.len()) " fulfillment" @if d.fulfillments.len() != 1 { "s" } " recorded." }
                        details class="danger" {
                            summary { "Force re-fulfill…" }
                            form method="post" action=(action) id="force-fulfill" data-confirm="Send this order to fulfillment again?" {
                                input type="hidden" name="csrf" value=(chrome.csrf);
                                input type="hidden" name="force" value="true";
                                // The count this page shows: the server forces only if it
                                // is still the count, so a double submit forces once.
                                input type="hidden" name="seen" value=(rec.fulfillments);
                                p class="small" { "This records a second fulfillment in your name and calls your callback again with a new webhook-id. Use it only if the first one was lost on your side." }
                                label class="check" {
                                    input type="checkbox" name="confirm" value="yes" required;
                                    " I understand the order will be fulfilled again"
                                }
                                button type="submit" class="danger" { "Force re-fulfill" }
                            }
                        }
                    }
                    @if !v.notifications.is_empty() {
                        h3 { "Notifications" }
                        ul class="plain" id="notifications" {
                            @for n in v.notifications {
                                li data-kind=(n.kind) {
                                    code { (n.kind) } " "
                                    span class={ "pill pill-" (notification_tone(n.status)) } { (n.status) }
                                    @if let Some(to) = n.recipient.as_deref().filter(|r| *r != "webhook") {
                                        div class="small muted break" { "to " (to) }
                                    }
                                    @if n.attempts > 1 { div class="small muted" { (n.attempts) " attempts" } }
                                    @if let (Some(err), false) = (&n.last_error, n.status == OutboxStatus::Sent) {
                                        div class="small bad-text break" { (err) }
                                    }
                                    @if n.status == OutboxStatus::Failed && n.kind != NotificationKind::FulfilledCallback {
                                        form method="post" action=(format!("/admin/sessions/{}/notifications/{}/resend", rec.id, n.id)) class="resend" {
                                            input type="hidden" name="csrf" value=(chrome.csrf);
                                            button type="submit" class="small-button" { "Resend" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if rec.amount_refunded > 0 || rec.dispute.is_some() {
                (after_the_sale(rec))
            }
            section class="panel" {
                h2 { "Line items " span class="muted" { "(" (d.line_items.len()) ")" } }
                @if d.line_items.is_empty() {
                    p class="muted" {
                        @match rec.state {
                            State::PaymentFailed | State::Expired => "None recorded: they are fetched from Stripe only for a session that is paid.",
                            _ => "Not retrieved from Stripe yet: they are fetched when the session is fulfilled.",
                        }
                    }
                } @else {
                    div class="table-wrap" {
                        table class="grid" id="line-items" {
                            thead { tr { th { "Description" } th class="num" { "Qty" } th class="num hide-sm" { "Unit" } th class="num" { "Amount" } th class="hide-sm" { "Price" } } }
                            tbody {
                                @for item in &d.line_items {
                                    @let cur = item.currency.as_deref().unwrap_or(&currency);
                                    tr {
                                        td { (item.description.as_deref().unwrap_or("—")) }
                                        td class="num" { (item.quantity.unwrap_or(1)) }
                                        td class="num hide-sm" { (item.unit_amount.map(|u| money::format(u, cur)).unwrap_or_default()) }
                                        td class="num nowrap" { (money::format(item.amount_total, cur)) }
                                        td class="hide-sm mono muted" { (item.price_id.as_deref().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section class="panel" {
                h2 { "Timeline" }
                ol class="timeline" id="timeline" {
                    @for m in timeline(v) {
                        li class={ "tl tl-" (m.tone) } {
                            span class="tl-dot" { (icon(m.icon)) }
                            div {
                                div { strong { (m.title) } }
                                div class="muted small" { (display_ms(m.at_ms)) }
                                @for line in &m.lines { div class="small break" { (line) } }
                            }
                        }
                    }
                }
            }
            @if let Some(raw) = raw {
                details class="panel raw" {
                    summary { "Checkout Session as last retrieved from Stripe (JSON)" }
                    pre { code { (raw) } }
                }
            }
        },
    )
}

/// Refunds and the dispute, with what the merchant has to do about a dispute.
fn after_the_sale(rec: &SessionRecord) -> Markup {
    let currency = rec.currency.as_deref().unwrap_or("usd");
    let total = rec.charge_amount.or(rec.amount_total);
    html! {
        section class="panel" id="after-sale" {
            h2 { "After the sale" }
            dl class="facts" {
                @if rec.amount_refunded > 0 {
                    dt { "Refunded" } dd id="refunded" {
                        strong { (money::format(rec.amount_refunded, currency)) }
                        @if let Some(t) = total { " of " (money::format(t, currency)) }
                        " (" (rec.refund_status().as_str()) ")"
                    }
                }
                @if let Some(d) = &rec.dispute {
                    dt { "Dispute" } dd id="dispute" {
                        span class={ "badge badge-" (if d.status == "won" { "ok" } else if d.is_open() || d.status == "lost" { "bad" } else { "off" }) } { (d.status.replace('_', " ")) }
                        " " (money::format(d.amount, d.currency.as_deref().unwrap_or(currency)))
                        div class="small" { "Reason: " (crate::views::dispute_reason(&d.reason)) }
                        @if d.is_open() {
                            @if let Some(due) = d.evidence_due_by {
                                div class="small bad-text" { "Evidence due by " strong { (crate::time::display_deadline(due)) } ". After it, the dispute is lost." }
                            }
                            @if let Some(url) = stripe_links::payment(rec) {
                                div { a href=(url) target="_blank" rel="noopener noreferrer" id="respond-in-stripe" { "Respond in Stripe's Dashboard ↗" } }
                            }
                        }
                        div class="small muted mono" { (d.id) }
                    }
                }
            }
            p class="small muted" { "A refund or dispute does not undo the fulfillment: what to take back is yours to decide. Your callback hears of each change." }
        }
    }
}

fn notification_tone(status: OutboxStatus) -> &'static str {
    match status {
        OutboxStatus::Sent => "ok",
        OutboxStatus::Queued | OutboxStatus::Retrying => "wait",
        OutboxStatus::Failed => "bad",
    }
}
