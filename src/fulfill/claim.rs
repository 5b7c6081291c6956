//! The durable claim: the first step of every attempt.

use super::{FulfillOptions, Fulfiller, reply_state};
use crate::{
    domain::{ClaimToken, Input, Reply, claim_is_noop},
    model::{SessionId, State, Trigger},
    store::StoreError,
};

/// This attempt holds the session's claim.
pub(super) struct Claimed {
    pub token: ClaimToken,
    /// A fulfillment recorded earlier, still to be acknowledged.
    pub pending: Option<String>,
    /// The session was unknown before this claim.
    pub fresh: bool,
}

impl Fulfiller {
    /// Claims `id` for one attempt. `Err(state)`: nothing to do (already
    /// settled for this trigger, or another attempt's lease is live).
    pub(super) async fn claim(
        &self,
        id: &SessionId,
        trigger: Trigger,
        opts: &FulfillOptions,
    ) -> Result<Result<Claimed, State>, StoreError> {
        // A settled session is decided from a read: reloading a fulfilled
        // order's page commits nothing.
        if let Some(rec) = self.store.session(id).await?
            && claim_is_noop(&rec, trigger, opts.force, self.now(), &self.policy)
        {
            return Ok(Err(rec.state));
        }
        let claim = Input::Claim {
            trigger,
            force: opts.force,
            actor: opts.actor.clone(),
            created: opts.prefetched.as_ref().map(|p| p.session.created),
        };
        Ok(match self.step(id, claim).await? {
            Reply::Claimed {
                token,
                pending,
                fresh,
            } => Ok(Claimed {
                token,
                pending,
                fresh,
            }),
            other => Err(reply_state(&other)),
        })
    }
}
