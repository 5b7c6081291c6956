//! The admin dashboard's pages. Every string from Stripe, a customer or a
//! request is interpolated through maud, which escapes it; URLs built here
//! percent-encode their parameters.

use maud::{DOCTYPE, Markup, html};

mod session;
mod webhooks;

pub use session::{DetailView, Flash, detail};
pub use webhooks::{explain, webhooks};

use crate::{
    model::{RefundStatus, SessionRecord, State},
    money,
    time::display_secs,
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
pub(crate) fn icon(name: &str) -> Markup {
    html! { img class="icon" src=(format!("/assets/icons/{name}.svg")) alt="" width="16" height="16"; }
}

pub(crate) fn frame(title: &str, body: Markup) -> Markup {
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

pub(crate) fn admin_page(title: &str, chrome: &Chrome<'_>, body: Markup) -> Markup {
    let tab = |nav: Nav, href: &str, label: &str| {
        html! {
            a href=(href) class={ "tab" @if chrome.nav == nav { " active" } }
              aria-current=[(chrome.nav == nav).then_some("page")] { (label) }
        }
    };
    frame(
        title,
        html! {
            // Keyboard users jump past the header to the page's content.
            a class="skip-link" href="#main" { "Skip to content" }
            header class="topbar" {
                a class="brand" href="/admin" { img src="/assets/favicon.svg" alt="" width="22" height="22"; span class="name" { "fulfilld" } }
                nav aria-label="Main" { (tab(Nav::Sessions, "/admin", "Sessions")) (tab(Nav::Webhooks, "/admin/webhooks", "Webhook log")) }
                div class="who" {
                    span class="muted hide-sm" { (chrome.username) }
                    form method="post" action="/admin/logout" class="inline" {
                        input type="hidden" name="csrf" value=(chrome.csrf);
                        button type="submit" class="link" { "Sign out" }
                    }
                }
            }
            main class="wide" id="main" tabindex="-1" { (body) }
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

/// A state as the merchant says it (the API keeps the codes).
pub(crate) fn state_words(state: State) -> &'static str {
    match state {
        State::AwaitingPayment => "Awaiting payment",
        State::Fulfilling => "Fulfilling",
        State::Fulfilled => "Fulfilled",
        State::Retrying => "Retrying",
        State::Failed => "Needs attention",
        State::PaymentFailed => "Payment failed",
        State::Expired => "Expired",
    }
}

/// A payment status in words.
pub(crate) fn payment_words(status: &str) -> &str {
    match status {
        "paid" => "Paid",
        "unpaid" => "Not paid yet",
        "no_payment_required" => "No payment needed",
        other => other,
    }
}

pub fn state_badge(state: State) -> Markup {
    let tone = match state {
        State::Fulfilled => "ok",
        State::AwaitingPayment | State::Fulfilling | State::Retrying => "wait",
        State::Failed | State::PaymentFailed => "bad",
        State::Expired => "off",
    };
    html! { span class={ "badge badge-" (tone) } data-state=(state.as_str()) { (state_words(state)) } }
}

/// "Refunded", "Partly refunded" and the dispute's standing, where they apply.
pub(crate) fn after_sale_badges(rec: &SessionRecord) -> Markup {
    let refund = match rec.refund_status() {
        RefundStatus::None => None,
        RefundStatus::Partial => Some("Partly refunded"),
        RefundStatus::Full => Some("Refunded"),
    };
    let dispute = rec.dispute.as_ref().map(|d| match d.status.as_str() {
        "won" => ("Dispute won", "ok"),
        "lost" => ("Dispute lost", "bad"),
        "warning_closed" | "prevented" => ("Inquiry closed", "off"),
        _ => ("Disputed", "bad"),
    });
    let undelivered = rec.undelivered.map(|k| match k {
        crate::model::NotificationKind::ReceiptEmail => "Receipt not delivered",
        crate::model::NotificationKind::PaymentFailedEmail => "Customer email not delivered",
        k if k.is_callback() => "Callback not delivered",
        k if k.is_alert() => "Alert not delivered",
        _ => "Email not delivered",
    });
    html! {
        @if let Some(u) = undelivered { span class="badge badge-bad" data-undelivered=(rec.undelivered.map(|k| k.as_str()).unwrap_or_default()) { (u) } " " }
        @if let Some(r) = refund { span class="badge badge-off" data-refund=(rec.refund_status().as_str()) { (r) } }
        @if let Some((d, tone)) = dispute { " " span class={ "badge badge-" (tone) } data-dispute=[rec.dispute.as_ref().map(|d| d.status.as_str())] { (d) } }
    }
}

pub(crate) fn payment_badge(status: Option<&str>) -> Markup {
    let status = status.unwrap_or("unknown");
    let tone = match status {
        "paid" | "no_payment_required" => "ok",
        "unpaid" => "wait",
        _ => "off",
    };
    html! { span class={ "pill pill-" (tone) } data-payment=(status) { (payment_words(status)) } }
}

pub(crate) fn mode_badge(livemode: bool) -> Markup {
    if livemode {
        html! { span class="mode mode-live" { "live" } }
    } else {
        html! { span class="mode mode-test" { "test" } }
    }
}

pub(crate) fn amount(rec: &SessionRecord) -> String {
    match (rec.amount_total, rec.currency.as_deref()) {
        (Some(a), Some(c)) => money::format(a, c),
        _ => "—".into(),
    }
}

/// What the sessions list shows.
pub struct ListView<'a> {
    pub counts: &'a [(State, u64)],
    pub state: Option<State>,
    pub refund_status: Option<RefundStatus>,
    pub disputed: bool,
    pub q: Option<&'a str>,
    pub rows: &'a [SessionRecord],
    pub next_cursor: Option<&'a str>,
    pub first_page: bool,
}

pub(crate) fn list_href(state: Option<State>, q: Option<&str>, cursor: Option<&str>) -> String {
    filter_href(state, None, false, q, cursor)
}

/// The list with every filter it takes.
pub(crate) fn filter_href(
    state: Option<State>,
    refund_status: Option<RefundStatus>,
    disputed: bool,
    q: Option<&str>,
    cursor: Option<&str>,
) -> String {
    let mut parts = Vec::new();
    if let Some(s) = state {
        parts.push(format!("state={}", s.as_str()));
    }
    if let Some(r) = refund_status {
        parts.push(format!("refund_status={}", r.as_str()));
    }
    if disputed {
        parts.push("disputed=true".into());
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
    // What a person must act on: fulfillment that gave up, and delayed
    // payments that failed (the customer may need a word).
    let count = |state: State| {
        v.counts
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let (failed, payment_failed) = (count(State::Failed), count(State::PaymentFailed));
    admin_page(
        "Sessions",
        chrome,
        html! {
            div class="page-head" {
                h1 { "Checkout Sessions" }
                @if failed > 0 {
                    a class="alert-chip" href=(list_href(Some(State::Failed), None, None)) {
                        (icon("alert")) (failed) " need" @if failed == 1 { "s" } " attention"
                    }
                }
                @if payment_failed > 0 {
                    a class="alert-chip" href=(list_href(Some(State::PaymentFailed), None, None)) {
                        (icon("alert")) (payment_failed) " payment" @if payment_failed != 1 { "s" } " failed"
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
                        span { (state_words(*state)) } strong { (n) }
                    }
                }
            }
            nav class="states after-sale" aria-label="Filter by refunds and disputes" {
                @for (label, refund, disputed) in [("Partly refunded", Some(RefundStatus::Partial), false), ("Refunded", Some(RefundStatus::Full), false), ("Disputed", None, true)] {
                    @let active = v.refund_status == refund && v.disputed == disputed;
                    a href=(if active { filter_href(v.state, None, false, v.q, None) } else { filter_href(v.state, refund, disputed, v.q, None) })
                      class={ "state-tab" @if active { " active" } } aria-current=[active.then_some("true")] {
                        span { (label) }
                    }
                }
            }
            form method="get" action="/admin" class="search" role="search" {
                @if let Some(s) = v.state { input type="hidden" name="state" value=(s.as_str()); }
                @if let Some(r) = v.refund_status { input type="hidden" name="refund_status" value=(r.as_str()); }
                @if v.disputed { input type="hidden" name="disputed" value="true"; }
                input type="search" name="q" value=(v.q.unwrap_or("")) placeholder="Name, email, item or id (cs_…, pi_…)" aria-label="Search by name, email, item, session id or payment intent";
                button type="submit" { (icon("search")) "Search" }
                @if v.q.is_some() { a class="muted" href=(list_href(v.state, None, None)) { "Clear" } }
                a class="muted" id="export-csv" href=(filter_href(v.state, v.refund_status, v.disputed, v.q, None).replacen("/admin", "/admin/api/sessions.csv", 1)) download { "Export CSV" }
            }
            @if v.rows.is_empty() {
                section class="panel empty" {
                    p { @if v.q.is_some() || v.state.is_some() || v.refund_status.is_some() || v.disputed { "No session matches." } @else {
                        "No sessions yet. Point a Stripe webhook endpoint at " code { "/webhook" } " and they will appear here." } }
                    @if let Some(id) = v.q.filter(|q| crate::model::is_session_id(q)) {
                        // A session fulfilld never heard of may still be in Stripe.
                        form method="post" action=(format!("/admin/sessions/{id}/fulfill")) id="fetch-form" {
                            input type="hidden" name="csrf" value=(chrome.csrf);
                            p { "fulfilld has no record of " code { (id) } ". If Stripe has it (its events may be older than Stripe's 30 days), fetch it: a paid session is then fulfilled once." }
                            button type="submit" class="primary" id="fetch-from-stripe" { "Fetch from Stripe" }
                        }
                    }
                }
            } @else {
                div class="table-wrap" {
                    table class="grid stack" id="sessions" {
                        thead { tr {
                            th { "Created" } th { "Order" } th { "Customer" }
                            th class="num" { "Amount" } th { "Payment" } th { "Fulfillment" }
                        } }
                        tbody {
                            @for rec in v.rows {
                                tr {
                                    td class="nowrap muted full-sm small-sm" { (display_secs(rec.created)) }
                                    td class="full-sm" {
                                        @if let Some(item) = &rec.first_item {
                                            div class="item ellipsis" { (item) @if rec.item_count > 1 { span class="muted" { " +" (rec.item_count - 1) " more" } } }
                                        }
                                        a class="session-link mono" href=(format!("/admin/sessions/{}", rec.id)) { (short_id(&rec.id)) } " " (mode_badge(rec.livemode))
                                    }
                                    td class="full-sm" {
                                        @if let Some(n) = &rec.customer_name { div class="ellipsis" { strong { (n) } } }
                                        div class="ellipsis muted" { (rec.customer_email.as_deref().unwrap_or("—")) }
                                    }
                                    td class="num nowrap" { (amount(rec)) }
                                    td { (payment_badge(rec.payment_status.as_deref())) }
                                    td { (state_badge(rec.state)) " " (after_sale_badges(rec)) }
                                }
                            }
                        }
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if !v.first_page { a href=(filter_href(v.state, v.refund_status, v.disputed, v.q, None)) { "← Newest" } }
                @if let Some(c) = v.next_cursor { a id="older" href=(filter_href(v.state, v.refund_status, v.disputed, v.q, Some(c))) { "Older →" } }
            }
        },
    )
}

pub(crate) fn tone(state: State) -> &'static str {
    match state {
        State::Fulfilled => "ok",
        State::AwaitingPayment | State::Fulfilling | State::Retrying => "wait",
        State::Failed | State::PaymentFailed => "bad",
        State::Expired => "off",
    }
}

/// `cs_test_a1b2…z9`: long ids shortened for tables (the full id is in the link).
pub(crate) fn short_id(id: &str) -> String {
    if id.len() <= 26 {
        return id.to_string();
    }
    format!("{}…{}", &id[..20], &id[id.len() - 4..])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::model::SessionDetail;

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
            product_id: None,
        });
        let list = sessions(
            &chrome(),
            &ListView {
                counts: &[],
                state: None,
                refund_status: None,
                disputed: false,
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
    fn a_session_shows_what_happened_after_the_sale_and_what_was_not_delivered() {
        let mut rec = SessionRecord::new("cs_test_badges", 0, 0);
        assert_eq!(after_sale_badges(&rec).into_string(), "");
        rec.undelivered = Some(crate::model::NotificationKind::ReceiptEmail);
        rec.amount_total = Some(1000);
        rec.amount_refunded = 1000;
        let html = after_sale_badges(&rec).into_string();
        assert!(
            html.contains("Receipt not delivered") && html.contains("Refunded"),
            "{html}"
        );
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
