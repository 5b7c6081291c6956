//! Recording a webhook delivery: the event is parsed once into the domain's
//! input, and recorded with its session's transition in one commit.

use super::{Fulfiller, snapshot};
use crate::{
    domain::{EventKind, Input, Snapshot},
    model::{EventRecord, SessionId},
    store::{Ingested, NewEvent, StoreError},
    stripe::Event,
};

impl Fulfiller {
    /// Records one webhook delivery durably; returns only after the commit.
    /// `raw` is the exact body received, `event` its parse.
    pub async fn ingest(&self, raw: String, event: Event) -> Result<Ingested, StoreError> {
        let ctx = self.ctx();
        let new = new_event(raw, event, ctx.now);
        // A job it queued wakes the worker through the store.
        self.store.ingest(new, ctx).await
    }

    /// Applies again what an earlier process acknowledged but did not make
    /// part of its tables before it stopped (see `Storage::replay`): each
    /// body is parsed as when it arrived.
    pub(super) async fn replay_acknowledged(&self) -> Result<usize, StoreError> {
        let to_event = |raw: Vec<u8>, received_at_ms: u64| {
            let parsed = String::from_utf8(raw)
                .map_err(|e| e.to_string())
                .and_then(|raw| {
                    Event::parse(&raw)
                        .map(|e| (raw, e))
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok((raw, event)) => Some(new_event(raw, event, received_at_ms)),
                Err(error) => {
                    tracing::error!(%error, "an acknowledged delivery no longer parses");
                    None
                }
            }
        };
        self.store.replay(self.ctx(), &to_event).await
    }
}

/// Why an event fulfilld would otherwise act on is ignored, for the
/// webhook's answer and log.
pub fn ignore_reason(event: &Event) -> Option<&'static str> {
    let session = event.session.as_ref()?;
    (EventKind::parse(&event.kind).is_some() && session.mode.as_deref() == Some("setup"))
        .then_some("mode=setup: a saved payment method is never fulfilled")
}

/// The record of one delivery of `event` (`raw` as received at `now`), with
/// its session's input when fulfilld acts on it.
fn new_event(raw: String, event: Event, now: u64) -> NewEvent {
    let Event {
        id: event_id,
        kind: event_kind,
        created,
        livemode,
        account,
        session,
        failed_object,
    } = event;
    let acted_on = EventKind::parse(&event_kind).and_then(|kind| {
        // A setup session saved a payment method and sold nothing: its
        // events are recorded as ignored (`ignore_reason` says why).
        let session = session.filter(|s| s.mode.as_deref() != Some("setup"))?;
        let id = SessionId::parse(&session.id)?;
        Some((kind, session, id))
    });
    let record = EventRecord {
        id: event_id.clone(),
        kind: event_kind,
        livemode,
        created,
        session_id: acted_on.as_ref().map(|(_, _, id)| id.as_str().to_string()),
        received_at_ms: now,
        deliveries: 1,
        disposition: if acted_on.is_some() {
            "handled"
        } else {
            "ignored"
        }
        .into(),
    };
    let session = acted_on.map(|(kind, session, id)| {
        let input = Input::Event {
            id: event_id,
            kind,
            snapshot: Snapshot {
                account,
                ..snapshot(&session)
            },
            // Only a failed payment's callback carries the event's object.
            object: if kind == EventKind::AsyncPaymentFailed {
                failed_object
            } else {
                serde_json::Value::Null
            },
        };
        (id, input)
    });
    NewEvent {
        record,
        raw: raw.into_bytes(),
        session,
    }
}
