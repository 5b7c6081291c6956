//! The test harness: the real application on port 0, a Stripe test double and
//! a merchant receiver, all over real HTTP on loopback. Every test gets its
//! own database, ports and fakes, so tests run in parallel.

pub mod binary;
pub mod pg;
pub mod receiver;
pub mod smtp;
pub mod webdriver;

use std::{future::Future, path::Path, time::Duration};

use fulfilld::{
    app::Application,
    config::{Config, Secret},
    model::State,
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
/// How often `eventually` and `settle` look again.
const POLL: Duration = Duration::from_millis(20);
/// How far ahead [`TestApp::settle`] looks for due work. Tests retry within
/// about a second (`jobs.retry_max_secs = 1`), so a job due later than this
/// (a retry scheduled in an hour, the lease safety net of a claim) is not
/// going to act while a test runs.
pub const SETTLE_HORIZON: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub address: String,
    pub stripe: StripeDouble,
    pub receiver: Receiver,
    pub http: reqwest::Client,
    pub store: Store,
    pub fulfiller: std::sync::Arc<fulfilld::fulfill::Fulfiller>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    /// The app's PostgreSQL database (`TEST_STORAGE=postgres`).
    pub db: Option<pg::FreshDb>,
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
    spawn_app_on(tweak, None).await
}

/// `spawn_app` with the fulfiller on `clock`: time passes when the test says.
pub async fn spawn_app_with_clock(clock: std::sync::Arc<fulfilld::time::ManualClock>) -> TestApp {
    spawn_app_on(|_| {}, Some(clock)).await
}

