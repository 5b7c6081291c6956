//! Several `fulfilld serve` processes on one PostgreSQL database, as behind
//! a load balancer: the same exactly-once guarantees as one process.
//! Needs `TEST_DATABASE_URL` (see `helpers::pg`).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use fulfilld::stripe::double::{SampleSession, StripeDouble};
use reqwest::{StatusCode, header};

use crate::helpers::{
    API_TOKEN, Receiver, SECRET_KEY, binary::Binary, eventually, pg::FreshDb, session_id, signed,
};
use fulfilld::stripe::double::event_body;

/// How far ahead "settled" looks (tests retry within a second).
const HORIZON_MS: i64 = 5_000;

struct Cluster {
    db: FreshDb,
    stripe: StripeDouble,
    receiver: Receiver,
    dir: tempfile::TempDir,
    replicas: Vec<Binary>,
}

impl Cluster {
    async fn start(test: &str, n: usize, env: &[(&str, &str)]) -> Option<Cluster> {
        let db = FreshDb::create(test).await?;
        let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
        let receiver = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Vec::new();
        for _ in 0..n {
            replicas
                .push(Binary::start_replica(dir.path(), &stripe, &receiver, &db.url(), env).await);
        }
        Some(Cluster {
            db,
            stripe,
            receiver,
            dir,
            replicas,
        })
    }

    async fn replica(&self) -> Binary {
        Binary::start_replica(
            self.dir.path(),
            &self.stripe,
            &self.receiver,
            &self.db.url(),
            &[],
        )
        .await
    }
}

