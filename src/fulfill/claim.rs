//! The durable claim: the first step of every attempt.

use super::{FulfillOptions, Fulfiller, reply_state};
use crate::{
    domain::{ClaimToken, Input, Reply},
    model::{SessionId, State, Trigger},
    store::StoreError,
};

/// This attempt holds the session's claim.
pub(super) struct Claimed {
    pub token: ClaimToken,
    /// A fulfillment recorded earlier, still to be acknowledged.
    pub pending: Option<String>,
}

impl Fulfiller {
    /// Claims `id` for one attempt, before any read (the caller has
    /// checked `claim_is_noop`). `Err(state)`: nothing to do (already
    /// settled for this trigger, or another attempt's lease is live).
    pub(super) async fn claim(
        &self,
        id: &SessionId,
        trigger: Trigger,
        opts: &FulfillOptions,
    ) -> Result<Result<Claimed, State>, StoreError> {
        let claim = Input::Claim {
            trigger,
            force: opts.force,
            actor: opts.actor.clone(),
            created: opts.prefetched.as_ref().map(|p| p.session.created),
        };
        Ok(match self.step(id, claim).await? {
            Reply::Claimed { token, pending, .. } => Ok(Claimed { token, pending }),
            other => Err(reply_state(&other)),
        })
    }
}
