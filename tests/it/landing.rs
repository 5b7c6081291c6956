//! `GET /after-checkout`: what the customer sees, and that nothing they send
//! comes back unescaped.

use fulfilld::stripe::double::SampleSession;

use crate::helpers::*;

/// A measured figure, straight to stderr so `--nocapture` shows it.
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Text as HTML shows it (what a template escapes).
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The table row of `page` that starts with the cell `description`.
fn row<'a>(page: &'a str, description: &str) -> &'a str {
    let cell = format!(">{}<", escaped(description));
    let at = page
        .find(&cell)
        .unwrap_or_else(|| panic!("a row for {description} in {page}"));
    page[at..].split("</tr>").next().unwrap()
}

#[tokio::test]
async fn paid_session_shows_the_receipt_even_before_the_webhook() {
    let app = spawn_app().await;
    let id = session_id("paid");
    let mut sample = SampleSession::paid(&id, 3);
    sample.items[0].0 = "<script>alert('li')</script>".into();
    sample.email = "<img src=x onerror=alert(1)>@example.com".into();
    app.seed(&sample);
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(page.contains("Thank you for your order"), "{page}");
    let items = sample.items.clone();
    assert!(page.contains("Item 2") && page.contains("Item 3"));
    assert!(!page.contains("<script>alert"), "line item escaped");
    assert!(page.contains("&lt;script&gt;"));
    assert!(!page.contains("<img"), "email escaped");
    assert!(page.contains("510 Townsend St"));
    // Each line's amount and the total, formatted for the currency, as seeded
    // (unit × quantity: 2×$1.00, 3×$2.00, 1×$3.00).
    for (description, unit, qty) in &items {
        let row = row(&page, description);
        assert!(row.contains(&format!(">{qty}<")), "quantity {qty} in {row}");
        let amount = usd(unit * qty);
        assert!(row.contains(&format!(">{amount}<")), "{amount} in {row}");
    }
    let total = usd(items.iter().map(|(_, unit, qty)| unit * qty).sum());
    let total_row = row(&page, "Total");
    assert!(
        total_row.contains(&format!(">{total}<")),
        "{total} in {total_row}"
    );
    // The landing page itself fulfilled it, with the one retrieval it made
    // to learn the session exists.
    app.wait_for_state(&id, "fulfilled").await;
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["attempts"][0]["trigger"], "landing_page");
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 1);
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
    // A second visit changes nothing.
    let (status, _) = app.landing(&id).await;
    assert_eq!(status, 200);
    app.settle().await;
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
}

#[tokio::test]
async fn unpaid_session_says_processing() {
    let app = spawn_app().await;
    let id = session_id("unpaid");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    app.seed(&sample);
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(page.contains("Payment processing"), "{page}");
    // No SMTP in this test: no email is promised (see notifications.rs for one that is).
    assert!(!page.contains("j•••@example.com"), "{page}");
    app.wait_for_state(&id, "awaiting_payment").await;
    app.settle().await;
    assert!(app.receiver.received().is_empty());
}

