//! The admin's re-trigger, shared by the dashboard form
//! (`POST /admin/sessions/{id}/fulfill`) and the JSON API
//! (`POST /admin/api/sessions/{id}/fulfill`).
//!
//! Guarantees: the attempt runs in its own task, so a client that goes away
//! never cuts it short; the caller waits for it at most `wait`, then answers
//! "still working" while it goes on; the task runs in the request's span, so
//! its log lines carry the request id.

use std::{sync::Arc, time::Duration};

use super::{AppState, error::HttpError, spawn_in_request_span};
use crate::{
    fulfill::{FulfillOptions, Fulfiller, Outcome},
    model::{SessionId, Trigger},
};

/// What the re-trigger did within the wait.
pub enum Retriggered {
    Done(Outcome),
    /// Still running; its outcome shows on the session later.
    Pending,
    /// Started, but the attempt could not be recorded or its task crashed.
    Failed(HttpError),
}

/// Runs `fulfill_checkout` with trigger `admin` for a known session.
/// `Err` means nothing was started: `NotFound` for a malformed or unknown
/// id, `Unavailable` when the database cannot say.
pub async fn retrigger(
    state: &AppState,
    id: &str,
    force: bool,
    actor: String,
    wait: Duration,
) -> Result<Retriggered, HttpError> {
    let Some(id) = SessionId::parse(id) else {
        return Err(HttpError::NotFound("no such session"));
    };
    if !session_exists(state, &id).await? {
        return Err(HttpError::NotFound("no such session"));
    }
    tracing::info!(session = %id, user = %actor, force, "admin re-triggered fulfillment");
    let task = spawn_in_request_span(run(state.fulfiller.clone(), id, force, actor));
    match tokio::time::timeout(wait, task).await {
        Ok(Ok(Ok(outcome))) => Ok(Retriggered::Done(outcome)),
        Ok(Ok(Err(e))) => Ok(Retriggered::Failed(HttpError::unavailable(
            "could not record the attempt",
            "re-trigger failed",
            Some(e.into()),
        ))),
        Ok(Err(e)) => Ok(Retriggered::Failed(HttpError::internal(
            "the attempt stopped unexpectedly",
            "re-trigger task failed",
            e,
        ))),
        Err(_) => Ok(Retriggered::Pending),
    }
}

async fn run(
    fulfiller: Arc<Fulfiller>,
    id: SessionId,
    force: bool,
    actor: String,
) -> Result<Outcome, crate::fulfill::FulfillError> {
    let opts = FulfillOptions {
        force,
        actor: Some(actor),
        prefetched: None,
    };
    fulfiller.fulfill_checkout(&id, Trigger::Admin, opts).await
}

async fn session_exists(state: &AppState, id: &SessionId) -> Result<bool, HttpError> {
    state
        .fulfiller
        .store()
        .session(id)
        .await
        .map(|s| s.is_some())
        .map_err(|e| HttpError::store("cannot read session", e))
}
