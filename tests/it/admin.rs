//! The HTML dashboard over HTTP: login, CSRF, escaping, re-trigger, lists
//! over 1,000 sessions and the webhook log.

use fulfilld::{
    model::{SessionRecord, State},
    stripe::double::{SampleSession, Scripted},
};
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::helpers::{API_TOKEN, TestApp, session_id, spawn_app};

const USER: &str = "admin";
const PASSWORD: &str = "a long test password";

/// A signed-in browser: its cookie and CSRF token, no automatic redirects.
struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the first hidden `csrf` input in a page.
fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("the page has a csrf field") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

async fn login(app: &TestApp) -> Admin {
    let http = no_redirects();
    let r = http
        .post(app.url("/admin/login"))
        .form(&[("username", USER), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/admin");
    let set = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    // public_url is http in tests, so the cookie cannot be Secure.
    assert!(!set.contains("Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let mut admin = Admin {
        http,
        base: app.address.clone(),
        cookie,
        csrf: String::new(),
    };
    let (status, html) = admin.get("/admin").await;
    assert_eq!(status, 200);
    admin.csrf = csrf_in(&html);
    admin
}

impl Admin {
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The fields the session page's force form sends besides `csrf`:
    /// the ticked confirmation and the fulfillment count the page showed.
    async fn force_fields(&self, id: &str) -> String {
        let (status, html) = self.get(&format!("/admin/sessions/{id}")).await;
        assert_eq!(status, 200);
        let form = html
            .split("id=\"force-fulfill\"")
            .nth(1)
            .expect("the page has the force form");
        let seen = form
            .split("name=\"seen\" value=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .expect("the force form carries seen");
        assert!(form.contains("name=\"confirm\" value=\"yes\""));
        seen.to_string()
    }

    /// Presses a fulfill button and returns the page it redirects to.
    async fn fulfill(&self, id: &str, force: bool) -> (String, String) {
        let seen = if force {
            self.force_fields(id).await
        } else {
            String::new()
        };
        let mut form = vec![("csrf", self.csrf.as_str())];
        if force {
            form.extend([("force", "true"), ("confirm", "yes"), ("seen", &seen)]);
        }
        let r = self
            .post(&format!("/admin/sessions/{id}/fulfill"), &form)
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let location = r.headers()[header::LOCATION].to_str().unwrap().to_string();
        let (status, html) = self.get(&location).await;
        assert_eq!(status, 200);
        (location, html)
    }
}

#[tokio::test]
async fn every_admin_route_refuses_anonymous_requests() {
    let app = spawn_app().await;
    let id = session_id("anon");
    let sample = SampleSession::paid(&id, 1);
    let session = app.seed(&sample);
    app.send_event("evt_anon", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    let http = no_redirects();
    for path in [
        "/admin".to_string(),
        "/admin/sessions".to_string(),
        format!("/admin/sessions/{id}"),
        "/admin/webhooks".to_string(),
        "/admin/webhooks?filter=rejected".to_string(),
    ] {
        let r = http.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        let to = r.headers()[header::LOCATION].to_str().unwrap();
        assert!(to.starts_with("/admin/login"), "{path} → {to}");
        let body = r.text().await.unwrap();
        // Nothing about the session in the answer, whatever the path names.
        for secret in [id.as_str(), sample.email.as_str(), "Item 1"] {
            assert!(!body.contains(secret), "{path} leaked {secret}: {body}");
        }
    }
    for path in [
        "/admin/api/sessions".to_string(),
        format!("/admin/api/sessions/{id}"),
    ] {
        let r = http.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let r = http
            .get(app.url(&path))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = http
        .post(app.url(&format!("/admin/api/sessions/{id}/fulfill")))
        .json(&serde_json::json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for path in [
        format!("/admin/sessions/{id}/fulfill"),
        "/admin/logout".into(),
    ] {
        let r = http
            .post(app.url(&path))
            .form(&[("csrf", "x"), ("force", "true")])
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::SEE_OTHER,
            "{path}: {}",
            r.status()
        );
    }
    // Nothing was fulfilled again by any of that.
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
}

#[tokio::test]
async fn login_logout_and_throttling() {
    let app = spawn_app().await;
    let http = no_redirects();
    let (status, page) = {
        let r = http.get(app.url("/admin/login")).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"login-form\""));

    let admin = login(&app).await;
    let (status, html) = admin.get("/admin").await;
    assert_eq!(status, 200);
    assert!(html.contains("Checkout Sessions"));
    // The cookie also works for the JSON API.
    let r = admin
        .http
        .get(app.url("/admin/api/sessions"))
        .header(header::COOKIE, &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Logout needs the CSRF token, then ends the session for good.
    let r = admin.post("/admin/logout", &[("csrf", "wrong")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = admin.post("/admin/logout", &[("csrf", &admin.csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = admin
        .http
        .get(app.url("/admin"))
        .header(header::COOKIE, &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the old cookie is dead");

    // Wrong passwords: refused, then the address is slowed down, even for
    // the right password, while another browser session stays valid.
    let second = login(&app).await;
    for _ in 0..3 {
        let r = http
            .post(app.url("/admin/login"))
            .form(&[("username", USER), ("password", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(header::SET_COOKIE).is_none());
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Wrong username or password")
        );
    }
    let r = http
        .post(app.url("/admin/login"))
        .form(&[("username", USER), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get(header::RETRY_AFTER).is_some());
    assert_eq!(second.get("/admin").await.0, 200);

    // A login posted from another site is refused.
    let r = http
        .post(app.url("/admin/login"))
        .header(header::ORIGIN, "https://evil.example")
        .form(&[("username", USER), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn state_changing_posts_need_the_csrf_token() {
    let app = spawn_app().await;
    let id = session_id("csrf");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.send_event("evt_csrf", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    let admin = login(&app).await;
    let path = format!("/admin/sessions/{id}/fulfill");
    let r = admin.post(&path, &[("force", "true")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no token");
    let r = admin
        .post(&path, &[("csrf", "not-the-token"), ("force", "true")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "wrong token");
    // Another session's token is not this one's.
    let other = login(&app).await;
    let r = admin
        .post(&path, &[("csrf", &other.csrf), ("force", "true")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "someone else's token");
    // A cookie-authenticated API call needs it too, as a header.
    let api = format!("/admin/api/sessions/{id}/fulfill");
    let r = admin
        .http
        .post(app.url(&api))
        .header(header::COOKIE, &admin.cookie)
        .json(&serde_json::json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    app.settle().await;
    let s = app.session(&id).await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 1);
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 1);
    // With the token, the API call by cookie works.
    let r = admin
        .http
        .post(app.url(&api))
        .header(header::COOKIE, &admin.cookie)
        .header("x-csrf-token", &admin.csrf)
        .json(&serde_json::json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let s = app.session(&id).await;
    assert_eq!(s["fulfillments"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn customer_text_is_escaped_on_the_list_the_detail_and_the_landing_page() {
    let app = spawn_app().await;
    let id = session_id("xss");
    let mut sample = SampleSession::paid(&id, 2);
    sample.items[0].0 = "<script>alert('item')</script>".into();
    sample.email = "\"><img src=x onerror=alert(1)>@example.com".into();
    let session = app.seed(&sample);
    app.send_event("evt_xss", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    let admin = login(&app).await;
    let (_, list) = admin.get("/admin").await;
    let (_, detail) = admin.get(&format!("/admin/sessions/{id}")).await;
    let (_, landing) = app.landing(&id).await;
    for (name, html) in [("list", &list), ("detail", &detail), ("landing", &landing)] {
        assert!(!html.contains("<script>alert"), "{name} has a live script");
        assert!(!html.contains("<img src=x"), "{name} has a live img");
    }
    assert!(list.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;@example.com"));
    assert!(detail.contains("&lt;script&gt;alert('item')&lt;/script&gt;"));
    assert!(landing.contains("&lt;script&gt;alert('item')&lt;/script&gt;"));
    // The search box echoes the query escaped.
    let (_, search) = admin
        .get("/admin?q=%22%3E%3Cscript%3Ealert(2)%3C%2Fscript%3E")
        .await;
    assert!(!search.contains("<script>alert(2)"));
    // ...and does echo it: otherwise the line above would hold vacuously.
    assert!(
        search.contains("&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"),
        "the query, escaped, in the search box"
    );
}

#[tokio::test]
async fn security_headers_on_admin_pages() {
    let app = spawn_app().await;
    let admin = login(&app).await;
    for path in ["/admin", "/admin/webhooks", "/admin/login"] {
        let mut req = admin.http.get(app.url(path));
        if path != "/admin/login" {
            req = req.header(header::COOKIE, &admin.cookie);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let referrer = h["referrer-policy"].to_str().unwrap();
        assert!(
            referrer == "same-origin" || referrer == "no-referrer",
            "{path}"
        );
        let body = r.text().await.unwrap();
        assert!(!body.contains("<script>"), "{path}: inline script");
        assert!(!body.contains(" style=\""), "{path}: inline style");
    }
}

#[tokio::test]
async fn fulfill_now_fulfills_a_failed_session_once_and_force_adds_an_audited_one() {
    let app = spawn_app().await;
    let id = session_id("retrigger");
    let session = app.seed(&SampleSession::paid(&id, 3));
    app.stripe.script(&id, [Scripted::Status(404)]);
    app.send_event("evt_rt", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "failed").await;
    let admin = login(&app).await;
    let (_, html) = admin.get(&format!("/admin/sessions/{id}")).await;
    assert!(html.contains("id=\"fulfill-now\""));
    assert!(!html.contains("id=\"force-fulfill\""));

    let (location, html) = admin.fulfill(&id, false).await;
    assert!(location.ends_with("?result=fulfilled"), "{location}");
    assert!(html.contains("data-result=\"fulfilled\""));
    assert!(html.contains("data-state=\"fulfilled\""));
    assert!(html.contains("id=\"force-fulfill\""));
    let s = app.session(&id).await;
    assert_eq!(s["state"], "fulfilled");
    let fulfillments = s["fulfillments"].as_array().unwrap();
    assert_eq!(fulfillments.len(), 1);
    assert_eq!(fulfillments[0]["forced"], false);
    let last = s["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["trigger"], "admin");

    // Pressing it again (a double click, a stale tab) fulfils nothing more.
    let (location, _) = admin.fulfill(&id, false).await;
    assert!(
        location.ends_with("?result=already_fulfilled"),
        "{location}"
    );
    app.settle().await;
    assert_eq!(
        app.session(&id).await["fulfillments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Force: a second fulfillment, recorded as forced, in the admin's name.
    let (location, html) = admin.fulfill(&id, true).await;
    assert!(location.ends_with("?result=forced"), "{location}");
    assert!(html.contains("by admin"));
    let s = app.session(&id).await;
    let fulfillments = s["fulfillments"].as_array().unwrap();
    assert_eq!(fulfillments.len(), 2);
    assert_eq!(fulfillments[1]["forced"], true);
    assert_eq!(fulfillments[1]["actor"], "admin");
    app.settle().await;
    let callbacks = app.receiver.of_kind("checkout.fulfilled");
    assert_eq!(callbacks.len(), 2);
    assert_ne!(callbacks[0].webhook_id, callbacks[1].webhook_id);
    // The timeline shows the events, the attempts and both callbacks.
    let (_, html) = admin.get(&format!("/admin/sessions/{id}")).await;
    assert!(html.contains("Stripe event checkout.session.completed"));
    assert!(html.contains("Fulfillment attempt (webhook) → needs attention"));
    assert!(html.contains("Fulfillment attempt (admin) → fulfilled"));
    assert!(html.contains("Forced fulfillment recorded (admin)"));
    // Each callback inside the attempt that sent it, with its webhook-id.
    for c in &callbacks {
        assert!(
            html.contains(&format!("callback {} → HTTP 200", c.webhook_id)),
            "{html}"
        );
    }
    assert!(
        !html.contains("Callback checkout.fulfilled"),
        "not listed again on its own"
    );
    let items = html.split("id=\"line-items\"").nth(1).unwrap();
    let items = items.split("</table>").next().unwrap();
    for n in 1..=3 {
        assert_eq!(
            items.matches(&format!(">Item {n}<")).count(),
            1,
            "item {n} once"
        );
    }
}

/// 1,000 sessions written straight to the store: states, times, emails and
/// payment intents varied so filters and pages have edges to get wrong.
async fn seed_many(app: &TestApp) -> Vec<SessionRecord> {
    let mut all = Vec::new();
    for i in 0..1000u32 {
        let mut rec = SessionRecord::new(
            &format!("cs_test_many_{i:04}"),
            1_700_000_000 + i64::from(i / 3),
            0,
        );
        rec.state = State::ALL[(i as usize * 3 + i as usize / 11) % State::ALL.len()];
        rec.customer_email = Some(format!("Buyer{}@Example.com", i % 10));
        rec.payment_intent = Some(format!("pi_many_{i:04}"));
        rec.amount_total = Some(i64::from(i) * 100);
        rec.currency = Some("eur".into());
        all.push(rec);
    }
    for chunk in all.chunks(100) {
        let sessions = chunk
            .iter()
            .map(|rec| fulfilld::domain::Session {
                rec: rec.clone(),
                detail: Default::default(),
            })
            .collect();
        app.store.import(sessions).await.unwrap();
    }
    // Newest first: by created, then by id, both descending.
    all.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
    all
}

/// Every id across all pages of an API listing.
async fn api_ids(app: &TestApp, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/admin/api/sessions?{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", fulfilld::views::admin::enc(c)));
        }
        let (status, page) = app.api_get(&path).await;
        assert_eq!(status, 200, "{path}");
        for s in page["data"].as_array().unwrap() {
            ids.push(s["id"].as_str().unwrap().to_string());
        }
        match &page["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            _ => return ids,
        }
    }
}

/// Every session id across all pages of the HTML list, following "Older".
async fn html_ids(admin: &Admin, first: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let (status, html) = admin.get(&path).await;
        assert_eq!(status, 200, "{path}");
        for part in html
            .split("class=\"session-link mono\" href=\"/admin/sessions/")
            .skip(1)
        {
            ids.push(part.split('"').next().unwrap().to_string());
        }
        if let Some(pos) = html.find("id=\"older\" href=\"") {
            let href = html[pos + 17..].split('"').next().unwrap();
            next = Some(href.replace("&amp;", "&"));
        }
    }
    ids
}

#[tokio::test]
async fn filters_search_and_pages_are_right_over_1000_sessions() {
    let app = spawn_app().await;
    let all = seed_many(&app).await;
    let ids = |f: &dyn Fn(&SessionRecord) -> bool| {
        all.iter()
            .filter(|r| f(r))
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };

    assert_eq!(api_ids(&app, "").await, ids(&|_| true));
    assert_eq!(api_ids(&app, "limit=7").await, ids(&|_| true));
    for state in State::ALL {
        let want = ids(&|r| r.state == state);
        assert!(!want.is_empty());
        assert_eq!(
            api_ids(&app, &format!("state={}", state.as_str())).await,
            want
        );
    }
    // Email search is case-insensitive and by prefix.
    assert_eq!(
        api_ids(&app, "q=buyer3%40example.com").await,
        ids(&|r| r.customer_email.as_deref() == Some("Buyer3@Example.com"))
    );
    assert_eq!(
        api_ids(&app, "q=pi_many_0420").await,
        vec!["cs_test_many_0420"]
    );
    assert_eq!(
        api_ids(&app, "q=cs_test_many_012").await,
        ids(&|r| r.id.starts_with("cs_test_many_012"))
    );
    assert_eq!(
        api_ids(&app, "q=buyer7%40example.com&state=failed").await,
        ids(&|r| r.state == State::Failed
            && r.customer_email.as_deref() == Some("Buyer7@Example.com"))
    );
    assert!(api_ids(&app, "q=nobody%40example.com").await.is_empty());
    let (status, _) = app.api_get("/admin/api/sessions?state=bogus").await;
    assert_eq!(status, 400);

    // The dashboard shows the same, page by page, with counts per state.
    let admin = login(&app).await;
    assert_eq!(html_ids(&admin, "/admin").await, ids(&|_| true));
    assert_eq!(
        html_ids(&admin, "/admin?state=retrying").await,
        ids(&|r| r.state == State::Retrying)
    );
    assert_eq!(
        html_ids(&admin, "/admin?q=Buyer5%40example.com").await,
        ids(&|r| r.customer_email.as_deref() == Some("Buyer5@Example.com"))
    );
    let (_, html) = admin.get("/admin").await;
    for state in State::ALL {
        let n = all.iter().filter(|r| r.state == state).count();
        let tab = format!("href=\"/admin?state={}\" class=\"state-tab", state.as_str());
        let at = html
            .find(&tab)
            .unwrap_or_else(|| panic!("a tab for {}", state.as_str()));
        let tag = html[at..].split('>').next().unwrap();
        assert!(
            tag.contains(&format!("data-count=\"{n}\"")),
            "{tag} should count {n}"
        );
    }
}

#[tokio::test]
async fn rejected_webhooks_appear_in_the_log_with_their_reason() {
    let app = spawn_app().await;
    let id = session_id("log");
    let session = app.seed(&SampleSession::paid(&id, 1));
    let body =
        fulfilld::stripe::double::event_body("evt_log_ok", "checkout.session.completed", &session);
    // No header (a proxy stripped it).
    assert_eq!(app.post_webhook_raw(body.clone(), None).await.status(), 400);
    // Signed with a secret we do not have (the live one, say).
    let t = fulfilld::time::now_secs();
    let wrong = fulfilld::signature::stripe_header("whsec_someone_elses", t, body.as_bytes());
    assert_eq!(
        app.post_webhook_raw(body.clone(), Some(&wrong))
            .await
            .status(),
        400
    );
    // Signed an hour ago (a wrong server clock, or a replay).
    let old = fulfilld::signature::stripe_header(
        crate::helpers::WEBHOOK_SECRET,
        t - 3600,
        body.as_bytes(),
    );
    assert_eq!(
        app.post_webhook_raw(body.clone(), Some(&old))
            .await
            .status(),
        400
    );
    // Signed, but not JSON.
    let (junk, junk_header) = crate::helpers::signed("not json");
    assert_eq!(
        app.post_webhook_raw(junk, Some(&junk_header))
            .await
            .status(),
        400
    );
    // And one good one.
    assert_eq!(
        app.send_event("evt_log_ok", "checkout.session.completed", &session)
            .await,
        200
    );

    let admin = login(&app).await;
    let (_, rejected) = admin.get("/admin/webhooks?filter=rejected").await;
    for (code, words) in [
        ("missing_header", "proxy"),
        ("no_matching_signature", "2 configured webhook secrets"),
        ("timestamp_outside_tolerance", "60 min old"),
        ("bad_json", "not a Stripe event"),
    ] {
        assert!(
            rejected.contains(&format!("data-reason=\"{code}\"")),
            "{code}"
        );
        assert!(rejected.contains(words), "{code}: {words}");
    }
    assert!(rejected.contains("clock"));
    assert!(!rejected.contains("evt_log_ok"));
    let (_, accepted) = admin.get("/admin/webhooks?filter=accepted").await;
    assert!(accepted.contains("evt_log_ok"));
    assert!(accepted.contains(&format!("/admin/sessions/{id}")));
    assert!(!accepted.contains("data-reason"));
    // Refused requests were not stored.
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn a_forced_re_fulfil_needs_the_confirmation_and_a_double_submit_forces_once() {
    let app = spawn_app().await;
    let id = session_id("force_once");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.send_event("evt_force_once", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    let admin = login(&app).await;
    let path = format!("/admin/sessions/{id}/fulfill");
    let seen = admin.force_fields(&id).await;
    assert_eq!(seen, "1");
    let count = || async {
        app.session(&id).await["fulfillments"]
            .as_array()
            .unwrap()
            .len()
    };

    // Without the ticked confirmation (a page with its JS and `required`
    // bypassed, or a hand-made POST): refused, nothing done.
    let csrf = admin.csrf.as_str();
    for form in [
        vec![("csrf", csrf), ("force", "true"), ("seen", "1")],
        vec![
            ("csrf", csrf),
            ("force", "true"),
            ("confirm", "no"),
            ("seen", "1"),
        ],
        // Without the count the page showed (an old page): refused too.
        vec![("csrf", csrf), ("force", "true"), ("confirm", "yes")],
    ] {
        let r = admin.post(&path, &form).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{form:?}");
        let h = r.headers().clone();
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.unwrap();
        assert!(body.contains("forced re-fulfill needs"), "{body}");
    }
    app.settle().await;
    assert_eq!(count().await, 1);

    // A double submit of one form (two requests in flight at once): one
    // forced fulfillment; the other answer says it was already done.
    let form = [
        ("csrf", csrf),
        ("force", "true"),
        ("confirm", "yes"),
        ("seen", seen.as_str()),
    ];
    let (a, b) = tokio::join!(admin.post(&path, &form), admin.post(&path, &form));
    let mut results: Vec<String> = [a, b]
        .iter()
        .map(|r| {
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let l = r.headers()[header::LOCATION].to_str().unwrap();
            l.split("result=").nth(1).unwrap().to_string()
        })
        .collect();
    results.sort();
    assert_eq!(results, ["already_forced", "forced"]);
    // And once more, later (a resubmitted POST after a reload).
    let r = admin.post(&path, &form).await;
    let l = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    assert!(l.ends_with("?result=already_forced"), "{l}");
    let (_, html) = admin.get(&l).await;
    assert!(html.contains("earlier submit of the same form"), "{html}");
    app.settle().await;
    let s = app.session(&id).await;
    let f = s["fulfillments"].as_array().unwrap();
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[1]["forced"], true);
    assert_eq!(app.receiver.of_kind("checkout.fulfilled").len(), 2);

    // The page now shows the new count, so a deliberate second force works.
    let (location, _) = admin.fulfill(&id, true).await;
    assert!(location.ends_with("?result=forced"), "{location}");
    assert_eq!(count().await, 3);
}

#[tokio::test]
async fn the_api_force_is_idempotent_with_expect_fulfillments() {
    let app = spawn_app().await;
    let id = session_id("api_force_once");
    let session = app.seed(&SampleSession::paid(&id, 1));
    app.send_event("evt_api_force_once", "checkout.session.completed", &session)
        .await;
    app.wait_for_state(&id, "fulfilled").await;
    let api = app.url(&format!("/admin/api/sessions/{id}/fulfill"));
    let call = |body: serde_json::Value| {
        let api = api.clone();
        async move {
            let r = reqwest::Client::new()
                .post(api)
                .bearer_auth(API_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let wish = serde_json::json!({"force": true, "expect_fulfillments": 1});
    let ((s1, b1), (s2, b2)) = tokio::join!(call(wish.clone()), call(wish.clone()));
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    let ids: Vec<bool> = [&b1, &b2]
        .iter()
        .map(|b| b["result"]["fulfillment_id"].is_string())
        .collect();
    assert_eq!(ids.iter().filter(|x| **x).count(), 1, "{b1} {b2}");
    let (s3, b3) = call(wish).await;
    assert_eq!(s3, StatusCode::OK);
    assert!(b3["result"]["fulfillment_id"].is_null(), "{b3}");
    assert_eq!(b3["session"]["fulfillments"].as_array().unwrap().len(), 2);
    // Plain {"force": true} still forces every time, as the contract says.
    let (s4, b4) = call(serde_json::json!({"force": true})).await;
    assert_eq!(s4, StatusCode::OK);
    assert!(b4["result"]["fulfillment_id"].is_string(), "{b4}");
    assert_eq!(b4["session"]["fulfillments"].as_array().unwrap().len(), 3);
}
