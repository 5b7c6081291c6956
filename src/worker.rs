//! The job runner: takes due jobs from the durable queue and runs them, a few
//! at a time. A job leaves the queue only when its work has settled (the
//! session moved on, or the job was rescheduled), so a crash at any point
//! leaves it there for the next process.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    fulfill::{FulfillOptions, Fulfiller},
    model::{Job, JobKind, SessionId},
    store::StoreError,
};

/// Fulfillments run at once. Idle most of the time; it matters when a
/// backlog drains (after an outage, a sale): concurrent attempts share
/// commits, so more of them cost less CPU and disk per order (measured with
/// a fast fake Stripe: 4 at once 927-1,112 us and 74 KB per order, 16 at
/// once 615-625 us and 41 KB). Against real Stripe (a retrieve with line
/// items takes some 200-500 ms) 16 make 30-80 requests/s: inside live
/// mode's 100/s; in a sandbox (25/s per endpoint) a backlog meets 429s,
/// which the client retries with backoff.
pub const CONCURRENCY: usize = 16;
/// Deliveries (callbacks, emails, alerts) at once, in slots of their own: a
/// mail server that stalls can hold these, never the fulfillments'.
pub const DELIVERY_CONCURRENCY: usize = 2;
/// Longest sleep when the queue has nothing due (new work wakes it sooner).
const IDLE: Duration = Duration::from_secs(1);
/// Pause after the queue itself could not be read.
const ON_ERROR: Duration = Duration::from_secs(1);
/// How long a job that could not record its outcome (a storage error) keeps
/// its slot before it may run again, so a failing disk is not hammered.
const ON_JOB_ERROR: Duration = Duration::from_secs(5);
/// How often the jobs running here are held again on a shared database
/// (a third of `pg::TAKE_MS`).
const HOLD_EVERY: Duration = Duration::from_secs(10);
/// How long a stop waits for jobs in flight (a Stripe call can take 30 s).
const JOB_GRACE: Duration = Duration::from_secs(10);

