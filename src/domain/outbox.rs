//! The rules of the outbox: what one delivery attempt of an entry (a
//! `checkout.payment_failed` callback, an email or an alert) leaves behind.
//! Fulfillment callbacks follow their session instead (see `machine`).

use super::RetryPolicy;
use crate::model::{Notification, NotificationKind, OutboxStatus};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Sent,
    /// `permanent`: retrying cannot help (a refused recipient, a malformed address).
    Failed {
        error: String,
        permanent: bool,
    },
}

/// The retry series of one entry, carried by its delivery job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Series {
    pub failures: u32,
    pub first_failure_ms: Option<u64>,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Settled (sent, or failed for good): the delivery job ends.
    Done,
    /// Try again at `due` with the grown series.
    Retry { due: u64, series: Series },
}

/// Applies one attempt (started at `now`) to `n`. Also returns whether it
/// just gave up, which for a merchant callback means a person must look.
pub fn after_attempt(
    n: &mut Notification,
    series: Series,
    now: u64,
    attempt: &Attempt,
    retry: &RetryPolicy,
    entropy: u64,
) -> (Next, bool) {
    n.attempts = n.attempts.saturating_add(1);
    match attempt {
        Attempt::Sent => {
            n.status = OutboxStatus::Sent;
            n.sent_at_ms = Some(now);
            n.last_error = None;
            (Next::Done, false)
        }
        Attempt::Failed { error, permanent } => {
            n.last_error = Some(error.clone());
            let first = series.first_failure_ms.unwrap_or(now);
            if *permanent || retry.gave_up(first, now) {
                n.status = OutboxStatus::Failed;
                (Next::Done, true)
            } else {
                n.status = OutboxStatus::Retrying;
                let failures = series.failures.saturating_add(1);
                let due = now.saturating_add(retry.delay_ms(failures, entropy, u64::MAX));
                let series = Series {
                    failures,
                    first_failure_ms: Some(first),
                };
                (Next::Retry { due, series }, false)
            }
        }
    }
}

/// Whether a person may queue `n` again: only a `failed` entry of the
/// session, and never a fulfillment callback (re-triggering fulfillment
/// re-sends those).
pub fn may_resend(n: &Notification, session_id: &str) -> bool {
    n.session_id == session_id
        && n.status == OutboxStatus::Failed
        && n.kind != NotificationKind::FulfilledCallback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Notification {
        Notification {
            id: "ntf_x".into(),
            session_id: "cs_test_x".into(),
            kind: NotificationKind::ReceiptEmail,
            body: "{}".into(),
            status: OutboxStatus::Queued,
            refreshed: true,
            recipient: Some("a@example.com".into()),
            attempts: 0,
            last_error: None,
            sent_at_ms: None,
            created_at_ms: 0,
        }
    }

    const RETRY: RetryPolicy = RetryPolicy {
        base_ms: 1000,
        max_ms: 60_000,
        give_up_ms: 100_000,
    };

    #[test]
    fn failures_retry_with_backoff_until_the_limit_then_fail() {
        let mut n = entry();
        let fail = Attempt::Failed {
            error: "421 busy".into(),
            permanent: false,
        };
        let (next, gave_up) = after_attempt(&mut n, Series::default(), 5000, &fail, &RETRY, 0);
        let Next::Retry { due, series } = next else {
            panic!("{next:?}")
        };
        assert_eq!(
            (due, series.failures, series.first_failure_ms),
            (5500, 1, Some(5000))
        );
        assert!(!gave_up);
        assert_eq!(n.status, OutboxStatus::Retrying);
        let (next, gave_up) = after_attempt(&mut n, series, 105_000, &fail, &RETRY, 0);
        assert_eq!((next, gave_up), (Next::Done, true));
        assert_eq!((n.status, n.attempts), (OutboxStatus::Failed, 2));
        assert_eq!(n.last_error.as_deref(), Some("421 busy"));
    }

    #[test]
    fn a_permanent_refusal_fails_at_once_and_success_clears_the_error() {
        let mut n = entry();
        let refused = Attempt::Failed {
            error: "550 no such user".into(),
            permanent: true,
        };
        assert_eq!(
            after_attempt(&mut n, Series::default(), 1, &refused, &RETRY, 0),
            (Next::Done, true)
        );
        assert!(may_resend(&n, "cs_test_x"));
        assert!(!may_resend(&n, "cs_test_y"));
        let mut ok = entry();
        ok.last_error = Some("earlier".into());
        assert_eq!(
            after_attempt(&mut ok, Series::default(), 7, &Attempt::Sent, &RETRY, 0),
            (Next::Done, false)
        );
        assert_eq!(
            (ok.status, ok.sent_at_ms, ok.last_error.clone()),
            (OutboxStatus::Sent, Some(7), None)
        );
        assert!(!may_resend(&ok, "cs_test_x"));
        let mut callback = entry();
        callback.kind = NotificationKind::FulfilledCallback;
        callback.status = OutboxStatus::Failed;
        assert!(!may_resend(&callback, "cs_test_x"));
    }
}
