//! Pruning raw Stripe event bodies after `storage.event_retention_days`
//! (CONTRACT.md "Event retention"). Each event's record stays, so a
//! redelivery is still recognised and the timeline still shows it; sessions,
//! line items, fulfillments and attempts are never pruned.
//!
//! The log is walked by event id in rounds of `SCAN`, removals written in
//! small transactions (see `Storage::prune_event_bodies`), so webhooks
//! never wait long behind a round. A walk reads every stored event, so it
//! runs at most once a day, and not at all while the oldest body the last
//! walk kept is still inside the retention (a young installation, or one
//! whose last walk pruned all it could).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    store::{Store, StoreError},
    time::Clock,
};

/// Events looked at per round (a round reads them whole: some 2 MB).
pub const SCAN: usize = 500;
/// Pause between rounds while a walk of the log is under way.
const BETWEEN_ROUNDS: Duration = Duration::from_secs(1);
/// How often a walk may start.
const BETWEEN_WALKS: Duration = Duration::from_secs(24 * 3600);
/// The first walk after a start: out of the way of startup, and of the
/// traffic a deploy's restart brings.
const FIRST: Duration = Duration::from_secs(600);

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Where a walk of the event log stands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The last event id looked at; `None` at the start of a walk.
    pub after: Option<String>,
    /// Bodies removed in this walk so far.
    pub pruned: u64,
    /// When the oldest body this walk kept was received.
    pub oldest_kept_ms: Option<u64>,
}

/// Whether a walk can find anything at `now_ms`: not while the oldest body
/// the last complete walk kept is inside the retention (events received
/// since are newer still).
pub fn walk_due(last_oldest_kept_ms: Option<u64>, now_ms: u64, days: u32) -> bool {
    let before = now_ms.saturating_sub(u64::from(days) * DAY_MS);
    last_oldest_kept_ms.is_none_or(|oldest| oldest < before)
}

/// One round: prunes bodies older than `days` at `now_ms` among the next
/// `SCAN` events. Returns true when the walk reached the end of the log
/// (the next round starts a new walk).
pub async fn round(
    store: &Store,
    now_ms: u64,
    days: u32,
    walk: &mut Walk,
) -> Result<bool, StoreError> {
    let before = now_ms.saturating_sub(u64::from(days) * DAY_MS);
    let done = store
        .prune_event_bodies(before, walk.after.take(), SCAN)
        .await?;
    walk.pruned += done.pruned;
    walk.after = done.next;
    walk.oldest_kept_ms = match (walk.oldest_kept_ms, done.oldest_kept_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(walk.after.is_none())
}

/// Runs rounds until `stop`.
pub async fn prune_until_stopped(
    store: Store,
    clock: std::sync::Arc<dyn Clock>,
    days: u32,
    stop: CancellationToken,
) {
    let mut wait = FIRST;
    let mut walk = Walk::default();
    loop {
        if stop
            .run_until_cancelled(tokio::time::sleep(wait))
            .await
            .is_none()
        {
            return;
        }
        match store.lead("retention").await {
            Ok(true) => {}
            // Another replica prunes; look again as soon as after a start,
            // so a replica that stopped is replaced within that long.
            Ok(false) => {
                wait = FIRST;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %crate::report::chain(&e), "cannot tell whether this replica prunes; trying again later");
                wait = BETWEEN_WALKS;
                continue;
            }
        }
        wait = match round(&store, clock.now_ms(), days, &mut walk).await {
            Ok(true) => {
                if walk.pruned > 0 {
                    tracing::info!(
                        pruned = walk.pruned,
                        days,
                        "pruned raw event bodies past their retention"
                    );
                }
                walk = Walk::default();
                BETWEEN_WALKS
            }
            Ok(false) => BETWEEN_ROUNDS,
            Err(e) => {
                tracing::warn!(error = %crate::report::chain(&e), "cannot prune raw event bodies; trying again later");
                BETWEEN_WALKS
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::EventRecord,
        store::{Ctx, Ingested, NewEvent, open_redb},
    };

    fn ctx() -> Ctx {
        crate::store::test_ctx(0)
    }

    fn event(id: &str, received_at_ms: u64) -> NewEvent {
        NewEvent {
            record: EventRecord {
                id: id.into(),
                kind: "payment_intent.created".into(),
                livemode: false,
                created: 0,
                session_id: None,
                received_at_ms,
                deliveries: 1,
                disposition: "ignored".into(),
            },
            raw: format!("{{\"id\":\"{id}\"}}").into_bytes(),
            session: None,
            charge: None,
        }
    }

    #[tokio::test]
    async fn old_bodies_go_in_rounds_records_stay_and_redeliveries_are_still_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_redb(&dir.path().join("r.redb")).unwrap();
        let day = DAY_MS;
        let now = 100 * day;
        // Received 91, 91, 1, 91 and 89 days ago.
        for (id, at) in [
            ("evt_1", 9 * day),
            ("evt_2", 9 * day),
            ("evt_3", 99 * day),
            ("evt_4", 9 * day),
            ("evt_5", 11 * day),
        ] {
            store.ingest(event(id, at), ctx()).await.unwrap();
        }
        let before = now - 90 * day;
        let first = store.prune_event_bodies(before, None, 2).await.unwrap();
        assert_eq!((first.pruned, first.next.as_deref()), (2, Some("evt_2")));
        let second = store
            .prune_event_bodies(before, first.next, 2)
            .await
            .unwrap();
        assert_eq!((second.pruned, second.next.as_deref()), (1, Some("evt_4")));
        let last = store
            .prune_event_bodies(before, second.next, 2)
            .await
            .unwrap();
        assert_eq!((last.pruned, last.next), (0, None), "the end of the log");
        for (id, kept) in [
            ("evt_1", false),
            ("evt_2", false),
            ("evt_3", true),
            ("evt_4", false),
            ("evt_5", true),
        ] {
            assert_eq!(
                store.event_payload(id).await.unwrap().is_some(),
                kept,
                "{id}"
            );
            assert!(
                store.event(id).await.unwrap().is_some(),
                "{id}'s record is kept"
            );
        }
        assert_eq!(
            store.ingest(event("evt_1", now), ctx()).await.unwrap(),
            Ingested::Duplicate
        );
        // A walk with the configured days: nothing more is old enough at 90,
        // and a shorter retention takes the rest but the newest.
        let mut walk = Walk::default();
        assert!(round(&store, now, 90, &mut walk).await.unwrap());
        assert_eq!(walk.pruned, 0);
        // The oldest body kept was received 89 days ago: no walk can find
        // anything until it is past the retention, a day later.
        assert_eq!(walk.oldest_kept_ms, Some(11 * day));
        assert!(!walk_due(walk.oldest_kept_ms, now, 90));
        assert!(!walk_due(walk.oldest_kept_ms, now + day, 90));
        assert!(walk_due(walk.oldest_kept_ms, now + day + 1, 90));
        assert!(walk_due(None, now, 90), "before any walk");
        let mut walk = Walk::default();
        assert!(round(&store, now, 2, &mut walk).await.unwrap());
        assert_eq!(walk.pruned, 1);
        assert!(store.event_payload("evt_3").await.unwrap().is_some());
        assert!(store.event_payload("evt_5").await.unwrap().is_none());
    }
}
