//! Token buckets for what anonymous callers can make fulfilld spend: each
//! landing-page hit with a session id fulfilld has not recorded costs an
//! authenticated Stripe call. One budget is shared by everyone and one is
//! kept per client (an IPv6 /64 counts as one), so made-up ids cost at most
//! a known share of the account's rate limit, and one noisy client cannot
//! spend it all. Sessions the webhook already recorded never pass here.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A bucket's shape: `burst` tokens at most, refilled by one every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

/// Unknown-id lookups everyone together may make: 10 at once, then one
/// every 500 ms (2/s, a tenth of Stripe's 25 reads/s in test mode and a
/// fiftieth of live mode's 100), leaving the rest to fulfillment.
pub const UNKNOWN_LOOKUPS_GLOBAL: Rate = Rate {
    burst: 10,
    every: Duration::from_millis(500),
};

/// Unknown-id lookups one client may make: 3 at once (a customer who lands
/// before the webhook and reloads), then one every 20 s.
pub const UNKNOWN_LOOKUPS_PER_CLIENT: Rate = Rate {
    burst: 3,
    every: Duration::from_secs(20),
};

/// Clients tracked at most; beyond it full (idle) buckets are dropped first,
/// and while none is idle a new client is refused rather than the map grown.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Whole tokens available at `at`.
    tokens: u32,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Adds the tokens earned since `at`, keeping the remainder of the
    /// current interval (so refills never drift).
    fn refill(&mut self, rate: Rate, now: Instant) {
        let every = rate.every.max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.at);
        let earned = elapsed.as_nanos() / every.as_nanos();
        if earned == 0 {
            return;
        }
        let tokens = u128::from(self.tokens) + earned;
        if tokens >= u128::from(rate.burst) {
            self.tokens = rate.burst;
            self.at = now;
        } else {
            self.tokens = tokens as u32;
            // `earned` intervals were used up; time past them carries over.
            self.at += every * earned as u32;
        }
    }

    /// How long until a token is available (zero if one is now).
    fn wait(&self, rate: Rate, now: Instant) -> Duration {
        if self.tokens > 0 {
            return Duration::ZERO;
        }
        (self.at + rate.every).saturating_duration_since(now)
    }
}

pub struct Limiter {
    global_rate: Rate,
    client_rate: Rate,
    global: Mutex<Bucket>,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    pub fn new(global_rate: Rate, client_rate: Rate) -> Self {
        let now = Instant::now();
        Limiter {
            global_rate,
            client_rate,
            global: Mutex::new(Bucket::full(global_rate, now)),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `client`'s bucket and one from the shared one,
    /// or neither: `Err` says how long until both could give one.
    pub fn admit(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        // An IPv6 /64 is one subscriber, as for the login throttle.
        let key = super::auth::throttle_key(client);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let mut global = self.global.lock().unwrap_or_else(|p| p.into_inner());
        global.refill(self.global_rate, now);
        if !clients.contains_key(&key) && clients.len() >= MAX_CLIENTS {
            let (client_rate, before) = (self.client_rate, clients.len());
            clients.retain(|_, b| {
                b.refill(client_rate, now);
                b.tokens < client_rate.burst
            });
            if clients.len() == before {
                return Err(self.client_rate.every);
            }
        }
        let bucket = clients
            .entry(key)
            .or_insert_with(|| Bucket::full(self.client_rate, now));
        bucket.refill(self.client_rate, now);
        let wait = bucket
            .wait(self.client_rate, now)
            .max(global.wait(self.global_rate, now));
        if wait > Duration::ZERO {
            return Err(wait);
        }
        bucket.tokens -= 1;
        global.tokens -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBAL: Rate = Rate {
        burst: 5,
        every: Duration::from_millis(100),
    };
    const CLIENT: Rate = Rate {
        burst: 2,
        every: Duration::from_secs(1),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_one_per_interval() {
        let l = Limiter::new(GLOBAL, CLIENT);
        let t = Instant::now();
        assert!(l.admit(ip("192.0.2.1"), t).is_ok());
        assert!(l.admit(ip("192.0.2.1"), t).is_ok());
        assert_eq!(l.admit(ip("192.0.2.1"), t), Err(Duration::from_secs(1)));
        // Another client is not held back by the first.
        assert!(l.admit(ip("192.0.2.2"), t).is_ok());
        let later = t + Duration::from_millis(1500);
        assert!(l.admit(ip("192.0.2.1"), later).is_ok());
        assert_eq!(
            l.admit(ip("192.0.2.1"), later),
            Err(Duration::from_millis(500)),
            "the half interval already passed counts"
        );
    }

    #[test]
    fn everyone_together_is_held_to_the_shared_budget() {
        let l = Limiter::new(GLOBAL, CLIENT);
        let t = Instant::now();
        let admitted = (0..100u8)
            .filter(|n| l.admit(ip(&format!("198.51.100.{n}")), t).is_ok())
            .count();
        assert_eq!(admitted, 5);
        // Over one second the shared bucket gives 10 more, not more.
        let mut later = 0;
        for ms in (10..=1000).step_by(10) {
            let now = t + Duration::from_millis(ms);
            later += (0..100u8)
                .filter(|n| l.admit(ip(&format!("203.0.113.{n}")), now).is_ok())
                .count();
        }
        assert_eq!(later, 10);
    }

    #[test]
    fn an_ipv6_subscriber_counts_once_and_the_map_is_bounded() {
        let l = Limiter::new(
            Rate {
                burst: 1_000_000,
                every: Duration::from_millis(1),
            },
            CLIENT,
        );
        let t = Instant::now();
        assert!(l.admit(ip("2001:db8:1:2::1"), t).is_ok());
        assert!(l.admit(ip("2001:db8:1:2::ffff"), t).is_ok());
        assert!(l.admit(ip("2001:db8:1:2:abcd::1"), t).is_err());
        assert!(l.admit(ip("2001:db8:1:3::1"), t).is_ok());
        for n in 0..(MAX_CLIENTS as u32 + 10) {
            let _ = l.admit(IpAddr::V4(n.into()), t);
        }
        let tracked = l.clients.lock().unwrap().len();
        assert!(tracked <= MAX_CLIENTS, "{tracked}");
    }
}
