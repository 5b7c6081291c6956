//! The heart of fulfilld: however often and however concurrently a session is
//! pushed at it, it is fulfilled once and the merchant hears of it once.

use fulfilld::stripe::double::{SampleSession, Scripted};
use serde_json::Value;

use crate::helpers::*;

const FULFILLED: &str = "checkout.fulfilled";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_line_items_arrive_in_one_callback() {
    let app = spawn_app().await;
    let id = session_id("big");
    let session = app.seed(&SampleSession::paid(&id, 250));
    assert_eq!(
        app.send_event("evt_big_1", "checkout.session.completed", &session)
            .await,
        200
    );

    app.wait_for_state(&id, "fulfilled").await;
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["line_items"].as_array().unwrap().len(), 250);
    let callbacks = app.receiver.of_kind(FULFILLED);
    assert_eq!(callbacks.len(), 1);
    let cb = &callbacks[0];
    assert!(cb.signature_valid);
    let items = &cb.body["data"]["session"]["line_items"];
    assert_eq!(items["has_more"], false);
    let data = items["data"].as_array().unwrap();
    assert_eq!(data.len(), 250);
    let mut ids: Vec<&str> = data.iter().map(|i| i["id"].as_str().unwrap()).collect();
    // dedup only removes neighbours: sort first, or a repeat far apart survives.
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 250, "no line item twice");
    assert_eq!(
        cb.body["data"]["fulfillment_id"],
        s["fulfillments"][0]["id"]
    );
    assert_eq!(cb.webhook_id, s["fulfillments"][0]["id"].as_str().unwrap());
    assert_eq!(cb.body["data"]["forced"], false);
    assert_eq!(cb.body["data"]["session"]["id"], id.as_str());
    // One retrieve with line_items expanded, then pages of 100 from item 10 on.
    let calls = app.stripe.requests();
    // `all` holds for no calls at all; there must be some to judge.
    assert!(!calls.is_empty());
    assert!(
        calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {SECRET_KEY}")[..]))
    );
    assert!(
        calls
            .iter()
            .all(|c| c.stripe_version.as_deref()
                == Some(fulfilld::config::DEFAULT_STRIPE_API_VERSION))
    );
    assert_eq!(
        app.stripe
            .count(&format!("/v1/checkout/sessions/{id}/line_items")),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_deliveries_and_twenty_landings_fulfil_once() {
    let app = spawn_app().await;
    let id = session_id("race");
    let session = app.seed(&SampleSession::paid(&id, 3));
    let body =
        fulfilld::stripe::double::event_body("evt_race_1", "checkout.session.completed", &session);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (http, url, body, id) = (
            app.http.clone(),
            app.address.clone(),
            body.clone(),
            id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let (body, header) = signed(&body);
                let r = http
                    .post(format!("{url}/webhook"))
                    .header("stripe-signature", header)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            } else {
                let r = http
                    .get(format!("{url}/after-checkout?session_id={id}"))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }
        }));
    }
    // Webhooks are all acknowledged. Landings come from one client: while the
    // session is not recorded yet, each costs a rationed Stripe lookup, so
    // some may be told to try again shortly (429); none may fail otherwise.
    let mut landed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let status = t.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(status, 200, "webhook {i}");
        } else {
            assert!(status == 200 || status == 429, "landing {i}: {status}");
            landed += usize::from(status == 200);
        }
    }
    assert!(landed > 0, "no landing page was served");
    app.wait_for_state(&id, "fulfilled").await;
    // Let the queue drain fully, then count on a fresh read: the snapshot
    // taken when the state first said fulfilled cannot show a later duplicate.
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
    assert_eq!(
        s["events"].as_array().unwrap().len(),
        1,
        "one event, however often delivered"
    );
    let (_, page) = app.landing(&id).await;
    assert!(page.contains("Thank you for your order"));
}

