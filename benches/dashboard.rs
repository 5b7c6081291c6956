//! Dashboard benchmark: fills a database with 100,000 sessions, starts the
//! real application on loopback, signs in, and prints latency percentiles of
//! the pages an admin uses: the newest page, a state filter, a page deep in
//! the list, a search, and session detail pages. Goal: p95 under 50 ms.
//!
//!     cargo bench --bench dashboard            # 100,000 sessions
//!     cargo bench --bench dashboard -- 20000   # another size
//!
//! Each session has a detail record like a real one (line items, events,
//! an attempt, a fulfillment and the raw Stripe object), so pages read what
//! they would in production.

use std::time::{Duration, Instant};

use fulfilld::{
    app::Application,
    config::{Config, Secret},
    model::{
        AttemptRecord, EventRef, FulfillmentRecord, LineItemRecord, SessionDetail, SessionRecord,
        State, Trigger,
    },
};
use serde_json::json;

const PASSWORD: &str = "bench password 123";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn session(i: u64) -> (SessionRecord, SessionDetail) {
    let id = format!("cs_test_bench_{i:08}");
    let mut rec = SessionRecord::new(&id, 1_700_000_000 + i as i64, 0);
    rec.state = State::ALL[(i % 97 % 7) as usize];
    rec.payment_status = Some("paid".into());
    rec.status = Some("complete".into());
    rec.amount_total = Some(1000 + (i % 5000) as i64);
    rec.currency = Some("eur".into());
    rec.customer_email = Some(format!("customer{}@example.com", i % 20_000));
    rec.payment_intent = Some(format!("pi_bench_{i:08}"));
    // Names a search finds 20 sessions by; items every session shares, so
    // a search for "product" is the capped worst case.
    rec.customer_name = Some(format!("Alex Surname{}", i % 5000));
    rec.first_item = Some("Product number 0 with a longer name".into());
    rec.item_count = 3;
    rec.other_item_words = fulfilld::model::other_item_words(
        [
            "Product number 1 with a longer name",
            "Product number 2 with a longer name",
        ]
        .into_iter(),
    );
    let mut d = SessionDetail::default();
    for n in 0..3 {
        d.line_items.push(LineItemRecord {
            id: format!("li_{i}_{n}"),
            description: Some(format!("Product number {n} with a longer name")),
            quantity: Some(1 + n),
            amount_total: 1000,
            amount_subtotal: 1000,
            currency: Some("eur".into()),
            price_id: Some(format!("price_{n}")),
            unit_amount: Some(1000),
            product_id: None,
        });
    }
    d.events.push(EventRef {
        id: format!("evt_{i}"),
        kind: "checkout.session.completed".into(),
        received_at_ms: 1_700_000_000_000,
    });
    d.attempts.push(AttemptRecord {
        at_ms: 1_700_000_000_100,
        trigger: Trigger::Webhook,
        outcome: rec.state.as_str().into(),
        error: None,
    });
    d.fulfillments.push(FulfillmentRecord {
        id: format!("ful_{i}"),
        at_ms: 1_700_000_000_200,
        forced: false,
        trigger: Trigger::Webhook,
        actor: None,
        delivered_at_ms: Some(1_700_000_000_300),
    });
    d.raw = Some(json!({
        "id": id, "object": "checkout.session", "amount_total": rec.amount_total,
        "currency": "eur", "customer_details": {"email": rec.customer_email, "name": "A Customer",
        "address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}},
        "line_items": {"object": "list", "data": d.line_items.iter().map(|l| json!({"id": l.id, "description": l.description})).collect::<Vec<_>>(), "has_more": false},
        "metadata": {"order": i.to_string()}, "payment_status": "paid", "status": "complete",
    }));
    (rec, d)
}

async fn time_page(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    n: usize,
) -> (Vec<Duration>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let start = Instant::now();
        let r = http
            .get(url)
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "{url}");
        bytes = r.bytes().await.expect("body").len();
        out.push(start.elapsed());
    }
    out.sort();
    (out, bytes)
}

