//! Operating it: /metrics, request ids, check-config, SIGTERM under load,
//! backups under load and restoring them.

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use fulfilld::stripe::double::{SampleSession, StripeDouble, event_body};

use crate::helpers::{
    binary::{Binary, free_port},
    *,
};

/// Parses the Prometheus text format strictly enough to catch mistakes:
/// every sample belongs to a family declared by `# TYPE` before it, names
/// and labels are well formed, values are numbers. Returns `name{labels}` → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
            assert!(valid_name(name), "bad family name in {line:?}");
            if kind == "TYPE" {
                let t = value.unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line:?}"
                );
                assert!(
                    types.insert(name.to_string(), t.to_string()).is_none(),
                    "TYPE twice: {name}"
                );
            } else {
                assert_eq!(kind, "HELP", "{line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            let inner = inner.unwrap_or_else(|| panic!("bad labels in {line:?}"));
            // k="v" pairs; values may hold escaped quotes.
            let mut rest = inner;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                assert!(valid_name(key), "bad label name in {line:?}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label in {line:?}"));
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its # TYPE: {line:?}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn metrics(app: &TestApp) -> BTreeMap<String, f64> {
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_prometheus(&r.text().await.unwrap())
}

#[tokio::test]
async fn metrics_parse_and_move_when_events_arrive() {
    let app = spawn_app().await;
    let before = metrics(&app).await;
    let recorded =
        "fulfilld_webhooks_total{type=\"checkout.session.completed\",outcome=\"recorded\"}";
    assert_eq!(before.get(recorded), None);
    assert_eq!(
        before["fulfilld_webhook_signature_failures_total{reason=\"missing_header\"}"],
        0.0
    );
    assert_eq!(before["fulfilld_fulfillment_duration_seconds_count"], 0.0);

    let id = session_id("metrics");
    let session = app.seed(&SampleSession::paid(&id, 2));
    assert_eq!(
        app.send_event("evt_m_1", "checkout.session.completed", &session)
            .await,
        200
    );
    assert_eq!(
        app.send_event("evt_m_1", "checkout.session.completed", &session)
            .await,
        200
    );
    assert_eq!(app.post_webhook_raw("{}", None).await.status(), 400);
    app.wait_for_state(&id, "fulfilled").await;

    let after = eventually("the fulfillment is counted", || async {
        let m = metrics(&app).await;
        (m["fulfilld_fulfillments_total{outcome=\"fulfilled\"}"] >= 1.0).then_some(m)
    })
    .await;
    assert_eq!(after[recorded], 1.0);
    assert_eq!(
        after["fulfilld_webhooks_total{type=\"checkout.session.completed\",outcome=\"duplicate\"}"],
        1.0
    );
    assert_eq!(
        after["fulfilld_webhooks_total{type=\"unknown\",outcome=\"rejected\"}"],
        1.0
    );
    assert_eq!(
        after["fulfilld_webhook_signature_failures_total{reason=\"missing_header\"}"],
        1.0
    );
    assert!(after["fulfilld_fulfillment_duration_seconds_count"] >= 1.0);
    assert_eq!(
        after["fulfilld_fulfillment_duration_seconds_bucket{le=\"+Inf\"}"],
        after["fulfilld_fulfillment_duration_seconds_count"]
    );
    assert_eq!(after["fulfilld_sessions{state=\"fulfilled\"}"], 1.0);
    assert_eq!(
        after["fulfilld_deliveries_total{channel=\"callback\",result=\"ok\"}"],
        1.0
    );
    assert_eq!(
        after["fulfilld_deliveries_total{channel=\"email\",result=\"ok\"}"],
        0.0
    );
    assert!(after["fulfilld_stripe_requests_total{outcome=\"ok\"}"] >= 1.0);
    assert!(after["fulfilld_stripe_request_duration_seconds_count"] >= 1.0);
    assert!(after["fulfilld_http_requests_total{route=\"webhook\",status=\"200\"}"] >= 2.0);
    assert!(after["fulfilld_http_requests_total{route=\"webhook\",status=\"400\"}"] >= 1.0);
    assert!(after["process_resident_memory_bytes"] > 1e6);
    assert!(after["process_open_fds"] >= 3.0);
    assert!(after["process_cpu_seconds_total"] > 0.0);
    let started = after["process_start_time_seconds"];
    let now = fulfilld::time::now_secs() as f64;
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );
    assert!(after.contains_key("fulfilld_jobs_queued"));
    assert!(after.contains_key("fulfilld_oldest_pending_job_age_seconds"));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let get = |id: Option<&'static str>| {
        let mut r = app.http.get(app.url("/healthz"));
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };
    let r = get(Some("lb-7f3a.42")).await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "lb-7f3a.42");
    let r = get(None).await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        generated.starts_with("req_") && generated.len() > 20,
        "{generated}"
    );
    let r = get(Some("<script>")).await.unwrap();
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
}

