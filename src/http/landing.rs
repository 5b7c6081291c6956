//! `GET /after-checkout?session_id=cs_…`: runs fulfillment for the session
//! (bounded wait), then shows the customer what they got.

use std::{sync::Arc, time::Duration};

use poem::{Request, Response, handler, http::StatusCode, web::Data};

use super::{AppState, error::HttpError, html, spawn_in_request_span};
use crate::{
    fulfill::FulfillOptions,
    model::{SessionDetail, SessionId, SessionRecord, State, Trigger},
    views::{
        landing::{Landing, render},
        words::Lang,
    },
};

/// Anyone can send made-up ids: the line about rationing them is rate limited.
static RATIONED_LOG: crate::log_limit::LogLimit =
    crate::log_limit::LogLimit::new("landing lookups rationed", 20);

/// How long the customer waits for fulfillment before seeing a "processing" page.
const WAIT: Duration = Duration::from_secs(8);

#[handler]
pub async fn after_checkout(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    // Session ids are `cs_` + letters, digits and underscores: anything
    // percent-encoded is malformed, so the raw query value is checked as is.
    let id = session_param(req);
    let shop = &state.shop;
    let accept = req
        .headers()
        .get(poem::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let browser = Lang::pick(None, accept);
    match resolve(req, &state, id).await {
        Ok(Resolved::NotCompleted) => html(
            StatusCode::OK,
            render(&Landing::NotCompleted, shop, browser),
        ),
        Ok(Resolved::SetupSaved) => {
            html(StatusCode::OK, render(&Landing::SetupSaved, shop, browser))
        }
        Ok(Resolved::Busy(wait)) => busy(&state, wait, browser),
        Ok(Resolved::Session(s)) => {
            let (rec, detail) = &*s;
            // What the customer saw at checkout, else what their browser asks for.
            let lang = Lang::pick(rec.locale.as_deref(), accept);
            html(StatusCode::OK, render(&view_of(rec, detail), shop, lang))
        }
        // The customer's pages: a fixed text per status, never the input.
        Err(e) => e.render(|status, _| {
            let view = match status {
                StatusCode::BAD_REQUEST => Landing::BadRequest,
                StatusCode::NOT_FOUND => Landing::NotFound,
                _ => Landing::Unavailable,
            };
            html(status, render(&view, shop, browser))
        }),
    }
}

/// `GET /after-checkout/status?session_id=cs_…`: what the landing page would
/// show now, as `{"view": "processing"}`, for the page's script to reload
/// when it changes. The same rules as the page: a re-check with Stripe at
/// most once a minute per session, nothing written when nothing changed.
#[handler]
pub async fn after_checkout_status(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    let id = session_param(req);
    let view = match resolve(req, &state, id).await {
        Ok(Resolved::NotCompleted) => "not_completed",
        Ok(Resolved::SetupSaved) => "setup_saved",
        Ok(Resolved::Busy(wait)) => {
            let mut r = super::json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({"view": "unavailable"}),
            );
            if let Ok(v) = poem::http::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(poem::http::header::RETRY_AFTER, v);
            }
            return r;
        }
        Ok(Resolved::Session(s)) => view_of(&s.0, &s.1).key(),
        Err(e) => {
            return e.render(|status, _| {
                let view = match status {
                    StatusCode::BAD_REQUEST => "bad_request",
                    StatusCode::NOT_FOUND => "not_found",
                    _ => "unavailable",
                };
                super::json_response(status, &serde_json::json!({"view": view}))
            });
        }
    };
    super::json_response(StatusCode::OK, &serde_json::json!({"view": view}))
}

/// What the landing page found.
enum Resolved {
    NotCompleted,
    SetupSaved,
    /// The unknown-id budget cannot afford a lookup now.
    Busy(Duration),
    Session(Box<(SessionRecord, SessionDetail)>),
}

/// The raw `session_id` of the query (see `after_checkout`).
fn session_param(req: &Request) -> &str {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("session_id="))
        .unwrap_or_default()
}

/// The page for a recorded session.
fn view_of<'a>(rec: &'a SessionRecord, detail: &'a SessionDetail) -> Landing<'a> {
    let has_fulfillment = !detail.fulfillments.is_empty();
    match rec.state {
        _ if rec.mode.as_deref() == Some("setup") => Landing::SetupSaved,
        State::Fulfilled => Landing::Receipt(rec, detail),
        _ if has_fulfillment => Landing::Receipt(rec, detail),
        State::AwaitingPayment => Landing::PaymentProcessing(rec),
        State::PaymentFailed => Landing::PaymentFailed(rec),
        State::Expired => Landing::Expired,
        State::Fulfilling | State::Retrying => Landing::InProgress,
        State::Failed => Landing::NeedsAttention,
    }
}

