//! The HTTP surface (CONTRACT.md "HTTP surface"): routes, shared state and
//! response helpers. Handlers live in one module per route family.

mod admin;
mod api;
mod assets;
pub mod auth;
pub mod client;
pub mod dto;
pub mod error;
mod export;
pub mod extract;
mod headers;
mod landing;
pub mod limits;
mod login;
mod ops;
pub mod rate;
mod retrigger;
pub mod serve;
mod webhook;

use std::sync::Arc;

use poem::{
    Endpoint, EndpointExt, Response, Route, get,
    http::{HeaderValue, StatusCode, header},
    post,
};
use serde::Serialize;

use crate::{config::Secret, fulfill::Fulfiller, webhook_log::WebhookLog};
use auth::AdminAuth;

/// Largest webhook body accepted (Stripe's are a few KB).
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;

/// Landing-page lookups of sessions not yet known here (each asks Stripe)
/// that may run at once: anyone can request the page, and Stripe's rate
/// limit is shared with fulfillment.
pub const UNKNOWN_LOOKUPS: usize = 4;

/// What every handler can reach.
pub struct AppState {
    pub fulfiller: Arc<Fulfiller>,
    pub webhook_secrets: Vec<Secret>,
    pub tolerance_secs: u64,
    pub api_token: Option<Secret>,
    pub auth: AdminAuth,
    /// `scheme://host[:port]` of `server.public_url`, for Origin checks.
    pub public_origin: String,
    pub webhook_log: WebhookLog,
    pub lookups: tokio::sync::Semaphore,
    /// The budget of unknown-id lookups (`rate`).
    pub unknown_lookups: rate::Limiter,
    pub started: std::time::Instant,
    /// Whether `stripe.secret_key` is a live key (events of the other mode are warned about).
    pub live_key: bool,
    /// The database file; backups through the API go next to it.
    pub db_path: std::path::PathBuf,
    /// A per-boot secret in a file beside the database (mode 0600), so
    /// `fulfilld backup` on the same machine can reach this server without
    /// `admin.api_token`.
    pub local_token: Option<Secret>,
    /// Set once a mode mismatch has been logged, so the log is not flooded.
    pub mode_warned: std::sync::atomic::AtomicBool,
    /// When the last health probe succeeded (probes write, so they are cached briefly).
    pub healthy_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// `server.trusted_proxies`: see [`client::client_addr`].
    pub trusted_proxies: crate::config::TrustedProxies,
    /// Digital delivery's products, files and key files (empty when off).
    pub catalogue: Arc<crate::delivery::Catalogue>,
    /// Bytes of request bodies held at once, across all connections.
    pub body_budget: limits::BodyBudget,
    /// The shop on customer pages (`shop.*`, and which emails are sent).
    pub shop: crate::views::landing::Shop,
}

impl AppState {
    pub fn new(
        fulfiller: Arc<Fulfiller>,
        webhook_secrets: Vec<Secret>,
        tolerance_secs: u64,
        api_token: Option<Secret>,
        auth: AdminAuth,
        public_url: &str,
    ) -> Self {
        let public_origin = match public_url.split_once("://") {
            Some((scheme, rest)) => {
                format!("{scheme}://{}", rest.split('/').next().unwrap_or_default())
            }
            None => String::new(),
        };
        AppState {
            fulfiller,
            webhook_secrets,
            tolerance_secs,
            api_token,
            auth,
            public_origin,
            webhook_log: WebhookLog::new(),
            lookups: tokio::sync::Semaphore::new(UNKNOWN_LOOKUPS),
            unknown_lookups: rate::Limiter::new(
                rate::UNKNOWN_LOOKUPS_GLOBAL,
                rate::UNKNOWN_LOOKUPS_PER_CLIENT,
            ),
            healthy_at: std::sync::Mutex::new(None),
            body_budget: limits::BodyBudget::default(),
            started: std::time::Instant::now(),
            live_key: false,
            db_path: std::path::PathBuf::new(),
            local_token: None,
            mode_warned: std::sync::atomic::AtomicBool::new(false),
            trusted_proxies: crate::config::TrustedProxies::default(),
            catalogue: Arc::default(),
            shop: Default::default(),
        }
    }
}

pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    // Outermost, so every answer (poem's 404/405 and other middleware's
    // refusals included) carries nosniff, and HSTS when public_url is https.
    let security_headers = headers::SecurityHeaders::for_origin(&state.public_origin);
    let budget = state.body_budget.clone();
    let metrics = state.fulfiller.metrics().clone();
    Route::new()
        .at("/webhook", post(webhook::receive))
        .at("/after-checkout", get(landing::after_checkout))
        .at(
            "/after-checkout/status",
            get(landing::after_checkout_status),
        )
        .at("/healthz", get(ops::healthz))
        .at("/metrics", get(ops::metrics))
        .at("/admin", get(admin::sessions))
        .at("/admin/", get(admin::sessions))
        .at("/admin/sessions", get(admin::sessions))
        .at("/admin/login", get(login::login_page).post(login::login))
        .at("/admin/logout", post(login::logout))
        .at("/admin/sessions/:id", get(admin::session))
        .at("/admin/sessions/:id/fulfill", post(admin::fulfill))
        .at(
            "/admin/sessions/:id/notifications/:nid/resend",
            post(admin::resend),
        )
        .at("/admin/webhooks", get(admin::webhooks))
        .at("/admin/api/backup", post(api::backup))
        .at("/admin/api/sessions", get(api::list_sessions))
        .at("/admin/api/sessions.csv", get(export::sessions_csv))
        .at("/admin/api/sessions/:id", get(api::get_session))
        .at(
            "/admin/api/sessions/:id/fulfill",
            post(api::fulfill_session),
        )
        .at("/assets/*path", get(assets::serve))
        .data(state)
        // Every body is read under its route's limit before a handler runs.
        .around(move |next, req| limits::limit_bodies(next, req, budget.clone()))
        .around(with_request_id)
        .around(move |next, req| count_requests(next, req, metrics.clone()))
        .with(security_headers)
}

/// Counts every answer by route and status for `/metrics` (refusals by the
/// middleware inside, like a body over its limit, included).
async fn count_requests<E: Endpoint>(
    next: Arc<E>,
    req: poem::Request,
    metrics: Arc<crate::metrics::Metrics>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    let response = next.get_response(req).await;
    metrics.http_request(&path, response.status().as_u16());
    Ok(response)
}

/// Gives every request an id (the caller's `X-Request-Id` when it is sane),
/// runs it inside a tracing span carrying that id, and echoes the id back,
/// so every log line about a request can be found from the response.
async fn with_request_id<E: Endpoint>(next: Arc<E>, req: poem::Request) -> poem::Result<Response> {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_string)
        // Not a secret: unique enough to find a request's lines.
        .unwrap_or_else(|| {
            let (a, b) = (crate::time::jitter_entropy(), crate::time::jitter_entropy());
            format!("req_{a:016x}{b:016x}")
        });
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let start = std::time::Instant::now();
    let mut response = next.get_response(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        // A body refused by `limits` (e.g. 503 over the body budget) is
        // anyone's doing, so it must not cost a warning line each.
        if status >= 500 && response.extensions().get::<limits::Refused>().is_none() {
            tracing::warn!(status, ms, "request failed");
        } else {
            tracing::debug!(status, ms, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    Ok(response)
}

/// Spawns work that a request started, in the request's span: the task may
/// outlive the response (so a client that goes away never cuts it short),
/// and its log lines still carry the request id.
pub(crate) fn spawn_in_request_span<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(work.instrument(tracing::Span::current()))
}

/// Headers every HTML page carries: no inline script (only the page's own
/// file, which asks `/after-checkout/status`), no framing, no sniffing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's policy: as above, plus its own script file.
const ADMIN_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                         base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(crate) fn html(status: StatusCode, markup: maud::Markup) -> Response {
    html_with(status, markup, CSP)
}

pub(crate) fn html_admin(status: StatusCode, markup: maud::Markup) -> Response {
    let mut r = html_with(status, markup, ADMIN_CSP);
    let h = r.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the
    // dashboard's own form posts. `same-origin` still tells other sites nothing.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

fn html_with(status: StatusCode, markup: maud::Markup, csp: &'static str) -> Response {
    let mut r = Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string());
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(csp));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A JSON answer (`no-store`, `nosniff`). A body that cannot be encoded (not
/// expected from the types in `dto`) is a logged, opaque 500.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let (status, body) = match serde_json::to_string(body) {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a JSON response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":{"message":"internal error"}}"#.to_string(),
            )
        }
    };
    let mut r = Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body);
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub(crate) fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .finish()
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .body(body.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::Instrument;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn spawned_work_logs_under_the_request_span() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("request", id = "req_abc");
        async {
            super::spawn_in_request_span(async { tracing::info!("inside the task") })
                .await
                .unwrap();
            tokio::spawn(async { tracing::info!("a bare spawn") })
                .await
                .unwrap();
        }
        .instrument(span)
        .await;
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let line = |needle: &str| {
            log.lines()
                .find(|l| l.contains(needle))
                .unwrap()
                .to_string()
        };
        assert!(line("inside the task").contains("req_abc"), "{log}");
        // What the helper is for: a bare spawn loses the request id.
        assert!(!line("a bare spawn").contains("req_abc"), "{log}");
    }
}