fn report(name: &str, (samples, bytes): &(Vec<Duration>, usize)) {
    println!(
        "{name:<34} n={:<4} p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms  ({} KB)",
        samples.len(),
        percentile(samples, 0.50),
        percentile(samples, 0.95),
        percentile(samples, 0.99),
        bytes / 1024
    );
}

#[tokio::main]
async fn main() {
    let size: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.storage.path = dir.path().join("bench.redb");
    config.stripe.secret_key = Some(Secret::new("sk_test_bench"));
    config.stripe.webhook_secrets = vec![Secret::new("whsec_bench")];
    config.stripe.api_base = "http://127.0.0.1:9".parse().unwrap();
    config.admin.username = Some("admin".into());
    config.admin.password = Some(Secret::new(PASSWORD));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = Application::build(&config, listener).await.expect("app");
    let base = format!("http://{}", app.local_addr());
    let store = app.store();
    let stop = app.stop_token();
    let server = tokio::spawn(app.run_until_stopped());

    let fill = Instant::now();
    let mut i = 0;
    while i < size {
        let end = (i + 2000).min(size);
        let batch: Vec<_> = (i..end)
            .map(session)
            .map(|(rec, detail)| fulfilld::domain::Session { rec, detail })
            .collect();
        store.import(batch).await.expect("fill");
        i = end;
    }
    let db_mb = std::fs::metadata(&config.storage.path)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(0.0);
    println!(
        "filled {size} sessions in {:.1} s (database {db_mb:.0} MB)",
        fill.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = http
        .post(format!("{base}/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username=admin&password={}",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303, "login");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_string();

    // Warm up the connection and the page cache a little, as a real admin would.
    time_page(&http, &format!("{base}/admin"), &cookie, 5).await;
    let mid = size / 2;
    let deep_cursor = format!("{}:cs_test_bench_{mid:08}", 1_700_000_000 + mid as i64);
    report(
        "list, newest 50",
        &time_page(&http, &format!("{base}/admin"), &cookie, 300).await,
    );
    report(
        "list, state=failed",
        &time_page(&http, &format!("{base}/admin?state=failed"), &cookie, 300).await,
    );
    report(
        "list, page in the middle (cursor)",
        &time_page(
            &http,
            &format!("{base}/admin?cursor={}", deep_cursor.replace(':', "%3A")),
            &cookie,
            300,
        )
        .await,
    );
    report(
        "list, search by email",
        &time_page(
            &http,
            &format!("{base}/admin?q=customer123%40example.com"),
            &cookie,
            300,
        )
        .await,
    );
    report(
        "list, search by a name (20 hits)",
        &time_page(&http, &format!("{base}/admin?q=surname1234"), &cookie, 300).await,
    );
    report(
        "list, search by an item (1000 cap)",
        &time_page(&http, &format!("{base}/admin?q=product"), &cookie, 300).await,
    );
    report(
        "list, search by payment intent",
        &time_page(
            &http,
            &format!("{base}/admin?q=pi_bench_{:08}", size / 3),
            &cookie,
            300,
        )
        .await,
    );
    report(
        "JSON API list, newest 50",
        &time_page(&http, &format!("{base}/admin/api/sessions"), &cookie, 300).await,
    );
    let mut detail = Vec::new();
    let mut bytes = 0;
    for k in 0..500u64 {
        let id = (k * 7919) % size;
        let (mut s, b) = time_page(
            &http,
            &format!("{base}/admin/sessions/cs_test_bench_{id:08}"),
            &cookie,
            1,
        )
        .await;
        detail.append(&mut s);
        bytes = b;
    }
    detail.sort();
    report("session detail (500 different)", &(detail, bytes));
    println!("goal: p95 under 50 ms on 2 cores");
    stop.cancel();
    let _ = server.await;
}
