//! Ingest benchmark: starts the release `fulfilld` binary, drives signed,
//! unique `checkout.session.completed` events at `POST /webhook` over
//! loopback, and prints acknowledged webhooks/s, latency percentiles and the
//! server's peak RSS. Every acknowledged event is durably committed.
//!
//!     cargo bench --bench ingest                 # defaults: 50 connections, 10 s
//!     cargo bench --bench ingest -- 100 20 4000  # connections, seconds, open-loop rate
//!
//! Phase 1 is closed-loop (each connection sends its next request when the
//! last is answered): the most the server acknowledges. Phase 2 is open-loop
//! at a fixed rate, with latency measured from each request's scheduled
//! start, so a slow server cannot hide its queueing (no coordinated omission).
//! The generator shares the machine's cores with the server, so the figures
//! are lower bounds.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fulfilld::{
    signature,
    stripe::double::{SampleSession, StripeDouble, event_body},
};

const SECRET_KEY: &str = "sk_test_bench";
const WEBHOOK_SECRET: &str = "whsec_bench_secret";

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Stands for the request number in the body template.
const SLOT: &str = "NNNNNNNNNNNN";

/// A body template for a new, unpaid session: the full ingest path (event
/// dedup, session record, indexes, durable commit) with no Stripe API call.
fn template() -> String {
    let (mut session, _) = SampleSession::paid(&format!("cs_test_bench_{SLOT}"), 1).build();
    session["payment_status"] = "unpaid".into();
    session["payment_intent"] = format!("pi_bench_{SLOT}").into();
    event_body(
        &format!("evt_bench_{SLOT}"),
        "checkout.session.completed",
        &session,
    )
}

/// A signed, unique webhook: a cheap text substitution, so the generator
/// spends its share of the cores on sending, not on building JSON.
fn request(n: u64, template: &str) -> (String, String) {
    let body = template.replace(SLOT, &format!("{n:012}"));
    let header =
        signature::stripe_header(WEBHOOK_SECRET, fulfilld::time::now_secs(), body.as_bytes());
    (body, header)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let connections: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rate: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2000);

    let dir = tempfile::tempdir().expect("temp dir");
    let stripe = StripeDouble::start(SECRET_KEY)
        .await
        .expect("Stripe double");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("FULFILLD_CONFIG")
        .env("FULFILLD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("FULFILLD_STORAGE__PATH", dir.path().join("bench.redb"))
        .env("FULFILLD_STRIPE__SECRET_KEY", SECRET_KEY)
        .env("FULFILLD_STRIPE__WEBHOOK_SECRETS", WEBHOOK_SECRET)
        .env("FULFILLD_STRIPE__API_BASE", stripe.url())
        .env("FULFILLD_ADMIN__USERNAME", "admin")
        .env("FULFILLD_ADMIN__PASSWORD", "bench password")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the fulfilld binary (cargo bench builds it)");
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections * 2)
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "server ready in {} ms; idle RSS {:.1} MB",
        started.elapsed().as_millis(),
        peak_rss_mb(pid)
    );

    let template = Arc::new(template());
    let counter = Arc::new(AtomicU64::new(0));
    let url = Arc::new(format!("{base}/webhook"));

    // Phase 1: closed loop.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, template, counter) = (
            client.clone(),
            url.clone(),
            template.clone(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (body, header) = request(n, &template);
                let s = Instant::now();
                match client
                    .post(url.as_str())
                    .header("stripe-signature", header)
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => lat.push(s.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "closed loop, {connections} connections, {seconds} s: {:.0} acknowledged webhooks/s ({} acked, {errors} errors); \
         latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        lat.len() as f64 / elapsed,
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        percentile(&lat, 1.0),
    );

    // Phase 2: open loop at a fixed rate.
    let total = rate * (seconds / 2).max(1);
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = t0 + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, template, counter) = (
            client.clone(),
            url.clone(),
            template.clone(),
            counter.clone(),
        );
        handles.push(tokio::spawn(async move {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let (body, header) = request(n, &template);
            let ok = matches!(
                client.post(url.as_str()).header("stripe-signature", header).body(body).send().await,
                Ok(r) if r.status().is_success()
            );
            (ok, scheduled.elapsed().as_micros() as u64)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (ok, l) = h.await.unwrap();
        if ok {
            lat.push(l);
        } else {
            errors += 1;
        }
    }
    lat.sort_unstable();
    println!(
        "open loop at {rate}/s for {} s: {} acked, {errors} errors; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        (seconds / 2).max(1),
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        percentile(&lat, 1.0),
    );
    println!("server peak RSS {:.1} MB", peak_rss_mb(pid));
    let _ = child.kill();
    let _ = child.wait();
}