/// Runs `fulfilld check-config` on `toml` written in `dir`: exit code, stdout, stderr.
pub(crate) fn check_config(dir: &std::path::Path, toml: &str) -> (i32, String, String) {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("FULFILLD_CONFIG")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const GOOD: &str = r#"
[stripe]
secret_key = "sk_test_51HfakeFAKEfake1234567890"
webhook_secrets = ["whsec_abcdefghijklmnop"]
[admin]
username = "admin"
password = "correct horse battery"
api_token = "0123456789abcdef0123"
[fulfillment]
callback_url = "https://shop.example/fulfil"
callback_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#;

#[test]
fn check_config_masks_secrets_names_bad_keys_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = check_config(dir.path(), GOOD);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("configuration OK"), "{err}");
    for secret in [
        "sk_test_51HfakeFAKEfake1234567890",
        "whsec_abcdefghijklmnop",
        "correct horse battery",
        "0123456789abcdef0123",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked:\n{out}"
        );
    }
    assert!(
        out.contains("[stripe]") && out.contains("tolerance_secs = 300"),
        "{out}"
    );

    let (code, _, err) = check_config(
        dir.path(),
        &format!("{GOOD}\n[server]\nlisten_on = \"x\"\n"),
    );
    assert_eq!(code, 2);
    assert!(err.contains("listen_on"), "{err}");
    let (code, _, err) = check_config(
        dir.path(),
        &GOOD.replace(
            "secret_key = \"sk_test_51HfakeFAKEfake1234567890\"",
            "secret_key = \"pk_test_123\"",
        ),
    );
    assert_eq!(code, 2);
    assert!(err.contains("stripe.secret_key"), "{err}");
    let (code, _, err) = check_config(
        dir.path(),
        &GOOD.replace("[admin]", "[admin]\npassword_hash = \"$argon2id$nonsense\""),
    );
    assert_eq!(code, 2);
    assert!(err.contains("admin.password_hash"), "{err}");

    // Valid, but probably wrong: a live key with a plain-http public URL.
    let live = GOOD.replace("sk_test_51H", "sk_live_51H");
    let (code, _, err) = check_config(dir.path(), &live);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning:") && err.contains("public_url"),
        "{err}"
    );
}

/// Unique, unpaid completions (no Stripe calls): `n` is the request number.
fn unpaid_event(tag: &str, n: usize) -> (String, String) {
    let id = format!("cs_test_{tag}_{n:06}");
    let mut sample = SampleSession::paid(&id, 1);
    sample.payment_status = "unpaid";
    let (session, _) = sample.build();
    let event_id = format!("evt_{tag}_{n:06}");
    (
        event_id.clone(),
        event_body(&event_id, "checkout.session.completed", &session),
    )
}

