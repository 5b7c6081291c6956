//! What the backend keeps in memory beside the file: the queue in due order
//! and the number of sessions in each state. Both are rebuilt from the file
//! at open and changed only after the commit that made a change durable, so
//! a reader never sees a job or a count that a crash could take back.
//!
//! Keeping them here is what lets a webhook touch three B-trees instead of
//! eight: the file holds each job once (by key) and no counts, and the
//! worker finds due jobs without a read transaction or a thread hop.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::Notify;

use crate::model::{Job, JobKind, State};

/// Sessions per state, in `State::ALL` order.
pub(super) type Counts = [u64; State::ALL.len()];

/// A change a transaction made, applied here once it is committed.
#[derive(Debug)]
pub(super) enum JobChange {
    Put { due: u64, job: Job },
    Remove { key: String },
}

/// What one transaction changed in the queue and the counts.
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub(super) jobs: Vec<JobChange>,
    pub(super) counts: [i64; State::ALL.len()],
}

impl Changes {
    pub(super) fn count(&mut self, state: State, delta: i64) {
        self.counts[state_index(state)] += delta;
    }
}

fn state_index(state: State) -> usize {
    State::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

#[derive(Default)]
struct Queue {
    by_due: BTreeMap<(u64, String), Job>,
    due_of: HashMap<String, u64>,
}

impl Queue {
    fn remove(&mut self, key: &str) {
        if let Some(due) = self.due_of.remove(key) {
            self.by_due.remove(&(due, key.to_string()));
        }
    }

    fn put(&mut self, due: u64, job: Job) {
        let key = job.key();
        self.remove(&key);
        self.due_of.insert(key.clone(), due);
        self.by_due.insert((due, key), job);
    }
}

/// The queue and the counts, shared by the writer (which changes them) and
/// every reader.
#[derive(Default)]
pub(super) struct Memory {
    queue: Mutex<Queue>,
    counts: Mutex<Counts>,
    /// Notified when a commit queued a job: the worker's cue to look again
    /// (once per commit, however many webhooks it holds; a commit that
    /// queues nothing, like an unpaid session's webhook, wakes nobody).
    wake: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Memory {
    /// Memory for a file whose jobs and counts were just read.
    pub(super) fn rebuilt(jobs: Vec<(u64, Job)>, counts: Counts) -> Self {
        let mut queue = Queue::default();
        for (due, job) in jobs {
            queue.put(due, job);
        }
        Memory {
            queue: Mutex::new(queue),
            counts: Mutex::new(counts),
            wake: Arc::default(),
        }
    }

    pub(super) fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Applies a committed transaction's changes.
    pub(super) fn apply(&self, changes: Changes) {
        if !changes.jobs.is_empty() {
            let mut queue = lock(&self.queue);
            let mut wake = false;
            for change in changes.jobs {
                match change {
                    JobChange::Put { due, job } => {
                        wake = true;
                        queue.put(due, job);
                    }
                    JobChange::Remove { key } => queue.remove(&key),
                }
            }
            drop(queue);
            if wake {
                self.wake.notify_one();
            }
        }
        if changes.counts.iter().any(|d| *d != 0) {
            let mut counts = lock(&self.counts);
            for (n, d) in counts.iter_mut().zip(changes.counts) {
                *n = n.saturating_add_signed(d);
            }
        }
    }

    /// Jobs of `kind` due at or before `now`, earliest first.
    pub(super) fn due_jobs(&self, now: u64, limit: usize, kind: JobKind) -> Vec<(u64, Job)> {
        let queue = lock(&self.queue);
        queue
            .by_due
            .range(..=(now, String::from("\u{7f}")))
            .filter(|(_, job)| job.kind() == kind)
            .take(limit)
            .map(|((due, _), job)| (*due, job.clone()))
            .collect()
    }

    pub(super) fn job_due(&self, key: &str) -> Option<u64> {
        lock(&self.queue).due_of.get(key).copied()
    }

    pub(super) fn queued(&self) -> u64 {
        lock(&self.queue).due_of.len() as u64
    }

    pub(super) fn next_due(&self) -> Option<u64> {
        lock(&self.queue).by_due.keys().next().map(|(due, _)| *due)
    }

    pub(super) fn state_counts(&self) -> Vec<(State, u64)> {
        let counts = lock(&self.counts);
        State::ALL.into_iter().zip(counts.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Trigger;

    fn fulfill(id: &str) -> Job {
        Job::Fulfill {
            session_id: id.into(),
            trigger: Trigger::Webhook,
        }
    }

    #[test]
    fn the_queue_follows_committed_changes_and_wakes_only_when_a_commit_queues_work() {
        let m = Memory::rebuilt(vec![(50, fulfill("cs_test_a"))], [0; 7]);
        let woken = || {
            let n = m.wake();
            let f = n.notified();
            tokio::pin!(f);
            // A stored permit makes the future ready at once.
            f.as_mut().enable()
        };
        let later = Changes {
            jobs: vec![JobChange::Put {
                due: 90,
                job: fulfill("cs_test_b"),
            }],
            ..Changes::default()
        };
        m.apply(Changes::default());
        assert!(!woken(), "a commit that queues nothing wakes nobody");
        m.apply(later);
        assert!(woken(), "a job behind a running one is looked at too");
        m.apply(Changes {
            jobs: vec![
                JobChange::Put {
                    due: 10,
                    job: fulfill("cs_test_b"),
                },
                JobChange::Remove {
                    key: "fulfill:cs_test_a".into(),
                },
            ],
            counts: [1, -1, 0, 0, 0, 0, 0],
        });
        assert!(woken());
        assert_eq!(
            m.job_due("fulfill:cs_test_b"),
            Some(10),
            "moved, not doubled"
        );
        assert_eq!(m.job_due("fulfill:cs_test_a"), None);
        assert_eq!(m.queued(), 1);
        assert_eq!(m.due_jobs(9, 10, JobKind::Fulfill), vec![]);
        assert_eq!(m.due_jobs(10, 10, JobKind::Fulfill).len(), 1);
        assert_eq!(m.due_jobs(10, 10, JobKind::Deliver), vec![]);
        assert_eq!(m.state_counts()[0], (State::AwaitingPayment, 1));
        assert_eq!(
            m.state_counts()[1],
            (State::Fulfilling, 0),
            "never below zero"
        );
    }
}
