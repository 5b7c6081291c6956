//! Operational endpoints.

use std::sync::Arc;

use poem::{Response, handler, http::StatusCode, web::Data};

use super::{AppState, text};

/// `200 ok` when a read transaction on the database succeeds.
#[handler]
pub async fn healthz(state: Data<&Arc<AppState>>) -> Response {
    match state.fulfiller.store().read(|r| r.next_due()).await {
        Ok(_) => text(StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: database does not answer");
            text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
