//! Operational endpoints.

use std::sync::Arc;

use poem::{Response, handler, http::StatusCode, web::Data};

use super::{AppState, text};

/// `200 ok` when the database answers a read and commits a write: after a
/// disk error (e.g. disk full) redb refuses writes until reopened, and this
/// makes the health check fail so the orchestrator restarts the process.
#[handler]
pub async fn healthz(state: Data<&Arc<AppState>>) -> Response {
    let store = state.fulfiller.store();
    let result = match store.read(|r| r.next_due()).await {
        Ok(_) => store.write(|_| Ok(())).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => text(StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: database does not answer");
            text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
