//! Rate limits for log lines that anonymous traffic can cause (rejected
//! webhooks, failed logins, unknown landing ids, 4xx answers).
//!
//! Anyone on the internet can send such requests, so an unthrottled line
//! per request lets them fill the disk and bury the lines that matter. Each
//! call site owns one [`LogLimit`] (a `static`): at most `max` lines pass per
//! window; the rest are only counted. The first call after the window
//! reopens logs, at `warn`, how many lines the site suppressed, so nothing
//! is hidden silently.
//!
//! ```ignore
//! use fulfilld::log_limit::LogLimit;
//! static REJECTED: LogLimit = LogLimit::new("webhook rejected", 20);
//! if REJECTED.admit() {
//!     tracing::warn!("webhook rejected");
//! }
//! ```
//!
//! Guarantees: per site, at most `max` admitted lines plus one summary line
//! per window; every suppressed line is counted and reported (at the next
//! call after its window ends); the limiter never blocks for long (one
//! uncontended mutex) and never panics (a poisoned lock is recovered).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The window every site uses.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One call site's limit: `max` lines per [`WINDOW`].
pub struct LogLimit {
    site: &'static str,
    max: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// When the current window began; `None` before the first call.
    start: Option<Instant>,
    passed: u32,
    suppressed: u64,
}

/// What one call may do.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the caller should write its line.
    pub log: bool,
    /// Lines suppressed in the windows that just ended, to report now.
    pub report_suppressed: Option<u64>,
}

impl LogLimit {
    /// `site` names the call site in the summary line.
    pub const fn new(site: &'static str, max: u32) -> Self {
        LogLimit::with_window(site, max, WINDOW)
    }

    pub const fn with_window(site: &'static str, max: u32, window: Duration) -> Self {
        LogLimit {
            site,
            max,
            window,
            state: Mutex::new(Window {
                start: None,
                passed: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether the caller may log its line now. Logs the count of
    /// suppressed lines first when a window with suppressed lines has ended.
    pub fn admit(&self) -> bool {
        let d = self.decide(Instant::now());
        if let Some(n) = d.report_suppressed {
            tracing::warn!(
                site = self.site,
                suppressed = n,
                window_secs = self.window.as_secs(),
                "similar log lines were suppressed (rate limit)"
            );
        }
        d.log
    }

    /// The decision at `now`, without logging (the tested core).
    pub fn decide(&self, now: Instant) -> Decision {
        let mut w = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut report_suppressed = None;
        let expired = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            if w.suppressed > 0 {
                report_suppressed = Some(w.suppressed);
            }
            *w = Window {
                start: Some(now),
                passed: 0,
                suppressed: 0,
            };
        }
        let log = if w.passed < self.max {
            w.passed += 1;
            true
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
            false
        };
        Decision {
            log,
            report_suppressed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_lines_pass_the_rest_are_counted_and_the_count_is_reported() {
        let limit = LogLimit::with_window("test", 3, Duration::from_secs(10));
        let t0 = Instant::now();
        let decisions: Vec<Decision> = (0..10)
            .map(|i| limit.decide(t0 + Duration::from_millis(i)))
            .collect();
        assert!(decisions[..3].iter().all(|d| d.log));
        assert!(decisions[3..].iter().all(|d| !d.log));
        assert!(decisions.iter().all(|d| d.report_suppressed.is_none()));
        // Still inside the window: suppressed, nothing reported yet.
        let d = limit.decide(t0 + Duration::from_secs(9));
        assert_eq!(
            d,
            Decision {
                log: false,
                report_suppressed: None
            }
        );
        // The window reopens: the 8 suppressed lines are reported once, and
        // this line passes.
        let d = limit.decide(t0 + Duration::from_secs(10));
        assert_eq!(
            d,
            Decision {
                log: true,
                report_suppressed: Some(8)
            }
        );
        let d = limit.decide(t0 + Duration::from_secs(11));
        assert_eq!(
            d,
            Decision {
                log: true,
                report_suppressed: None
            }
        );
        // A quiet window reports nothing.
        let d = limit.decide(t0 + Duration::from_secs(30));
        assert_eq!(d.report_suppressed, None);
        assert!(d.log);
    }

    #[test]
    fn the_summary_line_is_logged_when_the_window_reopens() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let limit = LogLimit::with_window("login failed", 2, Duration::from_millis(50));
        let passed = (0..5).filter(|_| limit.admit()).count();
        assert_eq!(passed, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(limit.admit());
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("suppressed=3"), "{log}");
        assert!(log.contains("login failed"), "{log}");
    }
}
