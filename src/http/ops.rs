//! Operational endpoints.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{Response, handler, http::StatusCode, web::Data};

use super::{AppState, text};

/// A successful probe vouches for the database this long.
const PROBE_CACHE: Duration = Duration::from_secs(1);

/// `200 ok` when the database answers a read and commits a write: after a
/// disk error (e.g. disk full) redb refuses writes until reopened, and this
/// makes the health check fail so the orchestrator restarts the process.
#[handler]
pub async fn healthz(state: Data<&Arc<AppState>>) -> Response {
    let recent = state
        .healthy_at
        .lock()
        .map(|t| t.is_some_and(|t| t.elapsed() < PROBE_CACHE))
        .unwrap_or(false);
    if recent {
        return text(StatusCode::OK, "ok");
    }
    let result = state.fulfiller.store().probe().await;
    match result {
        Ok(_) => {
            if let Ok(mut t) = state.healthy_at.lock() {
                *t = Some(Instant::now());
            }
            text(StatusCode::OK, "ok")
        }
        Err(e) => {
            tracing::error!(error = %e, "health check: database does not answer");
            text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// Prometheus text format. Counters come from memory; the queue and the
/// per-state counts are read from the database at scrape time.
#[handler]
pub async fn metrics(state: Data<&Arc<AppState>>) -> Response {
    let now = crate::time::now_ms();
    let store = state.fulfiller.store();
    let read = match store.queue_stats().await {
        Ok(q) => store
            .state_counts()
            .await
            .map(|counts| (q.queued, q.next_due, counts)),
        Err(e) => Err(e),
    };
    let (queued_jobs, next_due, sessions_by_state) = match read {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "metrics: database does not answer");
            return text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
        }
    };
    let snapshot = crate::metrics::Snapshot {
        queued_jobs,
        oldest_pending_job_secs: next_due
            .filter(|due| *due <= now)
            .map(|due| (now - due) as f64 / 1000.0)
            .unwrap_or(0.0),
        sessions_by_state,
        uptime_secs: state.started.elapsed().as_secs_f64(),
    };
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .header("cache-control", "no-store")
        .body(state.fulfiller.metrics().render(&snapshot))
}
