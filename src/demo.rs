//! `fulfilld demo`: the whole product on a temporary database, fed by the
//! Stripe test double (the same code the tests use) through the real,
//! signed `/webhook` path. No Stripe account, no network.
//!
//! The story it plays, so every state shows up within seconds:
//! a paid card order, an order with 120 line items, a 100%-off order, a SEPA
//! debit that clears after ~25 s, an ACH debit that fails after ~2 s, a SEPA
//! debit still processing, an expired checkout, a session Stripe refused to
//! serve (failed; "Fulfill now" fixes it), one whose shop endpoint is down
//! for a minute (retrying, then fulfilled), and one stuck on a slow Stripe
//! answer for ~20 s (fulfilling). Two forged webhooks show up in the log.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use poem::{
    Body, EndpointExt, Request, Response, Route, Server, handler, http::StatusCode,
    listener::TcpAcceptor, post, web::Data,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    app::{AppError, Application},
    config::{Config, Secret},
    signature,
    stripe::double::{SampleSession, Scripted, StripeDouble, event_body},
    time::now_secs,
};

const SECRET_KEY: &str = "sk_test_fulfilld_demo";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on {addr}: {error} (try --listen 127.0.0.1:0 for any free port)")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot prepare the demo: {0}")]
    Setup(String),
    #[error(transparent)]
    App(#[from] AppError),
}

/// What a demo run prints, also for tests that drive it.
pub struct DemoInfo {
    pub dashboard: String,
    pub username: String,
    pub password: String,
    pub api_token: String,
    pub database: std::path::PathBuf,
}

/// `n` (at most 32) random hex digits. The demo's password and token are
/// secrets too: without the OS RNG the demo does not start.
fn random_hex(n: usize) -> Result<String, DemoError> {
    let hex = crate::model::random_hex().map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(hex[..n.min(32)].to_string())
}

/// Shops that answer the callback with 503 (the "shop is down" story).
#[derive(Default)]
struct Shop {
    down: Mutex<HashSet<String>>,
    key: Vec<u8>,
}

