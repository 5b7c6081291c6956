//! The admin dashboard's pages. Every string from Stripe, a customer or a
//! request is interpolated through maud, which escapes it; URLs built here
//! percent-encode their parameters.

use std::collections::HashMap;

use maud::{DOCTYPE, Markup, html};

use crate::{
    model::{
        EventRecord, Notification, NotificationKind, OutboxStatus, SessionDetail, SessionRecord,
        State,
    },
    money,
    signature::Rejection,
    time::{display_ms, display_secs},
    webhook_log::{Entry, Filter, Outcome, Refusal},
};

/// Which section of the dashboard a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Sessions,
    Webhooks,
}

/// What every signed-in page needs: who is signed in, and the CSRF token
/// for the logout form.
pub struct Chrome<'a> {
    pub username: &'a str,
    pub csrf: &'a str,
    pub nav: Nav,
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An icon from `assets/icons/` (plain images, so the CSP needs no inline SVG).
fn icon(name: &str) -> Markup {
    html! { img class="icon" src=(format!("/assets/icons/{name}.svg")) alt="" width="16" height="16"; }
}

fn frame(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · fulfilld" }
                link rel="stylesheet" href="/assets/app.css";
                link rel="stylesheet" href="/assets/admin.css";
                link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
                script src="/assets/admin.js" defer {}
            }
            body class="admin" { (body) }
        }
    }
}

fn admin_page(title: &str, chrome: &Chrome<'_>, body: Markup) -> Markup {
    let tab = |nav: Nav, href: &str, label: &str| {
        html! {
            a href=(href) class={ "tab" @if chrome.nav == nav { " active" } }
              aria-current=[(chrome.nav == nav).then_some("page")] { (label) }
        }
    };
    frame(
        title,
        html! {
            header class="topbar" {
                a class="brand" href="/admin" { img src="/assets/favicon.svg" alt="fulfilld" width="22" height="22"; span class="name" { "fulfilld" } }
                nav { (tab(Nav::Sessions, "/admin", "Sessions")) (tab(Nav::Webhooks, "/admin/webhooks", "Webhook log")) }
                div class="who" {
                    span class="muted hide-sm" { (chrome.username) }
                    form method="post" action="/admin/logout" class="inline" {
                        input type="hidden" name="csrf" value=(chrome.csrf);
                        button type="submit" class="link" { "Sign out" }
                    }
                }
            }
            main class="wide" { (body) }
        },
    )
}

/// The login form. `message` is one of a fixed set of texts.
pub fn login(message: Option<&str>, next: Option<&str>, username: &str) -> Markup {
    frame(
        "Sign in",
        html! {
            main class="card login" {
                div class="brand big" { img src="/assets/favicon.svg" alt="" width="28" height="28"; "fulfilld" }
                h1 { "Sign in to the dashboard" }
                @if let Some(m) = message { p class="flash flash-bad" role="alert" id="flash" { (m) } }
                form method="post" action="/admin/login" id="login-form" {
                    @if let Some(n) = next { input type="hidden" name="next" value=(n); }
                    label for="username" { "Username" }
                    input id="username" name="username" type="text" autocomplete="username" required value=(username);
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                    button id="login-submit" type="submit" class="primary" { "Sign in" }
                }
            }
        },
    )
}

/// A short error page inside the dashboard frame.
pub fn problem(chrome: &Chrome<'_>, title: &str, text: &str) -> Markup {
    admin_page(
        title,
        chrome,
        html! { section class="panel" { h1 { (title) } p { (text) } p { a href="/admin" { "Back to sessions" } } } },
    )
}

pub fn state_badge(state: State) -> Markup {
    let tone = match state {
        State::Fulfilled => "ok",
        State::AwaitingPayment | State::Fulfilling | State::Retrying => "wait",
        State::Failed | State::PaymentFailed => "bad",
        State::Expired => "off",
    };
    html! { span class={ "badge badge-" (tone) } data-state=(state.as_str()) { (state.as_str()) } }
}

fn payment_badge(status: Option<&str>) -> Markup {
    let status = status.unwrap_or("unknown");
    let tone = match status {
        "paid" | "no_payment_required" => "ok",
        "unpaid" => "wait",
        _ => "off",
    };
    html! { span class={ "pill pill-" (tone) } { (status) } }
}

fn mode_badge(livemode: bool) -> Markup {
    if livemode {
        html! { span class="mode mode-live" { "live" } }
    } else {
        html! { span class="mode mode-test" { "test" } }
    }
}

fn amount(rec: &SessionRecord) -> String {
    match (rec.amount_total, rec.currency.as_deref()) {
        (Some(a), Some(c)) => money::format(a, c),
        _ => "—".into(),
    }
}