/// Senders that post unique webhooks until told to stop or refused, and
/// remember which ones were acknowledged.
struct Load {
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(address: &str, tag: &'static str, senders: usize) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..senders)
            .map(|s| {
                let (acked, stop, url) =
                    (acked.clone(), stop.clone(), format!("{address}/webhook"));
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let mut n = s;
                    while !stop.load(Ordering::Relaxed) {
                        let (event_id, body) = unpaid_event(tag, n);
                        let (body, header) = signed(&body);
                        match http
                            .post(&url)
                            .header("stripe-signature", header)
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => {
                                acked.lock().unwrap().push(event_id)
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                        n += senders;
                    }
                })
            })
            .collect();
        Load { acked, stop, tasks }
    }

    fn acked(&self) -> Vec<String> {
        self.acked.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) {
        eventually(&format!("{n} acknowledged webhooks"), || async {
            (self.acked.lock().unwrap().len() >= n).then_some(())
        })
        .await;
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

async fn missing_events(db: &std::path::Path, ids: Vec<String>) -> Vec<String> {
    let store = fulfilld::store::open_redb(db).unwrap();
    let mut missing = Vec::new();
    for id in ids {
        if store.event(&id).await.unwrap().is_none() {
            missing.push(id);
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_keeps_every_acknowledged_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    let load = Load::start(bin.address(), "term", 8);
    load.wait_for(300).await;
    let status = bin.terminate().await;
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    let acked = load.finish().await;
    assert!(acked.len() >= 300);
    // A graceful stop closes the file cleanly: redb's "recovery required"
    // flag (bit 2 of the byte after its 9-byte magic) is clear, so the next
    // start needs no repair.
    let db = dir.path().join("fulfilld.redb");
    let god_byte = std::fs::read(&db).unwrap()[9];
    assert_eq!(
        god_byte & 2,
        0,
        "the file was left marked for repair ({god_byte})"
    );
    let missing = missing_events(&db, acked.clone()).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_under_load_holds_every_acknowledged_event_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let port = free_port();
    let bin = Binary::start_on(dir.path(), &stripe, &receiver, port).await;
    let load = Load::start(bin.address(), "bak", 6);
    load.wait_for(200).await;
    let before_backup = load.acked();
    // The API behind the command: a token, and only the database's directory.
    let http = reqwest::Client::new();
    let api = format!("{}/admin/api/backup", bin.address());
    let r = http
        .post(&api)
        .json(&serde_json::json!({"path": dir.path().join("x.redb")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for elsewhere in [
        "/tmp/fulfilld-elsewhere.redb".to_string(),
        dir.path().join(".hidden.redb").display().to_string(),
        dir.path().join("x.txt").display().to_string(),
    ] {
        let r = http
            .post(&api)
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({"path": elsewhere}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{elsewhere}");
    }
    // `fulfilld backup PATH` with the server's environment: (success, stdout, stderr).
    let run_backup = |path: &std::path::Path| {
        let out = Binary::command_with_args(
            dir.path(),
            stripe.url(),
            &receiver.url,
            port,
            &["backup", path.to_str().unwrap()],
        )
        .output()
        .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let backup = dir.path().join("backup.redb");
    let (ok, stdout, stderr) = run_backup(&backup);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("by the running server"), "{stdout}");
    // Load went on during the backup.
    let during = load.acked().len();
    load.wait_for(during + 50).await;
    bin.kill_9();
    let acked = load.finish().await;

    // Restore: the backup file becomes the database of a new server.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&backup, restored.path().join("fulfilld.redb")).unwrap();
    let again = Binary::start(restored.path(), &stripe, &receiver).await;
    let some = before_backup
        .last()
        .unwrap()
        .replace("evt_bak_", "cs_test_bak_");
    assert_eq!(again.session(&some).await["state"], "awaiting_payment");
    again.kill_9();
    let missing = missing_events(
        &restored.path().join("fulfilld.redb"),
        before_backup.clone(),
    )
    .await;
    assert!(
        missing.is_empty(),
        "{} acknowledged before the backup are missing from it",
        missing.len()
    );

    // With the server stopped, the command copies the file itself.
    let offline = dir.path().join("offline.redb");
    let (ok, stdout, stderr) = run_backup(&offline);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("backup written to") && !stdout.contains("running server"),
        "{stdout}"
    );
    let missing = missing_events(&offline, acked.clone()).await;
    assert!(
        missing.is_empty(),
        "the offline backup lacks {} events",
        missing.len()
    );
    // It refuses to overwrite an existing file.
    let (ok, _, stderr) = run_backup(&offline);
    assert!(!ok);
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let port = free_port();
    let mut child = Binary::command(dir.path(), stripe.url(), &receiver.url, port)
        .env("FULFILLD_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the binary answers", || async {
        let r = http.get(format!("{base}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let (session, _) = SampleSession::paid("cs_test_jsonlog", 1).build();
    let (body, header) = signed(&event_body(
        "evt_jsonlog",
        "checkout.session.completed",
        &session,
    ));
    let r = http
        .post(format!("{base}/webhook"))
        .header("stripe-signature", header)
        .header("x-request-id", "trace-4242")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let webhook = lines
        .iter()
        .find(|l| l["event"] == "evt_jsonlog")
        .unwrap_or_else(|| panic!("a log line for the webhook in {stderr}"));
    assert_eq!(webhook["span"]["id"], "trace-4242", "{webhook}");
    assert_eq!(
        webhook["message"], "webhook",
        "a top-level message: {webhook}"
    );
    let start = lines
        .iter()
        .find(|l| l["addr"].is_string() && l["version"].is_string())
        .unwrap_or_else(|| panic!("a startup line in {stderr}"));
    let message = start["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "fulfilld {} listening on 127.0.0.1:{port} (redb ",
            env!("CARGO_PKG_VERSION")
        )) && message.contains("public URL"),
        "{start}"
    );
    assert_eq!(webhook["level"], "INFO");
    for secret in [
        SECRET_KEY,
        WEBHOOK_SECRET,
        API_TOKEN,
        "a long test password",
    ] {
        assert!(!stderr.contains(secret), "{secret} logged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_service_variable_warns_and_serve_starts() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let port = free_port();
    // What Kubernetes injects into every pod for a Service named fulfilld.
    let k8s = [
        ("FULFILLD_PORT", "tcp://10.0.0.1:4242"),
        ("FULFILLD_PORT_4242_TCP", "tcp://10.0.0.1:4242"),
        ("FULFILLD_SERVICE_HOST", "10.0.0.1"),
        ("FULFILLD_SERVICE_PORT", "4242"),
    ];
    let mut command = Binary::command(dir.path(), stripe.url(), &receiver.url, port);
    command.envs(k8s).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the binary answers despite FULFILLD_PORT", || async {
        let r = http.get(format!("{base}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    for (name, _) in k8s {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("WARN")
                    && l.contains(&format!("{name} names no configuration key"))),
            "{name} warned about in:\n{stderr}"
        );
    }

    // check-config and healthcheck accept it too.
    let mut check = Binary::command_with_args(
        dir.path(),
        stripe.url(),
        &receiver.url,
        port,
        &["check-config"],
    );
    let out = check.envs(k8s).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: environment variable FULFILLD_PORT names no configuration key"),
        "{err}"
    );
    // A misspelt key of a known section is named too, and still not fatal.
    let out = check
        .env("FULFILLD_SERVER__LISTNE", "0.0.0.0:1")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("FULFILLD_SERVER__LISTNE"), "{err}");
}

#[test]
fn check_config_refuses_the_example_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../../config.toml.example");
    // The example's password is the first placeholder refused, by the
    // password rules; with one's own password, the secret key is next.
    let (code, out, err) = check_config(dir.path(), example);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("admin.password: is the placeholder"), "{err}");
    let own = example.replace("change me, please", "a passphrase of my own");
    let (code, out, err) = check_config(dir.path(), &own);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("stripe.secret_key: is the placeholder of config.toml.example"),
        "{err}"
    );
    for (from, to, key) in [
        (
            "webhook_secrets = [\"whsec_abcdefghijklmnop\"]",
            "webhook_secrets = [\"whsec_replace_me\"]",
            "stripe.webhook_secrets",
        ),
        (
            "password = \"correct horse battery\"",
            "password = \"change me, please\"",
            "admin.password",
        ),
        (
            "api_token = \"0123456789abcdef0123\"",
            "api_token = \"a-long-random-token\"",
            "admin.api_token",
        ),
    ] {
        let (code, _, err) = check_config(dir.path(), &GOOD.replace(from, to));
        assert_eq!(code, 2, "{key}: {err}");
        // Named as a placeholder, or (the example's token is short) as too weak.
        assert!(
            err.contains(&format!("invalid configuration: {key}: ")),
            "{key}: {err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn check_config_warns_about_a_database_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = folder.join("fulfilld.redb");
    let with_db = format!("{GOOD}\n[storage]\npath = {:?}\n", db.display().to_string());
    // No database yet: nothing to say (it will be created 0600 in 0700).
    let (code, _, err) = check_config(dir.path(), &with_db);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("chmod"), "{err}");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = check_config(dir.path(), &with_db);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("warning: storage.path {}", db.display()))
            && err.contains(&format!("chmod 600 {}", db.display())),
        "{err}"
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, _, err) = check_config(dir.path(), &with_db);
    assert!(!err.contains("chmod"), "{err}");
    // Its folder open to others is named too.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = check_config(dir.path(), &with_db);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("chmod 700 {}", folder.display())),
        "{err}"
    );
}

/// Every kind of answer: pages, JSON, plain-text 4xx, poem's 404/405, a
/// 413, redirects and assets.
async fn every_kind_of_response(app: &TestApp) -> Vec<(String, reqwest::Response)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut out = Vec::new();
    for path in [
        "/healthz",
        "/metrics",
        "/no-such-page",
        "/admin",
        "/admin/login",
        "/admin/api/sessions",
        "/after-checkout?session_id=nonsense<b>",
        "/assets/app.css",
        "/assets/no-such-asset.js",
    ] {
        out.push((
            format!("GET {path}"),
            http.get(app.url(path)).send().await.unwrap(),
        ));
    }
    out.push((
        "DELETE /webhook".into(),
        http.delete(app.url("/webhook")).send().await.unwrap(),
    ));
    out.push((
        "POST /webhook unsigned".into(),
        http.post(app.url("/webhook"))
            .body("{}")
            .send()
            .await
            .unwrap(),
    ));
    out.push((
        "POST /webhook 2 MiB".into(),
        http.post(app.url("/webhook"))
            .header("stripe-signature", "t=1,v1=00")
            .body(vec![b'x'; 2 * 1024 * 1024])
            .send()
            .await
            .unwrap(),
    ));
    out.push((
        "POST /admin/sessions/x/fulfill anonymous".into(),
        http.post(app.url("/admin/sessions/cs_test_x/fulfill"))
            .form(&[("force", "true")])
            .send()
            .await
            .unwrap(),
    ));
    out
}

#[tokio::test]
async fn every_response_has_nosniff_and_hsts_only_with_an_https_public_url() {
    let app = spawn_app().await;
    let mut statuses = Vec::new();
    for (what, r) in every_kind_of_response(&app).await {
        statuses.push(r.status().as_u16());
        assert_eq!(
            r.headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{what} ({})",
            r.status()
        );
        assert!(
            r.headers().get("strict-transport-security").is_none(),
            "{what}: no HSTS over an http public_url"
        );
    }
    // The list does cover plain-text 4xx, 404s, 405, 413 and assets.
    for status in [200, 303, 400, 401, 404, 405, 413] {
        assert!(statuses.contains(&status), "{status} in {statuses:?}");
    }

    let app = spawn_app_with(|c| {
        c.server.public_url = "https://orders.shop.example".parse().unwrap();
    })
    .await;
    for (what, r) in every_kind_of_response(&app).await {
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(
            r.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap().to_string()),
            Some("max-age=31536000".to_string()),
            "{what}"
        );
    }
}

/// With `storage.url`, check-config masks the URL, connects and reads the
/// schema version; a database that does not answer is an error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connects_to_postgresql_and_reads_the_schema_version() {
    let Some(db) = crate::helpers::pg::FreshDb::create(
        "check_config_connects_to_postgresql_and_reads_the_schema_version",
    )
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    let (code, out, err) = check_config(dir.path(), &format!("{GOOD}[storage]\nurl = \"{url}\"\n"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("url = \"********\""), "{out}");
    assert!(
        !out.contains(&url) && !err.contains(&url),
        "the URL is masked"
    );
    assert!(err.contains("no fulfilld schema yet"), "{err}");
    let store = fulfilld::store::pg::PgStore::open(db.target.clone())
        .await
        .unwrap();
    let (code, _, err) = check_config(dir.path(), &format!("{GOOD}[storage]\nurl = \"{url}\"\n"));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "schema version {}",
            fulfilld::store::pg::migrate::LATEST
        )),
        "{err}"
    );
    fulfilld::store::Storage::close(&store).await;
    let mut nowhere = reqwest::Url::parse(&url).unwrap();
    nowhere.set_port(Some(1)).unwrap();
    let (code, _, err) = check_config(
        dir.path(),
        &format!("{GOOD}[storage]\nurl = \"{nowhere}\"\n"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("storage.url: cannot connect"), "{err}");
}

