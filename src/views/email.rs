//! Email and alert texts. Each email has a plain-text and an HTML (maud,
//! escaped) version with the same content. Subjects hold only amounts
//! formatted from integers and session ids (checked shape), never a string a
//! customer typed, so nothing customer-controlled reaches a header.

use maud::{DOCTYPE, Markup, html};

use super::words::{EN_MAIL, Lang, address_lines};
use crate::{
    model::{NotificationKind, SessionDetail, SessionRecord},
    money,
};

/// A rendered email.
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Links and settings the texts refer to.
pub struct Links<'a> {
    /// `server.public_url`, without a trailing slash.
    pub public_url: &'a str,
    /// `notifications.retry_url`.
    pub retry_url: Option<&'a str>,
    /// `shop.name`, `shop.url`, `shop.support_email`: named in customer emails.
    pub shop_name: Option<&'a str>,
    pub shop_url: Option<&'a str>,
    pub support_email: Option<&'a str>,
}

impl Links<'_> {
    fn dashboard(&self, rec: &SessionRecord) -> String {
        format!("{}/admin/sessions/{}", self.public_url, rec.id)
    }

    fn order_page(&self, rec: &SessionRecord) -> String {
        format!("{}/after-checkout?session_id={}", self.public_url, rec.id)
    }
}

/// Any interpolated value for a plain-text body (customer-typed, from
/// Stripe, or an error text): control characters (CR, LF, NEL, tabs…) and
/// Unicode line/paragraph separators become spaces, so it cannot fake extra
/// lines.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Any value for a Slack-compatible alert: cleaned as above, then `&`, `<`
/// and `>` escaped as Slack's mrkdwn asks, so a customer's `<!channel>` or
/// `<https://evil|click>` shows as typed instead of pinging everyone or
/// becoming a disguised link. (Slack decodes the three entities itself.)
fn mrkdwn(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn amount(rec: &SessionRecord) -> String {
    amount_or(rec, EN_MAIL.the_order)
}

fn amount_or(rec: &SessionRecord, none: &str) -> String {
    match (rec.amount_total, rec.currency.as_deref()) {
        (Some(a), Some(c)) => money::format(a, c),
        _ => none.into(),
    }
}

/// The language of a customer email: the one the customer saw at checkout
/// (the session's `locale`), else English.
fn customer_lang(rec: &SessionRecord) -> Lang {
    Lang::pick(rec.locale.as_deref(), None)
}

/// The shop's lines under a customer email: where to write, and the way back.
fn shop_text(links: &Links<'_>, lang: Lang) -> String {
    let mut out = String::new();
    if let Some(e) = links.support_email {
        out.push_str(&format!("\n{}{}\n", lang.words().questions_pre, clean(e)));
    }
    if let Some(u) = links.shop_url {
        out.push_str(&format!(
            "\n{}: {}\n",
            clean(links.shop_name.unwrap_or(lang.mail().shop)),
            clean(u)
        ));
    }
    out
}

fn shop_html(links: &Links<'_>, lang: Lang) -> Markup {
    let w = lang.words();
    html! {
        @if let Some(e) = links.support_email {
            p style="font-size:13px;color:#6b7280" { (w.questions_pre) a href=(format!("mailto:{e}")) { (e) } }
        }
        @if let Some(u) = links.shop_url {
            p style="font-size:13px" { a href=(u) { (w.back_to) (links.shop_name.unwrap_or(w.the_shop)) } }
        }
    }
}

/// A customer email's subject, with the shop's name in front when it has one.
fn customer_subject(links: &Links<'_>, subject: String) -> String {
    match links.shop_name {
        Some(n) => format!("{}: {subject}", clean(n)),
        None => subject,
    }
}

fn frame(lang: Lang, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                // Phones show the card at their width, not shrunk to a desktop's.
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
            }
            body style="margin:0;padding:24px;background:#f6f7fb;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1f2937" {
                div style="max-width:560px;margin:0 auto;background:#ffffff;border:1px solid #e5e7eb;border-radius:10px;padding:24px" {
                    (body)
                }
            }
        }
    }
    .into_string()
}

