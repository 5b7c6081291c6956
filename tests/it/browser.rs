//! The admin dashboard in a real browser (headless Chromium over WebDriver):
//! an admin signs in, finds a session that failed and fulfils it by hand.

use std::path::Path;

use fulfilld::stripe::double::{SampleSession, Scripted};

use crate::helpers::{
    webdriver::{Browser, Probe, browser_or_skip},
    *,
};

/// Signs in on the login page, as an admin would.
async fn sign_in(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/admin/login")).await;
    let username = browser.find("#username").await;
    browser.send_keys(&username, "admin").await;
    let password = browser.find("#password").await;
    browser.send_keys(&password, "a long test password").await;
    let submit = browser.find("#login-submit").await;
    browser.click(&submit).await;
}

/// Skips, saying why, where Chromium or chromedriver is not installed; fails
/// instead under CI (see `browser_or_skip`). `.ci/run` installs both.
#[tokio::test(flavor = "multi_thread")]
async fn admin_fulfills_a_failed_session_in_a_real_browser() {
    if !browser_or_skip("admin_fulfills_a_failed_session_in_a_real_browser") {
        return;
    }
    let app = spawn_app().await;
    let id = session_id("browser");
    let session = app.seed(&SampleSession::paid(&id, 2));
    // Stripe fails once and says not to retry: the session fails at once.
    app.stripe.script(&id, [Scripted::Status(404)]);
    assert_eq!(
        app.send_event("evt_browser_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "failed").await;
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["state"], "failed");
    assert!(s["fulfillments"].as_array().unwrap().is_empty());
    // The script is used up, so Stripe answers normally from now on.
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 1);

    let browser = Browser::start().await;
    sign_in(&browser, &app).await;

    // The sessions list links to the session; its detail page says failed.
    let link = browser
        .wait_for("a.session-link", Probe::Attribute("href"), |h| {
            h.ends_with(&id)
        })
        .await;
    browser.click(&link).await;
    let state = browser
        .wait_for_text("#session-state", "Needs attention")
        .await;
    assert_eq!(browser.text(&state).await.trim(), "Needs attention");
    let detail_url = browser.current_url().await;

    // Like every state-changing form, it carries its CSRF token (CONTRACT.md).
    let csrf = browser.find_all("form#fulfill-now input[name=csrf]").await;
    assert_eq!(csrf.len(), 1, "one csrf input in form#fulfill-now");
    let token = browser.attribute(&csrf[0], "value").await;
    assert!(token.is_some_and(|t| !t.is_empty()), "an empty csrf token");
    let fulfill = browser.find("form#fulfill-now button[type=submit]").await;
    browser.click(&fulfill).await;
    browser.wait_until_gone(&fulfill).await;
    // The page the form redirects to carries a flash message.
    let flash = browser.find("#flash").await;
    let flash = browser.text(&flash).await;
    assert!(!flash.trim().is_empty(), "an empty #flash");
    // The server renders the state: reload until the attempt has finished.
    let state = browser
        .wait_for_text_reloading(&detail_url, "#session-state", "Fulfilled")
        .await;
    assert_eq!(browser.text(&state).await.trim(), "Fulfilled");
    // For a person to look at: the page as shown and as served.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/admin-detail.png");
    browser.screenshot_png(&shot).await;
    let source = browser.page_source().await;
    assert!(!source.contains("a long test password"));
    std::fs::write(shot.with_extension("html"), source).unwrap();
    // On a phone's width the state is still on screen.
    browser.set_window_size(390, 844).await;
    browser.goto(&detail_url).await;
    browser.wait_for_text("#session-state", "Fulfilled").await;
    browser
        .screenshot_png(&shot.with_file_name("admin-detail-phone.png"))
        .await;
    browser.quit().await;

    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["state"], "fulfilled");
    let fulfillments = s["fulfillments"].as_array().unwrap();
    assert_eq!(fulfillments.len(), 1, "{s}");
    assert_eq!(fulfillments[0]["trigger"], "admin");
    let attempts = s["attempts"].as_array().unwrap();
    assert!(attempts.iter().any(|a| a["trigger"] == "admin"), "{s}");
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
}