#[tokio::test]
async fn completed_then_async_succeeded_fulfils_once() {
    let app = spawn_app().await;
    let id = session_id("twoevents");
    let session = app.seed(&SampleSession::paid(&id, 2));
    assert_eq!(
        app.send_event("evt_two_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(
        app.send_event(
            "evt_two_2",
            "checkout.session.async_payment_succeeded",
            &session
        )
        .await,
        200
    );
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["state"], "fulfilled");
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(s["events"].as_array().unwrap().len(), 2);
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
}

#[tokio::test]
async fn delayed_payment_waits_then_fulfils_once() {
    let app = spawn_app().await;
    let id = session_id("sepa");
    let mut sample = SampleSession::paid(&id, 2);
    sample.payment_status = "unpaid";
    sample.currency = "eur";
    sample.payment_method = "sepa_debit";
    let session = app.seed(&sample);

    assert_eq!(
        app.send_event("evt_sepa_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "awaiting_payment").await;
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["state"], "awaiting_payment");
    assert_eq!(s["payment_status"], "unpaid");
    assert!(s["fulfillments"].as_array().unwrap().is_empty());
    assert!(
        app.receiver.received().is_empty(),
        "nothing sent while unpaid"
    );
    assert_eq!(
        app.stripe.requests().len(),
        0,
        "an unpaid completion needs no API call"
    );
    let (status, page) = app.landing(&id).await;
    assert_eq!(status, 200);
    assert!(page.contains("Payment processing"), "{page}");
    app.settle().await;
    assert!(app.receiver.received().is_empty());

    // The bank debit clears.
    app.stripe
        .update(&id, serde_json::json!({"payment_status": "paid"}));
    let mut paid = session.clone();
    paid["payment_status"] = "paid".into();
    assert_eq!(
        app.send_event(
            "evt_sepa_2",
            "checkout.session.async_payment_succeeded",
            &paid
        )
        .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["payment_status"], "paid");
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
    let cb = &app.receiver.of_kind(FULFILLED)[0];
    assert_eq!(cb.body["data"]["session"]["currency"], "eur");
}

#[tokio::test]
async fn async_payment_failure_is_not_fulfilled() {
    let app = spawn_app().await;
    let id = session_id("failed");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_f_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "awaiting_payment").await;
    assert_eq!(
        app.send_event("evt_f_2", "checkout.session.async_payment_failed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "payment_failed").await;
    assert!(s["fulfillments"].as_array().unwrap().is_empty());
    eventually("the payment_failed callback arrives", || async {
        (!app.receiver.of_kind("checkout.payment_failed").is_empty()).then_some(())
    })
    .await;
    app.settle().await;
    let failed = app.receiver.of_kind("checkout.payment_failed");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].signature_valid);
    assert_eq!(failed[0].body["data"]["session"]["id"], id.as_str());
    // Like a fulfillment, it carries the session as retrieved, with its items.
    let items = &failed[0].body["data"]["session"]["line_items"];
    assert_eq!(items["has_more"], false);
    assert_eq!(items["data"].as_array().unwrap().len(), 1);
    assert_eq!(failed[0].body["type"], "checkout.payment_failed");
    assert!(app.receiver.of_kind(FULFILLED).is_empty());
    // A late completion event or a landing-page visit does not revive it.
    assert_eq!(
        app.send_event("evt_f_3", "checkout.session.completed", &session)
            .await,
        200
    );
    let (_, page) = app.landing(&id).await;
    assert!(page.contains("did not go through"), "{page}");
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["state"], "payment_failed");
    assert!(app.receiver.of_kind(FULFILLED).is_empty());
}

#[tokio::test]
async fn no_payment_required_is_fulfilled() {
    let app = spawn_app().await;
    let id = session_id("free");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "no_payment_required";
    sample.items = vec![("Free sample".into(), 0, 1)];
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_free_1", "checkout.session.completed", &session)
            .await,
        200
    );
    let s = app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(s["payment_status"], "no_payment_required");
    app.settle().await;
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
}

