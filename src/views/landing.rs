//! The Checkout landing page (`success_url`): what the customer sees.

use maud::{Markup, html};

use super::page;
use crate::{
    model::{SessionDetail, SessionRecord},
    money,
};

/// Which page to show.
pub enum Landing<'a> {
    /// Paid and recorded: the receipt.
    Receipt(&'a SessionRecord, &'a SessionDetail),
    /// Completed, waiting for a delayed payment (ACH, SEPA…).
    PaymentProcessing(&'a SessionRecord),
    /// Paid, but fulfillment is still under way.
    InProgress,
    /// Paid, but fulfillment failed and waits for the merchant.
    NeedsAttention,
    PaymentFailed(&'a SessionRecord),
    Expired,
    /// The checkout was never completed.
    NotCompleted,
    /// A `mode=setup` checkout: a payment method saved, nothing bought.
    SetupSaved,
    NotFound,
    BadRequest,
    Unavailable,
}

impl Landing<'_> {
    /// The page's name, for its script and `/after-checkout/status`: the
    /// page reloads when the status names another.
    pub fn key(&self) -> &'static str {
        match self {
            Landing::Receipt(..) => "receipt",
            Landing::PaymentProcessing(_) => "processing",
            Landing::InProgress => "in_progress",
            Landing::NeedsAttention => "needs_attention",
            Landing::PaymentFailed(_) => "payment_failed",
            Landing::Expired => "expired",
            Landing::NotCompleted => "not_completed",
            Landing::SetupSaved => "setup_saved",
            Landing::NotFound => "not_found",
            Landing::BadRequest => "bad_request",
            Landing::Unavailable => "unavailable",
        }
    }

    /// How often a page that waits for news asks for it (ms); None: it
    /// shows a final answer.
    fn poll_ms(&self) -> Option<u32> {
        match self {
            Landing::InProgress => Some(3_000),
            Landing::Unavailable => Some(10_000),
            Landing::PaymentProcessing(_) | Landing::NeedsAttention => Some(15_000),
            _ => None,
        }
    }
}

/// Shows an email as `j•••@example.com`: enough for the customer to recognise,
/// not enough to harvest from a shared link.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".into(),
    }
}

fn amount(rec: &SessionRecord) -> Option<String> {
    Some(money::format(rec.amount_total?, rec.currency.as_deref()?))
}

/// The shop and what fulfilld will send, for the customer's pages: a page
/// never promises an email that is not configured to be sent.
#[derive(Debug, Clone, Default)]
pub struct Shop {
    pub name: Option<String>,
    pub url: Option<String>,
    pub support_email: Option<String>,
    /// A receipt email goes to the customer on fulfillment.
    pub receipt_email: bool,
    /// The customer is emailed when a delayed payment fails.
    pub payment_failed_email: bool,
}

/// The page frame with the shop's name above and its links below. `poll`:
/// the page's key and how often (ms) its script asks whether it changed.
fn frame(shop: &Shop, title: &str, poll: Option<(&str, u32)>, body: Markup) -> Markup {
    let title = match &shop.name {
        Some(n) => format!("{title} · {n}"),
        None => title.to_string(),
    };
    page(
        &title,
        poll.is_some(),
        html! {
            @if let Some(n) = &shop.name { p class="shop-name" { (n) } }
            (body)
            @if let Some((key, ms)) = poll {
                // Without JavaScript, the link does what the script would.
                p class="small muted" id="poll" data-view=(key) data-poll-ms=(ms) {
                    "This page updates by itself. " a href="" { "Check now" }
                }
            }
            @if shop.url.is_some() || shop.support_email.is_some() {
                footer class="shop-links" {
                    @if let Some(e) = &shop.support_email {
                        p class="small" { "Questions? Write to " a href=(format!("mailto:{e}")) { (e) } "." }
                    }
                    @if let Some(u) = &shop.url {
                        p { a href=(u) class="back" { "← Back to " (shop.name.as_deref().unwrap_or("the shop")) } }
                    }
                }
            }
        },
    )
}

