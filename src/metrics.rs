//! Counters for `GET /metrics` (Prometheus text format 0.0.4). Lock-free
//! atomics on the hot paths; label sets are bounded so a stream of odd event
//! types cannot grow memory.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::model::State;

/// Distinct webhook event types tracked; later ones are counted as `other`.
const MAX_EVENT_TYPES: usize = 64;

/// Upper bounds (seconds) of the fulfillment-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The signature failure reasons, in a fixed order (see `signature::Rejection`).
pub const SIGNATURE_REASONS: [&str; 6] = [
    "missing_header",
    "empty_payload",
    "malformed_header",
    "no_signatures_with_expected_scheme",
    "no_matching_signature",
    "timestamp_outside_tolerance",
];

/// What a fulfillment attempt ended as: a state name, or `skipped` when the
/// call found nothing to do (already fulfilled, or another caller at work).
pub const FULFILLMENT_OUTCOMES: [&str; 8] = [
    "fulfilled",
    "awaiting_payment",
    "fulfilling",
    "retrying",
    "failed",
    "payment_failed",
    "expired",
    "skipped",
];

/// Outcomes of a request to `/webhook`.
pub const WEBHOOK_OUTCOMES: [&str; 5] = ["recorded", "duplicate", "ignored", "rejected", "error"];

#[derive(Default)]
pub struct Metrics {
    /// Event type → count per `WEBHOOK_OUTCOMES` entry.
    webhooks: Mutex<BTreeMap<String, [u64; WEBHOOK_OUTCOMES.len()]>>,
    signature_failures: [AtomicU64; SIGNATURE_REASONS.len()],
    fulfillments: [AtomicU64; FULFILLMENT_OUTCOMES.len()],
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
    /// Callback and notification deliveries by result.
    deliveries_ok: AtomicU64,
    deliveries_failed: AtomicU64,
}

