//! `POST /webhook`: verify the signature over the raw body, then record the
//! event durably, then answer. Nothing touches the disk before the signature
//! is verified, and nothing is acknowledged before it is durable.

use std::sync::Arc;

use poem::{
    Body, Request, Response, handler,
    http::{HeaderMap, StatusCode},
    web::Data,
};

use super::{
    AppState, MAX_WEBHOOK_BODY,
    dto::WebhookAck,
    json_response,
    limits::{BodyError, read_body},
    text,
};
use crate::{
    fulfill::Ingested,
    log_limit::LogLimit,
    signature,
    stripe::Event,
    time::{now_ms, now_secs},
    webhook_log::{Entry, Outcome, Refusal, header_timestamp},
};

/// Rejected webhooks can come from anyone, so their log lines are rate
/// limited (the in-memory webhook log and the metrics still count each one).
static REJECTED_LOG: LogLimit = LogLimit::new("webhook rejected", 20);

#[handler]
pub async fn receive(req: &Request, body: Body, state: Data<&Arc<AppState>>) -> Response {
    let header = req
        .headers()
        .get("stripe-signature")
        // A header that is not visible ASCII cannot hold a timestamp: malformed.
        .map(|v| v.to_str().unwrap_or("not-ascii"));
    let now = now_secs();
    let (response, outcome, bytes) = handle(req.headers(), header, body, &state, now).await;
    let metrics = state.fulfiller.metrics();
    match &outcome {
        Outcome::Accepted {
            disposition,
            event_type,
            ..
        } => metrics.webhook(Some(event_type), disposition),
        Outcome::Refused(Refusal::Signature(r)) => {
            metrics.signature_failure(r.as_str());
            metrics.webhook(None, "rejected");
        }
        Outcome::Refused(Refusal::StoreUnavailable) => metrics.webhook(None, "error"),
        Outcome::Refused(_) => metrics.webhook(None, "rejected"),
    }
    state.webhook_log.push(Entry {
        seq: 0,
        at_ms: now_ms(),
        status: response.status().as_u16(),
        outcome,
        skew_secs: header
            .and_then(header_timestamp)
            .map(|t| now.saturating_sub(t)),
        secrets: state.webhook_secrets.len(),
        remote: Some(super::client::client_addr(req, &state).to_string()),
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(120).collect()),
        bytes,
    });
    response
}

fn refuse(
    status: StatusCode,
    refusal: Refusal,
    message: &str,
    bytes: usize,
) -> (Response, Outcome, usize) {
    (text(status, message), Outcome::Refused(refusal), bytes)
}

async fn handle(
    headers: &HeaderMap,
    header: Option<&str>,
    body: Body,
    state: &AppState,
    now: i64,
) -> (Response, Outcome, usize) {
    // The same limits as every route (`limits`), read here so that each
    // refusal reaches the webhook log with its reason.
    let bytes = match read_body(headers, body, MAX_WEBHOOK_BODY, &state.body_budget).await {
        Ok(held) => held,
        Err(e) => {
            let (refusal, bytes) = match &e {
                BodyError::TooLarge(_) => (Refusal::TooLarge, MAX_WEBHOOK_BODY),
                BodyError::Timeout => (Refusal::Timeout, 0),
                BodyError::OverBudget | BodyError::Unreadable(_) => (Refusal::Unreadable, 0),
            };
            let (response, outcome, bytes) = refuse(e.status(), refusal, &e.to_string(), bytes);
            return (e.finish(response), outcome, bytes);
        }
    };
    // Given back when the event is handled (the function returns).
    let (bytes, _share) = (bytes.bytes, bytes.share);
    let size = bytes.len();
    if let Err(reason) = signature::verify_stripe(
        header,
        &bytes,
        &state.webhook_secrets,
        state.tolerance_secs,
        now,
    ) {
        if REJECTED_LOG.admit() {
            tracing::warn!(reason = reason.as_str(), "webhook rejected");
        }
        return refuse(
            StatusCode::BAD_REQUEST,
            Refusal::Signature(reason),
            &format!("{}: {reason}", reason.as_str()),
            size,
        );
    }
    let bad_json = |message: &str| refuse(StatusCode::BAD_REQUEST, Refusal::BadJson, message, size);
    let raw = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => return bad_json("bad_json: body is not UTF-8"),
    };
    let event = match Event::parse(&raw) {
        Ok(e) => e,
        Err(e) => {
            if REJECTED_LOG.admit() {
                tracing::warn!(error = %e, "webhook body is not a Stripe event");
            }
            return bad_json("bad_json: body is not a Stripe event");
        }
    };
    if event.id.is_empty() || event.id.len() > 255 || event.kind.is_empty() {
        return bad_json("bad_json: event has no id or type");
    }
    // Stripe's are `evt_…` and dotted names; anything else (a control
    // character, a NUL PostgreSQL text cannot hold) is not an event.
    if !(event.id.bytes().all(|b| b.is_ascii_graphic())
        && event.kind.bytes().all(|b| b.is_ascii_graphic()))
    {
        return bad_json("bad_json: event id or type is not printable ASCII");
    }
    let session_id = event.session.as_ref().map(|s| s.id.clone());
    if event.kind.starts_with("checkout.session.") && session_id.is_none() {
        return bad_json("bad_json: a checkout.session event without a Checkout Session");
    }
    if event.livemode != state.live_key
        && !state
            .mode_warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            event = %event.id,
            event_livemode = event.livemode,
            "a {} event arrived, but stripe.secret_key is a {} key: is a webhook secret from the other mode in stripe.webhook_secrets? fulfilld cannot retrieve sessions of the other mode",
            if event.livemode { "live" } else { "test" },
            if state.live_key { "live" } else { "test" },
        );
    }
    let (event_id, kind) = (event.id.clone(), event.kind.clone());
    let reason = crate::fulfill::ignore_reason(&event);
    match state.fulfiller.ingest(raw, event).await {
        Ok(outcome) => {
            let disposition = match outcome {
                Ingested::Recorded | Ingested::Unmatched => "recorded",
                Ingested::Ignored => "ignored",
                Ingested::Duplicate => "duplicate",
            };
            let reason = match outcome {
                Ingested::Ignored => reason,
                Ingested::Unmatched => Some(crate::fulfill::UNMATCHED_REASON),
                _ => None,
            };
            tracing::info!(event = %event_id, kind = %kind, outcome = disposition, reason, "webhook");
            (
                json_response(
                    StatusCode::OK,
                    &WebhookAck {
                        received: true,
                        outcome: disposition,
                        reason,
                    },
                ),
                Outcome::Accepted {
                    disposition,
                    reason,
                    event_id,
                    event_type: kind.chars().take(100).collect(),
                    session_id,
                },
                size,
            )
        }
        Err(e) => {
            // Not durable, so not acknowledged: Stripe will deliver it again.
            tracing::error!(event = %event_id, error = %e, "cannot record webhook");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                Refusal::StoreUnavailable,
                "temporarily unable to record the event",
                size,
            )
        }
    }
}
