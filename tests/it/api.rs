//! The JSON read API: authorisation, shapes, filters, search and pagination.

use std::collections::HashSet;

use fulfilld::stripe::double::SampleSession;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn requires_the_bearer_token() {
    let app = spawn_app().await;
    for path in ["/admin/api/sessions", "/admin/api/sessions/cs_test_x"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = app
            .http
            .get(app.url(path))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = app
        .http
        .post(app.url("/admin/api/sessions/cs_test_x/fulfill"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, v) = app.api_get("/admin/api/sessions/cs_test_unknown").await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].is_string());
    let (status, _) = app
        .api_post("/admin/api/sessions/cs_test_unknown/fulfill", json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn detail_has_the_contract_fields() {
    let app = spawn_app().await;
    let id = session_id("shape");
    let session = app.seed(&SampleSession::paid(&id, 2));
    app.send_event("evt_shape_1", "checkout.session.completed", &session)
        .await;
    let s = app.wait_for_state(&id, "fulfilled").await;
    for key in [
        "id",
        "livemode",
        "state",
        "payment_status",
        "status",
        "amount_total",
        "currency",
        "customer_email",
        "created",
        "updated_at",
        "line_items",
        "attempts",
        "events",
        "fulfillments",
    ] {
        assert!(s.get(key).is_some(), "missing {key}");
    }
    assert_eq!(s["amount_total"], 100 * 2 + 200 * 3);
    assert_eq!(s["currency"], "usd");
    assert_eq!(s["livemode"], false);
    assert_eq!(s["status"], "complete");
    let li = &s["line_items"][0];
    for key in ["id", "description", "quantity", "amount_total", "price_id"] {
        assert!(li.get(key).is_some(), "line item misses {key}");
    }
    // The product, read from the price, is what digital delivery matches.
    assert_eq!(li["product_id"], "prod_0001", "{li}");
    let a = &s["attempts"][0];
    for key in ["at", "trigger", "outcome", "error"] {
        assert!(a.get(key).is_some(), "attempt misses {key}");
    }
    assert_eq!(s["events"][0]["id"], "evt_shape_1");
    assert_eq!(s["events"][0]["type"], "checkout.session.completed");
    assert!(
        s["events"][0]["received_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    for key in ["id", "at", "forced"] {
        assert!(
            s["fulfillments"][0].get(key).is_some(),
            "fulfillment misses {key}"
        );
    }
}

#[tokio::test]
async fn list_filters_searches_and_pages_newest_first() {
    let app = spawn_app().await;
    let base = 1_800_000_000;
    let mut ids = Vec::new();
    for i in 0..45 {
        let id = format!("cs_test_list{i:03}");
        let mut sample = SampleSession::paid(&id, 1);
        sample.created = base + i;
        sample.email = format!("buyer{i}@example.com");
        sample.payment_status = "unpaid";
        if i % 3 != 0 {
            sample.status = "expired";
        }
        // Unpaid completions settle as awaiting_payment without any API call;
        // expiries settle as expired once a fresh read confirms them. Both
        // are enough to list.
        let session = app.seed(&sample);
        let kind = if i % 3 == 0 {
            "checkout.session.completed"
        } else {
            "checkout.session.expired"
        };
        assert_eq!(
            app.send_event(&format!("evt_list_{i}"), kind, &session)
                .await,
            200
        );
        ids.push(id);
    }
    // The expiries are confirmed by the worker's fresh reads.
    app.settle().await;
    // Walk every page of 10.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/api/sessions?limit=10&cursor={c}"),
            None => "/admin/api/sessions?limit=10".to_string(),
        };
        let (status, page) = app.api_get(&path).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 10);
        assert!(
            data.iter()
                .all(|s| s.get("attempts").is_none() && s.get("events").is_none())
        );
        seen.extend(data.iter().map(|s| s["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each once");

    let (_, awaiting) = app
        .api_get("/admin/api/sessions?state=awaiting_payment&limit=100")
        .await;
    let awaiting: Vec<&str> = awaiting["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(awaiting.len(), 15);
    assert!(awaiting.windows(2).all(|w| w[0] > w[1]));

    let (_, page1) = app
        .api_get("/admin/api/sessions?state=expired&limit=20")
        .await;
    let c = page1["next_cursor"].as_str().unwrap().to_string();
    let (_, page2) = app
        .api_get(&format!(
            "/admin/api/sessions?state=expired&limit=20&cursor={c}"
        ))
        .await;
    let all: HashSet<&str> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["data"].as_array().unwrap())
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(all.len(), 30);
    assert!(page2["next_cursor"].is_null());

    let (_, by_email) = app
        .api_get("/admin/api/sessions?q=BUYER7%40example.com")
        .await;
    assert_eq!(by_email["data"].as_array().unwrap().len(), 1);
    assert_eq!(by_email["data"][0]["id"], "cs_test_list007");
    let (_, by_id) = app.api_get("/admin/api/sessions?q=cs_test_list01").await;
    assert_eq!(by_id["data"].as_array().unwrap().len(), 10);
    let (_, by_pi) = app.api_get("/admin/api/sessions?q=pi_test_list044").await;
    assert_eq!(by_pi["data"][0]["id"], "cs_test_list044");
    let (_, none) = app
        .api_get("/admin/api/sessions?q=nobody%40nowhere.test")
        .await;
    assert!(none["data"].as_array().unwrap().is_empty());
    let (status, _) = app.api_get("/admin/api/sessions?state=bogus").await;
    assert_eq!(status, 400);
    let (status, _) = app.api_get("/admin/api/sessions?cursor=garbage").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_csv_export_round_trips_through_a_csv_parser_with_the_lists_filters() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (i, email) in [
        "plain@example.com",
        "=cmd|' /C calc'!A0@evil.example",
        "quote\"comma,@example.com",
    ]
    .iter()
    .enumerate()
    {
        let id = session_id(&format!("csv{i}"));
        let mut sample = fulfilld::stripe::double::SampleSession::paid(&id, 1);
        sample.email = (*email).into();
        let session = app.seed(&sample);
        assert_eq!(
            app.send_event(
                &format!("evt_csv_{i}"),
                "checkout.session.completed",
                &session
            )
            .await,
            200
        );
        app.wait_for_state(&id, "fulfilled").await;
        ids.push((id, *email));
    }
    let get = |query: &'static str| {
        let app = &app;
        async move {
            let r = app
                .http
                .get(app.url(&format!("/admin/api/sessions.csv{query}")))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/csv"),
                "{:?}",
                r.headers()
            );
            r.text().await.unwrap()
        }
    };
    let body = get("").await;
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "id");
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    for (id, email) in &ids {
        let row = rows.iter().find(|r| &r[0] == id.as_str()).unwrap();
        assert_eq!(&row[col("state")], "fulfilled");
        assert_eq!(&row[col("amount_total")], "200");
        assert_eq!(&row[col("currency")], "usd");
        // A formula-looking value is defused, everything else exact.
        let expected = if email.starts_with('=') {
            format!("'{email}")
        } else {
            email.to_string()
        };
        assert_eq!(row[col("customer_email")], expected);
    }
    // The list's filters apply: nothing is refunded.
    let refunded = get("?refund_status=full").await;
    let mut reader = csv::Reader::from_reader(refunded.as_bytes());
    assert_eq!(reader.records().count(), 0);
    let (status, _) = app.api_get("/admin/api/sessions.csv?state=bogus").await;
    assert_eq!(status, 400);
    let r = app
        .http
        .get(app.url("/admin/api/sessions.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the export needs the token or a signed-in admin"
    );
}

#[tokio::test]
async fn the_csv_export_pages_through_more_sessions_than_one_read() {
    let app = spawn_app().await;
    let now = fulfilld::time::now_ms();
    let sessions: Vec<_> = (0..1203)
        .map(|i| {
            let id = format!("cs_test_bulk{i:05}");
            let mut rec = fulfilld::model::SessionRecord::new(&id, 1_700_000_000 + i, now);
            rec.state = fulfilld::model::State::Fulfilled;
            fulfilld::domain::Session {
                rec,
                detail: Default::default(),
            }
        })
        .collect();
    app.store.import(sessions).await.unwrap();
    let r = app
        .http
        .get(app.url("/admin/api/sessions.csv"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let ids: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    assert_eq!(ids.len(), 1203);
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 1203, "no row twice across pages");
    assert_eq!(ids[0], "cs_test_bulk01202", "newest first");
}

#[tokio::test]
async fn search_finds_a_session_by_a_word_of_the_name_email_or_any_item() {
    let app = spawn_app().await;
    let id = session_id("search_words");
    let mut sample = fulfilld::stripe::double::SampleSession::paid(&id, 1);
    sample.email = "maria.garcia@example.com".into();
    sample.items = vec![
        ("Ceramic pour-over dripper".into(), 3200, 1),
        ("Paper filters, pack of 100".into(), 600, 2),
    ];
    let (mut session, items) = sample.build();
    session["customer_details"]["name"] = serde_json::json!("Lucía Fernández");
    app.stripe.insert(session.clone(), items);
    assert_eq!(
        app.send_event("evt_search_words", "checkout.session.completed", &session)
            .await,
        200
    );
    app.wait_for_state(&id, "fulfilled").await;
    let other = session_id("search_other");
    let other_obj = app.seed(&fulfilld::stripe::double::SampleSession::paid(&other, 1));
    assert_eq!(
        app.send_event("evt_search_other", "checkout.session.completed", &other_obj)
            .await,
        200
    );
    app.wait_for_state(&other, "fulfilled").await;
    for q in [
        "garcia",
        "GARCIA",
        "dripper",
        "filters",
        "fernández",
        "lucía",
        "maria.gar",
    ] {
        let (status, v) = app.api_get(&format!("/admin/api/sessions?q={q}")).await;
        assert_eq!(status, 200);
        let ids: Vec<_> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].clone())
            .collect();
        assert_eq!(ids, [serde_json::json!(id)], "q={q}");
    }
    let (_, v) = app.api_get("/admin/api/sessions?q=espresso").await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(0));
}
