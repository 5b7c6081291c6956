//! Faults in the Stripe API and at the merchant: retried with backoff,
//! recorded, never a crash, never a duplicate.

use fulfilld::stripe::double::{SampleSession, Scripted};

use crate::helpers::*;

const FULFILLED: &str = "checkout.fulfilled";

#[tokio::test]
async fn server_errors_are_retried_then_fulfilled_once() {
    let app = spawn_app().await;
    let id = session_id("s500");
    let session = app.seed(&SampleSession::paid(&id, 2));
    app.stripe
        .script(&id, [Scripted::Status(500), Scripted::Status(500)]);
    assert_eq!(
        app.send_event("evt_500_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
    // Two failures and the success, all on the session endpoint.
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 3);
}

#[tokio::test]
async fn rate_limits_are_retried() {
    let app = spawn_app().await;
    let id = session_id("s429");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.stripe.script(
        &id,
        [
            Scripted::Status(429),
            Scripted::Status(429),
            Scripted::Status(429),
            Scripted::Status(429),
        ],
    );
    assert_eq!(
        app.send_event("evt_429_1", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "fulfilled").await;
    // The client gave up after 3 tries; the job queue retried later.
    let attempts = s["attempts"].as_array().unwrap();
    assert!(
        attempts
            .iter()
            .any(|a| a["outcome"] == "retrying" && a["error"].as_str().unwrap().contains("429"))
    );
    assert_eq!(attempts.last().unwrap()["outcome"], "fulfilled");
    assert_eq!(attempts.last().unwrap()["trigger"], "retry");
    app.settle().await;
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
}

/// `Stripe-Should-Retry: false` holds for that request (no second try within
/// the call), but the session keeps retrying with backoff: only "no such
/// session" can never change.
#[tokio::test]
async fn should_retry_false_is_not_retried_within_a_call_but_the_session_retries() {
    let app = spawn_app().await;
    let id = session_id("noretry");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.stripe
        .script(&id, [Scripted::StatusShouldRetry(500, false)]);
    assert_eq!(
        app.send_event("evt_nr_1", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "fulfilled").await;
    app.settle().await;
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 2);
    let outcomes: Vec<&str> = s["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retrying", "fulfilled"], "{s}");
    assert!(s["attempts"][0]["error"].as_str().unwrap().contains("500"));
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unknown_session_is_an_error_on_record_not_a_crash() {
    let app = spawn_app().await;
    let id = session_id("s404");
    // Known to the webhook, unknown to the Stripe API (e.g. another account's key).
    let (session, _) = SampleSession::paid(&id, 1).build();
    assert_eq!(
        app.send_event("evt_404_1", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "failed").await;
    let attempt = s["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(attempt["outcome"], "failed");
    assert_eq!(attempt["trigger"], "webhook");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("No such checkout.session"),
        "{attempt}"
    );
    // Permanent: asked once, not retried.
    app.settle().await;
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 1);
    assert!(app.receiver.received().is_empty());
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    // The customer sees a calm page that does not keep refreshing (and
    // does not ask Stripe again right away).
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(page.contains("taking longer than usual"), "{page}");
    assert!(!page.contains("http-equiv=\"refresh\""));
    app.settle().await;
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 1);

    // Once the problem is fixed, an admin re-trigger fulfils it.
    app.seed(&SampleSession::paid(&id, 1));
    let (status, v) = app
        .api_post(
            &format!("/admin/api/sessions/{id}/fulfill"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["result"]["state"], "fulfilled");
    app.settle().await;
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
}

#[tokio::test]
async fn merchant_down_then_up_gets_it_once_with_the_same_id() {
    let app = spawn_app().await;
    let id = session_id("down");
    let session = app.seed(&SampleSession::paid(&id, 2));
    app.receiver.respond_with(503);
    assert_eq!(
        app.send_event("evt_down_1", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "retrying").await;
    assert!(s["last_error"].as_str().unwrap().contains("503"));
    eventually("a few failed deliveries", || async {
        (app.receiver.of_kind(FULFILLED).len() >= 3).then_some(())
    })
    .await;
    app.receiver.respond_with(200);
    let s = app.wait_for_state(&id, "fulfilled").await;
    let deliveries = app.receiver.of_kind(FULFILLED);
    let fid = s["fulfillments"][0]["id"].as_str().unwrap();
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert!(
        deliveries
            .iter()
            .all(|d| d.webhook_id == fid && d.signature_valid)
    );
    assert!(
        deliveries.windows(2).all(|w| w[0].body == w[1].body),
        "same body on every retry"
    );
    // Stripe was asked once: retries resend the recorded fulfillment.
    assert_eq!(app.stripe.count(&format!("/v1/checkout/sessions/{id}")), 1);
    let recorded = s["deliveries"].as_array().unwrap();
    assert_eq!(recorded.len(), deliveries.len());
    assert_eq!(recorded.last().unwrap()["status_code"], 200);
    assert_eq!(recorded[0]["status_code"], 503);
}

#[tokio::test]
async fn giving_up_ends_in_failed() {
    let app = spawn_app_with(|c| c.jobs.give_up_after_secs = 0).await;
    let id = session_id("giveup");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.receiver.respond_with(500);
    assert_eq!(
        app.send_event("evt_gu_1", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "failed").await;
    assert!(s["last_error"].as_str().unwrap().contains("500"));
    // The fulfillment stays recorded; a person can re-trigger it later.
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    app.receiver.respond_with(200);
    let (_, v) = app
        .api_post(
            &format!("/admin/api/sessions/{id}/fulfill"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(v["result"]["state"], "fulfilled");
    app.settle().await;
    let deliveries = app.receiver.of_kind(FULFILLED);
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].webhook_id, deliveries[1].webhook_id);
}
