//! `fulfilld demo` as a new user runs it: a subprocess that prints where to
//! go and with what password, and fills its dashboard within seconds.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use fulfilld::model::State;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::eventually;

/// The value after `label` on the first line that has it.
fn field(lines: &[String], label: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_shows_every_state_within_ten_seconds() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    while field(&lines, "database:").is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .expect("the demo prints its details")
            .unwrap()
            .expect("the demo is still running");
        lines.push(line);
    }
    // Timed from "ready", so a slow build machine's process start is not counted.
    let started = Instant::now();
    // Keep reading so the demo never blocks on a full pipe.
    let story = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(l)) = out.next_line().await {
            rest.push(l);
        }
        rest
    });
    let dashboard = field(&lines, "dashboard:").unwrap();
    let password = field(&lines, "password:").unwrap();
    let token = field(&lines, "API token:").unwrap();
    let database = std::path::PathBuf::from(field(&lines, "database:").unwrap());
    assert!(dashboard.starts_with("http://127.0.0.1:") && dashboard.ends_with("/admin"));
    assert!(password.len() >= 16);
    let base = dashboard.trim_end_matches("/admin").to_string();
    let http = reqwest::Client::new();
    let list = || async {
        let r = http
            .get(format!("{base}/admin/api/sessions?limit=200"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()
    };
    let sessions = eventually("the demo has a session in every state", || async {
        let page = list().await?;
        let states: BTreeSet<String> = page["data"]
            .as_array()?
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_string())
            .collect();
        // Every state by name: a count alone would pass with a blank or an
        // unknown state standing in for a missing one.
        let every: BTreeSet<String> = State::ALL.iter().map(|s| s.as_str().to_string()).collect();
        (states == every).then_some(page)
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "every state took {took:?}");

    let data = sessions["data"].as_array().unwrap();
    let by_tag = |tag: &str| {
        data.iter()
            .find(|s| {
                s["id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("cs_test_demo_{tag}_"))
            })
            .unwrap_or_else(|| panic!("a {tag} session"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let detail = |id: String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            http.get(format!("{base}/admin/api/sessions/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let card = detail(by_tag("card")).await;
    assert_eq!(card["state"], "fulfilled");
    assert_eq!(
        card["fulfillments"].as_array().unwrap().len(),
        1,
        "delivered 3 times, fulfilled once"
    );
    let bulk = detail(by_tag("bulk")).await;
    assert_eq!(bulk["line_items"].as_array().unwrap().len(), 120);
    assert_eq!(
        detail(by_tag("free")).await["payment_status"],
        "no_payment_required"
    );
    assert_eq!(detail(by_tag("ach")).await["state"], "payment_failed");
    assert_eq!(detail(by_tag("expired")).await["state"], "expired");

    // The printed password opens the dashboard.
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/admin/login"))
        .form(&[("username", "admin"), ("password", password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);

    // Ctrl-C (here SIGTERM): a clean exit that removes the temporary database.
    assert!(database.exists());
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the demo stops")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!database.exists(), "the temporary database is removed");
    let story = story.await.unwrap();
    assert!(
        story.iter().any(|l| l.contains("120 line items")),
        "{story:?}"
    );
}

/// `fulfilld demo | head -1`: the reader goes away after one line; the demo
/// notices at its next line, stops cleanly (exit 0) and removes its
/// temporary database.
#[tokio::test(flavor = "multi_thread")]
async fn demo_into_a_pipe_closed_after_one_line_exits_0_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), out.next_line())
        .await
        .expect("a first line")
        .unwrap()
        .unwrap();
    assert!(first.starts_with("fulfilld demo"), "{first}");
    drop(out);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the demo stops once nobody reads")
        .unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut err).await;
    }
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