/// The merchant's endpoint in the demo: verifies the Standard Webhooks
/// signature like a real shop would, and answers 200 (or 503 while "down").
#[handler]
async fn shop_endpoint(req: &Request, body: Body, shop: Data<&Arc<Shop>>) -> Response {
    let Ok(bytes) = body.into_bytes_limit(4 * 1024 * 1024).await else {
        return Response::builder().status(StatusCode::BAD_REQUEST).finish();
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, ts) = (header("webhook-id"), header("webhook-timestamp"));
    let expected = signature::standard_webhooks_signature(
        &shop.key,
        &id,
        ts.parse().unwrap_or_default(),
        &bytes,
    );
    if !header("webhook-signature")
        .split(' ')
        .any(|s| signature::ct_eq(s.as_bytes(), expected.as_bytes()))
    {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body("bad signature");
    }
    let session = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["data"]["session"]["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    let down = shop
        .down
        .lock()
        .map(|d| d.contains(&session))
        .unwrap_or(false);
    if down {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body("the shop is down for maintenance");
    }
    Response::builder().status(StatusCode::OK).body("thanks")
}

/// Runs the demo until `stop` is cancelled; calls `ready` once it serves.
pub async fn run(
    listen: SocketAddr,
    shop: crate::config::ShopConfig,
    stop: CancellationToken,
    ready: impl FnOnce(&DemoInfo) -> String,
) -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("fulfilld-demo-{}", random_hex(12)?));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let result = run_in(&dir, listen, shop, stop, ready).await;
    // The database is temporary by design.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &std::path::Path,
    listen: SocketAddr,
    shop_config: crate::config::ShopConfig,
    stop: CancellationToken,
    ready: impl FnOnce(&DemoInfo) -> String,
) -> Result<(), DemoError> {
    let setup = |e: std::io::Error| DemoError::Setup(e.to_string());
    let stripe = StripeDouble::start(SECRET_KEY).await.map_err(setup)?;

    let callback_key = random_hex(32)?.into_bytes();
    let callback_secret = format!(
        "whsec_{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &callback_key)
    );
    let shop = Arc::new(Shop {
        down: Mutex::new(HashSet::new()),
        key: callback_key,
    });
    let shop_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(setup)?;
    let shop_url = format!(
        "http://{}/orders",
        shop_listener.local_addr().map_err(setup)?
    );
    let shop_server =
        Server::new_with_acceptor(TcpAcceptor::from_tokio(shop_listener).map_err(setup)?)
            .run_with_graceful_shutdown(
                Route::new()
                    .at("/orders", post(shop_endpoint))
                    .data(shop.clone()),
                {
                    let stop = stop.clone();
                    async move { stop.cancelled().await }
                },
                Some(Duration::from_secs(1)),
            );
    let shop_task = tokio::spawn(shop_server);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| DemoError::Listen {
            addr: listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(setup)?;
    let webhook_secret = format!("whsec_demo_{}", random_hex(24)?);
    let info = DemoInfo {
        dashboard: format!("http://{addr}/admin"),
        username: "admin".into(),
        password: format!("demo-{}", random_hex(16)?),
        api_token: format!("demo_token_{}", random_hex(24)?),
        database: dir.join("fulfilld.redb"),
    };
    let mut config = Config::default();
    config.server.public_url = format!("http://{addr}").parse().map_err(DemoError::Setup)?;
    config.storage.path = info.database.clone();
    config.stripe.secret_key = Some(Secret::new(SECRET_KEY));
    config.stripe.webhook_secrets = vec![Secret::new(webhook_secret.clone())];
    config.stripe.api_base = stripe.url().parse().map_err(DemoError::Setup)?;
    config.admin.username = Some(info.username.clone());
    config.admin.password = Some(Secret::new(info.password.clone()));
    config.admin.api_token = Some(Secret::new(info.api_token.clone()));
    config.fulfillment.callback_url = Some(shop_url.parse().map_err(DemoError::Setup)?);
    config.fulfillment.callback_secret = Some(Secret::new(callback_secret));
    config.shop = shop_config;
    config
        .validate()
        .map_err(|e| DemoError::Setup(e.to_string()))?;

    let app = Application::build(&config, listener).await?;
    let app_stop = app.stop_token();
    let server = tokio::spawn(app.run_until_stopped());
    let banner = ready(&info);

    let story = Story {
        stop: stop.clone(),
        banner,
        base: format!("http://{addr}"),
        secret: webhook_secret,
        stripe,
        shop,
        http: reqwest::Client::new(),
    };
    tokio::select! {
        _ = story.play() => {}
        _ = stop.cancelled() => {}
    }
    stop.cancelled().await;
    // Nothing should wait on the double's deliberately slow answers now.
    story.stripe.release_hangs();
    app_stop.cancel();
    let served = server.await.map_err(|e| DemoError::Setup(e.to_string()))?;
    let _ = shop_task.await;
    served?;
    Ok(())
}

struct Story {
    stop: CancellationToken,
    /// The banner, said again when the story ends (it scrolled away).
    banner: String,
    base: String,
    secret: String,
    stripe: StripeDouble,
    shop: Arc<Shop>,
    http: reqwest::Client,
}

/// Writes a line for the person running the demo. Nobody reading any more
/// (`fulfilld demo | head -1` closed the pipe) ends the demo cleanly, its
/// temporary database removed, instead of a panic.
pub fn print_or_stop(text: &str, stop: &CancellationToken) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        stop.cancel();
    }
}

impl Story {
    fn say(&self, line: &str) {
        print_or_stop(&format!("  {line}\n"), &self.stop);
    }

