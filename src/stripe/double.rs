//! An in-process Stripe API test double, served over real HTTP on loopback.
//!
//! It answers the two calls fulfillment makes, with JSON shaped like Stripe's
//! (`fixtures/stripe/`), checks the bearer key, pages line items like Stripe
//! (10 embedded, then pages of up to `limit`), records every request, and can
//! be scripted per session to fail (`500`, `429`, `404`) or hang. The demo
//! ships it; the integration tests drive the same code.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use poem::{
    EndpointExt, Request, Response, Route, Server, get, handler,
    http::StatusCode,
    listener::TcpAcceptor,
    web::{Data, Path, Query},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Line items embedded in a retrieved session before `has_more` kicks in.
const EMBEDDED_ITEMS: usize = 10;

/// A scripted answer for the next request about one session.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// Answer with this status and a Stripe error body.
    Status(u16),
    /// Answer with this status and `Stripe-Should-Retry`.
    StatusShouldRetry(u16, bool),
    /// Do not answer until `release_hangs` is called (or 10 minutes pass),
    /// then answer with the next scripted answer, if any.
    Hang,
    /// Answer normally (to script a later request).
    Pass,
}

/// A request the double received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub stripe_version: Option<String>,
    /// `Stripe-Account`: the connected account the call acts on.
    pub stripe_account: Option<String>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, (Value, Vec<Value>)>,
    /// Events for `GET /v1/events`, oldest first, with whether they were delivered.
    events: Vec<(Value, bool)>,
    scripts: HashMap<String, VecDeque<Scripted>>,
    requests: Vec<Recorded>,
}

struct Shared {
    key: String,
    inner: Mutex<Inner>,
    release: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters to a test double; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to a running double; cheap to clone.
#[derive(Clone)]
pub struct StripeDouble {
    url: String,
    shared: Arc<Shared>,
}

impl StripeDouble {
    /// Starts the double on `127.0.0.1:0`; it accepts `Bearer <secret_key>`.
    pub async fn start(secret_key: &str) -> std::io::Result<StripeDouble> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            key: secret_key.to_string(),
            inner: Mutex::new(Inner::default()),
            release: Notify::new(),
        });
        let app = Route::new()
            .at("/v1/checkout/sessions/:id", get(retrieve))
            .at("/v1/checkout/sessions/:id/line_items", get(line_items))
            .at("/v1/events", get(list_events))
            .data(shared.clone());
        let acceptor = TcpAcceptor::from_tokio(listener)?;
        tokio::spawn(async move {
            if let Err(e) = Server::new_with_acceptor(acceptor).run(app).await {
                tracing::error!(error = %e, "Stripe test double stopped");
            }
        });
        Ok(StripeDouble { url, shared })
    }

    /// Base URL, for `stripe.api_base`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds or replaces a session and its line items.
    pub fn insert(&self, session: Value, items: Vec<Value>) {
        let id = session["id"].as_str().unwrap_or_default().to_string();
        self.shared.lock().sessions.insert(id, (session, items));
    }

    /// Changes fields of a stored session (e.g. `payment_status` once a delayed payment clears).
    pub fn update(&self, id: &str, fields: Value) {
        if let Some((s, _)) = self.shared.lock().sessions.get_mut(id)
            && let (Some(obj), Some(new)) = (s.as_object_mut(), fields.as_object())
        {
            for (k, v) in new {
                obj.insert(k.clone(), v.clone());
            }
        }
    }

    /// Queues scripted answers for the next requests about session `id`.
    pub fn script(&self, id: &str, answers: impl IntoIterator<Item = Scripted>) {
        self.shared
            .lock()
            .scripts
            .entry(id.to_string())
            .or_default()
            .extend(answers);
    }

    /// Adds an event to `GET /v1/events`; `delivered: false` is one Stripe
    /// could not deliver (an endpoint that was down). Script the list with
    /// the id `EVENTS_SCRIPT`.
    pub fn add_event(&self, event: Value, delivered: bool) {
        self.shared.lock().events.push((event, delivered));
    }

    /// Lets every hanging request go on (and answer normally).
    pub fn release_hangs(&self) {
        self.shared.release.notify_waiters();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }
}

fn record(shared: &Shared, req: &Request) {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    shared.lock().requests.push(Recorded {
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or_default().to_string(),
        authorization: header("authorization"),
        stripe_version: header("stripe-version"),
        stripe_account: header("stripe-account"),
    });
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .header("Request-Id", "req_double")
        .body(
            json!({"error": {"type": if status >= 500 {"api_error"} else {"invalid_request_error"},
                              "code": code, "message": message}})
            .to_string(),
        )
}

