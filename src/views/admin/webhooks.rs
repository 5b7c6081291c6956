//! The webhook log: every request to `/webhook`, accepted or refused, with
//! what a refusal means in words a merchant can act on.

use maud::{Markup, html};

use super::*;
use crate::{
    signature::Rejection,
    time::display_ms,
    webhook_log::{Entry, Filter, Outcome, Refusal},
};

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
                    table class="grid stack" id="webhook-log" {
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
                                    td class="full-sm break" {
                                        @match &e.outcome {
                                            Outcome::Accepted { event_type, event_id, session_id, reason, .. } => {
                                                strong { (event_type) } div class="small muted mono break" { (event_id) }
                                                @if let Some(r) = reason { div class="small reason" { (r) } }
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
