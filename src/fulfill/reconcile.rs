//! Backstops for what webhooks alone would miss: events Stripe could not
//! deliver, delayed payments whose outcome never arrived, and claims left
//! by a process that stopped.

use serde_json::Value;

use super::{FulfillError, Fulfiller};
use crate::{
    store::{Ingested, StoreError},
    stripe::Event,
};

/// Connected accounts the missed-event sweep looks at per round: a
/// platform with more is not the user fulfilld is built for (one list call
/// each, every round).
const MAX_ACCOUNTS: usize = 100;

impl Fulfiller {
    /// Recovers the events Stripe could not deliver (the endpoint was down
    /// longer than Stripe retries, or fulfilld was): lists them with
    /// `GET /v1/events?delivery_success=false` since `since_secs`, oldest
    /// first, on the platform and on each connected account sessions were
    /// recorded on (up to `MAX_ACCOUNTS`), and records each through the same
    /// idempotent path as a webhook. Events already received are duplicates
    /// and change nothing. Returns how many were new.
    pub async fn reconcile_missed_events(
        &self,
        since_secs: i64,
        max_events: usize,
    ) -> Result<usize, FulfillError> {
        let mut recovered = self.recover_on(None, since_secs, max_events).await?;
        for account in self.store.accounts(MAX_ACCOUNTS).await? {
            // One account Stripe refuses (access revoked) must not stop the sweep.
            match self
                .recover_on(Some(&account), since_secs, max_events)
                .await
            {
                Ok(n) => recovered += n,
                Err(FulfillError::Stripe(e)) => {
                    tracing::warn!(account = %account, error = %e, "cannot list a connected account's undelivered events");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(recovered)
    }

    async fn recover_on(
        &self,
        account: Option<&str>,
        since_secs: i64,
        max_events: usize,
    ) -> Result<usize, FulfillError> {
        let mut events: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self
                .stripe
                .list_undelivered_events(since_secs, after.as_deref(), account)
                .await?;
            after = page
                .last()
                .and_then(|e| e.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            events.extend(page);
            if !more || after.is_none() {
                break;
            }
            if events.len() >= max_events {
                tracing::warn!(
                    max_events,
                    account,
                    "more undelivered events than one round takes; the rest come next round"
                );
                break;
            }
        }
        // Stripe lists newest first; events are applied in the order they happened.
        events.reverse();
        let mut recovered = 0;
        for mut value in events {
            // Listed on a connected account: the event is that account's.
            if let (Some(a), Some(o)) = (account, value.as_object_mut()) {
                o.entry("account")
                    .or_insert_with(|| Value::String(a.to_string()));
            }
            let raw = value.to_string();
            let Ok(event) = Event::parse(&raw) else {
                continue;
            };
            let acted_on = event.session.is_some() || event.charge.is_some();
            if event.id.is_empty() || event.id.len() > 255 || !acted_on {
                continue;
            }
            let id = event.id.clone();
            if matches!(
                self.ingest(raw, event).await?,
                Ingested::Recorded | Ingested::Unmatched
            ) {
                tracing::info!(event = %id, account, "recovered an event Stripe could not deliver");
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// Queues a re-check, with trigger `reconcile`, of up to `limit` sessions
    /// that have awaited their payment, untouched, for at least `quiet_ms`:
    /// the backstop for an `async_payment_succeeded` or `_failed` webhook that
    /// never arrived. Returns how many it queued.
    pub async fn reconcile_awaiting(
        &self,
        quiet_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let queued = self
            .store
            .reconcile_awaiting(quiet_ms, limit, self.ctx())
            .await?;
        if queued > 0 {
            tracing::info!(queued, "re-checking sessions that await their payment");
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Takes over, explicitly, the claims of processes known to be gone
    /// (with redb: any earlier process, since the file lock is exclusive),
    /// so a restart finishes what a crash interrupted without waiting for
    /// their leases to expire.
    ///
    /// First it applies the webhook deliveries such a stop acknowledged but
    /// did not make part of the tables (a crash before a checkpoint), so
    /// nothing reads or takes over a state without them.
    pub async fn take_over_claims(&self) -> Result<usize, StoreError> {
        self.replay_acknowledged().await?;
        let count = self.store.take_over(self.ctx()).await?;
        if count > 0 {
            tracing::info!(
                count,
                "taking over fulfillments interrupted by an earlier stop"
            );
            self.wake.notify_one();
        }
        Ok(count)
    }
}