/// Checks the key, then plays the next scripted answer for `id`, if any.
/// A request is recorded only once a hang is ready to be released, so a test
/// that sees the request can release it without a race.
async fn gate(shared: &Shared, req: &Request, id: &str) -> Option<Response> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(format!("Bearer {}", shared.key).as_str()) {
        record(shared, req);
        return Some(error(401, "api_key_invalid", "Invalid API Key provided"));
    }
    let mut recorded = false;
    loop {
        let next = shared
            .lock()
            .scripts
            .get_mut(id)
            .and_then(VecDeque::pop_front);
        if let Some(Scripted::Hang) = next {
            let released = shared.release.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !recorded {
                record(shared, req);
                recorded = true;
            }
            let _ = tokio::time::timeout(Duration::from_secs(600), released).await;
            continue;
        }
        if !recorded {
            record(shared, req);
        }
        return match next {
            None | Some(Scripted::Pass) | Some(Scripted::Hang) => None,
            Some(Scripted::Status(status)) => Some(error(status, "scripted", "scripted failure")),
            Some(Scripted::StatusShouldRetry(status, retry)) => {
                let mut r = error(status, "scripted", "scripted failure");
                r.headers_mut().insert(
                    "stripe-should-retry",
                    if retry { "true" } else { "false" }.parse().ok()?,
                );
                Some(r)
            }
        };
    }
}

fn not_found(id: &str) -> Response {
    error(
        404,
        "resource_missing",
        &format!("No such checkout.session: '{id}'"),
    )
}

fn list(id: &str, items: &[Value], has_more: bool) -> Value {
    json!({"object": "list", "data": items, "has_more": has_more,
           "url": format!("/v1/checkout/sessions/{id}/line_items")})
}

#[handler]
async fn retrieve(req: &Request, Path(id): Path<String>, shared: Data<&Arc<Shared>>) -> Response {
    if let Some(r) = gate(&shared, req, &id).await {
        return r;
    }
    let Some((mut session, items)) = shared.lock().sessions.get(&id).cloned() else {
        return not_found(&id);
    };
    let expand = req.uri().query().unwrap_or_default();
    if expand.contains("line_items") && !expand.contains("line_items.") {
        let shown = items.len().min(EMBEDDED_ITEMS);
        session["line_items"] = list(&id, &items[..shown], items.len() > shown);
    }
    json_response(&session)
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    starting_after: Option<String>,
}

#[handler]
async fn line_items(
    req: &Request,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    shared: Data<&Arc<Shared>>,
) -> Response {
    if let Some(r) = gate(&shared, req, &id).await {
        return r;
    }
    let Some((_, items)) = shared.lock().sessions.get(&id).cloned() else {
        return not_found(&id);
    };
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let start = match &q.starting_after {
        None => 0,
        Some(after) => match items.iter().position(|i| i["id"] == after.as_str()) {
            Some(p) => p + 1,
            None => return error(400, "resource_missing", "No such line item"),
        },
    };
    let end = (start + limit).min(items.len());
    json_response(&list(&id, &items[start..end], end < items.len()))
}

fn json_response(v: &Value) -> Response {
    Response::builder()
        .content_type("application/json")
        .header("Request-Id", "req_double")
        // Stripe pretty-prints its JSON.
        .body(serde_json::to_string_pretty(v).unwrap_or_default())
}

/// The script key for `GET /v1/events` (see `StripeDouble::script`).
pub const EVENTS_SCRIPT: &str = "events";