/// `check-config` with extra environment variables.
fn check_config_env(dir: &std::path::Path, toml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulfilld"));
    cmd.arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("FULFILLD_CONFIG")
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn configuration_errors_say_where_and_what_was_probably_meant() {
    let dir = tempfile::tempdir().unwrap();
    let typo = GOOD.replace("secret_key = ", "secret_kye = ");
    let (code, err) = check_config_env(dir.path(), &typo, &[]);
    assert_eq!(code, 2, "{err}");
    let line = typo
        .lines()
        .position(|l| l.starts_with("secret_kye"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("config.toml, line {line}: unknown key `stripe.secret_kye`; did you mean `stripe.secret_key`?")),
        "{err}"
    );
    assert!(!err.contains("default.") && !err.contains("``"), "{err}");
    // A misspelt variable is named with the one probably meant.
    let (code, err) = check_config_env(
        dir.path(),
        &GOOD.replace("secret_key = \"sk_test_51HfakeFAKEfake1234567890\"\n", ""),
        &[("FULFILLD_STRIPE__SECRETKEY", "sk_test_x")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("stripe.secret_key: is required"), "{err}");
    assert!(
        err.contains("FULFILLD_STRIPE__SECRETKEY names no configuration key")
            && err.contains("did you mean FULFILLD_STRIPE__SECRET_KEY?"),
        "{err}"
    );
    // A bad value from the environment names the variable.
    let (code, err) = check_config_env(
        dir.path(),
        GOOD,
        &[("FULFILLD_JOBS__RETRY_BASE_MS", "soon")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("environment variable FULFILLD_JOBS__RETRY_BASE_MS: `jobs.retry_base_ms` must be a whole number"),
        "{err}"
    );
    // Email asked for but impossible: said, not silently dropped.
    let (code, err) = check_config_env(
        dir.path(),
        GOOD,
        &[
            ("FULFILLD_FULFILLMENT__RECEIPT_EMAIL", "true"),
            (
                "FULFILLD_NOTIFICATIONS__MERCHANT_EMAIL",
                "owner@shop.example",
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("receipt_email is true but smtp.url is not set"),
        "{err}"
    );
    assert!(
        err.contains("merchant_email is set but smtp.url is not"),
        "{err}"
    );
    // A host name is a valid listen address.
    let (code, err) = check_config_env(
        dir.path(),
        GOOD,
        &[("FULFILLD_SERVER__LISTEN", "localhost:4242")],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn healthcheck_against_a_stopped_server_names_the_address_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .arg("healthcheck")
        .env_remove("FULFILLD_CONFIG")
        .env("FULFILLD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}/healthz")) && err.contains("cannot connect"),
        "{err}"
    );
}