async fn spawn_app_on(
    tweak: impl FnOnce(&mut Config),
    clock: Option<std::sync::Arc<fulfilld::time::ManualClock>>,
) -> TestApp {
    // `TEST_LOG=fulfilld=debug` shows the apps' logs (a tracing filter).
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let mut config = test_config(
        &dir.path().join("fulfilld.redb"),
        stripe.url(),
        Some(&receiver.url),
    );
    let db = if pg::on_postgres() {
        let db = pg::FreshDb::create("spawn_app").await.expect("required");
        config.storage.url = Some(Secret::from_value(db.target.clone()));
        Some(db)
    } else {
        None
    };
    tweak(&mut config);
    // Bound before the server starts, so requests never race its startup.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = fulfilld::app::open_store(&config).await.unwrap();
    let clock = clock.map(|c| c as std::sync::Arc<dyn fulfilld::time::Clock>);
    let app = Application::build_with_clock(&config, listener, store, clock)
        .await
        .unwrap();
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
        db,
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
    /// The app's database file.
    pub fn db_path(&self) -> std::path::PathBuf {
        self._dir.path().join("fulfilld.redb")
    }

    /// What changes with any commit: the redb file's bytes, or on
    /// PostgreSQL every row's id and the transaction that last wrote it.
    pub async fn written(&self) -> Vec<u8> {
        let Some(db) = &self.db else {
            return std::fs::read(self.db_path()).unwrap();
        };
        let client = db.target.connect().await.unwrap();
        let row = client
            .query_one(
                "SELECT concat_ws(';',
                   (SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM sessions),
                   (SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM session_bodies),
                   (SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM events),
                   (SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM notifications),
                   (SELECT string_agg(key || ':' || xmin::text, ',' ORDER BY key) FROM jobs))",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, String>(0).into_bytes()
    }

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
        self.store.event_count().await.unwrap()
    }

    pub async fn session_count(&self) -> u64 {
        self.store.session_count().await.unwrap()
    }

    /// Every job in the durable queue, however far in the future it is due.
    pub async fn queued_jobs(&self) -> u64 {
        self.store.queue_stats().await.unwrap().queued
    }

    /// Waits, by polling with a deadline, until the application has settled:
    /// no queued job is due within [`SETTLE_HORIZON`] and no fulfillment
    /// attempt is in flight. Call it before every negative check ("nothing
    /// was sent", "no second callback", "no email") and before exact counts,
    /// so that "nothing happened" is only concluded once the queue could act.
    ///
    /// What it relies on: every piece of pending work is durable before the
    /// request that caused it is answered. A webhook's job, a notification's
    /// delivery and a retry are rows in the job queue, and a job stays queued
    /// at its due time (so `<= now`) while the worker runs it; an attempt
    /// started outside the queue (the landing page, a re-trigger) holds the
    /// session in `fulfilling` until it ends. So "settled" is: the earliest
    /// queued job is due after `now + SETTLE_HORIZON` (or there is none), and
    /// no session is `fulfilling`.
    ///
    /// A job due beyond the horizon (a retry in 1 h) does not hold it up: it
    /// cannot act within the test. Use [`TestApp::queued_jobs`] to assert that
    /// nothing at all is queued. A test that leaves a session `fulfilling` on
    /// purpose (a hung callback) cannot settle; this fails after `PATIENCE`
    /// naming what was still pending.
    pub async fn settle(&self) {
        self.settle_within(SETTLE_HORIZON).await
    }

    /// [`TestApp::settle`] with another horizon.
    pub async fn settle_within(&self, horizon: Duration) {
        let horizon_ms = u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = fulfilld::time::now_ms();
            let next_due = self.store.queue_stats().await.unwrap().next_due;
            let fulfilling = self.store.ids_in_state(State::Fulfilling).await.unwrap();
            let due_soon = next_due.filter(|&due| due <= now.saturating_add(horizon_ms));
            if due_soon.is_none() && fulfilling.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the app did not settle within {PATIENCE:?}: a job due in {:?} ms \
                 (horizon {horizon_ms} ms), sessions still fulfilling: {fulfilling:?}",
                due_soon.map(|d| i128::from(d) - i128::from(now)),
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A charge event from the fixtures (`charge.refunded`, …) about the
/// payment `pi`, with Stripe's fields in `object` changed as given.
pub fn charge_event(name: &str, event_id: &str, created: i64, pi: &str, object: Value) -> String {
    let path = format!(
        "{}/tests/fixtures/stripe/synthetic/{name}.event.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["id"] = serde_json::json!(event_id);
    event["created"] = serde_json::json!(created);
    event["data"]["object"]["payment_intent"] = serde_json::json!(pi);
    if let Some(fields) = object.as_object() {
        for (k, v) in fields {
            event["data"]["object"][k] = v.clone();
        }
    }
    event.to_string()
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
        tokio::time::sleep(POLL).await;
    }
}

/// US dollars as a customer reads them (`1234` → `$12.34`), written here from
/// scratch so tests do not check fulfilld's formatter against itself.
pub fn usd(cents: i64) -> String {
    assert!(
        (0..100_000).contains(&cents),
        "usd() writes no thousands separator"
    );
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// A unique session id for one test.
pub fn session_id(tag: &str) -> String {
    format!("cs_test_{tag}_{}", fulfilld::model::random_hex().unwrap())
}

/// `settle` itself: it waits for work that is due, and not for a retry that
/// is scheduled beyond the horizon.
#[tokio::test]
async fn settle_waits_for_due_work_but_not_for_a_retry_an_hour_away() {
    let app = spawn_app_with(|c| {
        c.jobs.retry_base_ms = 3_600_000;
        c.jobs.retry_max_secs = 7_200;
    })
    .await;
    app.receiver.respond_with(503);
    let id = session_id("settle");
    let session = app.seed(&fulfilld::stripe::double::SampleSession::paid(&id, 1));
    assert_eq!(
        app.send_event("evt_settle", "checkout.session.completed", &session)
            .await,
        200
    );
    // The webhook's job is due now: settle returns only after it ran.
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["state"], "retrying", "{s}");
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
    // The retry an hour away is queued, and did not hold settle up.
    assert_eq!(app.queued_jobs().await, 1);
    assert!(
        s["next_attempt_at"].is_string(),
        "a retry is scheduled: {s}"
    );
}
