//! Recording a webhook delivery: the event is parsed once into the domain's
//! input, and recorded with its session's transition in one commit.

use super::{Fulfiller, snapshot};
use crate::{
    domain::{EventKind, Input},
    model::{EventRecord, SessionId},
    store::{Ingested, NewEvent, StoreError},
    stripe::{Event, Session},
};

impl Fulfiller {
    /// Records one webhook delivery durably; returns only after the commit.
    /// `raw` is the exact body received, `event` its parse.
    pub async fn ingest(&self, raw: String, event: Event) -> Result<Ingested, StoreError> {
        let ctx = self.ctx();
        let acted_on = EventKind::parse(&event.kind).and_then(|kind| {
            let object = &event.data.as_ref()?.object;
            let session = Session::from_value(object)?;
            let id = SessionId::parse(&session.id)?;
            Some((kind, session, id, object))
        });
        let record = EventRecord {
            id: event.id.clone(),
            kind: event.kind.clone(),
            livemode: event.livemode,
            created: event.created,
            session_id: acted_on.as_ref().map(|(_, s, _, _)| s.id.clone()),
            received_at_ms: ctx.now,
            deliveries: 1,
            disposition: if acted_on.is_some() {
                "handled"
            } else {
                "ignored"
            }
            .into(),
        };
        let session = acted_on.map(|(kind, session, id, object)| {
            let input = Input::Event {
                id: event.id.clone(),
                kind,
                snapshot: snapshot(&session),
                // Only a failed payment's callback carries the event's object.
                object: if kind == EventKind::AsyncPaymentFailed {
                    object.clone()
                } else {
                    serde_json::Value::Null
                },
            };
            (id, input)
        });
        let new = NewEvent {
            record,
            raw: raw.into_bytes(),
            session,
        };
        let result = self.store.ingest(new, ctx).await?;
        if result == Ingested::Recorded {
            self.wake.notify_one();
        }
        Ok(result)
    }
}
