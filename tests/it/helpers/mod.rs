//! The test harness: the real application on port 0, a Stripe test double and
//! a merchant receiver, all over real HTTP on loopback. Every test gets its
//! own database, ports and fakes, so tests run in parallel.

pub mod binary;
pub mod receiver;
pub mod smtp;
pub mod webdriver;

use std::{future::Future, path::Path, time::Duration};

use fulfilld::{
    app::Application,
    config::{Config, Secret},
    signature,
    store::Store,
    stripe::double::{SampleSession, StripeDouble, event_body},
};
pub use receiver::{CALLBACK_SECRET, Receiver};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const SECRET_KEY: &str = "sk_test_fulfilld_integration_tests";
pub const WEBHOOK_SECRET: &str = "whsec_integration_test_secret";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_rotated_out_but_still_valid";
pub const API_TOKEN: &str = "test-api-token-0123456789abcdef";

/// How long `eventually` waits before failing a test.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub address: String,
    pub stripe: StripeDouble,
    pub receiver: Receiver,
    pub http: reqwest::Client,
    pub store: Store,
    pub fulfiller: std::sync::Arc<fulfilld::fulfill::Fulfiller>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

/// A configuration for tests: fast retries, a callback to `receiver`.
pub fn test_config(db: &Path, stripe_url: &str, callback_url: Option<&str>) -> Config {
    let mut c = Config::default();
    c.storage.path = db.to_path_buf();
    c.stripe.secret_key = Some(Secret::new(SECRET_KEY));
    c.stripe.webhook_secrets = vec![Secret::new(OLD_WEBHOOK_SECRET), Secret::new(WEBHOOK_SECRET)];
    c.stripe.api_base = stripe_url.parse().unwrap();
    c.admin.username = Some("admin".into());
    c.admin.password = Some(Secret::new("a long test password"));
    c.admin.api_token = Some(Secret::new(API_TOKEN));
    if let Some(url) = callback_url {
        c.fulfillment.callback_url = Some(url.parse().unwrap());
        c.fulfillment.callback_secret = Some(Secret::new(CALLBACK_SECRET));
    }
    c.jobs.retry_base_ms = 20;
    c.jobs.retry_max_secs = 1;
    c.validate().expect("the test configuration is valid");
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let mut config = test_config(
        &dir.path().join("fulfilld.redb"),
        stripe.url(),
        Some(&receiver.url),
    );
    tweak(&mut config);
    // Bound before the server starts, so requests never race its startup.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build(&config, listener).await.unwrap();
    let address = format!("http://{}", app.local_addr());
    let stop = app.stop_token();
    let store = app.store();
    let fulfiller = app.fulfiller();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        stripe,
        receiver,
        http: reqwest::Client::new(),
        store,
        fulfiller,
        stop,
        _dir: dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A signed webhook request body and `Stripe-Signature` header, as Stripe sends them.
pub fn signed(body: &str) -> (String, String) {
    let t = fulfilld::time::now_secs();
    (
        body.to_string(),
        signature::stripe_header(WEBHOOK_SECRET, t, body.as_bytes()),
    )
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Puts a session in the Stripe double and returns its object.
    pub fn seed(&self, sample: &SampleSession) -> Value {
        let (session, items) = sample.build();
        self.stripe.insert(session.clone(), items);
        session
    }

    /// POSTs a raw webhook with the given header.
    pub async fn post_webhook_raw(
        &self,
        body: impl Into<reqwest::Body>,
        header: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url("/webhook"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(h) = header {
            req = req.header("stripe-signature", h);
        }
        req.send().await.unwrap()
    }

    /// Sends a correctly signed event about `session` and returns the status.
    pub async fn send_event(&self, event_id: &str, kind: &str, session: &Value) -> u16 {
        let (body, header) = signed(&event_body(event_id, kind, session));
        self.post_webhook_raw(body, Some(&header))
            .await
            .status()
            .as_u16()
    }

    pub async fn landing(&self, session_id: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(&format!("/after-checkout?session_id={session_id}")))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The session as the API shows it (`Value::Null` if unknown).
    pub async fn session(&self, id: &str) -> Value {
        let (status, v) = self.api_get(&format!("/admin/api/sessions/{id}")).await;
        if status == 200 { v } else { Value::Null }
    }

    /// Polls the API until the session reaches `state`, and returns it.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        eventually(&format!("{id} reaches {state}"), || async {
            let s = self.session(id).await;
            (s["state"] == state).then_some(s)
        })
        .await
    }

    pub async fn event_count(&self) -> u64 {
        self.store.read(|r| r.event_count()).await.unwrap()
    }

    pub async fn session_count(&self) -> u64 {
        self.store.read(|r| r.session_count()).await.unwrap()
    }
}

/// Polls `check` until it returns `Some`, failing the test after `PATIENCE`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A unique session id for one test.
pub fn session_id(tag: &str) -> String {
    format!(
        "cs_test_{tag}_{}",
        fulfilld::model::new_id("x").trim_start_matches("x_")
    )
}