/// The email for `kind` about `rec`. `error` is the last error, for a stuck fulfillment.
pub fn render(
    kind: NotificationKind,
    rec: &SessionRecord,
    detail: &SessionDetail,
    error: Option<&str>,
    links: &Links<'_>,
) -> Email {
    match kind {
        NotificationKind::PaymentFailedEmail => payment_failed_customer(rec, links),
        NotificationKind::PaymentFailedMerchantEmail => payment_failed_merchant(rec, links),
        NotificationKind::ReceiptEmail => receipt(rec, detail, links),
        NotificationKind::StuckMerchantEmail | NotificationKind::StuckAlert => {
            stuck_merchant(rec, error, links)
        }
        NotificationKind::PaymentFailedAlert => payment_failed_merchant(rec, links),
        NotificationKind::DisputeMerchantEmail | NotificationKind::DisputeAlert => {
            dispute_merchant(rec, links)
        }
        // Callbacks are JSON to the merchant's endpoint, never rendered: the
        // merchant's summary is the closest reading should one reach here.
        NotificationKind::FulfilledCallback
        | NotificationKind::PaymentFailedCallback
        | NotificationKind::RefundedCallback
        | NotificationKind::DisputeOpenedCallback
        | NotificationKind::DisputeClosedCallback => payment_failed_merchant(rec, links),
    }
}

/// What a dispute alert says: the amount, Stripe's reason in words, and
/// the deadline for evidence.
struct DisputeFacts {
    amount: String,
    reason: String,
    deadline: String,
    payment: Option<String>,
}

fn dispute_facts(rec: &SessionRecord) -> DisputeFacts {
    let d = rec.dispute.as_ref();
    let amount = match d {
        Some(d) => money::format(
            d.amount,
            d.currency
                .as_deref()
                .or(rec.currency.as_deref())
                .unwrap_or("usd"),
        ),
        None => amount(rec),
    };
    let reason = d
        .map(|d| super::dispute_reason(&d.reason))
        .unwrap_or_else(|| "not given".into());
    let deadline = match d.and_then(|d| d.evidence_due_by) {
        Some(due) => crate::time::display_deadline(due),
        None => "see the payment in Stripe's Dashboard".into(),
    };
    DisputeFacts {
        amount,
        reason,
        deadline,
        payment: crate::stripe::links::payment(rec),
    }
}

fn dispute_merchant(rec: &SessionRecord, links: &Links<'_>) -> Email {
    let f = dispute_facts(rec);
    let dashboard = links.dashboard(rec);
    let subject = format!(
        "Payment disputed: {} ({}), respond by the deadline",
        f.amount, rec.id
    );
    let customer = clean(rec.customer_email.as_deref().unwrap_or("unknown"));
    let mut text = format!(
        "A customer disputed a payment. Stripe has taken the disputed amount from your balance \
         until the dispute is decided. To contest it, submit evidence in Stripe's Dashboard \
         before the deadline; after it, the dispute is lost.\n\n\
         Amount:   {}\nReason:   {}\nDeadline: {}\nCustomer: {customer}\nSession:  {}\n\n\
         The session in fulfilld: {}\n",
        clean(&f.amount),
        clean(&f.reason),
        clean(&f.deadline),
        clean(rec.id.as_str()),
        clean(&dashboard),
    );
    if let Some(p) = &f.payment {
        text.push_str(&format!("The payment in Stripe: {}\n", clean(p)));
    }
    let html = frame(
        Lang::En,
        &subject,
        html! {
            h1 style="font-size:20px" { "A customer disputed a payment" }
            p { "Stripe has taken the disputed amount from your balance until the dispute is decided. To contest it, submit evidence in Stripe's Dashboard before the deadline; after it, the dispute is lost." }
            table style="border-collapse:collapse" {
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Amount" } td { strong { (f.amount) } } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0;vertical-align:top" { "Reason" } td { (f.reason) } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Deadline" } td { strong style="color:#b91c1c" { (f.deadline) } } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Customer" } td { (customer) } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Session" } td { code { (rec.id) } } }
            }
            @if let Some(p) = &f.payment {
                p { a href=(p) style="display:inline-block;background:#4f46e5;color:#ffffff;padding:10px 16px;border-radius:8px;text-decoration:none;font-weight:600" { "Respond in Stripe's Dashboard" } }
            }
            p { a href=(dashboard) { "Open the session in the dashboard" } }
        },
    );
    Email {
        subject,
        text,
        html,
    }
}

