//! Crash safety with the real binary: `kill -9` while an attempt reads the
//! session from Stripe, or after its claim and record while the merchant's
//! callback is in flight, then a restart on the same database.

use fulfilld::stripe::double::{SampleSession, Scripted, StripeDouble};

use crate::helpers::{binary::Binary, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_reading_completes_after_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let id = session_id("kill1");
    let (session, items) = SampleSession::paid(&id, 12).build();
    stripe.insert(session.clone(), items);
    // The first retrieve never answers: the attempt reads before it claims.
    stripe.script(&id, [Scripted::Hang]);

    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    assert_eq!(
        bin.send("evt_kill1", "checkout.session.completed", &session)
            .await,
        200
    );
    let path = format!("/v1/checkout/sessions/{id}");
    eventually("the claimed attempt asks Stripe", || async {
        (stripe.count(&path) >= 1).then_some(())
    })
    .await;
    let reading = bin.session(&id).await;
    assert_eq!(reading["state"], "fulfilling");
    assert!(reading["fulfillments"].as_array().unwrap().is_empty());
    bin.kill_9();
    stripe.release_hangs();
    assert!(receiver.received().is_empty());

    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    let s = bin.wait_for_state(&id, "fulfilled").await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(s["line_items"].as_array().unwrap().len(), 12);
    let callbacks = receiver.of_kind("checkout.fulfilled");
    assert_eq!(callbacks.len(), 1);
    assert!(callbacks[0].signature_valid);
    // The event's own job, never claimed, ran again after the restart.
    assert_eq!(
        s["attempts"].as_array().unwrap().last().unwrap()["trigger"],
        "webhook"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_callback_resends_the_same_fulfillment() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let id = session_id("kill2");
    let (session, items) = SampleSession::paid(&id, 2).build();
    stripe.insert(session.clone(), items);
    receiver.hang();

    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    assert_eq!(
        bin.send("evt_kill2", "checkout.session.completed", &session)
            .await,
        200
    );
    eventually("the callback is in flight", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    bin.kill_9();
    receiver.respond_with(200);
    receiver.release();

    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    let s = bin.wait_for_state(&id, "fulfilled").await;
    let fulfillments = s["fulfillments"].as_array().unwrap();
    assert_eq!(fulfillments.len(), 1, "one fulfillment across the crash");
    let fid = fulfillments[0]["id"].as_str().unwrap();
    let callbacks = receiver.of_kind("checkout.fulfilled");
    assert!(callbacks.len() >= 2);
    assert!(
        callbacks.iter().all(|c| c.webhook_id == fid),
        "the same webhook-id on every delivery"
    );
    assert_eq!(
        stripe.count(&format!("/v1/checkout/sessions/{id}")),
        1,
        "recorded, not refetched"
    );
}

/// `kill -9` right after webhooks were answered: what no checkpoint holds
/// yet is in the acknowledgement log, and the restart has every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_acknowledging_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let id = session_id(&format!("ack{n}"));
        let mut sample = SampleSession::paid(&id, 1);
        sample.payment_status = "unpaid";
        sample.payment_method = "sepa_debit";
        let (session, items) = sample.build();
        stripe.insert(session.clone(), items);
        let event = format!("evt_ack{n}");
        assert_eq!(
            bin.send(&event, "checkout.session.completed", &session)
                .await,
            200
        );
        ids.push(id);
    }
    bin.kill_9();
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    for id in &ids {
        let s = bin.session(id).await;
        assert_eq!(s["state"], "awaiting_payment", "{id}: {s}");
    }
}