#[tokio::test]
async fn failed_payment_says_so() {
    let app = spawn_app().await;
    let id = session_id("lfail");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event(
            "evt_lf_1",
            "checkout.session.async_payment_failed",
            &session
        )
        .await,
        200
    );
    app.wait_for_state(&id, "payment_failed").await;
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(page.contains("Your payment did not go through"), "{page}");
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let app = spawn_app().await;
    let (status, page) = app.landing("cs_test_doesnotexist").await;
    assert_eq!(status, 404);
    assert!(page.contains("could not find"));
    app.settle().await;
    assert_eq!(
        app.session_count().await,
        0,
        "an unknown id leaves no trace"
    );

    // Each malformed id, and what of it must not come back unescaped (`None`:
    // nothing in it would be dangerous, so only the status is judged).
    for (bad, raw) in [
        (
            "%3Cscript%3Ealert(1)%3C/script%3E",
            Some("<script>alert(1)</script>"),
        ),
        (
            "<script>alert(1)</script>",
            Some("<script>alert(1)</script>"),
        ),
        ("cs_test_%22onmouseover%3D", Some("\"onmouseover=")),
        ("pi_123", None),
        ("", None),
    ] {
        let r = app
            .http
            .get(app.url(&format!("/after-checkout?session_id={bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("frame-ancestors 'none'"));
        let body = r.text().await.unwrap();
        if let Some(raw) = raw {
            assert!(!body.contains(raw), "echoed unescaped: {bad}");
        }
        if bad.contains("script") {
            assert!(!body.contains("<script>alert"), "{bad}");
        }
        if bad.contains("alert(1)") {
            assert!(!body.contains("alert(1)"), "input is not echoed: {bad}");
        }
    }
    let r = app
        .http
        .get(app.url("/after-checkout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        app.stripe
            .count("/v1/checkout/sessions/cs_test_doesnotexist"),
        1
    );
    assert_eq!(
        app.stripe.requests().len(),
        1,
        "malformed ids never reach Stripe"
    );
}

#[tokio::test]
async fn an_open_checkout_is_not_taken_for_an_order() {
    let app = spawn_app().await;
    let id = session_id("open");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    sample.status = "open";
    app.seed(&sample);
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(page.contains("not complete"), "{page}");
    app.settle().await;
    assert_eq!(app.session_count().await, 0, "nothing stored");
}

#[tokio::test]
async fn stylesheet_is_served_from_the_binary() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/assets/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(r.text().await.unwrap().contains(".card"));
    assert_eq!(
        app.http
            .get(app.url("/assets/nope.css"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// Made-up ids cost a bounded number of Stripe calls (tried once, rationed
/// per client and overall), answered with a calm 429 beyond it; a customer
/// whose session is recorded is served all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_ids_cost_a_bounded_number_of_stripe_calls_and_never_starve_known_orders() {
    use fulfilld::http::rate::UNKNOWN_LOOKUPS_PER_CLIENT;
    let app = spawn_app().await;
    let known = session_id("knownorder");
    let session = app.seed(&SampleSession::paid(&known, 1));
    app.send_event("evt_known_1", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&known, "fulfilled").await;
    let started = std::time::Instant::now();
    let calls_before = app.stripe.count("/v1/checkout/sessions/");
    let mut flood = tokio::task::JoinSet::new();
    let (ok, limited) = (
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    for worker in 0..20 {
        let (http, base, ok, limited) = (
            app.http.clone(),
            app.address.clone(),
            ok.clone(),
            limited.clone(),
        );
        flood.spawn(async move {
            for n in 0..100 {
                let url = format!("{base}/after-checkout?session_id=cs_test_madeup_{worker}_{n}");
                let status = http.get(url).send().await.unwrap().status().as_u16();
                match status {
                    404 => ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    429 => limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    other => panic!("made-up id answered {other}"),
                };
            }
        });
    }
    // Meanwhile the real customer's page answers, every time.
    for _ in 0..20 {
        let (status, page) = app.landing(&known).await;
        assert_eq!(status, 200);
        assert!(page.contains("Thank you for your order"));
    }
    while let Some(done) = flood.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed();
    let calls = app.stripe.count("/v1/checkout/sessions/") - calls_before;
    let (ok, limited) = (
        ok.load(std::sync::atomic::Ordering::Relaxed),
        limited.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(ok + limited, 2000);
    // One client: its burst, then one per interval, each tried once.
    let refills = elapsed.as_millis() / UNKNOWN_LOOKUPS_PER_CLIENT.every.as_millis();
    let bound = UNKNOWN_LOOKUPS_PER_CLIENT.burst as usize + refills as usize;
    report(&format!(
        "2,000 made-up ids from one client: {calls} Stripe calls in {elapsed:?} (bound {bound})"
    ));
    assert!(
        calls <= bound,
        "{calls} Stripe calls for 2,000 made-up ids (bound {bound})"
    );
    assert_eq!(calls, ok, "every admitted lookup made exactly one call");
}

/// Reloading the page of a settled order, or of one whose payment was
/// checked moments ago, writes nothing to the database.
#[tokio::test]
async fn reloading_a_settled_orders_page_commits_nothing() {
    let app = spawn_app().await;
    let id = session_id("reload");
    let session = app.seed(&SampleSession::paid(&id, 2));
    app.send_event("evt_reload_1", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    let waiting = session_id("reloadsepa");
    let mut sepa = SampleSession::paid(&waiting, 1);
    sepa.payment_status = "unpaid";
    let sepa = app.seed(&sepa);
    app.send_event("evt_reload_2", "checkout.session.completed", &sepa)
        .await;
    app.wait_for_state(&waiting, "awaiting_payment").await;
    app.settle().await;
    let before = app.written().await;
    for _ in 0..10 {
        let (status, _) = app.landing(&id).await;
        assert_eq!(status, 200);
        let (status, page) = app.landing(&waiting).await;
        assert_eq!(status, 200);
        assert!(page.to_lowercase().contains("processing"), "{page}");
    }
    app.settle().await;
    assert!(app.written().await == before, "the database changed");
}

/// Made-up ids from many clients (a botnet behind the merchant's proxy)
/// are held to the shared budget; the proxy's own address is not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_ids_from_many_clients_are_held_to_the_shared_budget() {
    use fulfilld::http::rate::UNKNOWN_LOOKUPS_GLOBAL;
    let app = spawn_app_with(|c| c.server.trusted_proxies = "127.0.0.1".parse().unwrap()).await;
    let started = std::time::Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for worker in 0..20u32 {
        let (http, base) = (app.http.clone(), app.address.clone());
        flood.spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..100u32 {
                let client = format!("198.18.{}.{}", worker, n);
                let url = format!("{base}/after-checkout?session_id=cs_test_botnet_{worker}_{n}");
                let r = http
                    .get(url)
                    .header("x-forwarded-for", client)
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        });
    }
    let mut answered = Vec::new();
    while let Some(done) = flood.join_next().await {
        answered.extend(done.unwrap());
    }
    let elapsed = started.elapsed();
    assert_eq!(answered.len(), 2000);
    assert!(
        answered.iter().all(|s| *s == 404 || *s == 429),
        "{answered:?}"
    );
    let calls = app.stripe.count("/v1/checkout/sessions/");
    let refills = elapsed.as_millis() / UNKNOWN_LOOKUPS_GLOBAL.every.as_millis();
    let bound = UNKNOWN_LOOKUPS_GLOBAL.burst as usize + refills as usize;
    report(&format!(
        "2,000 made-up ids from 2,000 clients: {calls} Stripe calls in {elapsed:?} (bound {bound})"
    ));
    assert!(
        calls <= bound,
        "{calls} Stripe calls (bound {bound} after {elapsed:?})"
    );
    assert_eq!(calls, answered.iter().filter(|s| **s == 404).count());
}

#[tokio::test]
async fn a_processing_page_left_open_polls_without_adding_history_or_stripe_calls() {
    let clock = std::sync::Arc::new(fulfilld::time::ManualClock::new(fulfilld::time::now_ms()));
    let app = spawn_app_with_clock(clock.clone()).await;
    let id = session_id("polling");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    sample.payment_method = "sepa_debit";
    app.seed(&sample);
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("id=\"poll\"") && page.contains("data-view=\"processing\""),
        "{page}"
    );
    assert!(
        page.contains("/assets/landing.js") && !page.contains("http-equiv"),
        "{page}"
    );
    app.settle().await;
    let path = format!("/v1/checkout/sessions/{id}");
    let (attempts, calls) = (
        app.session(&id).await["attempts"].as_array().unwrap().len(),
        app.stripe.count(&path),
    );
    // Five minutes of the page's script asking every 3 s.
    for _ in 0..100 {
        clock.advance(std::time::Duration::from_secs(3));
        let r = app
            .http
            .get(app.url(&format!("/after-checkout/status?session_id={id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["view"], "processing");
    }
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["state"], "awaiting_payment");
    assert_eq!(
        s["attempts"].as_array().unwrap().len(),
        attempts,
        "nothing changed, so nothing was added: {s}"
    );
    let rechecks = app.stripe.count(&path) - calls;
    assert!(
        rechecks <= 5,
        "at most one Stripe re-check a minute: {rechecks}"
    );
    // When the payment clears, the next poll says so.
    let mut paid = SampleSession::paid(&id, 1);
    paid.payment_method = "sepa_debit";
    app.seed(&paid);
    clock.advance(std::time::Duration::from_secs(61));
    let r = app
        .http
        .get(app.url(&format!("/after-checkout/status?session_id={id}")))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_ne!(v["view"], "processing", "{v}");
}

#[tokio::test]
async fn the_landing_page_speaks_the_checkouts_language_or_the_browsers() {
    let app = spawn_app().await;
    let id = session_id("german");
    let (mut session, items) = SampleSession::paid(&id, 1).build();
    session["locale"] = serde_json::json!("de");
    app.stripe.insert(session, items);
    let page = |path: String, accept: &'static str| {
        let app = &app;
        async move {
            let r = app
                .http
                .get(app.url(&path))
                .header("accept-language", accept)
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        }
    };
    let german = page(format!("/after-checkout?session_id={id}"), "en-US,en;q=0.9").await;
    assert!(german.contains("lang=\"de\""), "{german}");
    assert!(
        german.contains("Danke für Ihre Bestellung") && german.contains("Gesamt"),
        "{german}"
    );
    // The sample ships to the US: named in German.
    assert!(
        german.contains("Vereinigte Staaten") && !german.contains("<br>US<br>"),
        "{german}"
    );
    // No session: the browser's language.
    let french = page(
        "/after-checkout?session_id=cs_test_nobody".into(),
        "fr-CH, fr;q=0.9",
    )
    .await;
    assert!(
        french.contains("lang=\"fr\"") && french.contains("Commande introuvable"),
        "{french}"
    );
    let spanish = page("/after-checkout?session_id=bad%20id".into(), "es").await;
    assert!(spanish.contains("Enlace no válido"), "{spanish}");
    // A language not spoken here: English.
    let english = page(
        "/after-checkout?session_id=cs_test_nobody".into(),
        "zh-CN,ja;q=0.8",
    )
    .await;
    assert!(
        english.contains("lang=\"en\"") && english.contains("We could not find that order"),
        "{english}"
    );
}