fn payment_failed_customer(rec: &SessionRecord, links: &Links<'_>) -> Email {
    let lang = customer_lang(rec);
    let (w, m) = (lang.words(), lang.mail());
    let amount = amount_or(rec, m.the_order);
    let subject = customer_subject(
        links,
        format!("{}{amount}{}", m.failed_subject_pre, m.failed_subject_post),
    );
    let mut text = format!(
        "{}\n\n{}{}{}\n\n",
        m.hello,
        m.failed_pre,
        clean(&amount),
        m.failed_post
    );
    match links.retry_url {
        Some(url) => text.push_str(&format!("{}{}\n\n", m.pay_again_here, clean(url))),
        None => text.push_str(&format!("{}\n\n", m.place_again)),
    }
    text.push_str(&format!("{}{}\n", w.reference, clean(rec.id.as_str())));
    text.push_str(&shop_text(links, lang));
    let html = frame(
        lang,
        &subject,
        html! {
            h1 style="font-size:20px" { (w.failed_heading) }
            p { (m.failed_pre) strong { (amount) } (m.failed_post) }
            @match links.retry_url {
                Some(url) => {
                    p { a href=(url) style="display:inline-block;background:#4f46e5;color:#ffffff;padding:10px 16px;border-radius:8px;text-decoration:none;font-weight:600" { (m.pay_again) } }
                    p style="font-size:13px;color:#6b7280;overflow-wrap:anywhere" { (m.copy_link) (url) }
                }
                None => { p { (m.place_again) } }
            }
            p style="font-size:13px;color:#6b7280" { (w.reference) (rec.id) }
            (shop_html(links, lang))
        },
    );
    Email {
        subject,
        text,
        html,
    }
}

fn payment_failed_merchant(rec: &SessionRecord, links: &Links<'_>) -> Email {
    let amount = amount(rec);
    let customer = clean(rec.customer_email.as_deref().unwrap_or("unknown"));
    let dashboard = links.dashboard(rec);
    let subject = format!("Delayed payment failed: {amount} ({})", rec.id);
    let text = format!(
        "A delayed payment failed, so this order was not fulfilled.\n\n\
         Session:  {}\nAmount:   {}\nCustomer: {customer}\n\n{}\n",
        clean(rec.id.as_str()),
        clean(&amount),
        clean(&dashboard),
    );
    let html = frame(
        Lang::En,
        &subject,
        html! {
            h1 style="font-size:20px" { "A delayed payment failed" }
            p { "The order was not fulfilled. The customer has been told (if email is configured)." }
            table style="border-collapse:collapse" {
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Session" } td { code { (rec.id) } } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Amount" } td { strong { (amount) } } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Customer" } td { (customer) } }
            }
            p { a href=(dashboard) { "Open the session in the dashboard" } }
        },
    );
    Email {
        subject,
        text,
        html,
    }
}

fn stuck_merchant(rec: &SessionRecord, error: Option<&str>, links: &Links<'_>) -> Email {
    let amount = amount(rec);
    let error = error.unwrap_or("unknown error");
    let dashboard = links.dashboard(rec);
    let subject = format!("Fulfillment failed, needs attention: {}", rec.id);
    // An error text quotes whatever the callback endpoint or Stripe
    // answered: cleaned, so it cannot add a line to the plain-text body.
    let text = format!(
        "fulfilld could not fulfil a paid order and has stopped trying. It needs a person: fix \
         the cause, then press \"Fulfill now\" in the dashboard.\n\nSession:    {}\nAmount:     {}\nLast error: {}\n\n{}\n",
        clean(rec.id.as_str()),
        clean(&amount),
        clean(error),
        clean(&dashboard),
    );
    let html = frame(
        Lang::En,
        &subject,
        html! {
            h1 style="font-size:20px" { "A paid order could not be fulfilled" }
            p { "fulfilld could not fulfil this paid order and has stopped trying. Fix the cause, then press “Fulfill now” in the dashboard." }
            table style="border-collapse:collapse" {
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Session" } td { code { (rec.id) } } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0" { "Amount" } td { strong { (amount) } } }
                tr { td style="color:#6b7280;padding:2px 12px 2px 0;vertical-align:top" { "Last error" } td style="color:#b91c1c;overflow-wrap:anywhere;word-break:break-word" { (error) } }
            }
            p { a href=(dashboard) { "Open the session in the dashboard" } }
        },
    );
    Email {
        subject,
        text,
        html,
    }
}