pub struct Worker {
    fulfiller: Arc<Fulfiller>,
    permits: Arc<Semaphore>,
    delivery_permits: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Worker {
    pub fn new(fulfiller: Arc<Fulfiller>) -> Self {
        Worker {
            fulfiller,
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            delivery_permits: Arc::new(Semaphore::new(DELIVERY_CONCURRENCY)),
            in_flight: Arc::default(),
        }
    }

    /// Runs jobs until `stop` is cancelled, then waits for the jobs it started.
    pub async fn run_until_stopped(self, stop: CancellationToken) {
        let wake = self.fulfiller.wake_handle();
        let mut running = JoinSet::new();
        let mut held = tokio::time::Instant::now();
        loop {
            while running.try_join_next().is_some() {}
            if held.elapsed() >= HOLD_EVERY {
                held = tokio::time::Instant::now();
                self.hold_running().await;
            }
            let wait = match self.start_due(&mut running).await {
                // Started some: look again, more may be due.
                Ok((n, _)) if n > 0 => continue,
                // Due jobs are running or wait for a slot; a finishing job wakes us.
                Ok((0, true)) => IDLE,
                Ok(_) => self.until_next_due().await,
                Err(e) => {
                    tracing::error!(error = %crate::report::chain(&e), "cannot read the job queue");
                    ON_ERROR
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Jobs in flight get a grace period; past it they are dropped, which is
        // safe: a claim left behind is taken over at the next start, and a
        // recorded fulfillment is delivered with the same webhook-id.
        let drained = tokio::time::timeout(JOB_GRACE, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                jobs = running.len(),
                "stopping with jobs still running; they resume at the next start"
            );
            running.abort_all();
        }
    }

    /// Keeps the jobs running here held (see `Storage::hold_jobs`).
    async fn hold_running(&self) {
        let keys: Vec<String> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        if keys.is_empty() {
            return;
        }
        let now = self.fulfiller.clock().now_ms();
        if let Err(e) = self.fulfiller.store().hold_jobs(keys, now).await {
            tracing::warn!(error = %crate::report::chain(&e), "cannot renew the hold on running jobs");
        }
    }

    async fn until_next_due(&self) -> Duration {
        let now = self.fulfiller.clock().now_ms();
        match self.fulfiller.store().queue_stats().await {
            Ok(stats) => match stats.next_free {
                Some(due) => Duration::from_millis(due.saturating_sub(now))
                    .clamp(Duration::from_millis(5), IDLE),
                None => IDLE,
            },
            Err(_) => IDLE,
        }
    }

    /// Starts every due job not already running, as far as permits allow.
    /// Returns how many it started, and whether some due job was already running.
    async fn start_due(&self, running: &mut JoinSet<()>) -> Result<(usize, bool), StoreError> {
        let now = self.fulfiller.clock().now_ms();
        // Each kind is read on its own, and only while it has a free slot:
        // a backlog of one (emails to a stalled mail server) never hides the
        // other's due jobs.
        // No more than there are free slots: on a shared database, reading
        // a due job takes it from the other replicas for a while.
        let mut due = Vec::new();
        for kind in JobKind::ALL {
            let free = self.slots(kind).available_permits().min(64);
            if free > 0 {
                due.extend(self.fulfiller.store().due_jobs(now, free, kind).await?);
            }
        }
        let mut started = 0;
        let mut busy = false;
        for (due_ms, job) in due {
            let key = job.key();
            let slots = self.slots(job.kind());
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) if self.lock_key(&key) => permit,
                // No slot of this kind now, or this job is running already
                // (queued again meanwhile): one finishing wakes the loop,
                // and the job is handed back so that no replica waits for
                // this one's hold on it.
                _ => {
                    busy = true;
                    if let Err(e) = self.fulfiller.store().release_job(&key, due_ms).await {
                        tracing::warn!(job = %key, error = %crate::report::chain(&e), "cannot hand back a job; it is free again when its hold ends");
                    }
                    continue;
                }
            };
            let fulfiller = self.fulfiller.clone();
            let in_flight = self.in_flight.clone();
            running.spawn(async move {
                // The due list is a snapshot: this job may have finished and
                // left the queue since. Only a job still queued at this due
                // time runs, so nothing is done twice.
                let still_due = fulfiller
                    .store()
                    .job_due(&key)
                    .await
                    .map(|d| d == Some(due_ms))
                    .unwrap_or(true);
                if still_due && !run_job(&fulfiller, &job, due_ms).await {
                    tokio::time::sleep(ON_JOB_ERROR).await;
                    // Its outcome was not recorded: free to be run again, by
                    // any replica, rather than held by this one.
                    if let Err(e) = fulfiller.store().release_job(&key, due_ms).await {
                        tracing::warn!(job = %key, error = %crate::report::chain(&e), "cannot hand back a job; it is free again when its hold ends");
                    }
                }
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                drop(permit);
                fulfiller.wake_handle().notify_one();
            });
            started += 1;
        }
        Ok((started, busy))
    }

    fn slots(&self, kind: JobKind) -> &Arc<Semaphore> {
        match kind {
            JobKind::Fulfill => &self.permits,
            JobKind::Deliver => &self.delivery_permits,
        }
    }

    fn lock_key(&self, key: &str) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string())
    }
}

/// How often sessions awaiting a delayed payment are re-checked with Stripe,
/// and how long one must have been quiet to be re-checked. Delayed payments
/// take days; this only catches a webhook that never came.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);
pub const RECONCILE_QUIET: Duration = Duration::from_secs(6 * 3600);
/// Re-checks queued per round, well inside Stripe's rate limit.
pub const RECONCILE_BATCH: usize = 200;

/// How far back missed events are looked for: Stripe keeps events 30 days.
pub const MISSED_EVENTS_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most missed events recovered per round.
pub const MISSED_EVENTS_BATCH: usize = 1000;
/// The first look for missed events after a start: soon (a restart is when
/// events were missed), but not in the way of startup itself.
pub const MISSED_EVENTS_FIRST: Duration = Duration::from_secs(60);

/// Waits `wait` for a background loop's next round; false once `stop` is
/// cancelled (the loop then ends).
pub async fn pause(stop: &CancellationToken, wait: Duration) -> bool {
    stop.run_until_cancelled(tokio::time::sleep(wait))
        .await
        .is_some()
}