pub fn render(view: &Landing<'_>, shop: &Shop) -> Markup {
    let poll = view.poll_ms().map(|ms| (view.key(), ms));
    let page = |title: &str, body: Markup| frame(shop, title, poll, body);
    match view {
        Landing::Receipt(rec, detail) => receipt(rec, detail, shop),
        Landing::PaymentProcessing(rec) => page(
            "Payment processing",
            html! {
                div class="badge badge-wait" { "Payment processing" }
                h1 { "Thanks, your order is in" }
                p { "Your payment is still being processed by your bank. This can take a few business days for bank debits." }
                @if let Some(a) = amount(rec) { p { "Amount: " strong { (a) } } }
                @if let (Some(e), true) = (&rec.customer_email, shop.receipt_email) {
                    p { "We will email " strong { (mask_email(e)) } " as soon as it clears and your order is on its way." }
                    p class="muted" { "You can close this page." }
                } @else {
                    // No email is configured: this page is where the answer shows.
                    p { "Your order goes on its way as soon as the payment clears. Keep this page's address: it shows the outcome when your bank answers." }
                }
            },
        ),
        Landing::InProgress => page(
            "Finishing your order",
            html! {
                div class="badge badge-wait" { "Processing" }
                h1 { "Thanks! We are finishing your order" }
                p { "Your payment went through and we are preparing your order. This page refreshes by itself." }
            },
        ),
        Landing::NeedsAttention => page(
            "Thanks for your order",
            html! {
                div class="badge badge-wait" { "Received" }
                h1 { "Thanks! Your order is received" }
                p { "Your payment is safe. Finishing your order is taking longer than usual; we are on it and will be in touch." }
            },
        ),
        Landing::PaymentFailed(rec) => page(
            "Payment failed",
            html! {
                div class="badge badge-bad" { "Payment failed" }
                h1 { "Your payment did not go through" }
                p {
                    "Your bank reported that the payment"
                    @if let Some(a) = amount(rec) { " of " strong { (a) } }
                    " failed, so your order has not been placed and you have not been charged."
                }
                p { "Please try again with another payment method, or contact us if you think this is a mistake." }
            },
        ),
        Landing::Expired => page(
            "Checkout expired",
            html! {
                div class="badge badge-bad" { "Expired" }
                h1 { "This checkout has expired" }
                p { "No payment was taken. Please start your order again." }
            },
        ),
        Landing::NotCompleted => page(
            "Checkout not completed",
            html! {
                h1 { "This checkout is not complete" }
                p { "No payment has been made yet. Please return to the checkout page to finish your order." }
            },
        ),
        Landing::SetupSaved => page(
            "Payment details saved",
            html! {
                div class="badge badge-ok" { "Saved" }
                h1 { "Your payment details are saved" }
                p { "Nothing was charged. They will be used for future payments you agree to." }
                p class="muted" { "You can close this page." }
            },
        ),
        Landing::NotFound => page(
            "Order not found",
            html! {
                h1 { "We could not find that order" }
                p { "The link may be incomplete. If you just paid, please use the link from your confirmation email or contact us." }
            },
        ),
        Landing::BadRequest => page(
            "Invalid link",
            html! {
                h1 { "This link is not valid" }
                p { "The order reference in the address is missing or malformed." }
            },
        ),
        Landing::Unavailable => page(
            "Please try again",
            html! {
                h1 { "We could not load your order just now" }
                p { "If you have paid, your payment is safe and your order will be processed. This page will try again shortly." }
            },
        ),
    }
}

fn receipt(rec: &SessionRecord, detail: &SessionDetail, shop: &Shop) -> Markup {
    let currency = rec.currency.clone().unwrap_or_else(|| "usd".into());
    let delivery = &detail.delivery_details;
    frame(
        shop,
        "Thank you for your order",
        None,
        html! {
            div class="badge badge-ok" { "Paid" }
            h1 { "Thank you for your order" }
            @if let (Some(e), true) = (&rec.customer_email, shop.receipt_email) {
                p class="muted" { "A confirmation goes to " (mask_email(e)) "." }
            }
            table class="items" {
                thead { tr { th { "Item" } th class="num" { "Qty" } th class="num" { "Amount" } } }
                tbody {
                    @for item in &detail.line_items {
                        tr {
                            td { (item.description.as_deref().unwrap_or("Item")) }
                            td class="num" { (item.quantity.unwrap_or(1)) }
                            td class="num" { (money::format(item.amount_total, item.currency.as_deref().unwrap_or(&currency))) }
                        }
                    }
                }
                tfoot {
                    @if let (Some(sub), Some(total)) = (detail.amount_subtotal, rec.amount_total) {
                        @if sub != total {
                            tr { td colspan="2" { "Subtotal" } td class="num" { (money::format(sub, &currency)) } }
                        }
                    }
                    @if let Some(total) = rec.amount_total {
                        tr class="total" { td colspan="2" { "Total" } td class="num" { (money::format(total, &currency)) } }
                    }
                }
            }
            @if delivery.name.is_some() || !delivery.address_lines.is_empty() {
                h2 { "Delivery details" }
                address {
                    @if let Some(n) = &delivery.name { (n) br; }
                    @for line in &delivery.address_lines { (line) br; }
                }
            }
            p class="muted small" { "Order reference: " code { (rec.id) } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LineItemRecord, State};

    #[test]
    fn receipt_escapes_customer_controlled_text() {
        let mut rec = SessionRecord::new("cs_test_x", 0, 0);
        rec.state = State::Fulfilled;
        rec.amount_total = Some(1234);
        rec.currency = Some("eur".into());
        rec.customer_email = Some("<img src=x onerror=alert(1)>@x.test".into());
        let mut detail = SessionDetail::default();
        detail.line_items.push(LineItemRecord {
            id: "li_1".into(),
            description: Some("<script>alert(1)</script>".into()),
            quantity: Some(2),
            amount_total: 1234,
            amount_subtotal: 1234,
            currency: Some("eur".into()),
            price_id: None,
            unit_amount: Some(617),
        });
        detail.delivery_details.name = Some("</address><script>x</script>".into());
        let html = render(&Landing::Receipt(&rec, &detail), &Shop::default()).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("€12.34"));
    }

    #[test]
    fn masks_emails() {
        assert_eq!(mask_email("jenny@example.com"), "j•••@example.com");
        assert_eq!(mask_email("nope"), "•••");
    }
}