fn receipt(rec: &SessionRecord, detail: &SessionDetail, links: &Links<'_>) -> Email {
    let lang = customer_lang(rec);
    let (w, m) = (lang.words(), lang.mail());
    let currency = rec.currency.clone().unwrap_or_else(|| "usd".into());
    let total = amount_or(rec, m.the_order);
    let subject = customer_subject(links, format!("{}{total}", m.receipt_subject));
    let line = |amount: i64, cur: Option<&str>| money::format(amount, cur.unwrap_or(&currency));
    let subtotal = match (detail.amount_subtotal, rec.amount_total) {
        (Some(sub), Some(t)) if sub != t => Some(money::format(sub, &currency)),
        _ => None,
    };
    let delivery = &detail.delivery_details;
    let address = address_lines(lang, &delivery.address_lines);
    let deliver = delivery.name.is_some() || !address.is_empty();

    let mut text = format!("{}.\n\n", w.receipt_title);
    for item in &detail.line_items {
        text.push_str(&format!(
            "{} x {}  {}\n",
            item.quantity.unwrap_or(1),
            clean(item.description.as_deref().unwrap_or(w.item)),
            clean(&line(item.amount_total, item.currency.as_deref()))
        ));
    }
    if let Some(sub) = &subtotal {
        text.push_str(&format!("\n{}: {}\n", w.subtotal, clean(sub)));
    }
    text.push_str(&format!("{}: {}\n", w.total, clean(&total)));
    if deliver {
        text.push_str(&format!("\n{}:\n", m.delivery_to));
        for l in delivery.name.iter().chain(&address) {
            text.push_str(&format!("{}\n", clean(l)));
        }
    }
    text.push_str(&format!(
        "\n{}{}\n{}{}\n",
        m.your_order,
        clean(&links.order_page(rec)),
        w.reference,
        clean(rec.id.as_str())
    ));
    text.push_str(&shop_text(links, lang));
    let html = frame(
        lang,
        &subject,
        html! {
            h1 style="font-size:20px" { (w.receipt_title) }
            table style="width:100%;border-collapse:collapse;margin:12px 0" {
                @for item in &detail.line_items {
                    tr {
                        td style="padding:6px 0;border-bottom:1px solid #e5e7eb;overflow-wrap:anywhere" { (item.description.as_deref().unwrap_or(w.item)) }
                        td style="padding:6px 8px;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap" { "× " (item.quantity.unwrap_or(1)) }
                        td style="padding:6px 0;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap" { (line(item.amount_total, item.currency.as_deref())) }
                    }
                }
                @if let Some(sub) = &subtotal {
                    tr { td colspan="2" style="padding:6px 0" { (w.subtotal) } td style="text-align:right" { (sub) } }
                }
                tr { td colspan="2" style="padding:8px 0;font-weight:700" { (w.total) } td style="text-align:right;font-weight:700" { (total) } }
            }
            @if deliver {
                p { strong { (m.delivery_to) } br;
                    @for l in delivery.name.iter().chain(&address) { (l) br; }
                }
            }
            p { a href=(links.order_page(rec)) { (m.view_order) } }
            p style="font-size:13px;color:#6b7280" { (w.reference) (rec.id) }
            (shop_html(links, lang))
        },
    );
    Email {
        subject,
        text,
        html,
    }
}

