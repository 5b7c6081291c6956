//! Operational endpoints.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{Response, handler, http::StatusCode, web::Data};

use super::{
    AppState,
    error::{AsText, HttpError},
    text,
};

/// A successful probe vouches for the database this long.
const PROBE_CACHE: Duration = Duration::from_secs(1);

/// `200 ok` when the database answers a read and commits a write: after a
/// disk error (e.g. disk full) redb refuses writes until reopened, and this
/// makes the health check fail so the orchestrator restarts the process.
#[handler]
pub async fn healthz(state: Data<&Arc<AppState>>) -> Result<Response, AsText> {
    let recent = state
        .healthy_at
        .lock()
        .map(|t| t.is_some_and(|t| t.elapsed() < PROBE_CACHE))
        .unwrap_or(false);
    if recent {
        return Ok(text(StatusCode::OK, "ok"));
    }
    let result = state.fulfiller.store().probe().await;
    result.map_err(|e| HttpError::store("health check: database does not answer", e))?;
    if let Ok(mut t) = state.healthy_at.lock() {
        *t = Some(Instant::now());
    }
    Ok(text(StatusCode::OK, "ok"))
}

/// Prometheus text format. Counters come from memory; the queue and the
/// per-state counts are read from the database at scrape time.
#[handler]
pub async fn metrics(state: Data<&Arc<AppState>>) -> Result<Response, AsText> {
    let now = crate::time::now_ms();
    let store = state.fulfiller.store();
    let read = async {
        let queue = store.queue_stats().await?;
        Ok::<_, crate::store::StoreError>((
            queue.queued,
            queue.next_due,
            store.state_counts().await?,
        ))
    }
    .await;
    let (queued_jobs, next_due, sessions_by_state) =
        read.map_err(|e| HttpError::store("metrics: database does not answer", e))?;
    let snapshot = crate::metrics::Snapshot {
        queued_jobs,
        oldest_pending_job_secs: next_due
            .filter(|due| *due <= now)
            .map(|due| (now - due) as f64 / 1000.0)
            .unwrap_or(0.0),
        sessions_by_state,
        uptime_secs: state.started.elapsed().as_secs_f64(),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .header("cache-control", "no-store")
        .body(state.fulfiller.metrics().render(&snapshot)))
}
