//! Request-body limits (CONTRACT.md "Internet-facing limits"): every body is
//! read here, before any handler sees it, so no route can be made to hold
//! more than its limit, for longer than the deadline, or beyond the global
//! budget.
//!
//! Guarantees, per request:
//! - a declared `Content-Length` over the route's limit is answered `413`
//!   before a byte of the body is read;
//! - a body without one (chunked) is counted as it streams and refused with
//!   `413` as soon as it passes the limit;
//! - the whole body must arrive within [`BODY_DEADLINE`] of the handler
//!   starting to read it, else `408`;
//! - the bytes held (the buffer's capacity, which is what is allocated) are
//!   taken from one budget shared by all connections, [`BODY_BUDGET`] bytes,
//!   and given back when the request is answered; a chunk that does not fit
//!   is answered `503` at once (with `Retry-After`), never queued, so stalled
//!   uploads cannot make others wait.
//!
//! Every refusal also closes the connection (`Connection: close`): the rest
//! of the body is never read.

use std::{sync::Arc, time::Duration};

use poem::{
    Body, Endpoint, IntoResponse, Request, Response,
    http::{HeaderMap, HeaderValue, StatusCode, header},
};
use tokio::{
    io::AsyncReadExt,
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// The longest a request body may take to arrive, from the moment its
/// headers are complete. Stripe sends a few KB at once and a browser form is
/// one packet, so 20 s is generous for genuine clients and short for a
/// slow-body (R.U.D.Y.) attacker.
pub const BODY_DEADLINE: Duration = Duration::from_secs(20);

/// Largest body on every route except `/webhook`: forms and JSON under
/// `/admin` are a few hundred bytes; other routes take no body.
pub const MAX_FORM_BODY: usize = 64 * 1024;

/// Bytes of request bodies held in memory at once, across all connections:
/// 64 webhooks of the largest size, or 1,024 admin forms of the largest size.
/// Genuine traffic (KB-sized events and forms) never comes close; an
/// attacker filling it gets `503`s and costs at most this much memory.
pub const BODY_BUDGET: usize = 64 * 1024 * 1024;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("payload too large: the limit is {} KiB", .0 / 1024)]
    TooLarge(usize),
    #[error("request body not received in time")]
    Timeout,
    #[error("server busy: too many request bodies in flight, retry shortly")]
    OverBudget,
    #[error("cannot read body: {0}")]
    Unreadable(std::io::Error),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::OverBudget => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Adds what every refusal carries: the connection is closed (the rest
    /// of the body is never read), and a busy server says when to retry.
    pub fn finish(&self, mut response: Response) -> Response {
        response.set_status(self.status());
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if matches!(self, BodyError::OverBudget) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // Anyone can cause these: the request log keeps them at debug.
        response.extensions_mut().insert(Refused);
        response
    }
}

/// Marks a response that refused a body (see [`BodyError::finish`]).
#[derive(Clone, Copy)]
pub struct Refused;

/// The shared budget of body bytes (one per application).
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget::new(BODY_BUDGET)
    }
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Bytes of the budget not held by any request right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    fn take(&self, bytes: usize) -> Result<OwnedSemaphorePermit, BodyError> {
        let n = u32::try_from(bytes).map_err(|_| BodyError::OverBudget)?;
        self.bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| BodyError::OverBudget)
    }
}

/// A body read whole, with the share of the budget it holds: drop it (after
/// answering) to give the share back.
pub struct HeldBody {
    pub bytes: Vec<u8>,
    pub share: BudgetShare,
}

/// Bytes of the budget held by one body; given back when dropped.
pub struct BudgetShare {
    _permit: Option<OwnedSemaphorePermit>,
}

/// The declared length, when there is a sane one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads `body` whole under the guarantees of this module.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &BodyBudget,
) -> Result<HeldBody, BodyError> {
    // Refused before reading: nothing of an oversize body is ever received
    // (hyper sends no `100 Continue` either, as the body is never polled).
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    tokio::time::timeout(BODY_DEADLINE, read_within(body, declared, limit, budget))
        .await
        .map_err(|_| BodyError::Timeout)?
}

async fn read_within(
    body: Body,
    declared: Option<u64>,
    limit: usize,
    budget: &BodyBudget,
) -> Result<HeldBody, BodyError> {
    let mut reader = body.into_async_read();
    let mut buf: Vec<u8> = Vec::new();
    let mut share: Option<OwnedSemaphorePermit> = None;
    // A declared length (already checked against the limit) is taken from
    // the budget and allocated once: no copies while growing. hyper ends
    // such a body after exactly that many bytes.
    if let Some(n) = declared.and_then(|n| usize::try_from(n).ok())
        && n > 0
    {
        share = Some(budget.take(n)?);
        buf.reserve_exact(n);
    }
    loop {
        if buf.len() == buf.capacity() {
            let mut probe = [0u8; 512];
            let n = reader
                .read(&mut probe)
                .await
                .map_err(BodyError::Unreadable)?;
            if n == 0 {
                break;
            }
            let needed = buf.len() + n;
            if needed > limit {
                return Err(BodyError::TooLarge(limit));
            }
            // A chunked body grows by doubling (capped at the limit); the
            // growth is taken from the budget before it is allocated.
            let new_capacity = needed.max(buf.capacity() * 2).max(8 * 1024).min(limit);
            let more = budget.take(new_capacity - buf.capacity())?;
            match &mut share {
                Some(s) => s.merge(more),
                None => share = Some(more),
            }
            buf.reserve_exact(new_capacity - buf.len());
            buf.extend_from_slice(&probe[..n]);
            continue;
        }
        // Reads straight into the spare capacity, never past it.
        let n = reader
            .read_buf(&mut buf)
            .await
            .map_err(BodyError::Unreadable)?;
        if n == 0 {
            break;
        }
    }
    Ok(HeldBody {
        bytes: buf,
        share: BudgetShare { _permit: share },
    })
}

/// The limit of a route: `/webhook` reads its body itself (so its refusals
/// reach the webhook log), everything else is read here.
fn limit_for(path: &str) -> Option<usize> {
    if path == "/webhook" {
        None
    } else {
        Some(MAX_FORM_BODY)
    }
}

/// Middleware for the whole route tree: reads the body under the limits and
/// hands the handler the bytes, holding their share of the budget until the
/// response is ready.
pub async fn limit_bodies<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    budget: BodyBudget,
) -> poem::Result<Response> {
    let Some(limit) = limit_for(req.uri().path()) else {
        return Ok(next.get_response(req).await);
    };
    let body = req.take_body();
    match read_body(req.headers(), body, limit, &budget).await {
        Ok(HeldBody { bytes, share }) => {
            // The handler owns the bytes; the share stays taken until it has
            // answered (and so dropped them).
            req.set_body(Body::from_vec(bytes));
            let response = next.get_response(req).await;
            drop(share);
            Ok(response)
        }
        Err(e) => {
            if !matches!(e, BodyError::TooLarge(_)) {
                tracing::debug!(error = %e, "request body refused");
            }
            Ok(e.finish(super::text(StatusCode::OK, &e.to_string()).into_response()))
        }
    }
}