/// A Slack-compatible alert text (`{"text": …}`).
pub fn alert_text(
    kind: NotificationKind,
    rec: &SessionRecord,
    error: Option<&str>,
    links: &Links<'_>,
) -> String {
    // Every interpolated value is escaped, the fixed text around them is ours.
    let amount = mrkdwn(&amount(rec));
    let customer = mrkdwn(rec.customer_email.as_deref().unwrap_or("unknown"));
    let id = mrkdwn(rec.id.as_str());
    let dashboard = mrkdwn(&links.dashboard(rec));
    match kind {
        NotificationKind::StuckAlert | NotificationKind::StuckMerchantEmail => format!(
            ":rotating_light: Fulfillment failed for {id} ({amount}, {customer}): {}. Needs a person: {dashboard}",
            mrkdwn(error.unwrap_or("unknown error")),
        ),
        NotificationKind::DisputeAlert | NotificationKind::DisputeMerchantEmail => {
            let f = dispute_facts(rec);
            let payment = f
                .payment
                .as_deref()
                .map(|p| format!(" Respond in Stripe: {}", mrkdwn(p)))
                .unwrap_or_default();
            format!(
                ":rotating_light: Payment disputed for {id} ({}, {customer}): {}. Evidence due by {}.{payment} Session: {dashboard}",
                mrkdwn(&f.amount),
                mrkdwn(&f.reason),
                mrkdwn(&f.deadline),
            )
        }
        _ => format!(
            ":warning: Delayed payment failed for {id} ({amount}, {customer}). Not fulfilled. {dashboard}",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LineItemRecord;

    fn rec() -> SessionRecord {
        let mut r = SessionRecord::new("cs_test_mail", 0, 0);
        r.amount_total = Some(123_456);
        r.currency = Some("eur".into());
        r.customer_email = Some("<b>x</b>@example.com".into());
        r
    }

    const LINKS: Links<'static> = Links {
        public_url: "https://orders.example.com",
        retry_url: Some("https://shop.example.com/pay-again"),
        shop_name: None,
        shop_url: None,
        support_email: None,
    };

    #[test]
    fn payment_failed_email_has_amount_and_retry_link() {
        let e = render(
            NotificationKind::PaymentFailedEmail,
            &rec(),
            &SessionDetail::default(),
            None,
            &LINKS,
        );
        assert_eq!(e.subject, "Your payment of €1,234.56 did not go through");
        assert!(e.text.contains("https://shop.example.com/pay-again"));
        assert!(
            e.html
                .contains("href=\"https://shop.example.com/pay-again\"")
        );
    }

    #[test]
    fn customer_emails_speak_the_checkouts_language_and_fall_back_to_english() {
        let detail = SessionDetail {
            line_items: vec![LineItemRecord {
                description: Some("Tasse".into()),
                quantity: Some(2),
                amount_total: 2_400,
                currency: Some("eur".into()),
                id: "li_1".into(),
                amount_subtotal: 2_400,
                price_id: None,
                unit_amount: Some(1_200),
                product_id: None,
            }],
            ..SessionDetail::default()
        };
        let mut r = rec();
        r.locale = Some("de".into());
        let links = Links {
            support_email: Some("hilfe@example.de"),
            shop_url: Some("https://laden.example.de"),
            ..LINKS
        };
        let e = render(NotificationKind::ReceiptEmail, &r, &detail, None, &links);
        assert_eq!(e.subject, "Ihre Zahlungsbestätigung: €1,234.56");
        assert!(e.html.contains("<html lang=\"de\">"), "{}", e.html);
        for said in [
            "Danke für Ihre Bestellung",
            "Gesamt: €1,234.56",
            "Fragen? Schreiben Sie an hilfe@example.de",
            "Der Shop: https://laden.example.de",
        ] {
            assert!(e.text.contains(said), "{said:?} in {}", e.text);
        }
        assert!(!e.text.contains("Thank you"), "{}", e.text);

        r.locale = Some("fr-CA".into());
        let e = render(
            NotificationKind::PaymentFailedEmail,
            &r,
            &detail,
            None,
            &links,
        );
        assert_eq!(e.subject, "Votre paiement de €1,234.56 n'est pas passé");
        assert!(e.text.starts_with("Bonjour,\n\nVotre banque"), "{}", e.text);
        assert!(e.html.contains("Payer à nouveau"));

        r.locale = Some("ja".into());
        let e = render(
            NotificationKind::PaymentFailedEmail,
            &r,
            &detail,
            None,
            &links,
        );
        assert_eq!(e.subject, "Your payment of €1,234.56 did not go through");
        assert!(e.html.contains("<html lang=\"en\">"));
    }

    #[test]
    fn receipts_list_every_item_escaped() {
        let mut d = SessionDetail::default();
        for i in 0..3 {
            d.line_items.push(LineItemRecord {
                id: format!("li_{i}"),
                description: Some(format!("<script>item {i}</script>")),
                quantity: Some(2),
                amount_total: 500,
                amount_subtotal: 500,
                currency: Some("eur".into()),
                price_id: None,
                unit_amount: Some(250),
                product_id: None,
            });
        }
        let e = render(NotificationKind::ReceiptEmail, &rec(), &d, None, &LINKS);
        for i in 0..3 {
            assert!(
                e.text
                    .contains(&format!("2 x <script>item {i}</script>  €5.00"))
            );
            assert!(
                e.html
                    .contains(&format!("&lt;script&gt;item {i}&lt;/script&gt;"))
            );
        }
        assert!(!e.html.contains("<script>"));
        assert!(!e.subject.contains('<'));
    }

    #[test]
    fn merchant_texts_link_to_the_dashboard() {
        let e = render(
            NotificationKind::StuckMerchantEmail,
            &rec(),
            &SessionDetail::default(),
            Some("HTTP 500"),
            &LINKS,
        );
        assert!(
            e.text
                .contains("https://orders.example.com/admin/sessions/cs_test_mail")
        );
        assert!(e.text.contains("HTTP 500"));
        let a = alert_text(NotificationKind::PaymentFailedAlert, &rec(), None, &LINKS);
        assert!(
            a.contains("cs_test_mail")
                && a.contains("€1,234.56")
                && a.contains("/admin/sessions/cs_test_mail")
        );
    }

    #[test]
    fn alerts_escape_slack_control_sequences_in_every_value() {
        let mut r = rec();
        r.customer_email = Some("<!channel> <https://evil|click> & co@example.com".into());
        for kind in [
            NotificationKind::PaymentFailedAlert,
            NotificationKind::StuckAlert,
        ] {
            let a = alert_text(kind, &r, Some("callback said <!here>\r\nand more"), &LINKS);
            assert!(
                !a.contains("<!channel>") && !a.contains("<https://evil|click>"),
                "{a}"
            );
            assert!(
                a.contains("&lt;!channel&gt; &lt;https://evil|click&gt; &amp; co@example.com"),
                "{a}"
            );
            assert!(!a.contains('<') && !a.contains('>'), "{a}");
            assert!(!a.contains('\n') && !a.contains('\r'), "{a}");
        }
        let a = alert_text(NotificationKind::StuckAlert, &r, Some("<!here>"), &LINKS);
        assert!(a.contains("&lt;!here&gt;"), "{a}");
    }

    #[test]
    fn plain_text_values_cannot_add_lines() {
        let mut r = rec();
        r.customer_email = Some("a@example.com\r\nBcc: evil@example.com".into());
        let mut d = SessionDetail::default();
        d.delivery_details.name = Some("Ann\nForged line".into());
        d.delivery_details.address_lines = vec!["1 Road\r\n\u{2028}x\u{85}y".into()];
        d.line_items.push(LineItemRecord {
            id: "li_1".into(),
            description: Some("Thing\r\nTotal: €0.00".into()),
            quantity: Some(1),
            amount_total: 500,
            amount_subtotal: 500,
            currency: Some("eur".into()),
            price_id: None,
            unit_amount: Some(500),
            product_id: None,
        });
        let baseline = |kind, rec: &SessionRecord, d: &SessionDetail, err| {
            render(kind, rec, d, err, &LINKS).text.lines().count()
        };
        let plain = rec();
        let mut plain_d = d.clone();
        plain_d.delivery_details.name = Some("Ann".into());
        plain_d.delivery_details.address_lines = vec!["1 Road".into()];
        plain_d.line_items[0].description = Some("Thing".into());
        for kind in [
            NotificationKind::PaymentFailedEmail,
            NotificationKind::PaymentFailedMerchantEmail,
            NotificationKind::ReceiptEmail,
            NotificationKind::StuckMerchantEmail,
        ] {
            let injected = baseline(kind, &r, &d, Some("HTTP 500\r\nForged: line"));
            let clean = baseline(kind, &plain, &plain_d, Some("HTTP 500"));
            assert_eq!(injected, clean, "{kind:?}");
        }
        let e = render(
            NotificationKind::StuckMerchantEmail,
            &r,
            &d,
            Some("HTTP 500\r\nForged: line"),
            &LINKS,
        );
        assert!(
            e.text.contains("Last error: HTTP 500  Forged: line\n"),
            "{}",
            e.text
        );
    }
}
