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

/// A latency histogram over `DURATION_BUCKETS`: lock-free, cumulative when rendered.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name`, with `labels`
    /// (`key="value"` pairs, already escaped, or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}\n{name}_sum{braces} {sum}\n{name}_count{braces} {count}"
        );
    }
}

/// Outcomes of a call to the Stripe API (one per HTTP request, retries included).
pub const STRIPE_OUTCOMES: [&str; 6] = [
    "ok",
    "not_found",
    "client_error",
    "rate_limited",
    "server_error",
    "network",
];

/// Requests to the Stripe API, counted by the client that makes them.
#[derive(Default)]
pub struct StripeStats {
    requests: [AtomicU64; STRIPE_OUTCOMES.len()],
    latency: Histogram,
}

impl StripeStats {
    /// One request: its HTTP status (None: no answer) and how long it took.
    pub fn request(&self, status: Option<u16>, took: Duration) {
        let outcome = match status {
            Some(200..=299) => "ok",
            Some(404) => "not_found",
            Some(429) => "rate_limited",
            Some(500..) => "server_error",
            Some(_) => "client_error",
            None => "network",
        };
        if let Some(i) = STRIPE_OUTCOMES.iter().position(|o| *o == outcome) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(took);
    }
}

/// Where outbox deliveries go.
pub const CHANNELS: [&str; 3] = ["callback", "email", "alert"];

/// The routes `/metrics` counts requests of (a path is counted under the
/// first that it starts with; anything else is `other`).
const ROUTES: [(&str, &str); 9] = [
    ("/webhook", "webhook"),
    ("/after-checkout", "landing"),
    ("/healthz", "healthz"),
    ("/metrics", "metrics"),
    ("/admin/api/", "api"),
    ("/admin/login", "login"),
    ("/admin", "dashboard"),
    ("/assets/", "assets"),
    ("/", "other"),
];

/// A request path's route label.
pub fn route_of(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map_or("other", |(_, r)| r)
}

/// Outcomes of a request to `/webhook`.
pub const WEBHOOK_OUTCOMES: [&str; 5] = ["recorded", "duplicate", "ignored", "rejected", "error"];

#[derive(Default)]
pub struct Metrics {
    /// Event type → count per `WEBHOOK_OUTCOMES` entry.
    webhooks: Mutex<BTreeMap<String, [u64; WEBHOOK_OUTCOMES.len()]>>,
    signature_failures: [AtomicU64; SIGNATURE_REASONS.len()],
    fulfillments: [AtomicU64; FULFILLMENT_OUTCOMES.len()],
    durations: Histogram,
    /// Deliveries per `CHANNELS` entry: (ok, failed).
    deliveries: [(AtomicU64, AtomicU64); CHANNELS.len()],
    /// Stripe API requests (the client counts them; see `with_stripe`).
    stripe: std::sync::Arc<StripeStats>,
    /// HTTP requests by route label and status code (bounded: the routes
    /// are fixed, status codes are three digits).
    http: Mutex<BTreeMap<(&'static str, u16), u64>>,
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
            self.durations.observe(d);
        }
    }

    /// One delivery attempt on `channel` (`callback`, `email` or `alert`).
    pub fn delivery(&self, channel: &str, ok: bool) {
        if let Some(i) = CHANNELS.iter().position(|c| *c == channel) {
            let (good, bad) = &self.deliveries[i];
            if ok { good } else { bad }.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Shows the requests of the Stripe client that counts into `stats`.
    pub fn with_stripe(mut self, stats: std::sync::Arc<StripeStats>) -> Self {
        self.stripe = stats;
        self
    }

    /// One HTTP request answered: its path and status.
    pub fn http_request(&self, path: &str, status: u16) {
        let route = route_of(path);
        let mut map = self.http.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route, status)).or_default() += 1;
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
        self.durations
            .render(&mut out, "fulfilld_fulfillment_duration_seconds", "");
        family(
            &mut out,
            "fulfilld_deliveries_total",
            "counter",
            "Outbox delivery attempts by channel (merchant callback, email, alert) and result.",
        );
        for (channel, (ok, failed)) in CHANNELS.iter().zip(&self.deliveries) {
            let _ = writeln!(
                out,
                "fulfilld_deliveries_total{{channel=\"{channel}\",result=\"ok\"}} {}\n\
                 fulfilld_deliveries_total{{channel=\"{channel}\",result=\"failed\"}} {}",
                ok.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "fulfilld_stripe_requests_total",
            "counter",
            "Requests to the Stripe API by outcome (each retry counts).",
        );
        for (i, outcome) in STRIPE_OUTCOMES.iter().enumerate() {
            let n = self.stripe.requests[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "fulfilld_stripe_requests_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        family(
            &mut out,
            "fulfilld_stripe_request_duration_seconds",
            "histogram",
            "Duration of requests to the Stripe API.",
        );
        self.stripe
            .latency
            .render(&mut out, "fulfilld_stripe_request_duration_seconds", "");
        family(
            &mut out,
            "fulfilld_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status code.",
        );
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ((route, status), n) in &http {
            let _ = writeln!(
                out,
                "fulfilld_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        process_metrics(&mut out);
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

/// The standard `process_*` metrics, from `/proc/self` (Linux; elsewhere none).
fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf reads process-wide constants and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if let (Some(utime), Some(stime), true) = (field(11), field(12), ticks > 0) {
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {}",
            (utime + stime) as f64 / ticks as f64
        );
    }
    if let (Some(vsize), Some(rss), true) = (field(20), field(21), page > 0) {
        family(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {vsize}");
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss * page as u64);
    }
    if let (Some(start), Ok(uptime), true) = (
        field(19),
        std::fs::read_to_string("/proc/uptime"),
        ticks > 0,
    ) {
        let boot = uptime
            .split_whitespace()
            .next()
            .and_then(|u| u.parse::<f64>().ok())
            .map(|up| crate::time::now_ms() as f64 / 1000.0 - up);
        if let Some(boot) = boot {
            family(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
            );
            let _ = writeln!(
                out,
                "process_start_time_seconds {:.3}",
                boot + start as f64 / ticks as f64
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok())
        });
    if let Some(max) = max_fds {
        family(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
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
    fn routes_channels_and_stripe_outcomes_are_labelled() {
        assert_eq!(route_of("/admin/api/sessions.csv"), "api");
        assert_eq!(route_of("/admin/sessions/cs_1"), "dashboard");
        assert_eq!(route_of("/after-checkout/status"), "landing");
        assert_eq!(route_of("/wp-login.php"), "other");
        let m = Metrics::new();
        m.delivery("alert", false);
        m.delivery("nonsense", true);
        m.http_request("/webhook", 200);
        m.stripe.request(Some(429), Duration::from_millis(3));
        m.stripe.request(None, Duration::from_secs(2));
        let text = m.render(&snap());
        assert!(text.contains("fulfilld_deliveries_total{channel=\"alert\",result=\"failed\"} 1"));
        assert!(text.contains("fulfilld_http_requests_total{route=\"webhook\",status=\"200\"} 1"));
        assert!(text.contains("fulfilld_stripe_requests_total{outcome=\"rate_limited\"} 1"));
        assert!(text.contains("fulfilld_stripe_requests_total{outcome=\"network\"} 1"));
        assert!(text.contains("fulfilld_stripe_request_duration_seconds_count 2"));
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
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
