//! Email (a real SMTP conversation with a sink on loopback) and alerts (a
//! real HTTP endpoint), through the durable outbox: once each, retried while
//! the server is down, never a second copy.

use std::sync::{Arc, Mutex};

use fulfilld::{
    config::Secret,
    stripe::double::{SampleSession, Scripted},
};
use poem::{
    EndpointExt, Response, Route, Server, handler,
    http::StatusCode,
    listener::TcpAcceptor,
    post,
    web::{Data, Json},
};
use serde_json::Value;

use crate::helpers::{smtp::SmtpSink, *};

const MERCHANT: &str = "owner@shop.example";
const RETRY_URL: &str = "https://shop.example/pay-again";

/// The alert webhook: records JSON bodies, answers with a settable status.
#[derive(Clone)]
struct Alerts {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    status: Arc<Mutex<u16>>,
}

#[handler]
async fn alert_endpoint(Json(body): Json<Value>, alerts: Data<&Alerts>) -> Response {
    alerts.received.lock().unwrap().push(body);
    let status = *alerts.status.lock().unwrap();
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .finish()
}

impl Alerts {
    async fn start() -> Alerts {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alerts = Alerts {
            url: format!("http://{}/alert", listener.local_addr().unwrap()),
            received: Arc::default(),
            status: Arc::new(Mutex::new(200)),
        };
        let app = Route::new()
            .at("/alert", post(alert_endpoint))
            .data(alerts.clone());
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        alerts
    }