async fn resolve(req: &Request, state: &AppState, id: &str) -> Result<Resolved, HttpError> {
    let Some(id) = SessionId::parse(id) else {
        return Err(HttpError::BadRequest("malformed session id"));
    };
    let id = &id;
    let fulfiller = state.fulfiller.clone();
    let mut opts = FulfillOptions::default();
    if !known(state, id).await? {
        // Unknown here: ask Stripe before storing anything, so made-up ids
        // leave no trace. Each such lookup spends the account's Stripe
        // budget, so it is rationed (per client and overall), tried once,
        // and a few at most run at a time; sessions already recorded never
        // wait for any of this.
        let client = super::client::client_addr(req, state);
        if let Err(wait) = state
            .unknown_lookups
            .admit(client, std::time::Instant::now())
        {
            if RATIONED_LOG.admit() {
                tracing::info!(client = %client, "landing page: unknown-id lookups rationed");
            }
            return Ok(Resolved::Busy(wait));
        }
        let Ok(_permit) = state.lookups.try_acquire() else {
            return Ok(Resolved::Busy(Duration::from_secs(1)));
        };
        let lookup = fulfiller.stripe().lookup_session(id.as_str());
        match tokio::time::timeout(WAIT, lookup).await {
            Ok(Ok(retrieved)) if retrieved.session.status.as_deref() == Some("open") => {
                // Not completed: nothing to fulfil, nothing to store.
                return Ok(Resolved::NotCompleted);
            }
            Ok(Ok(retrieved)) if retrieved.session.mode.as_deref() == Some("setup") => {
                // A saved payment method: never fulfilled, so nothing to store.
                return Ok(Resolved::SetupSaved);
            }
            Ok(Ok(retrieved)) => opts.prefetched = Some(retrieved),
            Ok(Err(e)) if e.is_not_found() => return Err(HttpError::NotFound("no such session")),
            Ok(Err(e)) => {
                return Err(HttpError::unavailable(
                    "try again",
                    "landing page cannot retrieve session",
                    Some(e.into()),
                ));
            }
            Err(_) => {
                return Err(HttpError::unavailable(
                    "try again",
                    "landing page: Stripe did not answer in time",
                    None,
                ));
            }
        }
    }
    // Fulfillment runs in its own task so a customer closing the page never
    // cuts an attempt short; the page waits for it only so long. The task
    // keeps the request's span, so its logs carry the request id.
    let task = {
        let (fulfiller, id) = (fulfiller.clone(), id.clone());
        spawn_in_request_span(async move {
            fulfiller
                .fulfill_checkout(&id, Trigger::LandingPage, opts)
                .await
        })
    };
    match tokio::time::timeout(WAIT, task).await {
        Ok(Ok(Err(e))) => {
            // The claim could not be stored (a full disk, say): the customer
            // is told to try again, never that the order is unknown.
            return Err(HttpError::unavailable(
                "try again",
                "landing page fulfillment failed",
                Some(e.into()),
            ));
        }
        Ok(Err(e)) => {
            tracing::error!(session = %id, error = %e, "landing page fulfillment task failed")
        }
        _ => {}
    }
    let Some((rec, detail)) = snapshot(state, id).await? else {
        // Stripe knows the session, but its claim was not recorded in time
        // (a slow disk): "try again", never "no such order".
        return Err(HttpError::unavailable(
            "try again",
            "landing page: the session is not recorded yet",
            None,
        ));
    };
    Ok(Resolved::Session(Box::new((rec, detail))))
}

/// The calm "try again shortly" page, with `Retry-After`, for a lookup the
/// budget cannot afford now.
fn busy(state: &AppState, wait: Duration, lang: Lang) -> Response {
    let mut r = html(
        StatusCode::TOO_MANY_REQUESTS,
        render(&Landing::Unavailable, &state.shop, lang),
    );
    let secs = wait.as_secs().max(1);
    if let Ok(v) = poem::http::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(poem::http::header::RETRY_AFTER, v);
    }
    r
}

/// Whether the session is already recorded here.
async fn known(state: &AppState, id: &SessionId) -> Result<bool, HttpError> {
    state
        .fulfiller
        .store()
        .session(id)
        .await
        .map(|s| s.is_some())
        .map_err(|e| HttpError::store("landing page cannot read the store", e))
}

/// The session and what the customer got, from one snapshot.
async fn snapshot(
    state: &AppState,
    id: &SessionId,
) -> Result<Option<(SessionRecord, SessionDetail)>, HttpError> {
    state
        .fulfiller
        .store()
        .session_full(id)
        .await
        .map(|s| s.map(|s| (s.rec, s.detail)))
        .map_err(|e| HttpError::store("landing page cannot read the store", e))
}
