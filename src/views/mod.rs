//! HTML pages, rendered with maud (which escapes every interpolated string).
//! Pure functions from records to markup: no I/O here.

pub mod admin;
pub mod email;
pub mod landing;
pub mod words;

use maud::{DOCTYPE, Markup, html};

/// Stripe's dispute reasons, as a merchant would say them.
pub(crate) fn dispute_reason(reason: &str) -> String {
    match reason {
        "fraudulent" => "the cardholder says they did not make this payment (fraudulent)".into(),
        "product_not_received" => "the customer says they did not receive the order".into(),
        "product_unacceptable" => {
            "the customer says the order was defective or not as described".into()
        }
        "duplicate" => "the customer says they were charged twice".into(),
        "subscription_canceled" => "the customer says they canceled the subscription".into(),
        "credit_not_processed" => "the customer says a promised refund was not made".into(),
        "unrecognized" => "the customer does not recognise the payment".into(),
        "general" | "" => "no specific reason (general)".into(),
        other => other.replace('_', " "),
    }
}

/// The page frame of the customer's pages. `script`: the page waits for
/// news and loads the small script that asks for it (no meta refresh: it
/// reloads only when there is something new to show).
pub fn page(lang: &str, title: &str, script: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) }
                link rel="stylesheet" href="/assets/app.css";
                link rel="icon" href="/assets/favicon.svg" type="image/svg+xml";
                @if script { script src="/assets/landing.js" defer {} }
            }
            body {
                main class="card" { (body) }
            }
        }
    }
}
