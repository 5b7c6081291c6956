//! The HTML dashboard under `/admin`: login, sessions, one session, the
//! re-trigger and the webhook log. Every page needs a login; every POST
//! needs the session's CSRF token (403 without) and a same-origin request.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use poem::{
    Request, Response, handler,
    http::{StatusCode, header},
    web::{Data, Form, Path, Query},
};
use serde::Deserialize;

use super::{
    AppState,
    auth::{AdminSession, LoginResult, csrf_ok},
    html_admin,
};
use crate::{
    fulfill::FulfillOptions,
    model::{
        EventRecord, Notification, SessionDetail, SessionId, SessionRecord, State, Trigger,
        is_session_id,
    },
    store::{ListQuery, StoreError, parse_cursor},
    views::admin::{self as view, Chrome, DetailView, Flash, ListView, Nav},
    webhook_log::Filter,
};

/// Sessions per list page.
pub const PAGE_SIZE: usize = 50;
/// How long the re-trigger waits for its attempt before showing "still working".
const FULFILL_WAIT: Duration = Duration::from_secs(10);
/// Entries the webhook log page shows.
const LOG_PAGE: usize = 200;

pub(crate) fn remote_ip(req: &Request) -> Option<IpAddr> {
    req.remote_addr().as_socket_addr().map(|a| a.ip())
}

fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .finish()
}

/// A local dashboard path to return to after login; anything else is dropped
/// (no open redirects).
fn safe_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| {
        n.starts_with("/admin")
            && !n.starts_with("/admin/login")
            && !n.starts_with("/admin/logout")
            && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
    })
}

/// A request whose `Origin` names another site is refused even with a valid
/// token: browsers send `Origin` on every cross-site POST. Same site means
/// the `Host` the request came to, or `server.public_url` (behind a proxy
/// that rewrites `Host`).
pub(crate) fn same_origin(req: &Request, public_origin: &str) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin.eq_ignore_ascii_case(public_origin) {
        return true;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

fn forbidden(message: &str) -> Response {
    super::text(StatusCode::FORBIDDEN, message)
}

/// A state-changing form from the dashboard itself: same origin, and this
/// session's CSRF token.
fn post_allowed(req: &Request, state: &AppState, s: &AdminSession, csrf: Option<&str>) -> bool {
    same_origin(req, &state.public_origin) && csrf_ok(s, csrf)
}

/// The signed-in admin behind a state-changing form, or a 403.
fn authorize_post(
    req: &Request,
    state: &AppState,
    csrf: Option<&str>,
) -> Result<AdminSession, Box<Response>> {
    let Some(s) = state.auth.session(req) else {
        return Err(Box::new(forbidden("sign in first")));
    };
    if !post_allowed(req, state, &s, csrf) {
        return Err(Box::new(forbidden("missing or invalid csrf token")));
    }
    Ok(s)
}

/// The signed-in admin, or a redirect to the login page (which returns here).
fn signed_in(req: &Request, state: &AppState) -> Result<AdminSession, Box<Response>> {
    state
        .auth
        .session(req)
        .ok_or_else(|| Box::new(to_login(req)))
}

fn to_login(req: &Request) -> Response {
    {
        let here = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/admin");
        match safe_next(Some(here)) {
            Some(next) if next != "/admin" => {
                see_other(&format!("/admin/login?next={}", view::enc(next)))
            }
            _ => see_other("/admin/login"),
        }
    }
}

fn chrome(s: &AdminSession, nav: Nav) -> Chrome<'_> {
    Chrome {
        username: &s.username,
        csrf: &s.csrf,
        nav,
    }
}

fn unavailable(s: &AdminSession, e: &StoreError) -> Response {
    tracing::error!(error = %e, "dashboard cannot read the database");
    html_admin(
        StatusCode::SERVICE_UNAVAILABLE,
        view::problem(
            &chrome(s, Nav::Sessions),
            "Database unavailable",
            "The database could not be read just now. Nothing was changed; try again in a moment.",
        ),
    )
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    logged_out: Option<String>,
}

