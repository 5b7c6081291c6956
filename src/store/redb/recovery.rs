//! Recovery from the acknowledgement log (`acklog`): the replay a start
//! runs after a crash, and the checkpoints that keep the log short.

use std::{thread, time::Duration};

use tokio::sync::{mpsc, oneshot};

use super::{
    RedbStore, acklog,
    tables::Tx,
    writer::{Logging, Pending, WriteOp},
};
use crate::store::{Ctx, NewEvent, Result, StoreError, ops};

/// How often a checkpoint is offered when the log holds entries: how long
/// a delivery may stay in the log only, when traffic is light.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

impl RedbStore {
    /// `Storage::replay`.
    pub(super) async fn replay_log(
        &self,
        ctx: Ctx,
        to_event: &(dyn Fn(Vec<u8>, u64) -> Option<NewEvent> + Sync),
    ) -> Result<usize> {
        let (entries, generation) = {
            let mut pending = self.unreplayed.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut pending.0), pending.1)
        };
        if entries.is_empty() {
            return Ok(0);
        }
        let log = acklog::path_for(&self.path.clone().unwrap_or_default());
        let mut applied = 0;
        let mut left_out = 0;
        // Batch by batch, in the order they were logged (one session's
        // events must apply in order), each entry its own operation so one
        // that cannot be applied fails alone. Once a batch is applied (or
        // what could not be is set aside for a person), a commit records
        // the batch's end: a crash in the middle of a replay repeats none.
        let mut entries = entries.into_iter().peekable();
        while let Some(first) = entries.next() {
            let end = first.batch_end;
            let mut batch = vec![first];
            while let Some(e) = entries.next_if(|e| e.batch_end == end) {
                batch.push(e);
            }
            let mut queued = Vec::with_capacity(batch.len());
            let mut aside = Vec::new();
            for entry in batch {
                let Some(event) = to_event(entry.raw.clone(), entry.received_at_ms) else {
                    aside.push((entry.received_at_ms, entry.raw));
                    continue;
                };
                let ctx = Ctx {
                    now: entry.received_at_ms,
                    entropy: entry.entropy,
                    ..ctx.clone()
                };
                let key = self.key.clone();
                let reply = self
                    .enqueue(Logging::No, move |tx| ops::ingest(tx, &event, &ctx, &key))
                    .await?;
                queued.push((reply, entry.received_at_ms, entry.raw));
            }
            for (reply, received_at_ms, raw) in queued {
                match reply.await.map_err(|_| StoreError::Stopped)? {
                    Ok(_) => applied += 1,
                    Err(e @ (StoreError::Decode { .. } | StoreError::Corrupted(_))) => {
                        tracing::error!(error = %crate::report::chain(&e), "an acknowledged delivery could not be applied again");
                        aside.push((received_at_ms, raw));
                    }
                    Err(e) => return Err(e),
                }
            }
            if !aside.is_empty() {
                left_out += aside.len();
                let file = acklog::set_aside(&log, generation, &aside)?;
                tracing::error!(
                    deliveries = aside.len(),
                    file = %file.display(),
                    "acknowledged webhook deliveries could not be applied; their bodies are kept in this file for a person to look at"
                );
            }
            let at = acklog::Position {
                generation,
                offset: end,
            };
            self.write(move |tx| tx.set_log_position(at)).await?;
        }
        // The checkpoint: the log may start again once this is durable.
        self.write_as(Logging::ReplayDone, |_tx| Ok(())).await?;
        tracing::info!(
            applied,
            left_out,
            "applied again the webhook deliveries acknowledged before the stop"
        );
        Ok(applied)
    }
    /// A durable commit of everything logged so far; none when the log is
    /// empty or a replay is pending (`AckLog::checkpoint_generation`).
    pub(super) async fn checkpoint(&self) -> Result<()> {
        self.write(|_tx| Ok(())).await
    }
}

/// Offers the writer a checkpoint every `CHECKPOINT_INTERVAL` until the store
/// is dropped; a queue that is full has work that will commit anyway.
pub(super) fn start_checkpoints(tx: mpsc::WeakSender<Box<dyn WriteOp>>) -> Result<()> {
    thread::Builder::new()
        .name("fulfilld-checkpoint".into())
        .spawn(move || {
            loop {
                thread::sleep(CHECKPOINT_INTERVAL);
                let Some(tx) = tx.upgrade() else { return };
                let (reply, _) = oneshot::channel::<Result<()>>();
                let op: Box<dyn WriteOp> = Box::new(Pending {
                    f: |_tx: &mut Tx<'_>| Ok(()),
                    out: None,
                    reply,
                    logging: Logging::No,
                });
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(op) {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(StoreError::Io)
}
