//! The webhook log: the most recent requests to `/webhook`, accepted and
//! rejected, kept in memory for the dashboard.
//!
//! It is deliberately not stored: a rejected request must cost the disk
//! nothing (anyone can send one), and accepted events are already stored
//! durably with their sessions. What it keeps is what a merchant needs to
//! debug a misconfigured endpoint: when, what was wrong, and the clock skew.

use std::{collections::VecDeque, sync::Mutex};

use crate::signature::Rejection;

/// How many requests the log keeps; older ones drop off.
pub const CAPACITY: usize = 1000;

/// Why a request to `/webhook` was not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Signature(Rejection),
    /// The body is not a Stripe event (not UTF-8, not JSON, no id or type).
    BadJson,
    TooLarge,
    /// The body did not arrive in time.
    Timeout,
    Unreadable,
    /// Verified, but it could not be stored: Stripe will deliver it again.
    StoreUnavailable,
}

impl Refusal {
    /// A short machine name, as in the HTTP answer and the logs.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Signature(r) => r.as_str(),
            Refusal::BadJson => "bad_json",
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
            Refusal::Unreadable => "unreadable",
            Refusal::StoreUnavailable => "store_unavailable",
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and durably recorded (`recorded`, `duplicate` or `ignored`).
    Accepted {
        disposition: &'static str,
        /// Why it was ignored, when fulfilld says.
        reason: Option<&'static str>,
        event_id: String,
        event_type: String,
        session_id: Option<String>,
    },
    Refused(Refusal),
}

/// One request to `/webhook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub at_ms: u64,
    pub status: u16,
    pub outcome: Outcome,
    /// Our clock minus the signed timestamp, when the header had one.
    pub skew_secs: Option<i64>,
    /// How many webhook secrets are configured (for "no secret matches").
    pub secrets: usize,
    pub remote: Option<String>,
    /// The User-Agent, truncated: Stripe's own starts with `Stripe/`.
    pub user_agent: Option<String>,
    pub bytes: usize,
}

impl Entry {
    pub fn accepted(&self) -> bool {
        matches!(self.outcome, Outcome::Accepted { .. })
    }
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<Entry>,
    next_seq: u64,
    accepted: u64,
    refused: u64,
}

/// A bounded, thread-safe ring of recent requests with running totals.
#[derive(Default)]
pub struct WebhookLog {
    inner: Mutex<Inner>,
}

/// Which entries to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    Accepted,
    Rejected,
}

impl WebhookLog {
    pub fn new() -> Self {
        WebhookLog::default()
    }

    /// Adds an entry (its `seq` is assigned here).
    pub fn push(&self, mut entry: Entry) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        entry.seq = inner.next_seq;
        inner.next_seq += 1;
        if entry.accepted() {
            inner.accepted += 1;
        } else {
            inner.refused += 1;
        }
        if inner.entries.len() == CAPACITY {
            inner.entries.pop_front();
        }
        inner.entries.push_back(entry);
    }

    /// Newest first, at most `limit`.
    pub fn recent(&self, filter: Filter, limit: usize) -> Vec<Entry> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .iter()
            .rev()
            .filter(|e| match filter {
                Filter::All => true,
                Filter::Accepted => e.accepted(),
                Filter::Rejected => !e.accepted(),
            })
            .take(limit)
            .cloned()
            .collect()
    }

    /// (accepted, refused) since the process started.
    pub fn totals(&self) -> (u64, u64) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.accepted, inner.refused)
    }
}

/// The signed timestamp in a `Stripe-Signature` header, if it has one.
pub fn header_timestamp(header: &str) -> Option<i64> {
    header
        .split(',')
        .filter_map(|part| part.trim().split_once('='))
        .find(|(k, _)| *k == "t")
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(accepted: bool) -> Entry {
        Entry {
            seq: 0,
            at_ms: 1,
            status: if accepted { 200 } else { 400 },
            outcome: if accepted {
                Outcome::Accepted {
                    disposition: "recorded",
                    reason: None,
                    event_id: "evt_1".into(),
                    event_type: "checkout.session.completed".into(),
                    session_id: None,
                }
            } else {
                Outcome::Refused(Refusal::BadJson)
            },
            skew_secs: None,
            secrets: 1,
            remote: None,
            user_agent: None,
            bytes: 10,
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_everything() {
        let log = WebhookLog::new();
        for i in 0..(CAPACITY + 5) {
            log.push(entry(i % 2 == 0));
        }
        let all = log.recent(Filter::All, usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, (CAPACITY + 4) as u64);
        assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
        assert!(
            log.recent(Filter::Rejected, 50)
                .iter()
                .all(|e| !e.accepted())
        );
        assert!(log.recent(Filter::Accepted, 50).iter().all(Entry::accepted));
        assert_eq!(log.totals(), (503, 502));
    }

    #[test]
    fn reads_the_signed_timestamp() {
        assert_eq!(header_timestamp("t=1700000000,v1=abc"), Some(1_700_000_000));
        assert_eq!(header_timestamp("v1=abc, t=12"), Some(12));
        assert_eq!(header_timestamp("v1=abc"), None);
        assert_eq!(header_timestamp("t=soon"), None);
    }
}
