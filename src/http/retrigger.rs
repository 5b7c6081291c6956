//! The admin's re-trigger, shared by the dashboard form
//! (`POST /admin/sessions/{id}/fulfill`) and the JSON API
//! (`POST /admin/api/sessions/{id}/fulfill`).
//!
//! Guarantees: the attempt runs in its own task, so a client that goes away
//! never cuts it short; the caller waits for it at most `wait`, then answers
//! "still working" while it goes on; the task runs in the request's span, so
//! its log lines carry the request id.
//!
//! A forced re-fulfil is idempotent per request when the caller says how
//! many fulfillments it saw (the dashboard's form always does, the JSON API
//! with `expect_fulfillments`): it forces only if the session still has
//! exactly that many, and only one such forced attempt per session runs at
//! a time in this process. So a double submit of one form (a double click,
//! a resent POST after a timeout) records one forced fulfillment, and the
//! second submit is answered "already done" ([`Retriggered::AlreadyDone`]).
//! The count is re-read while holding the per-session slot, and the slot is
//! held until the attempt's task ends (also when the caller stops waiting),
//! so the second submit either finds the slot taken or the count moved.

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use super::{AppState, error::HttpError, spawn_in_request_span};
use crate::{
    fulfill::{FulfillOptions, Fulfiller, Outcome},
    model::{SessionId, SessionRecord, State, Trigger},
};

/// What the re-trigger did within the wait.
pub enum Retriggered {
    Done(Outcome),
    /// Still running; its outcome shows on the session later.
    Pending,
    /// Started, but the attempt could not be recorded or its task crashed.
    Failed(HttpError),
    /// A forced re-fulfil that an earlier submit of the same request already
    /// made (the fulfillment count moved on) or is making right now: nothing
    /// was started. Carries the session's state.
    AlreadyDone(State),
}

/// What the admin asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wish {
    /// Fulfil if not yet fulfilled (never a second fulfillment).
    Fulfil,
    /// Record a new, forced fulfillment. With `expect`, only if the session
    /// still has exactly that many fulfillments (idempotency); without it
    /// (an API caller that did not say), every call forces.
    Force { expect: Option<u32> },
}

impl Wish {
    fn force(self) -> bool {
        matches!(self, Wish::Force { .. })
    }
}

/// What the dashboard's form sends with `force=true`.
pub struct ForceForm<'a> {
    /// The confirmation checkbox (`confirm=yes`).
    pub confirm: Option<&'a str>,
    /// The fulfillment count the page showed (`seen=<n>`).
    pub seen: Option<&'a str>,
}

/// The server-side half of the dashboard's confirmation: a forced re-fulfil
/// from the form needs the ticked checkbox (a JS prompt and `required` are
/// only the browser's half) and the count the page showed. `400` otherwise.
pub fn form_force(form: ForceForm<'_>) -> Result<Wish, HttpError> {
    if form.confirm != Some("yes") {
        return Err(HttpError::BadRequest(
            "a forced re-fulfill needs the confirmation: tick \"I understand the order will be fulfilled again\" (confirm=yes)",
        ));
    }
    let seen = form
        .seen
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or(HttpError::BadRequest(
            "a forced re-fulfill needs the fulfillment count the page showed (seen): reload the session page and try again",
        ))?;
    Ok(Wish::Force { expect: Some(seen) })
}

/// Sessions with a count-checked forced re-fulfil running in this process.
static FORCING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// A session's slot in [`FORCING`], released when dropped.
struct ForcingSlot(String);

impl ForcingSlot {
    fn take(id: &SessionId) -> Option<ForcingSlot> {
        let mut set = FORCING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(id.as_str().to_string())
            .then(|| ForcingSlot(id.as_str().to_string()))
    }
}

impl Drop for ForcingSlot {
    fn drop(&mut self) {
        FORCING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// Runs `fulfill_checkout` with trigger `admin`. A session fulfilld has
/// never seen is fetched from Stripe first ("Fetch from Stripe": a session
/// whose events are older than Stripe's 30 days, or were never sent).
/// `Err` means nothing was started: `NotFound` for a malformed id or one
/// neither fulfilld nor Stripe knows, `Unavailable` when the database or
/// Stripe cannot say.
pub async fn retrigger(
    state: &AppState,
    id: &str,
    wish: Wish,
    actor: String,
    wait: Duration,
) -> Result<Retriggered, HttpError> {
    let Some(id) = SessionId::parse(id) else {
        return Err(HttpError::NotFound("no such session"));
    };
    let force = wish.force();
    let mut slot = None;
    if let Wish::Force {
        expect: Some(expect),
    } = wish
    {
        let Some(taken) = ForcingSlot::take(&id) else {
            let rec = session(state, &id)
                .await?
                .ok_or(HttpError::NotFound("no such session"))?;
            tracing::info!(session = %id, user = %actor, "forced re-fulfil already running: not started again");
            return Ok(Retriggered::AlreadyDone(rec.state));
        };
        // Read with the slot held: no other count-checked force can move
        // the count between this read and the attempt.
        let rec = session(state, &id)
            .await?
            .ok_or(HttpError::NotFound("no such session"))?;
        if rec.fulfillments != expect {
            tracing::info!(
                session = %id, user = %actor, expected = expect, found = rec.fulfillments,
                "forced re-fulfil already done: not started again"
            );
            return Ok(Retriggered::AlreadyDone(rec.state));
        }
        slot = Some(taken);
    }
    let mut prefetched = None;
    if slot.is_none() && session(state, &id).await?.is_none() {
        prefetched = Some(fetch_unseen(state, &id).await?);
        tracing::info!(session = %id, user = %actor, "admin fetched a session fulfilld had not seen from Stripe");
    }
    tracing::info!(session = %id, user = %actor, force, "admin re-triggered fulfillment");
    let fulfiller = state.fulfiller.clone();
    let task = spawn_in_request_span(async move {
        let outcome = run(fulfiller, id, force, actor, prefetched).await;
        // Released only once the attempt has recorded (or failed to).
        drop(slot);
        outcome
    });
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

/// A session fulfilld has no record of, from Stripe: `404` when Stripe
/// does not know it either.
async fn fetch_unseen(
    state: &AppState,
    id: &SessionId,
) -> Result<crate::stripe::Retrieved, HttpError> {
    match state
        .fulfiller
        .stripe()
        .retrieve_session(id.as_str(), None)
        .await
    {
        Ok(r) if r.session.mode.as_deref() == Some("setup") => Err(HttpError::BadRequest(
            "a mode=setup session saved a payment method and sold nothing: there is nothing to fulfil",
        )),
        Ok(r) => Ok(r),
        Err(e) if e.is_not_found() => Err(HttpError::NotFound(
            "no such session: neither fulfilld nor Stripe knows it (is it from the other mode, or a connected account?)",
        )),
        Err(e) => Err(HttpError::unavailable(
            "cannot fetch the session from Stripe",
            "fetch from Stripe failed",
            Some(e.into()),
        )),
    }
}

async fn run(
    fulfiller: Arc<Fulfiller>,
    id: SessionId,
    force: bool,
    actor: String,
    prefetched: Option<crate::stripe::Retrieved>,
) -> Result<Outcome, crate::fulfill::FulfillError> {
    let opts = FulfillOptions {
        force,
        actor: Some(actor),
        prefetched,
    };
    fulfiller.fulfill_checkout(&id, Trigger::Admin, opts).await
}

async fn session(state: &AppState, id: &SessionId) -> Result<Option<SessionRecord>, HttpError> {
    state
        .fulfiller
        .store()
        .session(id)
        .await
        .map_err(|e| HttpError::store("cannot read session", e))
}