#[tokio::test]
async fn expired_sessions_are_marked_and_never_fulfilled() {
    let app = spawn_app().await;
    let id = session_id("expired");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    sample.status = "expired";
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_exp_1", "checkout.session.expired", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "expired").await;
    let (_, page) = app.landing(&id).await;
    assert!(page.contains("expired"));
    app.settle().await;
    assert_eq!(app.session(&id).await["state"], "expired");
    assert!(app.receiver.received().is_empty());
}

#[tokio::test]
async fn forced_refulfillment_is_a_second_audited_fulfillment() {
    let app = spawn_app().await;
    let id = session_id("force");
    let session = app.seed(&SampleSession::paid(&id, 2));
    assert_eq!(
        app.send_event("evt_force_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;

    // Without force: nothing happens.
    let (status, v) = app
        .api_post(
            &format!("/admin/api/sessions/{id}/fulfill"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["result"]["state"], "fulfilled");
    assert_eq!(v["session"]["fulfillments"].as_array().unwrap().len(), 1);

    let (status, v) = app
        .api_post(
            &format!("/admin/api/sessions/{id}/fulfill"),
            serde_json::json!({"force": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let f = v["session"]["fulfillments"].as_array().unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f[1]["forced"], true);
    assert_eq!(f[1]["actor"], "api");
    assert_eq!(f[1]["trigger"], "admin");
    app.settle().await;
    let callbacks = app.receiver.of_kind(FULFILLED);
    assert_eq!(callbacks.len(), 2);
    assert_ne!(callbacks[0].webhook_id, callbacks[1].webhook_id);
    assert_eq!(callbacks[1].body["data"]["forced"], true);
}

#[tokio::test]
async fn reconciliation_catches_a_payment_whose_webhook_never_came() {
    let app = spawn_app().await;
    let id = session_id("lost");
    let mut sample = SampleSession::paid(&id, 2);
    sample.payment_status = "unpaid";
    let session = app.seed(&sample);
    assert_eq!(
        app.send_event("evt_lost_1", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "awaiting_payment").await;

    // The payment clears, but its webhook is never delivered.
    app.stripe
        .update(&id, serde_json::json!({"payment_status": "paid"}));
    // Sessions that changed recently are left alone...
    assert_eq!(
        app.fulfiller.reconcile_awaiting(60_000, 100).await.unwrap(),
        0
    );
    // ...quiet ones are re-checked with Stripe.
    assert_eq!(app.fulfiller.reconcile_awaiting(0, 100).await.unwrap(), 1);
    let s = app.wait_for_state(&id, "fulfilled").await;
    assert_eq!(
        s["attempts"].as_array().unwrap().last().unwrap()["trigger"],
        "reconcile"
    );
    app.settle().await;
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 1);
    // Nothing left to reconcile.
    assert_eq!(app.fulfiller.reconcile_awaiting(0, 100).await.unwrap(), 0);
}

/// F15: the endpoint was down longer than Stripe retries. The events Stripe
/// could not deliver are listed from `GET /v1/events?delivery_success=false`
/// and fulfilled exactly once; a late redelivery changes nothing.
#[tokio::test]
async fn missed_events_are_recovered_from_stripe_exactly_once() {
    let app = spawn_app().await;
    let event = |event_id: &str, kind: &str, session: &Value| -> Value {
        serde_json::from_str(&fulfilld::stripe::double::event_body(
            event_id, kind, session,
        ))
        .unwrap()
    };
    // Three sessions paid while fulfilld was unreachable, one of them by SEPA
    // (completed, then succeeded), one card order that did get through, and
    // 120 more undelivered events than one page holds.
    let paid = session_id("missed_card");
    let paid_obj = app.seed(&SampleSession::paid(&paid, 3));
    app.stripe.add_event(
        event("evt_missed_card", "checkout.session.completed", &paid_obj),
        false,
    );
    let sepa = session_id("missed_sepa");
    let mut sepa_sample = SampleSession::paid(&sepa, 1);
    sepa_sample.payment_status = "unpaid";
    let sepa_obj = app.seed(&sepa_sample);
    app.stripe.add_event(
        event("evt_missed_sepa_1", "checkout.session.completed", &sepa_obj),
        false,
    );
    app.stripe
        .update(&sepa, serde_json::json!({"payment_status": "paid"}));
    let mut sepa_paid = sepa_obj.clone();
    sepa_paid["payment_status"] = "paid".into();
    app.stripe.add_event(
        event(
            "evt_missed_sepa_2",
            "checkout.session.async_payment_succeeded",
            &sepa_paid,
        ),
        false,
    );
    let delivered = session_id("delivered");
    let delivered_obj = app.seed(&SampleSession::paid(&delivered, 1));
    app.stripe.add_event(
        event(
            "evt_delivered",
            "checkout.session.completed",
            &delivered_obj,
        ),
        true,
    );
    assert_eq!(
        app.send_event(
            "evt_delivered",
            "checkout.session.completed",
            &delivered_obj
        )
        .await,
        200
    );
    let mut expired_ids = Vec::new();
    for i in 0..120 {
        let id = session_id(&format!("missed_exp{i}"));
        let mut s = SampleSession::paid(&id, 1);
        s.payment_status = "unpaid";
        s.status = "expired";
        // Known to Stripe as expired: an expiry is decided by a fresh read.
        let obj = app.seed(&s);
        app.stripe.add_event(
            event(
                &format!("evt_missed_exp_{i}"),
                "checkout.session.expired",
                &obj,
            ),
            false,
        );
        expired_ids.push(id);
    }
    // Something else in the account that fulfilld does not act on.
    app.stripe.add_event(serde_json::json!({"id": "evt_other", "type": "customer.created", "created": fulfilld::time::now_secs(), "data": {"object": {}}}), false);

    let since = fulfilld::time::now_secs() - 3600;
    assert_eq!(
        app.fulfiller
            .reconcile_missed_events(since, 1000)
            .await
            .unwrap(),
        123
    );
    app.wait_for_state(&paid, "fulfilled").await;
    let s = app.wait_for_state(&sepa, "fulfilled").await;
    assert_eq!(s["events"].as_array().unwrap().len(), 2);
    app.wait_for_state(&expired_ids[0], "expired").await;
    app.wait_for_state(&expired_ids[119], "expired").await;
    let query = app
        .stripe
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/events")
        .unwrap()
        .query;
    assert!(
        query.contains("delivery_success=false")
            && query.contains("types%5B0%5D=checkout.session.completed"),
        "{query}"
    );

    // Again, and Stripe's own late retry: nothing new, nothing twice.
    assert_eq!(
        app.fulfiller
            .reconcile_missed_events(since, 1000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.send_event("evt_missed_card", "checkout.session.completed", &paid_obj)
            .await,
        200
    );
    // The redelivery's job must have run before "nothing twice" is judged:
    // the sessions were fulfilled already, so waiting for that state proves nothing.
    app.settle().await;
    for id in [&paid, &sepa, &delivered] {
        let s = app.session(id).await;
        assert_eq!(s["state"], "fulfilled", "{id}");
        assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1, "{id}");
    }
    assert_eq!(app.receiver.of_kind(FULFILLED).len(), 3);
}

#[tokio::test]
async fn a_failing_events_list_is_an_error_not_a_crash() {
    let app = spawn_app().await;
    app.stripe.script(
        fulfilld::stripe::double::EVENTS_SCRIPT,
        [Scripted::StatusShouldRetry(500, false)],
    );
    let err = app
        .fulfiller
        .reconcile_missed_events(0, 1000)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert_eq!(
        app.fulfiller
            .reconcile_missed_events(0, 1000)
            .await
            .unwrap(),
        0
    );
}