/// Periodically recovers events Stripe could not deliver and queues re-checks
/// of sessions that have awaited their payment for long (see
/// `Fulfiller::reconcile_missed_events` and `reconcile_awaiting`), until `stop`.
pub async fn reconcile_until_stopped(fulfiller: Arc<Fulfiller>, stop: CancellationToken) {
    let mut wait = MISSED_EVENTS_FIRST;
    loop {
        if !pause(&stop, wait).await {
            return;
        }
        wait = RECONCILE_EVERY;
        match fulfiller.store().lead("reconcile").await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %crate::report::chain(&e), "cannot tell whether this replica reconciles; skipping a round");
                continue;
            }
        }
        let since =
            (fulfiller.clock().now_ms() / 1000) as i64 - MISSED_EVENTS_WINDOW.as_secs() as i64;
        match fulfiller
            .reconcile_missed_events(since, MISSED_EVENTS_BATCH)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(recovered = n, "recovered events Stripe could not deliver"),
            Err(e) => {
                tracing::warn!(error = %crate::report::chain(&e), "cannot list undelivered events")
            }
        }
        if let Err(e) = fulfiller
            .reconcile_awaiting(RECONCILE_QUIET.as_millis() as u64, RECONCILE_BATCH)
            .await
        {
            tracing::error!(error = %crate::report::chain(&e), "cannot queue re-checks of awaiting sessions");
        }
    }
}

/// Runs every job due now (by the fulfiller's clock) once, one after the
/// other, and returns how many ran: the worker's step without its loop, so
/// tests drive the queue deterministically with a controllable clock.
pub async fn try_run_once(fulfiller: &Fulfiller) -> Result<usize, StoreError> {
    let now = fulfiller.clock().now_ms();
    let mut ran = 0;
    for kind in JobKind::ALL {
        for (due_ms, job) in fulfiller.store().due_jobs(now, 64, kind).await? {
            if fulfiller.store().job_due(&job.key()).await? != Some(due_ms) {
                continue;
            }
            if !run_job(fulfiller, &job, due_ms).await {
                // A loop of `while try_run_once() > 0` must not spin on it.
                return Err(StoreError::Refused(format!(
                    "job {} could not record its outcome",
                    job.key()
                )));
            }
            ran += 1;
        }
    }
    Ok(ran)
}

/// Runs one job to its next resting point; false when its outcome could not
/// be recorded (the job then stays due). Public so tests and tools can drive
/// the queue without the loop.
pub async fn run_job(fulfiller: &Fulfiller, job: &Job, due_ms: u64) -> bool {
    match job {
        Job::Fulfill {
            session_id,
            trigger,
        } => {
            let Some(id) = SessionId::parse(session_id) else {
                tracing::error!(job = %job.key(), "dropping a job for a malformed session id");
                return fulfiller
                    .store()
                    .finish_job(&job.key(), due_ms)
                    .await
                    .is_ok();
            };
            match fulfiller
                .fulfill_checkout(&id, *trigger, FulfillOptions::default())
                .await
            {
                Ok(outcome) => {
                    tracing::debug!(session = %session_id, state = outcome.state.as_str(), "job done");
                }
                Err(e) => {
                    tracing::error!(session = %session_id, error = %crate::report::chain(&e), "fulfillment job could not record its outcome");
                    return false;
                }
            }
        }
        Job::Deliver {
            notification_id, ..
        } => {
            if let Err(e) = fulfiller.deliver_notification(job).await {
                tracing::error!(notification = %notification_id, error = %crate::report::chain(&e), "notification job could not record its outcome");
                return false;
            }
            return true;
        }
    }
    // A job whose due time nobody moved has nothing left to do (the session
    // was already settled when it ran); anything that still needs work has
    // been rescheduled, with a different due time.
    if let Err(e) = fulfiller.store().finish_job(&job.key(), due_ms).await {
        tracing::error!(error = %crate::report::chain(&e), "cannot remove a finished job");
        return false;
    }
    true
}
