//! The Checkout landing page (`success_url`): what the customer sees.

use maud::{Markup, html};

use super::{page, words::Lang};
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
fn frame(shop: &Shop, lang: Lang, title: &str, poll: Option<(&str, u32)>, body: Markup) -> Markup {
    let w = lang.words();
    let title = match &shop.name {
        Some(n) => format!("{title} · {n}"),
        None => title.to_string(),
    };
    page(
        lang.code(),
        &title,
        poll.is_some(),
        html! {
            @if let Some(n) = &shop.name { p class="shop-name" { (n) } }
            (body)
            @if let Some((key, ms)) = poll {
                // Without JavaScript, the link does what the script would.
                p class="small muted" id="poll" data-view=(key) data-poll-ms=(ms) {
                    (w.updates_itself) a href="" { (w.check_now) }
                }
            }
            @if shop.url.is_some() || shop.support_email.is_some() {
                footer class="shop-links" {
                    @if let Some(e) = &shop.support_email {
                        p class="small" { (w.questions_pre) a href=(format!("mailto:{e}")) { (e) } "." }
                    }
                    @if let Some(u) = &shop.url {
                        p { a href=(u) class="back" { (w.back_to) (shop.name.as_deref().unwrap_or(w.the_shop)) } }
                    }
                }
            }
        },
    )
}

/// The page for `view`, in `lang`.
pub fn render(view: &Landing<'_>, shop: &Shop, lang: Lang) -> Markup {
    let w = lang.words();
    let poll = view.poll_ms().map(|ms| (view.key(), ms));
    let page = |title: &str, body: Markup| frame(shop, lang, title, poll, body);
    match view {
        Landing::Receipt(rec, detail) => receipt(rec, detail, shop, lang),
        Landing::PaymentProcessing(rec) => page(
            w.processing_title,
            html! {
                div class="badge badge-wait" { (w.processing_badge) }
                h1 { (w.processing_heading) }
                p { (w.processing_text) }
                @if let Some(a) = amount(rec) { p { (w.amount) strong { (a) } } }
                @if let (Some(e), true) = (&rec.customer_email, shop.receipt_email) {
                    p { (w.email_when_clears_pre) strong { (mask_email(e)) } (w.email_when_clears_post) }
                    p class="muted" { (w.close_page) }
                } @else {
                    // No email is configured: this page is where the answer shows.
                    p { (w.no_email_when_clears) }
                }
            },
        ),
        Landing::InProgress => page(
            w.progress_title,
            html! {
                div class="badge badge-wait" { (w.progress_badge) }
                h1 { (w.progress_heading) }
                p { (w.progress_text) }
            },
        ),
        Landing::NeedsAttention => page(
            w.attention_title,
            html! {
                div class="badge badge-wait" { (w.attention_badge) }
                h1 { (w.attention_heading) }
                p { (w.attention_text) }
            },
        ),
        Landing::PaymentFailed(rec) => page(
            w.failed_title,
            html! {
                div class="badge badge-bad" { (w.failed_title) }
                h1 { (w.failed_heading) }
                p {
                    (w.failed_pre)
                    @if let Some(a) = amount(rec) { (w.failed_of) strong { (a) } }
                    (w.failed_post)
                }
                p { (w.failed_next) }
            },
        ),
        Landing::Expired => page(
            w.expired_title,
            html! {
                div class="badge badge-bad" { (w.expired_badge) }
                h1 { (w.expired_heading) }
                p { (w.expired_text) }
            },
        ),
        Landing::NotCompleted => page(
            w.incomplete_title,
            html! {
                h1 { (w.incomplete_heading) }
                p { (w.incomplete_text) }
            },
        ),
        Landing::SetupSaved => page(
            w.setup_title,
            html! {
                div class="badge badge-ok" { (w.setup_badge) }
                h1 { (w.setup_heading) }
                p { (w.setup_text) }
                p class="muted" { (w.close_page) }
            },
        ),
        Landing::NotFound => page(
            w.not_found_title,
            html! {
                h1 { (w.not_found_heading) }
                p { (w.not_found_text) }
            },
        ),
        Landing::BadRequest => page(
            w.invalid_title,
            html! {
                h1 { (w.invalid_heading) }
                p { (w.invalid_text) }
            },
        ),
        Landing::Unavailable => page(
            w.unavailable_title,
            html! {
                h1 { (w.unavailable_heading) }
                p { (w.unavailable_text) }
            },
        ),
    }
}

fn receipt(rec: &SessionRecord, detail: &SessionDetail, shop: &Shop, lang: Lang) -> Markup {
    let w = lang.words();
    let currency = rec.currency.clone().unwrap_or_else(|| "usd".into());
    let delivery = &detail.delivery_details;
    frame(
        shop,
        lang,
        w.receipt_title,
        None,
        html! {
            div class="badge badge-ok" { (w.paid_badge) }
            h1 { (w.receipt_title) }
            @if let (Some(e), true) = (&rec.customer_email, shop.receipt_email) {
                p class="muted" { (w.confirmation_pre) (mask_email(e)) "." }
            }
            table class="items" {
                thead { tr { th { (w.item) } th class="num" { (w.qty) } th class="num" { (w.line_amount) } } }
                tbody {
                    @for item in &detail.line_items {
                        tr {
                            td { (item.description.as_deref().unwrap_or(w.item)) }
                            td class="num" { (item.quantity.unwrap_or(1)) }
                            td class="num" { (money::format(item.amount_total, item.currency.as_deref().unwrap_or(&currency))) }
                        }
                    }
                }
                tfoot {
                    @if let (Some(sub), Some(total)) = (detail.amount_subtotal, rec.amount_total) {
                        @if sub != total {
                            tr { td colspan="2" { (w.subtotal) } td class="num" { (money::format(sub, &currency)) } }
                        }
                    }
                    @if let Some(total) = rec.amount_total {
                        tr class="total" { td colspan="2" { (w.total) } td class="num" { (money::format(total, &currency)) } }
                    }
                }
            }
            @if delivery.name.is_some() || !delivery.address_lines.is_empty() {
                h2 { (w.delivery) }
                address {
                    @if let Some(n) = &delivery.name { (n) br; }
                    @for line in super::words::address_lines(lang, &delivery.address_lines) { (line) br; }
                }
            }
            p class="muted small" { (w.reference) code { (rec.id) } }
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
            product_id: None,
        });
        detail.delivery_details.name = Some("</address><script>x</script>".into());
        let html =
            render(&Landing::Receipt(&rec, &detail), &Shop::default(), Lang::En).into_string();
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