#[handler]
async fn list_events(req: &Request, shared: Data<&Arc<Shared>>) -> Response {
    if let Some(r) = gate(&shared, req, EVENTS_SCRIPT).await {
        return r;
    }
    let query = req.uri().query().unwrap_or_default().to_string();
    let mut types = Vec::new();
    let (mut undelivered_only, mut created_gte, mut limit, mut after) = (false, i64::MIN, 10, None);
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = k.replace("%5B", "[").replace("%5D", "]");
        match k.as_str() {
            "delivery_success" => undelivered_only = v == "false",
            "created[gte]" => created_gte = v.parse().unwrap_or(i64::MIN),
            "limit" => limit = v.parse::<usize>().unwrap_or(10).clamp(1, 100),
            "starting_after" => after = Some(v.to_string()),
            k if k.starts_with("types[") => types.push(v.to_string()),
            _ => {}
        }
    }
    // A connected account's events are listed with its `Stripe-Account`, the
    // platform's without one.
    let account = req
        .headers()
        .get("stripe-account")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Newest first, as Stripe lists.
    let matching: Vec<Value> = shared
        .lock()
        .events
        .iter()
        .rev()
        .filter(|(e, delivered)| {
            e["account"].as_str() == account.as_deref()
                && !(undelivered_only && *delivered)
                && e["created"].as_i64().unwrap_or(0) >= created_gte
                && (types.is_empty() || types.iter().any(|t| e["type"] == t.as_str()))
        })
        .map(|(e, _)| e.clone())
        .collect();
    let start = match &after {
        None => 0,
        Some(id) => match matching.iter().position(|e| e["id"] == id.as_str()) {
            Some(p) => p + 1,
            None => return error(400, "resource_missing", "No such event"),
        },
    };
    let end = (start + limit).min(matching.len());
    json_response(&json!({"object": "list", "data": &matching[start..end],
                          "has_more": end < matching.len(), "url": "/v1/events"}))
}

/// What a sample session looks like.
#[derive(Debug, Clone)]
pub struct SampleSession {
    pub id: String,
    pub payment_status: &'static str,
    pub status: &'static str,
    pub currency: &'static str,
    pub email: String,
    /// (description, unit amount, quantity) per line item.
    pub items: Vec<(String, i64, i64)>,
    pub created: i64,
    pub payment_method: &'static str,
}

impl SampleSession {
    /// A paid card session with `n` line items.
    pub fn paid(id: &str, n: usize) -> Self {
        SampleSession {
            id: id.to_string(),
            payment_status: "paid",
            status: "complete",
            currency: "usd",
            email: "jenny.rosen@example.com".into(),
            items: (1..=n)
                .map(|i| (format!("Item {i}"), 100 * i as i64, 1 + (i as i64 % 3)))
                .collect(),
            created: crate::time::now_secs(),
            payment_method: "card",
        }
    }

    /// The Checkout Session object and its line items, as Stripe returns them.
    pub fn build(&self) -> (Value, Vec<Value>) {
        let items: Vec<Value> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, (description, unit, qty))| {
                json!({
                    "id": format!("li_{}_{:04}", self.id.trim_start_matches("cs_"), i + 1),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": unit * qty,
                    "amount_tax": 0,
                    "amount_total": unit * qty,
                    "currency": self.currency,
                    "description": description,
                    "price": {
                        "id": format!("price_{:04}", i + 1),
                        "object": "price",
                        "active": true,
                        "billing_scheme": "per_unit",
                        "currency": self.currency,
                        "livemode": false,
                        "product": format!("prod_{:04}", i + 1),
                        "type": "one_time",
                        "unit_amount": unit,
                        "unit_amount_decimal": unit.to_string()
                    },
                    "quantity": qty
                })
            })
            .collect();
        let total: i64 = self.items.iter().map(|(_, u, q)| u * q).sum();
        let session = json!({
            "id": self.id,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "client_reference_id": null,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "customer_details": {
                "address": {"city": "San Francisco", "country": "US", "line1": "510 Townsend St",
                            "line2": null, "postal_code": "94103", "state": "CA"},
                "email": self.email,
                "name": "Jenny Rosen",
                "phone": null,
                "tax_exempt": "none",
                "tax_ids": []
            },
            "customer_email": null,
            "expires_at": self.created + 86_400,
            "livemode": self.id.starts_with("cs_live_"),
            "metadata": {},
            "mode": "payment",
            "payment_intent": format!("pi_{}", self.id.trim_start_matches("cs_")),
            "payment_method_types": [self.payment_method],
            "payment_status": self.payment_status,
            "status": self.status,
            "subscription": null,
            "url": null
        });
        (session, items)
    }
}

/// A Stripe event wrapping `object`, as the webhook body Stripe would send
/// (pretty-printed, like Stripe's).
pub fn event_body(event_id: &str, kind: &str, object: &Value) -> String {
    let mut object = object.clone();
    if let Some(o) = object.as_object_mut() {
        // Webhook payloads never include line items.
        o.remove("line_items");
    }
    serde_json::to_string_pretty(&json!({
        "id": event_id,
        "object": "event",
        "api_version": crate::config::DEFAULT_STRIPE_API_VERSION,
        "created": crate::time::now_secs(),
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind
    }))
    .unwrap_or_default()
}
