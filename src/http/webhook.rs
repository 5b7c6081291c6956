//! `POST /webhook`: verify the signature over the raw body, then record the
//! event durably, then answer. Nothing touches the disk before the signature
//! is verified, and nothing is acknowledged before it is durable.

use std::sync::Arc;

use poem::{Body, Request, Response, error::ReadBodyError, handler, http::StatusCode, web::Data};
use serde_json::json;

use super::{AppState, MAX_WEBHOOK_BODY, json_response, text};
use crate::{
    fulfill::Ingested,
    signature,
    stripe::{Event, Session},
    time::now_secs,
};

/// The longest a webhook body may take to arrive.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

#[handler]
pub async fn receive(req: &Request, body: Body, state: Data<&Arc<AppState>>) -> Response {
    // Stripe sends a few KB at once; a body that trickles in is not Stripe.
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, body.into_bytes_limit(MAX_WEBHOOK_BODY));
    let Ok(read) = read.await else {
        return text(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        );
    };
    let bytes = match read {
        Ok(b) => b,
        Err(ReadBodyError::PayloadTooLarge) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload too large: the limit is 1 MiB",
            );
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}")),
    };
    // A header that is not visible ASCII cannot hold a timestamp: malformed.
    let header = req
        .headers()
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or("not-ascii"));
    if let Err(reason) = signature::verify_stripe(
        header,
        &bytes,
        &state.webhook_secrets,
        state.tolerance_secs,
        now_secs(),
    ) {
        tracing::warn!(reason = reason.as_str(), "webhook rejected");
        return text(
            StatusCode::BAD_REQUEST,
            &format!("{}: {reason}", reason.as_str()),
        );
    }
    let raw = match String::from_utf8(bytes.to_vec()) {
        Ok(s) => s,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad_json: body is not UTF-8"),
    };
    let event: Event = match serde_json::from_str(&raw) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "webhook body is not a Stripe event");
            return text(
                StatusCode::BAD_REQUEST,
                "bad_json: body is not a Stripe event",
            );
        }
    };
    if event.id.is_empty() || event.id.len() > 255 || event.kind.is_empty() {
        return text(StatusCode::BAD_REQUEST, "bad_json: event has no id or type");
    }
    if event.kind.starts_with("checkout.session.")
        && event
            .data
            .as_ref()
            .and_then(|d| Session::from_value(&d.object))
            .is_none()
    {
        return text(
            StatusCode::BAD_REQUEST,
            "bad_json: a checkout.session event without a Checkout Session",
        );
    }
    let (event_id, kind) = (event.id.clone(), event.kind.clone());
    match state.fulfiller.ingest(raw, event).await {
        Ok(outcome) => {
            let outcome = match outcome {
                Ingested::Recorded => "recorded",
                Ingested::Ignored => "ignored",
                Ingested::Duplicate => "duplicate",
            };
            tracing::info!(event = %event_id, kind = %kind, outcome, "webhook");
            json_response(
                StatusCode::OK,
                &json!({"received": true, "outcome": outcome}),
            )
        }
        Err(e) => {
            // Not durable, so not acknowledged: Stripe will deliver it again.
            tracing::error!(event = %event_id, error = %e, "cannot record webhook");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unable to record the event",
            )
        }
    }
}
