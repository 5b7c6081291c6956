//! After the sale (issue 13): Checkout modes and Stripe Connect.

use fulfilld::stripe::double::{SampleSession, event_body};
use serde_json::{Value, json};

use crate::helpers::*;

/// A sample session changed by `fields` (Stripe's names), in the double.
fn seeded(app: &TestApp, tag: &str, fields: Value) -> (String, Value) {
    let id = session_id(tag);
    let (mut session, items) = SampleSession::paid(&id, 1).build();
    if let (Some(s), Some(f)) = (session.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            s.insert(k.clone(), v.clone());
        }
    }
    app.stripe.insert(session.clone(), items);
    (id, session)
}

#[tokio::test]
async fn a_setup_session_is_recorded_as_ignored_and_never_fulfilled() {
    let app = spawn_app().await;
    let (id, session) = seeded(
        &app,
        "setup",
        json!({"mode": "setup", "payment_status": "no_payment_required",
               "amount_total": null, "payment_intent": null, "setup_intent": "seti_1Setup"}),
    );
    let (body, header) = signed(&event_body(
        "evt_setup_1",
        "checkout.session.completed",
        &session,
    ));
    let r = app.post_webhook_raw(body, Some(&header)).await;
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["outcome"], "ignored");
    assert!(
        ack["reason"].as_str().unwrap().contains("mode=setup"),
        "{ack}"
    );
    // The customer lands on the success page too: still nothing fulfilled.
    let (status, _) = app.landing(&id).await;
    assert!(status < 500, "{status}");
    app.settle().await;
    let s = app.session(&id).await;
    if !s.is_null() {
        assert_ne!(s["state"], "fulfilled", "{s}");
        assert_eq!(s["fulfillments"].as_array().map(Vec::len), Some(0), "{s}");
        assert_eq!(s["mode"], "setup");
    }
    assert_eq!(app.queued_jobs().await, 0);
}

#[tokio::test]
async fn a_subscription_session_is_fulfilled_with_its_subscription() {
    let app = spawn_app().await;
    let (id, session) = seeded(
        &app,
        "subscription",
        json!({"mode": "subscription", "subscription": "sub_1Renews", "invoice": "in_1First",
               "payment_intent": null}),
    );
    assert_eq!(
        app.send_event("evt_sub_1", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(s["mode"], "subscription");
    assert_eq!(s["subscription"], "sub_1Renews");
    assert_eq!(s["account"], Value::Null);
}

#[tokio::test]
async fn a_connect_event_is_fetched_on_its_account() {
    let app = spawn_app().await;
    let (id, session) = seeded(&app, "connect", json!({"mode": "payment"}));
    let mut event: Value = serde_json::from_str(&event_body(
        "evt_connect_1",
        "checkout.session.completed",
        &session,
    ))
    .unwrap();
    event["account"] = json!("acct_1ConnectedTest00");
    let (body, header) = signed(&event.to_string());
    assert_eq!(
        app.post_webhook_raw(body, Some(&header)).await.status(),
        200
    );
    let s = app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(s["account"], "acct_1ConnectedTest00");
    let calls: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&id))
        .collect();
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(
            c.stripe_account.as_deref(),
            Some("acct_1ConnectedTest00"),
            "{}",
            c.path
        );
    }
}