async fn post_webhook(http: &reqwest::Client, base: &str, body: &str) -> Option<u16> {
    let (body, header) = signed(body);
    let r = http
        .post(format!("{base}/webhook"))
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .ok()?;
    Some(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_fulfil_twenty_deliveries_and_twenty_landings_once() {
    let Some(c) = Cluster::start(
        "three_replicas_fulfil_twenty_deliveries_and_twenty_landings_once",
        3,
        &[],
    )
    .await
    else {
        return;
    };
    let id = session_id("replicas");
    let (session, items) = SampleSession::paid(&id, 3).build();
    c.stripe.insert(session.clone(), items);
    let body = event_body("evt_replicas", "checkout.session.completed", &session);
    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..40 {
        let base = c.replicas[i % 3].address().to_string();
        let (http, body, id) = (http.clone(), body.clone(), id.clone());
        calls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                post_webhook(&http, &base, &body).await.unwrap()
            } else {
                http.get(format!("{base}/after-checkout?session_id={id}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        }));
    }
    // Webhooks are all acknowledged; a landing before the session is
    // recorded costs a rationed Stripe lookup, so it may be told to try
    // again shortly (429), as on one process.
    let mut landed = 0;
    for (i, call) in calls.into_iter().enumerate() {
        let status = call.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(status, 200, "webhook {i}");
        } else {
            assert!(status == 200 || status == 429, "landing {i}: {status}");
            landed += usize::from(status == 200);
        }
    }
    assert!(landed > 0, "no landing page was served");
    let s = c.replicas[1].wait_for_state(&id, "fulfilled").await;
    c.db.settle(HORIZON_MS).await;
    let s2 = c.replicas[2].session(&id).await;
    assert_eq!(
        s2["fulfillments"], s["fulfillments"],
        "every replica agrees"
    );
    let fulfillments = s2["fulfillments"].as_array().unwrap();
    assert_eq!(fulfillments.len(), 1, "{s2}");
    let callbacks = c.receiver.of_kind("checkout.fulfilled");
    assert_eq!(callbacks.len(), 1, "one callback");
    assert_eq!(callbacks[0].webhook_id, fulfillments[0]["id"]);
    assert!(callbacks[0].signature_valid);
    let client = c.db.target.connect().await.unwrap();
    let record: Vec<u8> = client
        .query_one("SELECT record FROM events WHERE id = 'evt_replicas'", &[])
        .await
        .unwrap()
        .get(0);
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(
        record["deliveries"], 20,
        "every delivery counted once: {record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_holding_the_claim_is_finished_by_another_with_the_same_webhook_id() {
    let Some(mut c) = Cluster::start(
        "a_replica_killed_holding_the_claim_is_finished_by_another_with_the_same_webhook_id",
        1,
        &[("FULFILLD_JOBS__LEASE_SECS", "2")],
    )
    .await
    else {
        return;
    };
    let id = session_id("replkill");
    let (session, items) = SampleSession::paid(&id, 2).build();
    c.stripe.insert(session.clone(), items);
    c.receiver.hang();
    let holder = c.replicas.remove(0);
    assert_eq!(
        holder
            .send("evt_replkill", "checkout.session.completed", &session)
            .await,
        200
    );
    eventually("the callback is in flight", || async {
        (!c.receiver.received().is_empty()).then_some(())
    })
    .await;
    // The others start only now, so the one holding the claim is known.
    for _ in 0..2 {
        let r = Binary::start_replica(
            c.dir.path(),
            &c.stripe,
            &c.receiver,
            &c.db.url(),
            &[("FULFILLD_JOBS__LEASE_SECS", "2")],
        )
        .await;
        c.replicas.push(r);
    }
    let held = c.replicas[0].session(&id).await;
    assert_eq!(held["state"], "fulfilling", "{held}");
    holder.kill_9();
    c.receiver.respond_with(200);
    c.receiver.release();
    c.replicas[1].wait_for_state(&id, "fulfilled").await;
    c.db.settle(HORIZON_MS).await;
    let s = c.replicas[0].session(&id).await;
    let fulfillments = s["fulfillments"].as_array().unwrap();
    assert_eq!(
        fulfillments.len(),
        1,
        "one fulfillment across the kill: {s}"
    );
    let fid = fulfillments[0]["id"].as_str().unwrap();
    let callbacks = c.receiver.of_kind("checkout.fulfilled");
    assert!(callbacks.len() >= 2, "delivered again after the kill: {s}");
    assert!(
        callbacks.iter().all(|cb| cb.webhook_id == fid),
        "the same webhook-id on every delivery"
    );
    assert_eq!(s["pending_fulfillment"], serde_json::Value::Null, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_keeps_every_acknowledged_webhook_and_fulfils_each_once() {
    let Some(mut c) = Cluster::start(
        "a_rolling_restart_under_load_keeps_every_acknowledged_webhook_and_fulfils_each_once",
        3,
        &[],
    )
    .await
    else {
        return;
    };
    // The load balancer: tries each replica in turn, as a proxy retries a
    // refused connection on the next upstream.
    let upstreams: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(
        c.replicas.iter().map(|r| r.address().to_string()).collect(),
    ));
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (upstreams, acknowledged, stop) =
            (upstreams.clone(), acknowledged.clone(), stop.clone());
        let stripe = c.stripe.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = session_id(&format!("roll{n}"));
                let (session, items) = SampleSession::paid(&id, 1).build();
                stripe.insert(session.clone(), items);
                let event = format!("evt_roll_{n}");
                let body = event_body(&event, "checkout.session.completed", &session);
                let targets: Vec<String> = upstreams.lock().unwrap().clone();
                for (k, _) in targets.iter().enumerate() {
                    let base = &targets[(n + k) % targets.len()];
                    if post_webhook(&http, base, &body).await == Some(200) {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((event.clone(), id.clone()));
                        break;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    for i in 0..3 {
        let old = c.replicas.remove(0);
        let address = old.address().to_string();
        let status = old.terminate().await;
        assert!(status.success(), "replica {i} stopped cleanly: {status:?}");
        let new = c.replica().await;
        {
            let mut up = upstreams.lock().unwrap();
            up.retain(|a| *a != address);
            up.push(new.address().to_string());
        }
        c.replicas.push(new);
    }
    // Some more load on the new replicas only, then stop it.
    let during = acknowledged.lock().unwrap().len();
    eventually("the new replicas acknowledge webhooks", || async {
        (acknowledged.lock().unwrap().len() > (during + 20).max(100)).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    c.db.settle(HORIZON_MS).await;
    let acked = acknowledged.lock().unwrap().clone();
    assert!(during > 0, "webhooks were acknowledged during the restarts");
    let client = c.db.target.connect().await.unwrap();
    let ids: Vec<String> = acked.iter().map(|(e, _)| e.clone()).collect();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as usize, acked.len(), "every 200 is in the database");
    let sessions: Vec<String> = acked.iter().map(|(_, s)| s.clone()).collect();
    let fulfilled: i64 = client
        .query_one(
            "SELECT count(*) FROM sessions WHERE id = ANY($1) AND state = 'fulfilled'",
            &[&sessions],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        fulfilled as usize,
        acked.len(),
        "every paid session fulfilled"
    );
    let callbacks = c.receiver.of_kind("checkout.fulfilled");
    let mut per_session: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    for cb in &callbacks {
        let sid = cb.body["data"]["session"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        per_session
            .entry(sid)
            .or_default()
            .insert(cb.webhook_id.clone());
    }
    for id in &sessions {
        let ids = per_session.get(id).map(|s| s.len()).unwrap_or(0);
        assert_eq!(ids, 1, "{id}: one fulfillment id in its callbacks");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dashboard_login_on_one_replica_works_on_another_and_logout_ends_it_everywhere() {
    let Some(c) = Cluster::start(
        "a_dashboard_login_on_one_replica_works_on_another_and_logout_ends_it_everywhere",
        3,
        &[],
    )
    .await
    else {
        return;
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let [a, b, third] = [0, 1, 2].map(|i| c.replicas[i].address().to_string());
    let r = http
        .post(format!("{a}/admin/login"))
        .form(&[("username", "admin"), ("password", "a long test password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http
        .get(format!("{b}/admin"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "signed in on another replica"
    );
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token on the page")
        .to_string();
    // The CSRF token issued through one replica is accepted by another.
    let out = http
        .post(format!("{third}/admin/logout"))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .contains("logged_out"),
        "signed out"
    );
    for base in [&a, &b, &third] {
        let r = http
            .get(format!("{base}/admin"))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{base}: signed out everywhere"
        );
    }
    let r = http
        .get(format!("{b}/admin/api/sessions"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The dashboard API's view of every session: the list, then each one.
async fn api_view(bin: &Binary) -> Vec<serde_json::Value> {
    let http = reqwest::Client::new();
    let list: serde_json::Value = http
        .get(format!("{}/admin/api/sessions?limit=100", bin.address()))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut view = vec![list.clone()];
    for s in list["data"].as_array().unwrap() {
        view.push(bin.session(s["id"].as_str().unwrap()).await);
    }
    view
}

/// `fulfilld migrate-to` copies a populated redb file (stopped by
/// `kill -9`, so its last deliveries are only in the acknowledgement log)
/// into PostgreSQL; the copy answers the API as the file did, keeps the
/// same fulfillment ids and event dedup, and carries on with the sessions
/// that were waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_to_copies_a_redb_file_and_the_copy_answers_the_same() {
    let Some(db) = FreshDb::create("migrate_to_copies_a_redb_file").await else {
        return;
    };
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;

    let paid_id = session_id("mig_paid");
    let (paid, items) = SampleSession::paid(&paid_id, 3).build();
    stripe.insert(paid.clone(), items);
    let mut waiting = SampleSession::paid(&session_id("mig_sepa"), 1);
    waiting.payment_status = "unpaid";
    waiting.payment_method = "sepa_debit";
    let (waiting, items) = waiting.build();
    stripe.insert(waiting.clone(), items);
    let mut failing = SampleSession::paid(&session_id("mig_fail"), 1);
    failing.payment_status = "unpaid";
    let (failing, items) = failing.build();
    stripe.insert(failing.clone(), items);

    let completed = "checkout.session.completed";
    assert_eq!(bin.send("evt_mig_1", completed, &paid).await, 200);
    assert_eq!(bin.send("evt_mig_2", completed, &waiting).await, 200);
    assert_eq!(bin.send("evt_mig_3", completed, &failing).await, 200);
    let failed = "checkout.session.async_payment_failed";
    assert_eq!(bin.send("evt_mig_4", failed, &failing).await, 200);
    bin.wait_for_state(&paid_id, "fulfilled").await;
    bin.wait_for_state(waiting["id"].as_str().unwrap(), "awaiting_payment")
        .await;
    bin.wait_for_state(failing["id"].as_str().unwrap(), "payment_failed")
        .await;
    eventually("both callbacks are delivered", || async {
        let view = api_view(&bin).await;
        let delivered = view[1..]
            .iter()
            .flat_map(|s| s["notifications"].as_array().cloned().unwrap_or_default())
            .filter(|n| n["status"] == "sent")
            .count();
        (delivered == 2).then_some(())
    })
    .await;
    let before = api_view(&bin).await;
    assert_eq!(before.len(), 4, "the list and three sessions");
    let run = |args: &[&str]| {
        Binary::command_with_args(dir.path(), stripe.url(), &receiver.url, 1, args)
            .output()
            .unwrap()
    };
    // While a server holds the file, nothing is copied.
    let refused = run(&["migrate-to", &db.url()]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("stop every fulfilld serve"), "{said}");
    assert!(
        !said.contains("postgres://"),
        "the URL is not echoed: {said}"
    );
    bin.kill_9();

    let copied = run(&["migrate-to", &db.url()]);
    let out = String::from_utf8_lossy(&copied.stdout);
    assert!(
        copied.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(out.contains("copied 3 sessions, 4 events"), "{out}");
    // A second copy into the now populated database is refused.
    let again = run(&["migrate-to", &db.url()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("fills only an empty database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let replica = Binary::start_replica(dir.path(), &stripe, &receiver, &db.url(), &[]).await;
    assert_eq!(
        api_view(&replica).await,
        before,
        "the copy answers the same"
    );
    // Dedup and fulfillment ids came along: a redelivery and a landing
    // change nothing, and no second callback is sent.
    assert_eq!(replica.send("evt_mig_1", completed, &paid).await, 200);
    let landing = reqwest::get(format!(
        "{}/after-checkout?session_id={paid_id}",
        replica.address()
    ))
    .await
    .unwrap();
    assert_eq!(landing.status(), 200);
    // The waiting session goes on: its payment clears on the new backend.
    stripe.update(
        waiting["id"].as_str().unwrap(),
        serde_json::json!({"payment_status": "paid"}),
    );
    let mut cleared = waiting.clone();
    cleared["payment_status"] = "paid".into();
    let succeeded = "checkout.session.async_payment_succeeded";
    assert_eq!(replica.send("evt_mig_5", succeeded, &cleared).await, 200);
    replica
        .wait_for_state(waiting["id"].as_str().unwrap(), "fulfilled")
        .await;
    eventually("the cleared payment's callback is delivered", || async {
        (receiver.of_kind("checkout.fulfilled").len() == 2).then_some(())
    })
    .await;
    let after = replica.session(&paid_id).await;
    assert_eq!(
        after["fulfillments"],
        before[1..]
            .iter()
            .find(|s| s["id"] == paid_id.as_str())
            .unwrap()["fulfillments"]
    );
    let fulfilled = receiver.of_kind("checkout.fulfilled");
    assert_eq!(
        fulfilled
            .iter()
            .filter(|c| c.body["data"]["session"]["id"] == paid_id.as_str())
            .count(),
        1,
        "the paid session was fulfilled once, before the move"
    );
}

/// The README's `haproxy.cfg`, exactly as written there.
fn readme_haproxy_cfg() -> String {
    let readme = include_str!("../../README.md");
    let open = "```\n# haproxy.cfg\n";
    let start = readme.find(open).expect("the README shows haproxy.cfg") + 4;
    let end = start + readme[start..].find("```").expect("the block ends");
    readme[start..end].to_string()
}

/// HAProxy, when installed (`.ci/run` installs it; CI must have it).
fn haproxy() -> Option<std::path::PathBuf> {
    let found = [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err() && std::env::var("REQUIRE_PG_TEST").is_err(),
            "HAProxy is required here (apt-get install haproxy)"
        );
        eprintln!("skipping: HAProxy is not installed");
    }
    found
}

/// A child process stopped when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's compose topology, run natively: its `haproxy.cfg` in front
/// of two replicas on one database. Webhooks through the proxy reach both
/// replicas; when one is killed, the next ones (refused connections
/// retried on the other) are still all acknowledged, and every session is
/// fulfilled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_proxy_config_keeps_webhooks_flowing_when_a_replica_dies() {
    let Some(proxy_bin) = haproxy() else {
        return;
    };
    let Some(mut c) = Cluster::start(
        "the_readme_proxy_config",
        2,
        &[("FULFILLD_SERVER__TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await
    else {
        return;
    };
    let cfg = c.dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, readme_haproxy_cfg()).unwrap();
    let port = crate::helpers::binary::free_port();
    let replica = |i: usize| {
        c.replicas[i]
            .address()
            .trim_start_matches("http://")
            .to_string()
    };
    let proxy = std::process::Command::new(proxy_bin)
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .env("PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env("REPLICA_A", replica(0))
        .env("REPLICA_B", replica(1))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("haproxy starts");
    let _proxy = KillOnDrop(proxy);
    let base = format!("http://127.0.0.1:{port}");
    // A connection per request, as Stripe's senders do: a kept-alive one
    // that the proxy closes while the test waits between rounds (its
    // keep-alive timeout is 10 s) would fail the next request in the client.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    eventually("the proxy answers /healthz", || async {
        let r = http.get(format!("{base}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let send = |round: usize| {
        let (http, base, stripe) = (http.clone(), base.clone(), &c.stripe);
        let mut calls = Vec::new();
        for i in 0..10 {
            let id = session_id(&format!("proxy_{round}_{i}"));
            let (session, items) = SampleSession::paid(&id, 1).build();
            stripe.insert(session.clone(), items);
            let body = event_body(
                &format!("evt_proxy_{round}_{i}"),
                "checkout.session.completed",
                &session,
            );
            let (http, base) = (http.clone(), base.clone());
            calls.push(tokio::spawn(async move {
                (id, post_webhook(&http, &base, &body).await)
            }));
        }
        calls
    };
    let mut ids = Vec::new();
    for call in send(0) {
        let (id, status) = call.await.unwrap();
        assert_eq!(status, Some(200), "{id} through the proxy");
        ids.push(id);
    }
    // Round robin: both replicas acknowledged some.
    for r in &c.replicas {
        let metrics = http
            .get(format!("{}/metrics", r.address()))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(
                "fulfilld_webhooks_total{type=\"checkout.session.completed\",outcome=\"recorded\"}"
            ),
            "{metrics}"
        );
    }
    // Every one fulfilled (a job the killed replica held would wait for
    // its hold and claim lease: that is the kill -9 test's subject).
    for id in &ids {
        c.replicas[1].wait_for_state(id, "fulfilled").await;
    }
    // One replica dies; the proxy has not noticed yet.
    c.replicas.remove(0).kill_9();
    for call in send(1) {
        let (id, status) = call.await.unwrap();
        assert_eq!(status, Some(200), "{id} after a replica died");
        ids.push(id);
    }
    let survivor = &c.replicas[0];
    for id in &ids {
        let s = survivor.wait_for_state(id, "fulfilled").await;
        assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1, "{s}");
    }
    c.db.settle(HORIZON_MS).await;
    let mut fulfilled: Vec<String> = c
        .receiver
        .of_kind("checkout.fulfilled")
        .iter()
        .map(|cb| {
            cb.body["data"]["session"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    fulfilled.sort();
    ids.sort();
    assert_eq!(fulfilled, ids, "one callback per session");
}