/// Values read from the database at scrape time.
pub struct Snapshot {
    pub queued_jobs: u64,
    /// Seconds the oldest due job has waited (0 when none is due).
    pub oldest_pending_job_secs: f64,
    pub sessions_by_state: Vec<(State, u64)>,
    pub uptime_secs: f64,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// One request to `/webhook`: its event type (`unknown` when it was not
    /// verified) and outcome (`recorded`, `duplicate`, `ignored`, `rejected`, `error`).
    pub fn webhook(&self, event_type: Option<&str>, outcome: &str) {
        let Some(o) = WEBHOOK_OUTCOMES.iter().position(|w| *w == outcome) else {
            return;
        };
        let kind = event_type.unwrap_or("unknown");
        let mut map = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counts) = map.get_mut(kind) {
            counts[o] += 1;
            return;
        }
        let kind = if map.len() < MAX_EVENT_TYPES {
            kind
        } else {
            "other"
        };
        map.entry(kind.to_string()).or_default()[o] += 1;
    }

    pub fn signature_failure(&self, reason: &str) {
        if let Some(i) = SIGNATURE_REASONS.iter().position(|r| *r == reason) {
            self.signature_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One `fulfill_checkout` call: its outcome and, when it did work, how long it took.
    pub fn fulfillment(&self, outcome: &str, took: Option<Duration>) {
        if let Some(i) = FULFILLMENT_OUTCOMES.iter().position(|o| *o == outcome) {
            self.fulfillments[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = took {
            let secs = d.as_secs_f64();
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                if secs <= *le {
                    self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            self.duration_count.fetch_add(1, Ordering::Relaxed);
            self.duration_sum_micros
                .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        }
    }

    pub fn delivery(&self, ok: bool) {
        if ok {
            self.deliveries_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.deliveries_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "fulfilld_webhooks_total",
            "counter",
            "Requests to /webhook by event type and outcome.",
        );
        let webhooks = self
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (kind, counts) in &webhooks {
            for (outcome, n) in WEBHOOK_OUTCOMES.iter().zip(counts) {
                if *n > 0 {
                    let _ = writeln!(
                        out,
                        "fulfilld_webhooks_total{{type=\"{}\",outcome=\"{outcome}\"}} {n}",
                        escape(kind)
                    );
                }
            }
        }
        family(
            &mut out,
            "fulfilld_webhook_signature_failures_total",
            "counter",
            "Webhooks refused by signature verification, by reason.",
        );
        for (i, reason) in SIGNATURE_REASONS.iter().enumerate() {
            let n = self.signature_failures[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "fulfilld_webhook_signature_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        family(
            &mut out,
            "fulfilld_fulfillments_total",
            "counter",
            "fulfill_checkout calls by outcome (skipped: nothing to do).",
        );
        for (i, outcome) in FULFILLMENT_OUTCOMES.iter().enumerate() {
            let n = self.fulfillments[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "fulfilld_fulfillments_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        family(
            &mut out,
            "fulfilld_fulfillment_duration_seconds",
            "histogram",
            "Duration of fulfill_checkout calls that did work (Stripe fetch, record, callback).",
        );
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            let n = self.duration_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "fulfilld_fulfillment_duration_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "fulfilld_fulfillment_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             fulfilld_fulfillment_duration_seconds_sum {sum}\n\
             fulfilld_fulfillment_duration_seconds_count {count}"
        );
        family(
            &mut out,
            "fulfilld_deliveries_total",
            "counter",
            "Outbox delivery attempts (merchant callbacks, emails, alerts) by result.",
        );
        let _ = writeln!(
            out,
            "fulfilld_deliveries_total{{result=\"ok\"}} {}\n\
             fulfilld_deliveries_total{{result=\"failed\"}} {}",
            self.deliveries_ok.load(Ordering::Relaxed),
            self.deliveries_failed.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "fulfilld_jobs_queued",
            "gauge",
            "Jobs in the durable queue (due now or later).",
        );
        let _ = writeln!(out, "fulfilld_jobs_queued {}", snap.queued_jobs);
        family(
            &mut out,
            "fulfilld_oldest_pending_job_age_seconds",
            "gauge",
            "How long the oldest due job has been waiting (0 when none is due).",
        );
        let _ = writeln!(
            out,
            "fulfilld_oldest_pending_job_age_seconds {:.3}",
            snap.oldest_pending_job_secs
        );
        family(
            &mut out,
            "fulfilld_sessions",
            "gauge",
            "Checkout Sessions by fulfillment state.",
        );
        for (state, n) in &snap.sessions_by_state {
            let _ = writeln!(out, "fulfilld_sessions{{state=\"{}\"}} {n}", state.as_str());
        }
        family(
            &mut out,
            "fulfilld_uptime_seconds",
            "gauge",
            "Seconds since this process started serving.",
        );
        let _ = writeln!(out, "fulfilld_uptime_seconds {:.3}", snap.uptime_secs);
        family(
            &mut out,
            "fulfilld_build_info",
            "gauge",
            "Always 1; the version as a label.",
        );
        let _ = writeln!(
            out,
            "fulfilld_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline), per the text format.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            queued_jobs: 2,
            oldest_pending_job_secs: 1.5,
            sessions_by_state: vec![(State::Fulfilled, 3)],
            uptime_secs: 10.0,
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.fulfillment("fulfilled", Some(Duration::from_millis(30)));
        m.fulfillment("retrying", Some(Duration::from_secs(3)));
        m.fulfillment("skipped", None);
        let text = m.render(&snap());
        assert!(text.contains("fulfilld_fulfillment_duration_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("fulfilld_fulfillment_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("fulfilld_fulfillment_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("fulfilld_fulfillment_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("fulfilld_fulfillments_total{outcome=\"skipped\"} 1"));
    }

    #[test]
    fn event_types_are_bounded_and_escaped() {
        let m = Metrics::new();
        for i in 0..(MAX_EVENT_TYPES + 10) {
            m.webhook(Some(&format!("type.{i}")), "ignored");
        }
        m.webhook(Some("type.0"), "duplicate");
        m.webhook(Some("a\"b"), "ignored");
        let text = m.render(&snap());
        assert!(
            text.contains("type=\"other\",outcome=\"ignored\"} 11"),
            "{text}"
        );
        assert!(text.contains("type=\"type.0\",outcome=\"duplicate\"} 1"));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