/// What the sessions list shows.
pub struct ListView<'a> {
    pub counts: &'a [(State, u64)],
    pub state: Option<State>,
    pub q: Option<&'a str>,
    pub rows: &'a [SessionRecord],
    pub next_cursor: Option<&'a str>,
    pub first_page: bool,
}

fn list_href(state: Option<State>, q: Option<&str>, cursor: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = state {
        parts.push(format!("state={}", s.as_str()));
    }
    if let Some(q) = q {
        parts.push(format!("q={}", enc(q)));
    }
    if let Some(c) = cursor {
        parts.push(format!("cursor={}", enc(c)));
    }
    if parts.is_empty() {
        "/admin".into()
    } else {
        format!("/admin?{}", parts.join("&"))
    }
}

pub fn sessions(chrome: &Chrome<'_>, v: &ListView<'_>) -> Markup {
    let total: u64 = v.counts.iter().map(|(_, n)| n).sum();
    let attention: u64 = v
        .counts
        .iter()
        .filter(|(s, _)| matches!(s, State::Failed))
        .map(|(_, n)| n)
        .sum();
    admin_page(
        "Sessions",
        chrome,
        html! {
            div class="page-head" {
                h1 { "Checkout Sessions" }
                @if attention > 0 {
                    a class="alert-chip" href=(list_href(Some(State::Failed), None, None)) {
                        (icon("alert")) (attention) " need" @if attention == 1 { "s" } " attention"
                    }
                }
            }
            nav class="states" aria-label="Filter by state" {
                a href=(list_href(None, v.q, None)) class={ "state-tab" @if v.state.is_none() { " active" } } {
                    span { "All" } strong { (total) }
                }
                @for (state, n) in v.counts {
                    a href=(list_href(Some(*state), v.q, None))
                      class={ "state-tab tone-" (tone(*state)) @if v.state == Some(*state) { " active" } }
                      data-count=(n) {
                        span { (state.as_str()) } strong { (n) }
                    }
                }
            }
            form method="get" action="/admin" class="search" role="search" {
                @if let Some(s) = v.state { input type="hidden" name="state" value=(s.as_str()); }
                input type="search" name="q" value=(v.q.unwrap_or("")) placeholder="Session id (cs_…), email or payment intent (pi_…)" aria-label="Search";
                button type="submit" { (icon("search")) "Search" }
                @if v.q.is_some() { a class="muted" href=(list_href(v.state, None, None)) { "Clear" } }
            }
            @if v.rows.is_empty() {
                section class="panel empty" {
                    p { @if v.q.is_some() || v.state.is_some() { "No session matches." } @else {
                        "No sessions yet. Point a Stripe webhook endpoint at " code { "/webhook" } " and they will appear here." } }
                }
            } @else {
                div class="table-wrap" {
                    table class="grid" id="sessions" {
                        thead { tr {
                            th class="hide-sm" { "Created" } th { "Session" } th class="hide-sm" { "Customer" }
                            th class="num" { "Amount" } th class="hide-sm" { "Payment" } th { "Fulfillment" }
                        } }
                        tbody {
                            @for rec in v.rows {
                                tr {
                                    td class="nowrap muted hide-sm" { (display_secs(rec.created)) }
                                    td { a class="session-link mono" href=(format!("/admin/sessions/{}", rec.id)) { (short_id(&rec.id)) } " " (mode_badge(rec.livemode)) }
                                    td class="hide-sm ellipsis" { (rec.customer_email.as_deref().unwrap_or("—")) }
                                    td class="num nowrap" { (amount(rec)) }
                                    td class="hide-sm" { (payment_badge(rec.payment_status.as_deref())) }
                                    td { (state_badge(rec.state)) }
                                }
                            }
                        }
                    }
                }
            }
            nav class="pager" {
                @if !v.first_page { a href=(list_href(v.state, v.q, None)) { "← Newest" } }
                @if let Some(c) = v.next_cursor { a id="older" href=(list_href(v.state, v.q, Some(c))) { "Older →" } }
            }
        },
    )
}

fn tone(state: State) -> &'static str {
    match state {
        State::Fulfilled => "ok",
        State::AwaitingPayment | State::Fulfilling | State::Retrying => "wait",
        State::Failed | State::PaymentFailed => "bad",
        State::Expired => "off",
    }
}

/// `cs_test_a1b2…z9`: long ids shortened for tables (the full id is in the link).
fn short_id(id: &str) -> String {
    if id.len() <= 26 {
        return id.to_string();
    }
    format!("{}…{}", &id[..20], &id[id.len() - 4..])
}