#[handler]
pub async fn login_page(
    req: &Request,
    Query(q): Query<LoginQuery>,
    state: Data<&Arc<AppState>>,
) -> Response {
    if state.auth.session(req).is_some() {
        return see_other(safe_next(q.next.as_deref()).unwrap_or("/admin"));
    }
    let message = q.logged_out.is_some().then_some("You are signed out.");
    html_admin(
        StatusCode::OK,
        view::login(message, safe_next(q.next.as_deref()), ""),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

#[handler]
pub async fn login(
    req: &Request,
    Form(form): Form<LoginForm>,
    state: Data<&Arc<AppState>>,
) -> Response {
    if !same_origin(req, &state.public_origin) {
        return forbidden("cross-site login refused");
    }
    let ip = remote_ip(req);
    let next = safe_next(form.next.as_deref());
    // Bound what is echoed back into the form.
    let username: String = form.username.chars().take(200).collect();
    match state.auth.login(ip, &form.username, &form.password).await {
        LoginResult::Ok(token) => {
            tracing::info!(ip = ?ip, "admin signed in");
            let mut r = see_other(next.unwrap_or("/admin"));
            if let Ok(v) = state.auth.set_cookie(&token).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        LoginResult::Wrong => {
            // Not the typed username: people type passwords into it.
            tracing::warn!(ip = ?ip, "failed admin login");
            html_admin(
                StatusCode::UNAUTHORIZED,
                view::login(Some("Wrong username or password."), next, &username),
            )
        }
        LoginResult::Throttled(wait) => {
            tracing::warn!(ip = ?ip, "admin login refused: too many failures");
            let mut r = html_admin(
                StatusCode::TOO_MANY_REQUESTS,
                view::login(
                    Some(
                        "Too many failed attempts from your address. Wait a minute, then try again.",
                    ),
                    next,
                    &username,
                ),
            );
            if let Ok(v) = (wait.as_secs() + 1).to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        LoginResult::Unavailable => html_admin(
            StatusCode::SERVICE_UNAVAILABLE,
            view::login(
                Some("Signing in is unavailable right now. Try again in a moment."),
                next,
                &username,
            ),
        ),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

#[handler]
pub async fn logout(
    req: &Request,
    Form(form): Form<CsrfForm>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let Some(s) = state.auth.session(req) else {
        return see_other("/admin/login");
    };
    if !post_allowed(req, &state, &s, form.csrf.as_deref()) {
        return forbidden("missing or invalid csrf token");
    }
    state.auth.logout(req);
    tracing::info!(user = %s.username, "admin signed out");
    let mut r = see_other("/admin/login?logged_out=1");
    if let Ok(v) = state.auth.clear_cookie().parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub struct ListParams {
    state: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
}

#[handler]
pub async fn sessions(
    req: &Request,
    Query(p): Query<ListParams>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let s = match signed_in(req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    // Unknown filters and cursors fall back to the first page rather than erroring.
    let filter = p.state.as_deref().and_then(State::parse);
    let cursor = p.cursor.as_deref().and_then(parse_cursor);
    let q =
        p.q.map(|q| q.trim().chars().take(200).collect::<String>())
            .filter(|q| !q.is_empty());
    let first_page = cursor.is_none();
    let query = ListQuery {
        state: filter,
        q: q.clone(),
        cursor,
        limit: PAGE_SIZE,
    };
    let store = state.fulfiller.store();
    let read = match store.list(query).await {
        Ok(page) => store.state_counts().await.map(|counts| (page, counts)),
        Err(e) => Err(e),
    };
    match read {
        Ok((page, counts)) => html_admin(
            StatusCode::OK,
            view::sessions(
                &chrome(&s, Nav::Sessions),
                &ListView {
                    counts: &counts,
                    state: filter,
                    q: q.as_deref(),
                    rows: &page.sessions,
                    next_cursor: page.next_cursor.as_deref(),
                    first_page,
                },
            ),
        ),
        Err(e) => unavailable(&s, &e),
    }
}

type Loaded = (
    SessionRecord,
    SessionDetail,
    HashMap<String, EventRecord>,
    Vec<Notification>,
);

/// A session with everything its page shows, read from one snapshot.
async fn load(state: &AppState, id: &str) -> Result<Option<Loaded>, StoreError> {
    let Some(id) = SessionId::parse(id) else {
        return Ok(None);
    };
    let view = state.fulfiller.store().session_view(&id).await?;
    Ok(view.map(|v| (v.session.rec, v.session.detail, v.events, v.notifications)))
}

#[derive(Deserialize)]
pub struct DetailParams {
    result: Option<String>,
}

#[handler]
pub async fn session(
    req: &Request,
    Path(id): Path<String>,
    Query(p): Query<DetailParams>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let s = match signed_in(req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let not_found = || {
        html_admin(
            StatusCode::NOT_FOUND,
            view::problem(
                &chrome(&s, Nav::Sessions),
                "No such session",
                "fulfilld has no record of this Checkout Session. It appears here once Stripe sends an event about it or the customer reaches the landing page.",
            ),
        )
    };
    if !is_session_id(&id) {
        return not_found();
    }
    match load(&state, &id).await {
        Ok(Some((rec, detail, events, notifications))) => html_admin(
            StatusCode::OK,
            view::detail(
                &chrome(&s, Nav::Sessions),
                &DetailView {
                    rec: &rec,
                    detail: &detail,
                    events: &events,
                    notifications: &notifications,
                    flash: p.result.as_deref().and_then(Flash::parse),
                },
            ),
        ),
        Ok(None) => not_found(),
        Err(e) => unavailable(&s, &e),
    }
}

#[derive(Deserialize)]
pub struct FulfillForm {
    csrf: Option<String>,
    force: Option<String>,
}

#[handler]
pub async fn fulfill(
    req: &Request,
    Path(id): Path<String>,
    Form(form): Form<FulfillForm>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let s = match authorize_post(req, &state, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(id) = SessionId::parse(&id) else {
        return super::text(StatusCode::NOT_FOUND, "no such session");
    };
    match state.fulfiller.store().session(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return super::text(StatusCode::NOT_FOUND, "no such session"),
        Err(e) => return unavailable(&s, &e),
    }
    let force = form.force.as_deref() == Some("true");
    tracing::info!(session = %id, user = %s.username, force, "admin re-triggered fulfillment");
    let task = {
        let (fulfiller, id, actor) = (state.fulfiller.clone(), id.clone(), s.username.clone());
        tokio::spawn(async move {
            let opts = FulfillOptions {
                force,
                actor: Some(actor),
                prefetched: None,
            };
            fulfiller.fulfill_checkout(&id, Trigger::Admin, opts).await
        })
    };
    let flash = match tokio::time::timeout(FULFILL_WAIT, task).await {
        Ok(Ok(Ok(outcome))) => match (outcome.state, outcome.fulfillment_id.is_some()) {
            (State::Fulfilled, true) if force => Flash::Forced,
            (State::Fulfilled, true) => Flash::Fulfilled,
            (State::Fulfilled, false) => Flash::AlreadyFulfilled,
            (State::AwaitingPayment, _) => Flash::Unpaid,
            (State::Retrying, _) => Flash::Retrying,
            (State::Failed, _) => Flash::Failed,
            (State::PaymentFailed, _) => Flash::PaymentFailed,
            (State::Expired, _) => Flash::Expired,
            (State::Fulfilling, _) => Flash::Pending,
        },
        Ok(Ok(Err(e))) => {
            tracing::error!(session = %id, error = %e, "re-trigger failed");
            Flash::Error
        }
        Ok(Err(_)) => Flash::Error,
        // The attempt goes on in the background; its outcome shows on reload.
        Err(_) => Flash::Pending,
    };
    see_other(&format!("/admin/sessions/{id}?result={}", flash.code()))
}

#[handler]
pub async fn resend(
    req: &Request,
    Path((id, nid)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let s = match authorize_post(req, &state, form.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(id) = SessionId::parse(&id).filter(|_| nid.len() <= 300) else {
        return super::text(StatusCode::NOT_FOUND, "no such session");
    };
    let flash = match state.fulfiller.resend_notification(&id, &nid).await {
        Ok(true) => {
            tracing::info!(session = %id, notification = %nid, user = %s.username, "admin resent a notification");
            Flash::Resent
        }
        Ok(false) => Flash::NotResent,
        Err(e) => {
            tracing::error!(session = %id, error = %e, "cannot queue a resend");
            Flash::Error
        }
    };
    see_other(&format!("/admin/sessions/{id}?result={}", flash.code()))
}

#[derive(Deserialize)]
pub struct LogParams {
    filter: Option<String>,
}

#[handler]
pub async fn webhooks(
    req: &Request,
    Query(p): Query<LogParams>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let s = match signed_in(req, &state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let filter = match p.filter.as_deref() {
        Some("accepted") => Filter::Accepted,
        Some("rejected") => Filter::Rejected,
        _ => Filter::All,
    };
    let entries = state.webhook_log.recent(filter, LOG_PAGE);
    html_admin(
        StatusCode::OK,
        view::webhooks(
            &chrome(&s, Nav::Webhooks),
            filter,
            &entries,
            state.webhook_log.totals(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_dashboard_paths_are_followed_after_login() {
        assert_eq!(
            safe_next(Some("/admin/sessions/cs_1")),
            Some("/admin/sessions/cs_1")
        );
        assert_eq!(safe_next(Some("https://evil.test/admin")), None);
        assert_eq!(safe_next(Some("//evil.test")), None);
        assert_eq!(safe_next(Some("/admin\\..")), None);
        assert_eq!(safe_next(Some("/admin/login")), None);
        assert_eq!(safe_next(None), None);
    }
}
