//! After the sale (issue 13): refunds, disputes, Checkout modes, Stripe
//! Connect and fetching a session fulfilld never saw.

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
    // The customer lands on the success page too: told what happened, and
    // still nothing fulfilled (or stored).
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(page.contains("Your payment details are saved"), "{page}");
    assert!(!page.contains("waiting"), "{page}");
    app.settle().await;
    let s = app.session(&id).await;
    if !s.is_null() {
        assert_ne!(s["state"], "fulfilled", "{s}");
        assert_eq!(s["fulfillments"].as_array().map(Vec::len), Some(0), "{s}");
        assert_eq!(s["mode"], "setup");
    }
    assert_eq!(app.queued_jobs().await, 0);
    // Nor does "Fetch from Stripe" make an order of it.
    let (status, body) = app
        .api_post(&format!("/admin/api/sessions/{id}/fulfill"), json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(app.session(&id).await.is_null());
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

async fn deliver(app: &TestApp, body: &str) -> Value {
    let (body, header) = signed(body);
    let r = app.post_webhook_raw(body, Some(&header)).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A paid session of `cents`, fulfilled; returns its id and payment intent.
async fn fulfilled(app: &TestApp, tag: &str) -> (String, String) {
    let (id, session) = seeded(app, tag, json!({}));
    assert_eq!(
        app.send_event(
            &format!("evt_{tag}_done"),
            "checkout.session.completed",
            &session
        )
        .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let pi = session["payment_intent"].as_str().unwrap().to_string();
    (id, pi)
}

#[tokio::test]
async fn a_partial_then_a_full_refund_show_and_call_back_once_each() {
    let app = spawn_app().await;
    let (id, pi) = fulfilled(&app, "refunds").await;
    let total = app.session(&id).await["amount_total"].as_i64().unwrap();
    let partial = charge_event(
        "charge.refunded",
        "evt_refund_partial",
        100,
        &pi,
        json!({"amount": total, "amount_refunded": total / 2, "refunded": false}),
    );
    let full = charge_event(
        "charge.refunded",
        "evt_refund_full",
        200,
        &pi,
        json!({"amount": total, "amount_refunded": total, "refunded": true}),
    );
    assert_eq!(deliver(&app, &partial).await["outcome"], "recorded");
    let s = eventually("the partial refund shows", || async {
        let s = app.session(&id).await;
        (s["refund_status"] == "partial").then_some(s)
    })
    .await;
    assert_eq!(s["amount_refunded"], total / 2);
    assert_eq!(
        s["state"], "fulfilled",
        "a refund does not undo the fulfillment"
    );
    let (status, list) = app
        .api_get("/admin/api/sessions?refund_status=partial")
        .await;
    assert_eq!(status, 200);
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [json!(id)]);

    assert_eq!(deliver(&app, &full).await["outcome"], "recorded");
    // Redeliveries of both change nothing.
    for body in [&partial, &full] {
        assert_eq!(deliver(&app, body).await["outcome"], "duplicate");
    }
    let s = eventually("the full refund shows", || async {
        let s = app.session(&id).await;
        (s["refund_status"] == "full").then_some(s)
    })
    .await;
    assert_eq!(s["amount_refunded"], total);
    let (_, list) = app
        .api_get("/admin/api/sessions?refund_status=partial")
        .await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0));
    let (_, list) = app.api_get("/admin/api/sessions?refund_status=full").await;
    assert_eq!(list["data"][0]["id"], json!(id));
    let (status, _) = app.api_get("/admin/api/sessions?refund_status=some").await;
    assert_eq!(status, 400);

    app.settle().await;
    let callbacks = eventually("two refund callbacks", || async {
        let c = app.receiver.of_kind("checkout.refunded");
        (c.len() >= 2).then_some(c)
    })
    .await;
    app.settle().await;
    let callbacks_now = app.receiver.of_kind("checkout.refunded");
    assert_eq!(callbacks_now.len(), 2, "one per refund change");
    assert_ne!(callbacks[0].webhook_id, callbacks[1].webhook_id);
    let fulfillment = app.receiver.of_kind("checkout.fulfilled")[0]
        .webhook_id
        .clone();
    for (c, (amount, status)) in callbacks
        .iter()
        .zip([(total / 2, "partial"), (total, "full")])
    {
        assert!(c.signature_valid);
        assert_eq!(c.body["data"]["amount_refunded"], amount);
        assert_eq!(c.body["data"]["refund_status"], status);
        assert_eq!(c.body["data"]["fulfillment_id"], json!(fulfillment));
        assert_eq!(
            c.body["data"]["session"]["id"],
            json!(id),
            "the session as retrieved"
        );
    }
    assert_eq!(
        app.receiver.of_kind("checkout.fulfilled").len(),
        1,
        "nothing was fulfilled again"
    );
}