    fn texts(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

struct Setup {
    app: TestApp,
    smtp: SmtpSink,
    alerts: Alerts,
}

async fn setup(receipts: bool) -> Setup {
    setup_with(receipts, |_| {}).await
}

async fn setup_with(
    receipts: bool,
    tweak: impl FnOnce(&mut fulfilld::config::Config) + Send + 'static,
) -> Setup {
    let smtp = SmtpSink::start().await;
    let alerts = Alerts::start().await;
    let (smtp_url, alert_url) = (
        smtp.url_with_auth("mailer", "p@ss word"),
        alerts.url.clone(),
    );
    let app = spawn_app_with(move |c| {
        c.smtp.url = Some(Secret::from_value(smtp_url.parse().unwrap()));
        c.smtp.from = Some("Coffee Shop <orders@shop.example>".parse().unwrap());
        c.notifications.merchant_email = Some(MERCHANT.parse().unwrap());
        c.notifications.webhook_url = Some(Secret::from_value(alert_url.parse().unwrap()));
        c.notifications.retry_url = Some(RETRY_URL.parse().unwrap());
        c.fulfillment.receipt_email = receipts;
        c.server.public_url = "https://orders.shop.example".parse().unwrap();
        tweak(c);
    })
    .await;
    Setup { app, smtp, alerts }
}

/// Waits until every outbox entry of the session is `sent` (or `failed`),
/// so nothing more can go out, and returns the session.
async fn settled(app: &TestApp, id: &str, expected: usize) -> Value {
    eventually(
        &format!("{expected} notifications of {id} settle"),
        || async {
            let s = app.session(id).await;
            let n = s["notifications"].as_array()?.clone();
            let outbox: Vec<_> = n
                .iter()
                .filter(|n| {
                    n["kind"]
                        .as_str()
                        .is_some_and(|k| k.starts_with("email.") || k.starts_with("alert."))
                })
                .collect();
            (outbox.len() == expected
                && outbox
                    .iter()
                    .all(|n| n["status"] == "sent" || n["status"] == "failed"))
            .then_some(s)
        },
    )
    .await
}

/// Seeds `sample`, then delivers its completion and its failed delayed
/// payment (event ids derived from `tag`).
async fn fail_delayed_payment(app: &TestApp, sample: &SampleSession, tag: &str) {
    let session = app.seed(sample);
    for (suffix, kind) in [
        ("done", "checkout.session.completed"),
        ("failed", "checkout.session.async_payment_failed"),
    ] {
        assert_eq!(
            app.send_event(&format!("{tag}_{suffix}"), kind, &session)
                .await,
            200
        );
    }
}

fn delayed(id: &str) -> SampleSession {
    let mut sample = SampleSession::paid(id, 2);
    sample.payment_status = "unpaid";
    sample.payment_method = "sepa_debit";
    sample.currency = "eur";
    sample.email = "lena.schmidt@example.de".into();
    sample
}

#[tokio::test]
async fn a_failed_delayed_payment_delivered_five_times_sends_one_email_each_and_one_alert() {
    let Setup { app, smtp, alerts } = setup(false).await;
    let id = session_id("asyncfail");
    let session = app.seed(&delayed(&id));
    assert_eq!(
        app.send_event("evt_af_done", "checkout.session.completed", &session)
            .await,
        200
    );
    for _ in 0..4 {
        assert_eq!(
            app.send_event(
                "evt_af_failed",
                "checkout.session.async_payment_failed",
                &session
            )
            .await,
            200
        );
    }
    // A fifth delivery under another event id (Stripe may re-send as a new event).
    assert_eq!(
        app.send_event(
            "evt_af_failed_2",
            "checkout.session.async_payment_failed",
            &session
        )
        .await,
        200
    );
    let s = settled(&app, &id, 3).await;
    assert_eq!(s["state"], "payment_failed");
    assert!(
        s["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] != "failed"),
        "{s}"
    );

    // The later deliveries' jobs must have run before "one each" is judged.
    app.settle().await;
    let messages = smtp.messages();
    assert_eq!(
        messages.len(),
        2,
        "one customer email and one merchant email"
    );
    assert_eq!(alerts.texts().len(), 1, "one alert");
    // Every login used the configured credentials; and there was one at all
    // (an empty list is all-equal to anything).
    let logins = smtp.logins();
    assert!(!logins.is_empty(), "the mailer logged in");
    assert_eq!(
        logins,
        vec![("mailer".to_string(), "p@ss word".to_string()); logins.len()]
    );

    let customer = messages
        .iter()
        .find(|m| m.to == ["lena.schmidt@example.de"])
        .expect("the customer's email");
    assert_eq!(customer.from, "orders@shop.example");
    assert_eq!(
        customer.subject().unwrap(),
        "Your payment of €8.00 did not go through"
    );
    assert!(
        customer
            .decoded_header("From")
            .unwrap()
            .contains("Coffee Shop")
    );
    assert!(
        customer
            .header("Message-ID")
            .unwrap()
            .ends_with("@orders.shop.example>")
    );
    assert!(customer.header("Date").is_some());
    let text = customer.text_body().unwrap();
    assert!(text.contains("€8.00") && text.contains(RETRY_URL), "{text}");
    let html = customer.html_body().unwrap();
    assert!(html.contains(&format!("href=\"{RETRY_URL}\"")), "{html}");

    let merchant = messages
        .iter()
        .find(|m| m.to == [MERCHANT])
        .expect("the merchant's email");
    let text = merchant.text_body().unwrap();
    for needle in [
        id.as_str(),
        "€8.00",
        "lena.schmidt@example.de",
        &format!("https://orders.shop.example/admin/sessions/{id}"),
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let alert = &alerts.texts()[0];
    assert!(
        alert.contains(&id) && alert.contains("€8.00") && alert.contains("/admin/sessions/"),
        "{alert}"
    );
}

#[tokio::test]
async fn emails_wait_out_an_smtp_outage_and_arrive_once() {
    let Setup { app, smtp, .. } = setup(false).await;
    smtp.set_down(true);
    let id = session_id("smtpdown");
    fail_delayed_payment(&app, &delayed(&id), "evt_sd").await;
    // Refused at least twice each, and shown as retrying with the error.
    let s = eventually("the emails are being retried", || async {
        let s = app.session(&id).await;
        let emails: Vec<Value> = s["notifications"]
            .as_array()?
            .iter()
            .filter(|n| n["kind"].as_str().is_some_and(|k| k.starts_with("email.")))
            .cloned()
            .collect();
        (emails.len() == 2
            && emails
                .iter()
                .all(|n| n["status"] == "retrying" && n["attempts"].as_u64() >= Some(2)))
        .then_some(s)
    })
    .await;
    let email = s["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "email.payment_failed")
        .unwrap()
        .clone();
    assert!(
        email["last_error"].as_str().unwrap().contains("SMTP"),
        "{email}"
    );
    assert!(smtp.messages().is_empty());
    let refused = smtp.connections();
    assert!(refused >= 4);

    smtp.set_down(false);
    settled(&app, &id, 3).await;
    app.settle().await;
    assert_eq!(
        smtp.messages().len(),
        2,
        "each email once, after the outage"
    );
    // The timeline shows the failed and the successful attempts.
    let s = app.session(&id).await;
    let deliveries = s["deliveries"].as_array().unwrap();
    assert!(
        deliveries
            .iter()
            .any(|d| d["type"] == "email.payment_failed" && !d["error"].is_null())
    );
    assert!(
        deliveries
            .iter()
            .any(|d| d["type"] == "email.payment_failed" && d["error"].is_null())
    );
}

#[tokio::test]
async fn a_receipt_lists_every_line_item_once_even_after_a_forced_refulfillment() {
    let Setup { app, smtp, .. } = setup(true).await;
    let id = session_id("receipt");
    let mut sample = SampleSession::paid(&id, 5);
    sample.items[2].0 = "Oat milk <1 L> & \"barista\"".into();
    let session = app.seed(&sample);
    app.send_event("evt_rc_1", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    settled(&app, &id, 1).await;
    // Force a second fulfillment: the receipt is not sent again.
    let (status, _) = app
        .api_post(
            &format!("/admin/api/sessions/{id}/fulfill"),
            serde_json::json!({"force": true}),
        )
        .await;
    assert_eq!(status, 200);
    app.landing(&id).await;
    // Wait until nothing is queued, so a second receipt could not still be on its way.
    app.settle().await;
    assert_eq!(app.queued_jobs().await, 0);
    let s = settled(&app, &id, 1).await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 2);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let receipt = &messages[0];
    assert_eq!(receipt.to, ["jenny.rosen@example.com"]);
    let total: i64 = sample.items.iter().map(|(_, u, q)| u * q).sum();
    assert_eq!(
        receipt.subject().unwrap(),
        format!("Your receipt: {}", usd(total))
    );
    let (text, html) = (receipt.text_body().unwrap(), receipt.html_body().unwrap());
    for (name, unit, qty) in &sample.items {
        let line = format!("{qty} x {name}  {}", usd(unit * qty));
        assert!(text.contains(&line), "{line} in {text}");
    }
    assert!(
        html.contains("Oat milk &lt;1 L&gt; &amp; &quot;barista&quot;"),
        "{html}"
    );
    assert!(text.contains("510 Townsend St"), "delivery details: {text}");
    assert!(text.contains(&format!(
        "https://orders.shop.example/after-checkout?session_id={id}"
    )));
}

#[tokio::test]
async fn no_receipt_when_receipt_email_is_off() {
    let Setup { app, smtp, .. } = setup(false).await;
    let id = session_id("noreceipt");
    let session = app.seed(&SampleSession::paid(&id, 2));
    app.send_event("evt_nr_1", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    app.settle().await;
    let s = app.session(&id).await;
    // Only the merchant callback, which is there: `all` alone would also
    // hold for no notifications at all.
    let kinds: Vec<&str> = s["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["checkout.fulfilled"], "{s}");
    // Nothing was queued, so nothing can arrive later either.
    assert_eq!(app.queued_jobs().await, 0);
    assert_eq!(smtp.connections(), 0);
}

#[tokio::test]
async fn a_stuck_fulfillment_alerts_once() {
    let Setup { app, smtp, alerts } = setup(false).await;
    let id = session_id("stuck");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.stripe.script(
        &id,
        [
            // "No such session": the one answer that can never change.
            Scripted::Status(404),
            Scripted::Status(404),
        ],
    );
    app.send_event("evt_st_1", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "failed").await;
    settled(&app, &id, 2).await;
    // It fails again after a re-trigger: still one alert and one email.
    let (_, r) = app
        .api_post(
            &format!("/admin/api/sessions/{id}/fulfill"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r["result"]["state"], "failed", "{r}");
    let s = settled(&app, &id, 2).await;
    app.settle().await;
    let texts = alerts.texts();
    assert_eq!(
        texts.len(),
        1,
        "{texts:?}\ndeliveries: {}\nattempts: {}",
        s["deliveries"],
        s["attempts"]
    );
    assert!(
        texts[0].contains(&id) && texts[0].contains("404"),
        "{}",
        texts[0]
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, [MERCHANT]);
    assert!(
        mails[0]
            .text_body()
            .unwrap()
            .contains("Stripe answered 404")
    );
}

#[tokio::test]
async fn a_customer_address_cannot_inject_headers() {
    let Setup { app, smtp, .. } = setup(false).await;
    let id = session_id("inject");
    let mut sample = delayed(&id);
    sample.email = "victim@example.com\r\nBcc: everyone@example.com".into();
    fail_delayed_payment(&app, &sample, "evt_in").await;
    let s = settled(&app, &id, 3).await;
    app.settle().await;
    let customer = s["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "email.payment_failed")
        .unwrap()
        .clone();
    assert_eq!(
        customer["status"], "failed",
        "refused at once, not retried: {customer}"
    );
    assert_eq!(customer["attempts"], 1);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "only the merchant's email");
    for m in messages {
        assert_eq!(m.to, [MERCHANT]);
        assert_eq!(m.header("Bcc"), None);
        // The session id is random hex, so look for a header line, not the letters.
        let headers = m.raw.split("\r\n\r\n").next().unwrap();
        assert!(
            !headers
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{headers}"
        );
        assert!(!headers.contains("everyone@example.com"), "{headers}");
    }
}

#[tokio::test]
async fn a_refused_email_can_be_resent_from_the_dashboard() {
    let Setup { app, smtp, .. } = setup(false).await;
    smtp.reject_rcpt(Some("lena".into()));
    let id = session_id("resend");
    fail_delayed_payment(&app, &delayed(&id), "evt_rs").await;
    let s = settled(&app, &id, 3).await;
    let customer = |s: &Value| {
        s["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == "email.payment_failed")
            .unwrap()
            .clone()
    };
    assert_eq!(customer(&s)["status"], "failed");
    assert!(
        customer(&s)["last_error"].as_str().unwrap().contains("550"),
        "{s}"
    );

    // The mailbox works again; the admin presses "Resend" on the session page.
    smtp.reject_rcpt(None);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(app.url("/admin/login"))
        .form(&[("username", "admin"), ("password", "a long test password")])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http
        .get(app.url(&format!("/admin/sessions/{id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let action = format!(
        "/admin/sessions/{id}/notifications/{}/resend",
        customer(&s)["id"].as_str().unwrap()
    );
    assert!(page.contains(&action), "a Resend button");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = http
        .post(app.url(&action))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("?result=resent")
    );
    eventually("the resent email arrives", || async {
        (customer(&app.session(&id).await)["status"] == "sent").then_some(())
    })
    .await;
    app.settle().await;
    let to_customer = smtp
        .messages()
        .into_iter()
        .filter(|m| m.to == ["lena.schmidt@example.de"])
        .count();
    assert_eq!(to_customer, 1);
    // Pressing it again does nothing: it is no longer failed.
    let r = http
        .post(app.url(&action))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("?result=not_resent")
    );
    app.settle().await;
    let to_customer = smtp
        .messages()
        .iter()
        .filter(|m| m.to == ["lena.schmidt@example.de"])
        .count();
    assert_eq!(to_customer, 1, "not sent again");
}

#[tokio::test]
async fn a_payment_failed_callback_that_gives_up_alerts_the_merchant() {
    let alerts = Alerts::start().await;
    let url = alerts.url.clone();
    let app = spawn_app_with(move |c| {
        c.notifications.webhook_url = Some(Secret::from_value(url.parse().unwrap()));
        c.jobs.give_up_after_secs = 0;
    })
    .await;
    app.receiver.respond_with(500);
    let id = session_id("cbgiveup");
    fail_delayed_payment(&app, &delayed(&id), "evt_cg").await;
    eventually("the stuck alert", || async {
        alerts
            .texts()
            .into_iter()
            .find(|t| t.contains("checkout.payment_failed callback gave up"))
    })
    .await;
    let s = settled(&app, &id, 2).await;
    app.settle().await;
    let callback = s["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "checkout.payment_failed")
        .unwrap()
        .clone();
    assert_eq!(callback["status"], "failed", "{callback}");
    // One payment-failed alert and one stuck alert, nothing more.
    assert_eq!(alerts.texts().len(), 2, "{:?}", alerts.texts());
}

#[tokio::test]
async fn slack_alerts_escape_customer_controlled_mrkdwn() {
    let Setup { app, alerts, .. } = setup(false).await;
    let id = session_id("mrkdwn");
    let mut sample = delayed(&id);
    sample.email = "<!channel> <https://evil.example|click> & x@example.com".into();
    fail_delayed_payment(&app, &sample, "evt_md").await;
    eventually("the alert arrives", || async {
        (!alerts.texts().is_empty()).then_some(())
    })
    .await;
    let texts = alerts.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let alert = &texts[0];
    // Inert: shown as typed, no ping, no disguised link.
    assert!(!alert.contains("<!channel>"), "{alert}");
    assert!(!alert.contains("<https://evil.example|click>"), "{alert}");
    assert!(
        alert.contains("&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; x@example.com"),
        "{alert}"
    );
    assert!(!alert.contains('<') && !alert.contains('>'), "{alert}");
    assert!(alert.contains(&id), "{alert}");
}

/// A Stripe API that says every session does not exist, with an error
/// message that tries to add lines to whatever quotes it.
async fn lying_stripe() -> String {
    #[handler]
    fn no_such_session() -> Response {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .content_type("application/json")
            .body(
                serde_json::json!({"error": {
                    "type": "invalid_request_error",
                    "message": "No such session\r\nForged: line\nAnother <!channel>"
                }})
                .to_string(),
            )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(
        Server::new_with_acceptor(acceptor).run(poem::Route::new().at("/*", no_such_session)),
    );
    url
}

#[tokio::test]
async fn an_error_text_cannot_add_a_line_to_a_plain_text_email_or_an_alert() {
    let stripe = lying_stripe().await;
    let Setup { app, smtp, alerts } = setup_with(false, move |c| {
        c.stripe.api_base = stripe.parse().unwrap();
    })
    .await;
    let id = session_id("crlf");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.send_event("evt_crlf", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "failed").await;
    settled(&app, &id, 2).await;
    app.settle().await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    let text = mails[0].text_body().unwrap();
    let error_line = text
        .lines()
        .find(|l| l.starts_with("Last error:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(error_line.contains("No such session"), "{text}");
    assert!(error_line.contains("Forged: line"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("Forged")), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("Another")), "{text}");
    let texts = alerts.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        !texts[0].contains('\n') && !texts[0].contains('\r'),
        "{}",
        texts[0]
    );
    assert!(texts[0].contains("&lt;!channel&gt;"), "{}", texts[0]);
}

#[tokio::test]
async fn a_dispute_alerts_the_merchant_once_with_the_deadline_and_links() {
    let Setup { app, smtp, alerts } = setup(false).await;
    let id = session_id("disputed");
    let session = app.seed(&SampleSession::paid(&id, 2));
    assert_eq!(
        app.send_event("evt_dp_done", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let pi = session["payment_intent"].as_str().unwrap();
    // Tuesday 15 December 2026, 23:59:59 UTC.
    let due = 1_797_379_199_i64;
    let event = |event_id: &str, kind: &str, status: &str| {
        serde_json::json!({
            "id": event_id, "object": "event", "type": kind, "created": 1_796_000_000,
            "livemode": false, "api_version": "2026-10-28.endive",
            "data": {"object": {
                "id": "dp_1Alert", "object": "dispute", "amount": 500, "currency": "usd",
                "charge": "ch_1Alert", "payment_intent": pi, "reason": "product_not_received",
                "status": status, "evidence_details": {"due_by": due, "has_evidence": false},
            }},
        })
        .to_string()
    };
    for (event_id, kind, status) in [
        ("evt_dp_open", "charge.dispute.created", "needs_response"),
        ("evt_dp_open", "charge.dispute.created", "needs_response"),
        ("evt_dp_update", "charge.dispute.updated", "under_review"),
    ] {
        let (body, header) = signed(&event(event_id, kind, status));
        assert_eq!(
            app.post_webhook_raw(body, Some(&header)).await.status(),
            200
        );
    }
    settled(&app, &id, 2).await;
    app.settle().await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "one merchant email, no customer email");
    let mail = &messages[0];
    assert_eq!(mail.to, [MERCHANT]);
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    let subject = mail.subject().unwrap();
    assert!(
        subject.contains("disputed") && subject.contains("$5.00"),
        "{subject}"
    );
    let text = mail.text_body().unwrap();
    for needle in [
        "$5.00",
        "did not receive the order",
        "Tuesday 15 December 2026, 23:59 UTC",
        &format!("https://orders.shop.example/admin/sessions/{id}"),
        &format!("https://dashboard.stripe.com/test/payments/{pi}"),
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert!(
        !text.contains("     "),
        "no runs of spaces in the plain text: {text}"
    );
    let html = mail.html_body().unwrap();
    assert!(
        html.contains(&format!(
            "href=\"https://dashboard.stripe.com/test/payments/{pi}\""
        )),
        "{html}"
    );
    let texts = alerts.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].contains("Tuesday 15 December 2026") && texts[0].contains(&id),
        "{}",
        texts[0]
    );
}

#[tokio::test]
async fn the_shop_is_named_on_the_landing_page_and_in_emails_and_replies_reach_support() {
    let Setup { app, smtp, .. } = setup_with(true, |c| {
        c.shop.name = Some("Coffee & Co".into());
        c.shop.url = Some("https://coffee.example/".parse().unwrap());
        c.shop.support_email = Some("help@coffee.example".parse().unwrap());
    })
    .await;
    let id = session_id("shop");
    let session = app.seed(&SampleSession::paid(&id, 1));
    assert_eq!(
        app.send_event("evt_shop_done", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    for needle in [
        "Coffee &amp; Co",
        "mailto:help@coffee.example",
        "href=\"https://coffee.example\"",
        "A confirmation goes to",
    ] {
        assert!(page.contains(needle), "{needle} in {page}");
    }
    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(
        mail.subject().unwrap(),
        format!("Coffee & Co: Your receipt: {}", usd(200))
    );
    assert!(
        mail.decoded_header("From").unwrap().contains("Coffee & Co"),
        "{:?}",
        mail.header("From")
    );
    assert_eq!(
        mail.header("Reply-To").as_deref(),
        Some("help@coffee.example")
    );
    assert_eq!(
        mail.header("Auto-Submitted"),
        None,
        "a receipt is for a person to answer"
    );
    let text = mail.text_body().unwrap();
    assert!(
        text.contains("Questions? Write to help@coffee.example"),
        "{text}"
    );
    assert!(
        text.contains("Coffee & Co: https://coffee.example"),
        "{text}"
    );
    let html = mail.html_body().unwrap();
    assert!(html.contains("name=\"viewport\""), "{html}");
}

#[tokio::test]
async fn a_page_never_promises_an_email_that_is_not_configured() {
    // No SMTP at all: neither the receipt nor the processing page promise mail.
    let app = spawn_app().await;
    let id = session_id("nopromise");
    let session = app.seed(&SampleSession::paid(&id, 1));
    assert_eq!(
        app.send_event("evt_np_done", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let (_, page) = app.landing(&id).await;
    assert!(page.contains("Thank you for your order"), "{page}");
    assert!(!page.contains("confirmation goes to"), "{page}");
    let id = session_id("nopromise_sepa");
    let session = app.seed(&delayed(&id));
    assert_eq!(
        app.send_event("evt_np_sepa", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "awaiting_payment").await;
    let (_, page) = app.landing(&id).await;
    assert!(page.contains("still being processed"), "{page}");
    assert!(
        !page.contains("We will email") && !page.contains("let you know"),
        "{page}"
    );
}

#[tokio::test]
async fn send_test_email_reports_the_servers_answer() {
    let smtp = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |to: &'static str, smtp_url: Option<String>| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"));
            cmd.arg("send-test-email")
                .arg(to)
                .current_dir(&dir)
                .env_remove("FULFILLD_CONFIG")
                .env(
                    "FULFILLD_STRIPE__SECRET_KEY",
                    "sk_test_51HfakeFAKEfake1234567890",
                )
                .env(
                    "FULFILLD_STRIPE__WEBHOOK_SECRETS",
                    "[\"whsec_abcdefghijklmnop\"]",
                )
                .env("FULFILLD_ADMIN__USERNAME", "admin")
                .env("FULFILLD_ADMIN__PASSWORD", "correct horse battery")
                .env("FULFILLD_SMTP__FROM", "Shop <orders@shop.example>")
                .env("FULFILLD_SHOP__SUPPORT_EMAIL", "help@shop.example");
            if let Some(url) = smtp_url {
                cmd.env("FULFILLD_SMTP__URL", url);
            }
            let out = cmd.output().unwrap();
            (out.status.code(), String::from_utf8(out.stderr).unwrap())
        })
    };
    let (code, err) = run("owner@shop.example", Some(smtp.url())).await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("sent to owner@shop.example: the server answered 250"),
        "{err}"
    );
    let m = smtp.wait_for(1).await.remove(0);
    assert_eq!(m.to, ["owner@shop.example"]);
    assert_eq!(m.subject().as_deref(), Some("fulfilld test email"));
    assert_eq!(m.header("Reply-To").as_deref(), Some("help@shop.example"));
    assert_eq!(
        m.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    // A refused recipient: the server's answer, exit 1.
    smtp.reject_rcpt(Some("nobody".into()));
    let (code, err) = run("nobody@shop.example", Some(smtp.url())).await.unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("not sent: the SMTP server refused it") && err.contains("55"),
        "{err}"
    );
    // No SMTP configured: a setup error, exit 2.
    let (code, err) = run("owner@shop.example", None).await.unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("smtp.url is not set"), "{err}");
}

#[tokio::test]
async fn a_bounced_receipt_marks_the_session_until_it_is_sent() {
    let Setup { app, smtp, .. } = setup(true).await;
    smtp.reject_rcpt(Some("bounce".into()));
    let id = session_id("bounce");
    let mut sample = SampleSession::paid(&id, 1);
    sample.email = "bounce@example.com".into();
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_bounce_done", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let sid = fulfilld::model::SessionId::parse(&id).unwrap();
    let rec = eventually("the receipt is marked undelivered", || async {
        let rec = app.store.session(&sid).await.unwrap()?;
        rec.undelivered.is_some().then_some(rec)
    })
    .await;
    assert_eq!(
        rec.undelivered,
        Some(fulfilld::model::NotificationKind::ReceiptEmail)
    );
    // The address is fixed on the mail server's side; a resend gets through.
    smtp.reject_rcpt(None);
    let n = fulfilld::model::notification_id(fulfilld::model::NotificationKind::ReceiptEmail, &id);
    assert!(app.fulfiller.resend_notification(&sid, &n).await.unwrap());
    eventually("the mark is gone once the receipt is sent", || async {
        let rec = app.store.session(&sid).await.unwrap()?;
        rec.undelivered.is_none().then_some(())
    })
    .await;
    assert_eq!(smtp.wait_for(1).await.len(), 1);
}
