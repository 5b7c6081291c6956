//! Crash safety with the real binary: `kill -9` between the claim and the
//! end of fulfillment, then a restart on the same database.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use fulfilld::stripe::double::{SampleSession, Scripted, StripeDouble, event_body};

use crate::helpers::*;

struct Binary {
    child: Child,
    address: String,
    http: reqwest::Client,
}

impl Binary {
    /// Starts `fulfilld serve` configured only through environment variables.
    async fn start(dir: &Path, stripe: &StripeDouble, receiver: &Receiver) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .arg("serve")
            .current_dir(dir)
            .env_remove("FULFILLD_CONFIG")
            .env("RUST_LOG", "warn")
            .env("FULFILLD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("FULFILLD_STORAGE__PATH", dir.join("fulfilld.redb"))
            .env("FULFILLD_STRIPE__SECRET_KEY", SECRET_KEY)
            .env("FULFILLD_STRIPE__WEBHOOK_SECRETS", WEBHOOK_SECRET)
            .env("FULFILLD_STRIPE__API_BASE", stripe.url())
            .env("FULFILLD_ADMIN__USERNAME", "admin")
            .env("FULFILLD_ADMIN__PASSWORD", "a long test password")
            .env("FULFILLD_ADMIN__API_TOKEN", API_TOKEN)
            .env("FULFILLD_FULFILLMENT__CALLBACK_URL", &receiver.url)
            .env("FULFILLD_FULFILLMENT__CALLBACK_SECRET", CALLBACK_SECRET)
            .env("FULFILLD_JOBS__RETRY_BASE_MS", "20")
            .env("FULFILLD_JOBS__RETRY_MAX_SECS", "1")
            .stdin(Stdio::null())
            .spawn()
            .expect("the fulfilld binary starts");
        let bin = Binary {
            child,
            address: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        eventually("the binary answers /healthz", || async {
            let r = bin
                .http
                .get(format!("{}/healthz", bin.address))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        bin
    }

    async fn send(&self, event_id: &str, kind: &str, session: &serde_json::Value) -> u16 {
        let (body, header) = signed(&event_body(event_id, kind, session));
        self.http
            .post(format!("{}/webhook", self.address))
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn session(&self, id: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}/admin/api/sessions/{id}", self.address))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap_or_default()
    }

    async fn wait_for_state(&self, id: &str, state: &str) -> serde_json::Value {
        eventually(&format!("{id} reaches {state}"), || async {
            let s = self.session(id).await;
            (s["state"] == state).then_some(s)
        })
        .await
    }

    /// SIGKILL: no chance to clean up.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_claim_completes_after_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let id = session_id("kill1");
    let (session, items) = SampleSession::paid(&id, 12).build();
    stripe.insert(session.clone(), items);
    // The first retrieve never answers: the process is inside its claim.
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
    let claimed = bin.session(&id).await;
    assert_eq!(claimed["state"], "fulfilling");
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
    assert_eq!(
        s["attempts"].as_array().unwrap().last().unwrap()["trigger"],
        "retry"
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
