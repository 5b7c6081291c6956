//! Events that arrive while a fulfillment attempt is in flight: the attempt
//! must not undo what the event decided.

use fulfilld::stripe::double::{SampleSession, Scripted};
use serde_json::json;

use crate::helpers::*;

/// Starts an admin re-trigger in the background (it waits for the attempt).
fn retrigger(app: &TestApp, id: &str) -> tokio::task::JoinHandle<u16> {
    let (http, url) = (
        app.http.clone(),
        app.url(&format!("/admin/api/sessions/{id}/fulfill")),
    );
    tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(API_TOKEN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_success_during_an_unpaid_check_is_not_lost() {
    let app = spawn_app().await;
    let id = session_id("racepaid");
    let mut sample = SampleSession::paid(&id, 12); // more than one page of line items
    sample.payment_status = "unpaid";
    sample.payment_method = "sepa_debit";
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_rp_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "awaiting_payment").await;

    // A person's re-check fails (Stripe 500 three times), so the worker retries
    // it; that retry reads the session (still unpaid), then stalls on its
    // second page of line items.
    app.stripe.script(
        &id,
        [
            Scripted::Status(500),
            Scripted::Status(500),
            Scripted::Status(500),
            Scripted::Pass,
            Scripted::Hang,
        ],
    );
    assert_eq!(retrigger(&app, &id).await.unwrap(), 200);
    let page = format!("/v1/checkout/sessions/{id}/line_items");
    eventually("the worker's retry stalls", || async {
        (app.stripe.count(&page) >= 1).then_some(())
    })
    .await;

    // Meanwhile the debit clears and Stripe says so.
    app.stripe.update(&id, json!({"payment_status": "paid"}));
    let mut paid = session.clone();
    paid["payment_status"] = "paid".into();
    assert_eq!(
        app.send_event(
            "evt_rp_2",
            "checkout.session.async_payment_succeeded",
            &paid
        )
        .await,
        200
    );
    app.stripe.release_hangs();

    app.wait_for_state(&id, "fulfilled").await;
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failure_during_a_failing_check_stays_failed() {
    let app = spawn_app().await;
    let id = session_id("racefail");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_rf_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "awaiting_payment").await;

    // A re-check stalls, then Stripe fails it three times (the client's tries).
    app.stripe.script(
        &id,
        [
            Scripted::Hang,
            Scripted::Status(500),
            Scripted::Status(500),
            Scripted::Status(500),
        ],
    );
    let attempt = retrigger(&app, &id);
    let path = format!("/v1/checkout/sessions/{id}");
    eventually("the re-check stalls", || async {
        (app.stripe.count(&path) >= 1).then_some(())
    })
    .await;
    assert_eq!(
        app.send_event(
            "evt_rf_2",
            "checkout.session.async_payment_failed",
            &session
        )
        .await,
        200
    );
    app.stripe.release_hangs();
    assert_eq!(attempt.await.unwrap(), 200);

    let s = app.session(&id).await;
    assert_eq!(s["state"], "payment_failed", "{s}");
    // Nothing is left queued for it once the failure callback has gone out.
    app.settle().await;
    assert_eq!(app.queued_jobs().await, 0);
    // Later checks (a person asking again) keep it failed: Stripe only says "unpaid".
    let (_, v) = app
        .api_post(&format!("/admin/api/sessions/{id}/fulfill"), json!({}))
        .await;
    assert_eq!(v["result"]["state"], "payment_failed", "{v}");
    app.settle().await;
    assert!(app.receiver.of_kind("checkout.fulfilled").is_empty());
}