/// The outcome of a re-trigger, shown after the redirect (`?result=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flash {
    Fulfilled,
    Forced,
    AlreadyFulfilled,
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
    pub const ALL: [Flash; 12] = [
        Flash::Fulfilled,
        Flash::Forced,
        Flash::AlreadyFulfilled,
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
        out.push(Moment {
            at_ms: e.received_at_ms,
            tone: "info",
            icon: "event",
            title: format!("Stripe event {}", e.kind),
            lines,
        });
    }
    for a in &d.attempts {
        let tone = match a.outcome.as_str() {
            "fulfilled" => "ok",
            "retrying" | "failed" => "bad",
            _ => "wait",
        };
        let mut lines = Vec::new();
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
                a.outcome
            ),
            lines,
        });
    }
    for f in &d.fulfillments {
        let mut lines = vec![format!("fulfillment {}", f.id)];
        if let Some(actor) = &f.actor {
            lines.push(format!("by {actor}"));
        }
        out.push(Moment {
            at_ms: f.at_ms,
            tone: "ok",
            icon: "check",
            title: if f.forced {
                format!("Forced fulfillment recorded ({})", f.trigger.as_str())
            } else {
                format!("Fulfilled ({})", f.trigger.as_str())
            },
            lines,
        });
    }
    for c in &d.deliveries {
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
    out.sort_by_key(|m| m.at_ms);
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
                    span id="session-state" class={ "badge badge-" (tone(rec.state)) } data-state=(rec.state.as_str()) { (rec.state.as_str()) }
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
                        dt { "Payment intent" } dd class="mono break" { (rec.payment_intent.as_deref().unwrap_or("—")) }
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
                    @if !fulfilled {
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
            section class="panel" {
                h2 { "Line items " span class="muted" { "(" (d.line_items.len()) ")" } }
                @if d.line_items.is_empty() {
                    p class="muted" { "Not retrieved from Stripe yet: they are fetched when the session is fulfilled." }
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

fn notification_tone(status: OutboxStatus) -> &'static str {
    match status {
        OutboxStatus::Sent => "ok",
        OutboxStatus::Queued | OutboxStatus::Retrying => "wait",
        OutboxStatus::Failed => "bad",
    }
}

/// What a refusal means, in words a merchant can act on.
pub fn explain(e: &Entry) -> String {
    let Outcome::Refused(r) = &e.outcome else {
        return String::new();
    };
    match r {
        Refusal::Signature(Rejection::MissingHeader) => "No Stripe-Signature header. If Stripe sent this, a proxy or load balancer in front of fulfilld may be stripping the header.".into(),
        Refusal::Signature(Rejection::EmptyPayload) => "The request had an empty body. A proxy may be dropping request bodies.".into(),
        Refusal::Signature(Rejection::MalformedHeader) => "The Stripe-Signature header has no valid timestamp (t=…). The header was altered on the way, or this is not from Stripe.".into(),
        Refusal::Signature(Rejection::NoSignaturesWithExpectedScheme) => "The Stripe-Signature header has no v1 signature. The header was altered on the way, or this is not from Stripe.".into(),
        Refusal::Signature(Rejection::NoMatchingSignature) => format!(
            "None of the {} configured webhook secret{} matches. Check that stripe.webhook_secrets holds this endpoint's signing secret: test and live mode have different ones, and the Stripe CLI's stripe listen prints its own. A proxy that re-encodes the body also breaks signatures.",
            e.secrets, if e.secrets == 1 { "" } else { "s" }
        ),
        Refusal::Signature(Rejection::TimestampOutsideTolerance) => match e.skew_secs {
            Some(s) => format!(
                "The signed timestamp is {} old, beyond stripe.tolerance_secs. If Stripe sent it just now, this server's clock is off by about that much: check NTP. Otherwise it is a replay of an old request.",
                human_secs(s)
            ),
            None => "The signed timestamp is too old.".into(),
        },
        Refusal::BadJson => "The signature was valid, but the body is not a Stripe event (not JSON, or no id or type).".into(),
        Refusal::TooLarge => "The body is over 1 MiB; Stripe's events are a few KB.".into(),
        Refusal::Timeout => "The body did not arrive within 20 seconds.".into(),
        Refusal::Unreadable => "The body could not be read (the connection broke).".into(),
        Refusal::StoreUnavailable => "Verified, but the database could not store it, so it was not acknowledged. Stripe will deliver it again.".into(),
    }
}

fn human_secs(s: i64) -> String {
    let a = s.unsigned_abs();
    match a {
        0..=119 => format!("{a} s"),
        120..=7199 => format!("{} min", a / 60),
        7200..=172_799 => format!("{} h", a / 3600),
        _ => format!("{} days", a / 86_400),
    }
}

pub fn webhooks(
    chrome: &Chrome<'_>,
    filter: Filter,
    entries: &[Entry],
    totals: (u64, u64),
) -> Markup {
    let tab = |f: Filter, href: &str, label: &str, n: Option<u64>| {
        html! {
            a href=(href) class={ "state-tab" @if filter == f { " active" } } {
                span { (label) } @if let Some(n) = n { strong { (n) } }
            }
        }
    };
    admin_page(
        "Webhook log",
        chrome,
        html! {
            div class="page-head" { h1 { "Webhook log" } }
            p class="muted" { "The last " (crate::webhook_log::CAPACITY) " requests to " code { "/webhook" } " since the server started, newest first. Accepted events are also stored with their sessions." }
            nav class="states" {
                (tab(Filter::All, "/admin/webhooks", "All", Some(totals.0 + totals.1)))
                (tab(Filter::Accepted, "/admin/webhooks?filter=accepted", "Accepted", Some(totals.0)))
                (tab(Filter::Rejected, "/admin/webhooks?filter=rejected", "Rejected", Some(totals.1)))
            }
            @if entries.is_empty() {
                section class="panel empty" { p { "No requests yet." } }
            } @else {
                div class="table-wrap" {
                    table class="grid" id="webhook-log" {
                        thead { tr { th { "Received" } th { "Result" } th { "Details" } th class="hide-sm" { "From" } } }
                        tbody {
                            @for e in entries {
                                tr class=(if e.accepted() { "row-ok" } else { "row-bad" }) {
                                    td class="nowrap muted" { (display_ms(e.at_ms)) }
                                    td class="nowrap" {
                                        @match &e.outcome {
                                            Outcome::Accepted { disposition, .. } => { span class="pill pill-ok" { (e.status) " " (disposition) } }
                                            Outcome::Refused(r) => { span class="pill pill-bad" data-reason=(r.code()) { (e.status) " " (r.code()) } }
                                        }
                                    }
                                    td {
                                        @match &e.outcome {
                                            Outcome::Accepted { event_type, event_id, session_id, .. } => {
                                                strong { (event_type) } div class="small muted mono break" { (event_id) }
                                                @if let Some(s) = session_id { div class="small" { a class="mono" href=(format!("/admin/sessions/{s}")) { (short_id(s)) } } }
                                            }
                                            Outcome::Refused(_) => { span class="reason" { (explain(e)) } }
                                        }
                                    }
                                    td class="hide-sm small muted" {
                                        (e.remote.as_deref().unwrap_or("—"))
                                        @if let Some(ua) = &e.user_agent { div class="ellipsis" title=(ua) { (ua) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome() -> Chrome<'static> {
        Chrome {
            username: "admin",
            csrf: "tok",
            nav: Nav::Sessions,
        }
    }

    #[test]
    fn customer_text_is_escaped_everywhere() {
        let mut rec = SessionRecord::new("cs_test_x", 1_700_000_000, 0);
        rec.customer_email = Some("<img src=x onerror=alert(1)>@x.test".into());
        let mut d = SessionDetail::default();
        d.line_items.push(crate::model::LineItemRecord {
            id: "li_1".into(),
            description: Some("<script>alert(1)</script>".into()),
            quantity: Some(1),
            amount_total: 100,
            amount_subtotal: 100,
            currency: Some("usd".into()),
            price_id: Some("\"><b>".into()),
            unit_amount: Some(100),
        });
        let list = sessions(
            &chrome(),
            &ListView {
                counts: &[],
                state: None,
                q: Some("\"><script>"),
                rows: std::slice::from_ref(&rec),
                next_cursor: None,
                first_page: true,
            },
        )
        .into_string();
        let page = detail(
            &chrome(),
            &DetailView {
                rec: &rec,
                detail: &d,
                events: &HashMap::new(),
                notifications: &[],
                flash: None,
            },
        )
        .into_string();
        for html in [list, page] {
            assert!(!html.contains("<script>alert"), "{html}");
            assert!(!html.contains("<img src=x"), "{html}");
            assert!(!html.contains("\"><b>"), "{html}");
        }
    }

    #[test]
    fn flash_codes_round_trip() {
        for f in Flash::ALL {
            assert_eq!(Flash::parse(f.code()), Some(f));
        }
        assert_eq!(Flash::parse("<x>"), None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            list_href(Some(State::Failed), Some("x@y"), Some("1:cs_a")),
            "/admin?state=failed&q=x%40y&cursor=1%3Acs_a"
        );
    }
}