    /// Sends one event, signed as Stripe would, through the real HTTP path.
    async fn send(&self, event_id: &str, kind: &str, session: &Value) {
        let body = event_body(event_id, kind, session);
        let header = signature::stripe_header(&self.secret, now_secs(), body.as_bytes());
        let sent = self
            .http
            .post(format!("{}/webhook", self.base))
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "demo: cannot deliver a sample event");
        }
    }

    fn session(&self, tag: &str, name: &str, email: &str, minutes_ago: i64) -> SampleSession {
        let mut s = SampleSession::paid(
            &format!("cs_test_demo_{tag}_{:016x}", crate::time::jitter_entropy()),
            0,
        );
        s.email = email.to_string();
        s.created = now_secs() - minutes_ago * 60;
        s.items = vec![(name.to_string(), 2400, 1)];
        s
    }

    /// Puts a session in the Stripe double and returns its object.
    fn seed(&self, sample: &SampleSession) -> Value {
        let (session, items) = sample.build();
        self.stripe.insert(session.clone(), items);
        session
    }

    async fn play(&self) {
        self.say("delivering signed sample events to /webhook:");
        // A paid card order, delivered three times (Stripe retries): fulfilled once.
        let mut paid = self.session("card", "", "maria.garcia@example.com", 95);
        paid.items = vec![
            ("Ceramic pour-over dripper".into(), 3200, 1),
            ("Single-origin beans, 250 g".into(), 1450, 2),
            ("Paper filters (100)".into(), 600, 1),
        ];
        let paid_obj = self.seed(&paid);
        for _ in 0..3 {
            self.send(
                "evt_demo_card_completed",
                "checkout.session.completed",
                &paid_obj,
            )
            .await;
        }
        self.say(&format!(
            "paid card order (3 items), delivered 3 times, fulfilled once; the customer's page: {}/after-checkout?session_id={}",
            self.base, paid.id
        ));

        let mut many = self.session("bulk", "", "orders@cafe-example.com", 80);
        many.items = (1..=120)
            .map(|i| {
                (
                    format!("Sticker pack #{i:03}"),
                    150 + (i % 7) * 25,
                    1 + i % 3,
                )
            })
            .collect();
        let many_obj = self.seed(&many);
        self.send(
            "evt_demo_bulk_completed",
            "checkout.session.completed",
            &many_obj,
        )
        .await;
        self.say("an order with 120 line items (fetched page by page from Stripe)");

        let mut free = self.session("free", "Gift: tasting set", "sam.lee@example.com", 70);
        free.items = vec![("Gift: tasting set".into(), 0, 1)];
        free.payment_status = "no_payment_required";
        let free_obj = self.seed(&free);
        self.send(
            "evt_demo_free_completed",
            "checkout.session.completed",
            &free_obj,
        )
        .await;
        self.say("a 100%-off order (no_payment_required)");

        let delayed = |tag: &str, name: &str, email: &str, method: &'static str, ago: i64| {
            let mut s = self.session(tag, name, email, ago);
            s.payment_status = "unpaid";
            s.payment_method = method;
            s.currency = "eur";
            s
        };
        let sepa_ok = delayed(
            "sepa",
            "Espresso grinder",
            "lena.schmidt@example.de",
            "sepa_debit",
            60,
        );
        let sepa_ok_obj = self.seed(&sepa_ok);
        self.send(
            "evt_demo_sepa_completed",
            "checkout.session.completed",
            &sepa_ok_obj,
        )
        .await;
        let mut ach_fail = delayed(
            "ach",
            "Barista course",
            "tom.baker@example.com",
            "us_bank_account",
            50,
        );
        ach_fail.currency = "usd";
        let ach_obj = self.seed(&ach_fail);
        self.send(
            "evt_demo_ach_completed",
            "checkout.session.completed",
            &ach_obj,
        )
        .await;
        let sepa_wait = delayed(
            "sepa2",
            "Milk jug, 600 ml",
            "jan.devries@example.nl",
            "sepa_debit",
            40,
        );
        let sepa_wait_obj = self.seed(&sepa_wait);
        self.send(
            "evt_demo_sepa2_completed",
            "checkout.session.completed",
            &sepa_wait_obj,
        )
        .await;
        self.say("three delayed payments (SEPA, ACH): awaiting_payment until the bank answers");

        let mut expired = self.session("expired", "Travel mug", "alex.kim@example.com", 1440);
        expired.payment_status = "unpaid";
        expired.status = "expired";
        let expired_obj = self.seed(&expired);
        self.send("evt_demo_expired", "checkout.session.expired", &expired_obj)
            .await;
        self.say("an abandoned checkout (expired)");

        let failing = self.session("refused", "Cold brew bottle", "noor.haddad@example.com", 30);
        let failing_obj = self.seed(&failing);
        self.stripe.script(&failing.id, [Scripted::Status(404)]);
        self.send(
            "evt_demo_refused_completed",
            "checkout.session.completed",
            &failing_obj,
        )
        .await;
        self.say(
            "a session Stripe refused to serve (failed): press \"Fulfill now\" on it in the dashboard",
        );

        let shop_down = self.session("shopdown", "Scale with timer", "chris.ng@example.com", 20);
        let shop_down_obj = self.seed(&shop_down);
        if let Ok(mut d) = self.shop.down.lock() {
            d.insert(shop_down.id.clone());
        }
        self.send(
            "evt_demo_shopdown_completed",
            "checkout.session.completed",
            &shop_down_obj,
        )
        .await;
        self.say("a paid order whose shop endpoint is down (retrying, recovers after a minute)");

        let slow = self.session("slow", "Gooseneck kettle", "priya.patel@example.com", 10);
        let slow_obj = self.seed(&slow);
        self.stripe.script(&slow.id, [Scripted::Hang]);
        self.send(
            "evt_demo_slow_completed",
            "checkout.session.completed",
            &slow_obj,
        )
        .await;
        self.say("a paid order waiting on a slow Stripe answer (fulfilling for ~20 s)");

        // Two requests that are not from Stripe, for the webhook log.
        let forged = event_body("evt_forged", "checkout.session.completed", &paid_obj);
        let _ = self
            .http
            .post(format!("{}/webhook", self.base))
            .body(forged.clone())
            .send()
            .await;
        let wrong =
            signature::stripe_header("whsec_from_another_endpoint", now_secs(), forged.as_bytes());
        let _ = self
            .http
            .post(format!("{}/webhook", self.base))
            .header("stripe-signature", wrong)
            .body(forged)
            .send()
            .await;
        self.say(
            "two forged webhooks (no signature; another endpoint's secret): see the Webhook log",
        );

        tokio::time::sleep(Duration::from_secs(2)).await;
        self.send(
            "evt_demo_ach_failed",
            "checkout.session.async_payment_failed",
            &ach_obj,
        )
        .await;
        self.say(
            "t+2s  the ACH debit failed: checkout.session.async_payment_failed (payment_failed)",
        );

        tokio::time::sleep(Duration::from_secs(18)).await;
        self.stripe.release_hangs();
        self.say("t+20s Stripe answered the slow request: that order is fulfilled");

        tokio::time::sleep(Duration::from_secs(5)).await;
        self.stripe
            .update(&sepa_ok.id, json!({"payment_status": "paid"}));
        let mut cleared = sepa_ok_obj.clone();
        cleared["payment_status"] = "paid".into();
        self.send(
            "evt_demo_sepa_succeeded",
            "checkout.session.async_payment_succeeded",
            &cleared,
        )
        .await;
        self.say(
            "t+25s the SEPA debit cleared: checkout.session.async_payment_succeeded (fulfilled)",
        );

        tokio::time::sleep(Duration::from_secs(35)).await;
        if let Ok(mut d) = self.shop.down.lock() {
            d.clear();
        }
        self.say("t+60s the shop endpoint is back: the retried callback goes through (fulfilled)");
        self.say("the story is over; the dashboard stays up until Ctrl-C");
        print_or_stop(&format!("\n{}", self.banner), &self.stop);
    }
}
