//! Abusive callers against the real app: an attacker who shares the admin's
//! address behind a trusted proxy, forged `X-Forwarded-For` from anyone
//! else, wrong API tokens, and weak secrets in the configuration.

use std::process::{Command, Stdio};

use reqwest::{StatusCode, header};

use crate::helpers::{
    API_TOKEN, CALLBACK_SECRET, Receiver, SECRET_KEY, TestApp, WEBHOOK_SECRET,
    binary::{Binary, free_port},
    eventually, spawn_app, spawn_app_with,
};
use fulfilld::stripe::double::StripeDouble;

const USER: &str = "admin";
const PASSWORD: &str = "a long test password";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of the `Set-Cookie` for `name` in a response.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .find(|pair| pair.starts_with(&format!("{name}=")))
}

/// A login POST as if from `client` behind the proxy, with `cookie` if any.
async fn login(
    app: &TestApp,
    client: &str,
    cookie: Option<&str>,
    password: &str,
) -> reqwest::Response {
    let mut req = no_redirects()
        .post(app.url("/admin/login"))
        .header("x-forwarded-for", client)
        .form(&[("username", USER), ("password", password)]);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.send().await.unwrap()
}

async fn get_with(app: &TestApp, path: &str, cookie: &str) -> (StatusCode, String) {
    let r = no_redirects()
        .get(app.url(path))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn an_attacker_behind_the_same_proxy_cannot_keep_a_signed_in_browser_out() {
    // fulfilld behind a proxy on loopback; the admin and the attacker both
    // reach it through the same office NAT, 203.0.113.7.
    let app = spawn_app_with(|c| c.server.trusted_proxies = "127.0.0.1".parse().unwrap()).await;
    let shared = "203.0.113.7";

    // The admin signed in once before, from this browser.
    let r = login(&app, shared, None, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let device = set_cookie(&r, "fulfilld_device").expect("a device cookie is issued");
    let all: Vec<_> = r.headers().get_all(header::SET_COOKIE).iter().collect();
    assert!(
        all.iter()
            .all(|v| v.to_str().unwrap().contains("HttpOnly; SameSite=Strict")),
        "{all:?}"
    );

    // The attacker keeps guessing until the shared address is throttled.
    for _ in 0..3 {
        let r = login(&app, shared, None, "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login(&app, shared, None, PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address waits"
    );
    assert!(r.headers().get(header::RETRY_AFTER).is_some());
    // A made-up device cookie does not get around it.
    let forged = format!("fulfilld_device={}.{}", "a".repeat(32), "b".repeat(64));
    let r = login(&app, shared, Some(&forged), PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // The real admin signs in while the address is throttled, and the session works.
    let r = login(&app, shared, Some(&device), PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the device gets in");
    let session = set_cookie(&r, "fulfilld_admin").unwrap();
    let (status, html) = get_with(&app, "/admin", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Checkout Sessions"));
    // The attacker's next guess is still refused: the admin's success did
    // not reset the shared address.
    let r = login(&app, shared, None, "guess").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // Forwarded addresses are believed from the proxy: another client behind
    // it is not throttled, and the webhook log shows the client, not the proxy.
    let r = login(&app, "198.51.100.20", None, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = app
        .http
        .post(app.url("/webhook"))
        .header("x-forwarded-for", "192.0.2.1, 198.51.100.99")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (_, log) = get_with(&app, "/admin/webhooks?filter=rejected", &session).await;
    assert!(
        log.contains("198.51.100.99"),
        "the right-most untrusted entry"
    );
    assert!(
        !log.contains("192.0.2.1"),
        "a spoofed left entry is not believed"
    );
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    // No trusted proxies: the header is the client's own claim.
    let app = spawn_app().await;
    let r = login(&app, "198.51.100.50", None, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&r, "fulfilld_admin").unwrap();
    for i in 1..=3 {
        let r = login(&app, &format!("198.51.100.{i}"), None, "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // A fresh claimed address does not escape the peer's throttle.
    let r = login(&app, "198.51.100.4", None, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // The webhook log names the peer, not the claim.
    let r = app
        .http
        .post(app.url("/webhook"))
        .header("x-forwarded-for", "198.51.100.77")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (_, log) = get_with(&app, "/admin/webhooks?filter=rejected", &session).await;
    assert!(log.contains("127.0.0.1"), "{log}");
    assert!(!log.contains("198.51.100.77"), "{log}");
}

#[tokio::test]
async fn wrong_api_tokens_are_throttled_and_logged_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let port = free_port();
    let mut child = Binary::command(dir.path(), stripe.url(), &receiver.url, port)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the fulfilld binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the binary answers /healthz", || async {
        let r = http.get(format!("{base}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let wrong = "wrong-token-guess-0123456789";
    let call = |token: &'static str| {
        http.get(format!("{base}/admin/api/sessions"))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            call(wrong).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = call(wrong).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    // The backup route counts wrong tokens with the rest.
    let r = http
        .post(format!("{base}/admin/api/backup"))
        .bearer_auth(wrong)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The right token still works from the same address.
    assert_eq!(call(API_TOKEN).await.unwrap().status(), StatusCode::OK);

    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("wrong API token"))
        .collect();
    assert_eq!(lines.len(), 5, "one line per counted failure:\n{log}");
    assert!(lines.iter().all(|l| l.contains("127.0.0.1")), "{log}");
    assert!(!log.contains(wrong), "the token is never logged:\n{log}");
}

fn check_config(toml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("FULFILLD_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn config(password: &str, token: &str) -> String {
    format!(
        "[stripe]\nsecret_key = \"{SECRET_KEY}\"\nwebhook_secrets = [\"{WEBHOOK_SECRET}\"]\n\
         [admin]\nusername = \"admin\"\npassword = \"{password}\"\napi_token = \"{token}\"\n\
         [fulfillment]\ncallback_url = \"https://shop.example/fulfil\"\ncallback_secret = \"{CALLBACK_SECRET}\"\n"
    )
}

#[test]
fn check_config_refuses_weak_passwords_and_low_entropy_tokens() {
    let (code, text) = check_config(&config(PASSWORD, API_TOKEN));
    assert_eq!(code, 0, "{text}");
    for weak in ["password", "12345678", "Password2024!", "change me, please"] {
        let (code, text) = check_config(&config(weak, API_TOKEN));
        assert_eq!(code, 2, "{weak}: {text}");
        assert!(
            text.contains("invalid configuration: admin.password: "),
            "{weak}: {text}"
        );
    }
    for weak in [
        "aaaaaaaaaaaaaaaa",
        "abababababababababababab",
        "short_token_1",
    ] {
        let (code, text) = check_config(&config(PASSWORD, weak));
        assert_eq!(code, 2, "{weak}: {text}");
        assert!(
            text.contains("invalid configuration: admin.api_token: "),
            "{weak}: {text}"
        );
        assert!(!text.contains(weak), "the token is not echoed: {text}");
    }
    let (code, text) = check_config(&format!(
        "{}[server]\ntrusted_proxies = [\"10.0.0.1/8\"]\n",
        config(PASSWORD, API_TOKEN)
    ));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("server.trusted_proxies"), "{text}");
}

/// The device-cookie key comes from the database, so a browser that signed
/// in before is still known after a restart (and to every process on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cookie_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let mut config = crate::helpers::test_config(&dir.path().join("f.redb"), stripe.url(), None);
    config.server.trusted_proxies = "127.0.0.1".parse().unwrap();
    let shared = "203.0.113.9";
    let start = |config: fulfilld::config::Config| async move {
        // The previous server's database closes once its last handle is
        // gone (its writer thread ends): poll until the file lock is free.
        let app = eventually("the database is free again", || async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            match fulfilld::app::Application::build(&config, listener).await {
                Ok(app) => Some(app),
                Err(fulfilld::app::AppError::Store {
                    error: fulfilld::store::StoreError::Locked,
                    ..
                }) => None,
                Err(e) => panic!("{e}"),
            }
        })
        .await;
        let base = format!("http://{}", app.local_addr());
        let stop = app.stop_token();
        (base, stop, tokio::spawn(app.run_until_stopped()))
    };
    let post = |base: &str, cookie: Option<&str>, password: &str| {
        let mut req = no_redirects()
            .post(format!("{base}/admin/login"))
            .header("x-forwarded-for", shared)
            .form(&[("username", USER), ("password", password)]);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c.to_string());
        }
        req.send()
    };
    let (base, stop, server) = start(config.clone()).await;
    let r = post(&base, None, PASSWORD).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let device = set_cookie(&r, "fulfilld_device").unwrap();
    stop.cancel();
    server.await.unwrap().unwrap();

    let (base, stop, server) = start(config).await;
    for _ in 0..3 {
        let r = post(&base, None, "guess").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = post(&base, None, PASSWORD).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = post(&base, Some(&device), PASSWORD).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the device is still known"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}
