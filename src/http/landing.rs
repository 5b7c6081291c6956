//! `GET /after-checkout?session_id=cs_…`: runs fulfillment for the session
//! (bounded wait), then shows the customer what they got.

use std::{sync::Arc, time::Duration};

use poem::{Request, Response, handler, http::StatusCode, web::Data};

use super::{AppState, html};
use crate::{
    fulfill::FulfillOptions,
    model::{SessionId, State, Trigger},
    views::landing::{Landing, render},
};

/// How long the customer waits for fulfillment before seeing a "processing" page.
const WAIT: Duration = Duration::from_secs(8);

#[handler]
pub async fn after_checkout(req: &Request, state: Data<&Arc<AppState>>) -> Response {
    // Session ids are `cs_` + letters, digits and underscores: anything
    // percent-encoded is malformed, so the raw query value is checked as is.
    let id = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("session_id="))
        .unwrap_or_default()
        .to_string();
    let Some(id) = SessionId::parse(&id) else {
        return html(StatusCode::BAD_REQUEST, render(&Landing::BadRequest));
    };
    let fulfiller = state.fulfiller.clone();
    let known = fulfiller.store().session(&id).await;
    let known = match known {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "landing page cannot read the store");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                render(&Landing::Unavailable),
            );
        }
    };
    let mut opts = FulfillOptions::default();
    if known.is_none() {
        // Unknown here: ask Stripe before storing anything, so made-up ids
        // leave no trace.
        let lookup = async {
            let _permit = state.lookups.acquire().await;
            fulfiller.stripe().retrieve_session(id.as_str()).await
        };
        match tokio::time::timeout(WAIT, lookup).await {
            Ok(Ok(retrieved)) if retrieved.session.status.as_deref() == Some("open") => {
                // Not completed: nothing to fulfil, nothing to store.
                return html(StatusCode::OK, render(&Landing::NotCompleted));
            }
            Ok(Ok(retrieved)) => opts.prefetched = Some(retrieved),
            Ok(Err(e)) if e.is_not_found() => {
                return html(StatusCode::NOT_FOUND, render(&Landing::NotFound));
            }
            Ok(Err(e)) => {
                tracing::warn!(session = %id, error = %e, "landing page cannot retrieve session");
                return html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    render(&Landing::Unavailable),
                );
            }
            Err(_) => {
                return html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    render(&Landing::Unavailable),
                );
            }
        }
    }
    // Fulfillment runs in its own task so a customer closing the page never
    // cuts an attempt short; the page waits for it only so long.
    let task = {
        let (fulfiller, id) = (fulfiller.clone(), id.clone());
        tokio::spawn(async move {
            fulfiller
                .fulfill_checkout(&id, Trigger::LandingPage, opts)
                .await
        })
    };
    match tokio::time::timeout(WAIT, task).await {
        Ok(Ok(Err(e))) => {
            // The store could not record the claim (a full disk, say): the
            // customer is told to try again, never that the order is unknown.
            tracing::error!(session = %id, error = %e, "landing page fulfillment failed");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                render(&Landing::Unavailable),
            );
        }
        Ok(Err(e)) => {
            tracing::error!(session = %id, error = %e, "landing page fulfillment task failed")
        }
        _ => {}
    }
    let snapshot = fulfiller.store().session_full(&id).await;
    let (rec, detail) = match snapshot {
        Ok(Some(s)) => (s.rec, s.detail),
        Ok(None) => return html(StatusCode::NOT_FOUND, render(&Landing::NotFound)),
        Err(e) => {
            tracing::error!(error = %e, "landing page cannot read the store");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                render(&Landing::Unavailable),
            );
        }
    };
    let has_fulfillment = !detail.fulfillments.is_empty();
    let view = match rec.state {
        State::Fulfilled => Landing::Receipt(&rec, &detail),
        _ if has_fulfillment => Landing::Receipt(&rec, &detail),
        State::AwaitingPayment => Landing::PaymentProcessing(&rec),
        State::PaymentFailed => Landing::PaymentFailed(&rec),
        State::Expired => Landing::Expired,
        State::Fulfilling | State::Retrying => Landing::InProgress,
        State::Failed => Landing::NeedsAttention,
    };
    html(StatusCode::OK, render(&view))
}
