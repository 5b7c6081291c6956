//! The HTML dashboard under `/admin`: sessions, one session, the re-trigger,
//! notification resends and the webhook log. Every page needs a login
//! ([`SignedIn`]); every POST needs the session's CSRF token and a
//! same-origin request ([`CsrfChecked`], 403 without). Sign-in and sign-out
//! live in `login`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use poem::{
    Response, handler,
    http::StatusCode,
    web::{Data, Path, Query},
};
use serde::Deserialize;

use super::{
    AppState,
    auth::AdminSession,
    error::{AsText, HttpError},
    extract::{CsrfChecked, CsrfForm, SignedIn},
    html_admin,
    login::CsrfOnly,
    retrigger::{ForceForm, Retriggered, Wish, form_force, retrigger},
    see_other,
};
use crate::{
    model::{EventRecord, Notification, SessionDetail, SessionId, SessionRecord, State},
    store::{ListQuery, Page, parse_cursor},
    views::admin::{self as view, Chrome, DetailView, Flash, ListView, Nav},
    webhook_log::Filter,
};

/// Sessions per list page.
pub const PAGE_SIZE: usize = 50;
/// How long the re-trigger waits for its attempt before showing "still working".
const FULFILL_WAIT: Duration = Duration::from_secs(10);
/// Entries the webhook log page shows.
const LOG_PAGE: usize = 200;

fn chrome(s: &AdminSession, nav: Nav) -> Chrome<'_> {
    Chrome {
        username: &s.username,
        csrf: &s.csrf,
        nav,
    }
}

/// A dashboard page's answer to an error: 404 and 5xx as pages in the
/// dashboard's frame (the 5xx says only that the database did not answer;
/// its cause is logged), anything else as text.
fn page_error(s: &AdminSession, e: HttpError) -> Response {
    e.render(|status, message| match status {
        StatusCode::NOT_FOUND => html_admin(
            status,
            view::problem(
                &chrome(s, Nav::Sessions),
                "No such session",
                "fulfilld has no record of this Checkout Session. It appears here once Stripe sends an event about it or the customer reaches the landing page.",
            ),
        ),
        s5xx if s5xx.is_server_error() => html_admin(
            status,
            view::problem(
                &chrome(s, Nav::Sessions),
                "Database unavailable",
                "The database could not be read just now. Nothing was changed; try again in a moment.",
            ),
        ),
        _ => super::text(status, message),
    })
}