#[tokio::test]
async fn a_refund_that_arrives_before_its_session_is_kept_and_linked_once() {
    let app = spawn_app().await;
    let (id, session) = seeded(&app, "early_refund", json!({}));
    let pi = session["payment_intent"].as_str().unwrap().to_string();
    let total = session["amount_total"].as_i64().unwrap();
    let refund = charge_event(
        "charge.refunded",
        "evt_early_refund",
        fulfilld::time::now_secs() + 5,
        &pi,
        json!({"amount": total, "amount_refunded": total / 2, "refunded": false}),
    );
    let ack = deliver(&app, &refund).await;
    assert_eq!(ack["outcome"], "recorded");
    assert!(ack["reason"].as_str().unwrap().contains("kept"), "{ack}");
    assert!(app.session(&id).await.is_null(), "no session yet");
    assert_eq!(deliver(&app, &refund).await["outcome"], "duplicate");

    assert_eq!(
        app.send_event("evt_early_done", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(s["amount_refunded"], total / 2);
    assert_eq!(s["refund_status"], "partial");
    assert!(
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "evt_early_refund"),
        "{s}"
    );
    app.settle().await;
    assert_eq!(app.receiver.of_kind("checkout.refunded").len(), 1);
    // Another event of the session does not link the refund a second time.
    assert_eq!(
        app.send_event(
            "evt_early_done_again",
            "checkout.session.completed",
            &session
        )
        .await,
        200
    );
    app.settle().await;
    assert_eq!(app.session(&id).await["amount_refunded"], total / 2);
    assert_eq!(app.receiver.of_kind("checkout.refunded").len(), 1);
}

#[tokio::test]
async fn a_dispute_opened_then_won_shows_and_calls_back_once_each() {
    let app = spawn_app().await;
    let (id, pi) = fulfilled(&app, "dispute").await;
    let due = fulfilld::time::now_secs() + 7 * 86_400;
    let opened = charge_event(
        "charge.dispute.created",
        "evt_dispute_opened",
        100,
        &pi,
        json!({"evidence_details": {"due_by": due, "has_evidence": false, "past_due": false, "submission_count": 0}}),
    );
    let won = charge_event(
        "charge.dispute.closed",
        "evt_dispute_won",
        200,
        &pi,
        json!({}),
    );
    assert_eq!(deliver(&app, &opened).await["outcome"], "recorded");
    let s = eventually("the dispute shows", || async {
        let s = app.session(&id).await;
        (!s["dispute"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(s["dispute"]["id"], "dp_1TestDispute0000001");
    assert_eq!(s["dispute"]["status"], "needs_response");
    assert_eq!(s["dispute"]["reason"], "fraudulent");
    assert_eq!(s["dispute"]["evidence_due_by"], due);
    let (_, list) = app.api_get("/admin/api/sessions?disputed=true").await;
    assert_eq!(list["data"][0]["id"], json!(id));
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));

    assert_eq!(deliver(&app, &won).await["outcome"], "recorded");
    for body in [&opened, &won] {
        assert_eq!(deliver(&app, body).await["outcome"], "duplicate");
    }
    let s = eventually("the dispute is won", || async {
        let s = app.session(&id).await;
        (s["dispute"]["status"] == "won").then_some(s)
    })
    .await;
    assert_eq!(s["state"], "fulfilled");
    eventually("both dispute callbacks", || async {
        (app.receiver.of_kind("checkout.dispute_opened").len() == 1
            && app.receiver.of_kind("checkout.dispute_closed").len() == 1)
            .then_some(())
    })
    .await;
    app.settle().await;
    let opened_cb = app.receiver.of_kind("checkout.dispute_opened");
    let closed_cb = app.receiver.of_kind("checkout.dispute_closed");
    assert_eq!((opened_cb.len(), closed_cb.len()), (1, 1));
    assert_eq!(
        opened_cb[0].body["data"]["dispute"]["status"],
        "needs_response"
    );
    assert_eq!(closed_cb[0].body["data"]["dispute"]["status"], "won");
    assert_eq!(closed_cb[0].body["data"]["session"]["id"], json!(id));
    assert!(opened_cb[0].signature_valid && closed_cb[0].signature_valid);
}

#[tokio::test]
async fn the_subscription_id_is_in_the_callbacks_session() {
    let app = spawn_app().await;
    let (id, session) = seeded(
        &app,
        "sub_callback",
        json!({"mode": "subscription", "subscription": "sub_1Callback", "payment_intent": null}),
    );
    assert_eq!(
        app.send_event("evt_sub_cb", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let c = eventually("the fulfillment callback", || async {
        app.receiver
            .of_kind("checkout.fulfilled")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(c.body["data"]["session"]["subscription"], "sub_1Callback");
    assert_eq!(c.body["data"]["session"]["mode"], "subscription");
}

#[tokio::test]
async fn fetch_from_stripe_fulfils_a_session_fulfilld_never_saw_once() {
    let app = spawn_app().await;
    let (id, _) = seeded(&app, "unseen", json!({}));
    assert!(app.session(&id).await.is_null());
    let (status, body) = app
        .api_post(&format!("/admin/api/sessions/{id}/fulfill"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["state"], "fulfilled", "{body}");
    let (status, again) = app
        .api_post(&format!("/admin/api/sessions/{id}/fulfill"), json!({}))
        .await;
    assert_eq!(status, 200, "{again}");
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["fulfillments"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
    // One Stripe does not know either: still a 404, and nothing is stored.
    let ghost = session_id("ghost");
    let (status, body) = app
        .api_post(&format!("/admin/api/sessions/{ghost}/fulfill"), json!({}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(app.session(&ghost).await.is_null());
}

#[tokio::test]
async fn the_missed_event_sweep_looks_at_connected_accounts_too() {
    let app = spawn_app().await;
    const ACCT: &str = "acct_1SweepConnected0";
    // A session on the account, known from a delivered Connect event.
    let (known, session) = seeded(&app, "sweep_known", json!({}));
    let mut event: Value = serde_json::from_str(&event_body(
        "evt_sweep_known",
        "checkout.session.completed",
        &session,
    ))
    .unwrap();
    event["account"] = json!(ACCT);
    let (body, header) = signed(&event.to_string());
    assert_eq!(
        app.post_webhook_raw(body, Some(&header)).await.status(),
        200
    );
    app.wait_for_state(&known, "fulfilled").await;
    // Stripe could not deliver two of the account's events: another
    // session's completion, and a refund of the known one.
    let (missed, missed_session) = seeded(&app, "sweep_missed", json!({}));
    let mut completed: Value = serde_json::from_str(&event_body(
        "evt_sweep_missed",
        "checkout.session.completed",
        &missed_session,
    ))
    .unwrap();
    completed["account"] = json!(ACCT);
    app.stripe.add_event(completed, false);
    let total = session["amount_total"].as_i64().unwrap();
    let mut refund: Value = serde_json::from_str(&charge_event(
        "charge.refunded",
        "evt_sweep_refund",
        fulfilld::time::now_secs(),
        session["payment_intent"].as_str().unwrap(),
        json!({"amount": total, "amount_refunded": total, "refunded": true}),
    ))
    .unwrap();
    refund["account"] = json!(ACCT);
    app.stripe.add_event(refund, false);

    let since = fulfilld::time::now_secs() - 3600;
    assert_eq!(
        app.fulfiller
            .reconcile_missed_events(since, 1000)
            .await
            .unwrap(),
        2
    );
    let s = app.wait_for_state(&missed, "fulfilled").await;
    assert_eq!(s["account"], ACCT);
    let s = app.session(&known).await;
    assert_eq!(s["refund_status"], "full", "{s}");
    let listed: Vec<_> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/events")
        .map(|r| r.stripe_account)
        .collect();
    assert!(
        listed.contains(&None) && listed.contains(&Some(ACCT.to_string())),
        "{listed:?}"
    );
    for c in app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&missed))
    {
        assert_eq!(c.stripe_account.as_deref(), Some(ACCT), "{}", c.path);
    }
    // A second sweep finds nothing new.
    assert_eq!(
        app.fulfiller
            .reconcile_missed_events(since, 1000)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn many_charge_events_kept_before_their_session_all_apply_when_it_arrives() {
    let app = spawn_app().await;
    let (id, session) = seeded(&app, "many_early", json!({}));
    let pi = session["payment_intent"].as_str().unwrap().to_string();
    let total = session["amount_total"].as_i64().unwrap();
    let t = fulfilld::time::now_secs();
    let mut bodies = Vec::new();
    for (i, refunded) in [total / 4, total / 3, total / 2].iter().enumerate() {
        bodies.push(charge_event(
            "charge.refunded",
            &format!("evt_many_refund_{i}"),
            t + i as i64,
            &pi,
            json!({"amount": total, "amount_refunded": refunded, "refunded": false}),
        ));
    }
    bodies.push(charge_event(
        "charge.dispute.created",
        "evt_many_dp_open",
        t + 5,
        &pi,
        json!({}),
    ));
    bodies.push(charge_event(
        "charge.dispute.closed",
        "evt_many_dp_won",
        t + 6,
        &pi,
        json!({}),
    ));
    for body in &bodies {
        assert_eq!(deliver(&app, body).await["outcome"], "recorded");
    }
    assert_eq!(
        app.send_event("evt_many_done", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(s["amount_refunded"], total / 2, "{s}");
    assert_eq!(s["dispute"]["status"], "won", "{s}");
    app.settle().await;
    assert_eq!(app.receiver.of_kind("checkout.refunded").len(), 3);
    assert_eq!(app.receiver.of_kind("checkout.dispute_opened").len(), 1);
    assert_eq!(app.receiver.of_kind("checkout.dispute_closed").len(), 1);
}
