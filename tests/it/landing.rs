//! `GET /after-checkout`: what the customer sees, and that nothing they send
//! comes back unescaped.

use fulfilld::stripe::double::SampleSession;

use crate::helpers::*;

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
    assert!(page.contains("Item 2") && page.contains("Item 3"));
    assert!(!page.contains("<script>alert"), "line item escaped");
    assert!(page.contains("&lt;script&gt;"));
    assert!(!page.contains("<img"), "email escaped");
    assert!(page.contains("510 Townsend St"));
    // Amount formatted for the currency: 1×$1.00 + 2×$2.00 + 1×$3.00... as seeded.
    assert!(page.contains('$'));
    // The landing page itself fulfilled it, with the one retrieval it made
    // to learn the session exists.
    let s = app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(s["attempts"][0]["trigger"], "landing_page");
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 1);
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
    // A second visit changes nothing.
    let (status, _) = app.landing(&id).await;
    assert_eq!(status, 200);
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
    assert!(page.contains("j•••@example.com"));
    app.wait_for_state(&id, "awaiting_payment").await;
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
    assert_eq!(
        app.session_count().await,
        0,
        "an unknown id leaves no trace"
    );

    for bad in [
        "%3Cscript%3Ealert(1)%3C/script%3E",
        "<script>alert(1)</script>",
        "cs_test_%22onmouseover%3D",
        "pi_123",
        "",
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
        assert!(!body.contains("<script>alert"), "{bad}");
        assert!(!body.contains("alert(1)"), "input is not echoed: {bad}");
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