/// A form post's answer to an error: a 5xx as the dashboard's page, a 4xx
/// as text (the form's caller is the dashboard itself).
fn post_error(s: &AdminSession, e: HttpError) -> Response {
    if e.status().is_server_error() {
        page_error(s, e)
    } else {
        poem::Error::from(AsText(e)).into_response()
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    state: Option<String>,
    refund_status: Option<String>,
    disputed: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
}

#[handler]
pub async fn sessions(
    SignedIn(s): SignedIn,
    Query(p): Query<ListParams>,
    state: Data<&Arc<AppState>>,
) -> Response {
    // Unknown filters and cursors fall back to the first page rather than erroring.
    let filter = p.state.as_deref().and_then(State::parse);
    let cursor = p.cursor.as_deref().and_then(parse_cursor);
    let q =
        p.q.map(|q| q.trim().chars().take(200).collect::<String>())
            .filter(|q| !q.is_empty());
    let first_page = cursor.is_none();
    let refund_status = p
        .refund_status
        .as_deref()
        .and_then(crate::model::RefundStatus::parse);
    let disputed = p.disputed.as_deref() == Some("true");
    let query = ListQuery {
        state: filter,
        refund_status,
        disputed,
        q: q.clone(),
        cursor,
        limit: PAGE_SIZE,
    };
    match list(&state, query).await {
        Ok((page, counts)) => html_admin(
            StatusCode::OK,
            view::sessions(
                &chrome(&s, Nav::Sessions),
                &ListView {
                    counts: &counts,
                    state: filter,
                    refund_status,
                    disputed,
                    q: q.as_deref(),
                    rows: &page.sessions,
                    next_cursor: page.next_cursor.as_deref(),
                    first_page,
                },
            ),
        ),
        Err(e) => page_error(&s, e),
    }
}

async fn list(
    state: &AppState,
    query: ListQuery,
) -> Result<(Page<SessionRecord>, Vec<(State, u64)>), HttpError> {
    let store = state.fulfiller.store();
    let read = async {
        Ok::<_, crate::store::StoreError>((store.list(query).await?, store.state_counts().await?))
    };
    read.await
        .map_err(|e| HttpError::store("dashboard cannot read the database", e))
}

type Loaded = (
    SessionRecord,
    SessionDetail,
    HashMap<String, EventRecord>,
    Vec<Notification>,
);

/// A session with everything its page shows, read from one snapshot.
async fn load(state: &AppState, id: &str) -> Result<Option<Loaded>, HttpError> {
    let Some(id) = SessionId::parse(id) else {
        return Ok(None);
    };
    let view = state
        .fulfiller
        .store()
        .session_view(&id)
        .await
        .map_err(|e| HttpError::store("dashboard cannot read the database", e))?;
    Ok(view.map(|v| (v.session.rec, v.session.detail, v.events, v.notifications)))
}

#[derive(Deserialize)]
pub struct DetailParams {
    result: Option<String>,
}

#[handler]
pub async fn session(
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    Query(p): Query<DetailParams>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let not_found = || page_error(&s, HttpError::NotFound("no such session"));
    if SessionId::parse(&id).is_none() {
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
        Err(e) => page_error(&s, e),
    }
}

#[derive(Deserialize)]
pub struct FulfillForm {
    csrf: Option<String>,
    force: Option<String>,
    /// The confirmation checkbox of the force form (`yes`).
    confirm: Option<String>,
    /// The fulfillment count the force form's page showed.
    seen: Option<String>,
}

impl CsrfForm for FulfillForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

#[handler]
pub async fn fulfill(
    Path(id): Path<String>,
    CsrfChecked { admin, form }: CsrfChecked<FulfillForm>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let force = form.force.as_deref() == Some("true");
    let wish = if force {
        match form_force(ForceForm {
            confirm: form.confirm.as_deref(),
            seen: form.seen.as_deref(),
        }) {
            Ok(w) => w,
            Err(e) => return post_error(&admin, e),
        }
    } else {
        Wish::Fulfil
    };
    let flash = match retrigger(&state, &id, wish, admin.username.clone(), FULFILL_WAIT).await {
        Ok(Retriggered::Done(outcome)) => match (outcome.state, outcome.fulfillment_id.is_some()) {
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
        // The attempt goes on in the background; its outcome shows on reload.
        Ok(Retriggered::Pending) => Flash::Pending,
        // A second submit of the same force form: nothing more was done.
        Ok(Retriggered::AlreadyDone(_)) => Flash::AlreadyForced,
        // The attempt failed to record or crashed (logged): said on the session page.
        Ok(Retriggered::Failed(e)) => e.render(|_, _| Flash::Error),
        // Refused before anything started: no session page to return to.
        Err(e) => return post_error(&admin, e),
    };
    see_other(&format!("/admin/sessions/{id}?result={}", flash.code()))
}

#[handler]
pub async fn resend(
    Path((id, nid)): Path<(String, String)>,
    CsrfChecked { admin: s, .. }: CsrfChecked<CsrfOnly>,
    state: Data<&Arc<AppState>>,
) -> Response {
    let Some(id) = SessionId::parse(&id).filter(|_| nid.len() <= 300) else {
        return post_error(&s, HttpError::NotFound("no such session"));
    };
    let flash = match state.fulfiller.resend_notification(&id, &nid).await {
        Ok(true) => {
            tracing::info!(session = %id, notification = %nid, user = %s.username, "admin resent a notification");
            Flash::Resent
        }
        Ok(false) => Flash::NotResent,
        Err(e) => HttpError::store("cannot queue a resend", e).render(|_, _| Flash::Error),
    };
    see_other(&format!("/admin/sessions/{id}?result={}", flash.code()))
}

#[derive(Deserialize)]
pub struct LogParams {
    filter: Option<String>,
}

#[handler]
pub async fn webhooks(
    SignedIn(s): SignedIn,
    Query(p): Query<LogParams>,
    state: Data<&Arc<AppState>>,
) -> Response {
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