/// After the sale in the dashboard: a disputed, partly refunded session shows
/// its badges, the deadline and the way to Stripe; a session fulfilld never
/// saw is found with "Fetch from Stripe" and fulfilled.
#[tokio::test(flavor = "multi_thread")]
async fn admin_sees_refunds_and_disputes_and_fetches_an_unseen_session() {
    if !browser_or_skip("admin_sees_refunds_and_disputes_and_fetches_an_unseen_session") {
        return;
    }
    let app = spawn_app().await;
    let id = session_id("aftersale");
    let session = app.seed(&SampleSession::paid(&id, 3));
    assert_eq!(
        app.send_event("evt_as_done", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let pi = session["payment_intent"].as_str().unwrap();
    let total = session["amount_total"].as_i64().unwrap();
    let due = fulfilld::time::now_secs() + 6 * 86_400;
    for body in [
        charge_event(
            "charge.refunded",
            "evt_as_refund",
            100,
            pi,
            serde_json::json!({"amount": total, "amount_refunded": 100, "refunded": false}),
        ),
        charge_event(
            "charge.dispute.created",
            "evt_as_dispute",
            200,
            pi,
            serde_json::json!({"amount": total - 100, "evidence_details": {"due_by": due}}),
        ),
    ] {
        let (body, header) = signed(&body);
        assert_eq!(
            app.post_webhook_raw(body, Some(&header)).await.status(),
            200
        );
    }
    eventually("the dispute is recorded", || async {
        (!app.session(&id).await["dispute"].is_null()).then_some(())
    })
    .await;
    let unseen = session_id("unseen_browser");
    app.seed(&SampleSession::paid(&unseen, 1));

    let browser = Browser::start().await;
    sign_in(&browser, &app).await;
    browser
        .wait_for("a.session-link", Probe::Attribute("href"), |h| {
            h.ends_with(&id)
        })
        .await;

    // The "Disputed" filter lists it, with its badges.
    browser.goto(&app.url("/admin?disputed=true")).await;
    let row = browser
        .wait_for_text("#sessions tbody tr", "Disputed")
        .await;
    let text = browser.text(&row).await;
    assert!(text.contains("Partly refunded"), "{text}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    browser
        .screenshot_png(&shots.join("admin-disputed-list.png"))
        .await;
    browser.set_window_size(390, 844).await;
    browser.goto(&app.url("/admin")).await;
    browser
        .wait_for_text("#sessions tbody tr", "Disputed")
        .await;
    browser
        .screenshot_png(&shots.join("admin-list-phone.png"))
        .await;
    browser.set_window_size(1440, 900).await;
    browser.goto(&app.url("/admin")).await;
    browser
        .wait_for_text("#sessions tbody tr", "Disputed")
        .await;
    browser.screenshot_png(&shots.join("admin-list.png")).await;

    browser
        .goto(&app.url(&format!("/admin/sessions/{id}")))
        .await;
    let panel = browser
        .wait_for_text("#after-sale", "Evidence due by")
        .await;
    let text = browser.text(&panel).await;
    assert!(text.contains("did not make this payment"), "{text}");
    let respond = browser.find("#respond-in-stripe").await;
    assert_eq!(
        browser.attribute(&respond, "href").await.as_deref(),
        Some(format!("https://dashboard.stripe.com/test/payments/{pi}").as_str())
    );
    browser
        .screenshot_png(&shots.join("admin-dispute-detail.png"))
        .await;
    browser.set_window_size(390, 844).await;
    browser
        .goto(&app.url(&format!("/admin/sessions/{id}")))
        .await;
    browser
        .wait_for_text("#after-sale", "Evidence due by")
        .await;
    browser
        .screenshot_png(&shots.join("admin-dispute-detail-phone.png"))
        .await;
    browser.set_window_size(1440, 900).await;

    // A search for a session fulfilld never saw offers to fetch it.
    browser.goto(&app.url(&format!("/admin?q={unseen}"))).await;
    let fetch = browser.find("#fetch-from-stripe").await;
    browser
        .screenshot_png(&shots.join("admin-fetch-from-stripe.png"))
        .await;
    browser.click(&fetch).await;
    browser.wait_until_gone(&fetch).await;
    let state = browser
        .wait_for_text_reloading(
            &app.url(&format!("/admin/sessions/{unseen}")),
            "#session-state",
            "Fulfilled",
        )
        .await;
    assert_eq!(browser.text(&state).await.trim(), "Fulfilled");
    browser.quit().await;
    app.settle().await;
    let s = app.session(&unseen).await;
    assert_eq!(s["fulfillments"].as_array().map(Vec::len), Some(1), "{s}");
}

/// Every page a merchant or a customer sees, at 1440 and 390 px, checked
/// with axe-core (zero violations) and kept as a screenshot
/// (`target/screenshots/pages/`); none scrolls sideways at 390 or 320 px.
#[tokio::test(flavor = "multi_thread")]
async fn every_page_passes_axe_core_and_fits_a_phone() {
    const TEST: &str = "every_page_passes_axe_core_and_fits_a_phone";
    if !browser_or_skip(TEST) {
        return;
    }
    let Some(axe) = crate::helpers::webdriver::axe_or_skip(TEST) else {
        return;
    };
    let app = spawn_app().await;
    let paid = session_id("a11y_paid");
    let session = app.seed(&SampleSession::paid(&paid, 3));
    assert_eq!(
        app.send_event("evt_a11y_paid", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&paid, "fulfilled").await;
    let pi = session["payment_intent"].as_str().unwrap().to_string();
    let (body, header) = signed(&charge_event(
        "charge.dispute.created",
        "evt_a11y_dispute",
        100,
        &pi,
        serde_json::json!({"evidence_details": {"due_by": fulfilld::time::now_secs() + 86_400}}),
    ));
    assert_eq!(
        app.post_webhook_raw(body, Some(&header)).await.status(),
        200
    );
    let waiting = session_id("a11y_waiting");
    let mut sample = SampleSession::paid(&waiting, 1);
    sample.payment_status = "unpaid";
    sample.payment_method = "sepa_debit";
    let waiting_obj = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_a11y_wait", "checkout.session.completed", &waiting_obj)
            .await,
        200
    );
    // A rejected webhook, for the webhook log.
    let _ = app.post_webhook_raw("{}", None).await;
    app.settle().await;

    let browser = Browser::start().await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/pages");
    let mut failures = Vec::new();
    // Each page at a desk's width and a phone's (screenshots of both, axe
    // at both), and at the narrowest phone in use (320 px) nothing may
    // make it scroll sideways.
    let mut check = async |name: &str, url: String| {
        for (width, height, suffix) in [(1440, 900, ""), (390, 844, "-390"), (320, 640, "-320")] {
            browser.set_window_size(width, height).await;
            browser.goto(&url).await;
            if width != 320 {
                browser
                    .screenshot_png(&shots.join(format!("{name}{suffix}.png")))
                    .await;
                for v in browser.axe_violations(&axe).await {
                    failures.push(format!("{name} at {width} px: {v}"));
                }
            }
            if width <= 390 {
                let over = browser.sideways_overflow().await;
                if !over.is_empty() {
                    failures.push(format!("{name} scrolls sideways: {}", over.join("; ")));
                }
            }
        }
    };
    // axe-core really looks: a page with a known fault is caught.
    browser
        .goto("data:text/html,<html><body><img src='x.png'><button></button></body></html>")
        .await;
    let known = browser.axe_violations(&axe).await;
    assert!(
        known.iter().any(|v| v.starts_with("image-alt")),
        "axe-core did not run: {known:?}"
    );
    check("login", app.url("/admin/login")).await;
    check(
        "landing-receipt",
        app.url(&format!("/after-checkout?session_id={paid}")),
    )
    .await;
    check(
        "landing-processing",
        app.url(&format!("/after-checkout?session_id={waiting}")),
    )
    .await;
    check(
        "landing-not-found",
        app.url("/after-checkout?session_id=cs_test_nobody"),
    )
    .await;
    sign_in(&browser, &app).await;
    check("list", app.url("/admin")).await;
    check("session", app.url(&format!("/admin/sessions/{paid}"))).await;
    check(
        "session-processing",
        app.url(&format!("/admin/sessions/{waiting}")),
    )
    .await;
    check("session-unknown", app.url("/admin/sessions/cs_test_nobody")).await;
    check("list-search", app.url("/admin?q=nobody-matches-this")).await;
    check("webhooks", app.url("/admin/webhooks")).await;
    browser.quit().await;
    assert!(
        failures.is_empty(),
        "the pages have faults:\n{}",
        failures.join("\n")
    );
}
