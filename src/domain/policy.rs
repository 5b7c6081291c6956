//! The configurable parts of the rules: how attempts are retried and which
//! notifications this installation sends. One retry policy serves
//! fulfillment attempts, callbacks, emails and alerts alike.

/// Exponential backoff with jitter, and when a series of attempts gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay; it doubles with every further failure.
    pub base_ms: u64,
    /// The longest delay between two attempts.
    pub max_ms: u64,
    /// A series of failures older than this ends in `failed`.
    pub give_up_ms: u64,
}

impl RetryPolicy {
    /// Delay before retry number `failures` (1-based): `base × 2^(failures−1)`,
    /// capped at `cap_ms` (and `max_ms`), scaled by a factor in [0.5, 1]
    /// drawn from `entropy`, so retries of many sessions spread out.
    pub fn delay_ms(&self, failures: u32, entropy: u64, cap_ms: u64) -> u64 {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << failures.saturating_sub(1).min(40));
        let capped = exp.min(self.max_ms).min(cap_ms);
        let half = capped / 2;
        if half == 0 {
            return capped;
        }
        half + entropy % (half + 1)
    }

    /// Whether a series that began at `first_failure_ms` is past the give-up limit.
    pub fn gave_up(&self, first_failure_ms: u64, now: u64) -> bool {
        now.saturating_sub(first_failure_ms) >= self.give_up_ms
    }
}

/// Which emails and alerts this installation sends, from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Channels {
    /// `smtp.url` is set: customers can be emailed.
    pub smtp: bool,
    /// `notifications.merchant_email` (with `smtp.url`).
    pub merchant_email: Option<String>,
    /// `notifications.webhook_url` is set.
    pub alert_webhook: bool,
    /// `fulfillment.receipt_email` (with `smtp.url`).
    pub receipt: bool,
}

/// How a session is handled, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub retry: RetryPolicy,
    /// How long a claim holds before another attempt may take it.
    pub lease_ms: u64,
    /// `fulfillment.callback_url` is set.
    pub callbacks: bool,
    pub channels: Channels,
    /// How often a landing page may make a session be re-checked with Stripe.
    pub landing_recheck_ms: u64,
    /// The longest wait between re-checks of a read that said unpaid when an
    /// event had said paid (a stale read resolves in seconds).
    pub stale_read_recheck_max_ms: u64,
}

impl Policy {
    pub fn new(retry: RetryPolicy, lease_ms: u64, callbacks: bool, channels: Channels) -> Self {
        Policy {
            retry,
            lease_ms,
            callbacks,
            channels,
            landing_recheck_ms: 60_000,
            stale_read_recheck_max_ms: 10 * 60 * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_are_capped() {
        let p = RetryPolicy {
            base_ms: 1000,
            max_ms: 3_600_000,
            give_up_ms: 10_000,
        };
        for entropy in [0, 1, 499, 500, 501, u64::MAX / 3, u64::MAX] {
            let d1 = p.delay_ms(1, entropy, u64::MAX);
            assert!((500..=1000).contains(&d1), "{d1}");
            let d3 = p.delay_ms(3, entropy, u64::MAX);
            assert!((2000..=4000).contains(&d3), "{d3}");
            let capped = p.delay_ms(40, entropy, 10_000);
            assert!((5000..=10_000).contains(&capped), "{capped}");
        }
        assert_eq!(p.delay_ms(1, 0, u64::MAX), 500);
        assert_eq!(p.delay_ms(1, 500, u64::MAX), 1000);
        assert!(!p.gave_up(1000, 10_999));
        assert!(p.gave_up(1000, 11_000));
    }
}
