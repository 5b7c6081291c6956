//! Dashboard login: password check, session cookies, CSRF tokens and the
//! brake on failed logins.
//!
//! Guarantees:
//! - the username and password are compared in constant time (over SHA-256
//!   digests, so lengths do not leak), or verified against an Argon2 PHC hash;
//! - a session is a 256-bit random token in an HttpOnly, SameSite=Strict
//!   cookie (Secure when `server.public_url` is https), stored here only as
//!   its SHA-256, and it ends at logout or after `SESSION_TTL`;
//! - each session has its own CSRF token, required on every state-changing form;
//! - after `FREE_FAILURES` failed logins from one address (an IPv6 /64
//!   counts as one), further attempts from it are refused for a delay that
//!   doubles with each failure. An attempt is counted before its password is
//!   checked, so a burst of parallel guesses gets no more tries than a
//!   sequence; Argon2 checks run at most `ARGON2_SLOTS` at a time.
//!
//! Sessions live in memory: a restart signs the admin out, nothing else.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use poem::Request;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

pub const COOKIE: &str = "fulfilld_admin";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Logins kept at once; the oldest is dropped past this.
const MAX_SESSIONS: usize = 256;
/// Failed logins from one address before it is slowed down.
pub const FREE_FAILURES: u32 = 3;
/// The longest an address waits between attempts.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A quiet address's failures are forgotten after this long.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Addresses tracked at once (bounded so a scan cannot grow it forever).
const MAX_TRACKED: usize = 4096;
/// Argon2 verifications at once (each takes tens of MiB and a core).
const ARGON2_SLOTS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("admin.password_hash is not a valid Argon2 PHC string: {0}")]
    BadHash(String),
    #[error("admin.username and admin.password (or admin.password_hash) are required")]
    Missing,
}

enum Credential {
    Plain([u8; 32]),
    /// An Argon2 PHC string, checked at startup.
    Hash(String),
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub username: String,
    pub csrf: String,
    expires: Instant,
}

struct Failures {
    count: u32,
    last: Instant,
}

pub enum LoginResult {
    /// The cookie value to set.
    Ok(String),
    Wrong,
    /// Too many failures from this address: try again after this long.
    Throttled(Duration),
    /// No session token could be made (the OS RNG failed).
    Unavailable,
}

pub struct AdminAuth {
    username: [u8; 32],
    username_plain: String,
    credential: Credential,
    secure_cookie: bool,
    sessions: Mutex<HashMap<[u8; 32], AdminSession>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    argon2_slots: tokio::sync::Semaphore,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

/// Whether two digests are equal, in constant time.
fn digests_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Whether a presented secret (token, CSRF token) equals the expected one,
/// in constant time over SHA-256 digests, so neither the content nor the
/// length of the expected secret leaks through timing.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    digests_eq(&digest(given), &digest(expected))
}

/// 256 bits from the OS RNG, as hex; fails closed.
fn random_token() -> Result<String, crate::model::RngError> {
    Ok(format!(
        "{}{}",
        crate::model::random_hex()?,
        crate::model::random_hex()?
    ))
}

/// The delay an address must wait after `count` failures.
pub fn delay_after(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (count - FREE_FAILURES + 1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

/// The key failures are counted under: the address, or its /64 for IPv6
/// (one subscriber usually holds a whole /64).
fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
    }
}

impl AdminAuth {
    pub fn new(
        username: Option<&str>,
        password: Option<&Secret>,
        password_hash: Option<&Secret>,
        secure_cookie: bool,
    ) -> Result<Self, AuthError> {
        let username = username
            .filter(|u| !u.is_empty())
            .ok_or(AuthError::Missing)?;
        let credential = match (password, password_hash) {
            (_, Some(hash)) => {
                PasswordHash::new(hash.expose()).map_err(|e| AuthError::BadHash(e.to_string()))?;
                Credential::Hash(hash.expose().to_string())
            }
            (Some(p), None) => Credential::Plain(digest(p.expose().as_bytes())),
            (None, None) => return Err(AuthError::Missing),
        };
        Ok(AdminAuth {
            username: digest(username.as_bytes()),
            username_plain: username.to_string(),
            credential,
            secure_cookie,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            argon2_slots: tokio::sync::Semaphore::new(ARGON2_SLOTS),
        })
    }

    /// Checks a login attempt from `ip`; on success opens a session.
    pub async fn login(&self, ip: Option<IpAddr>, username: &str, password: &str) -> LoginResult {
        let key = ip.map(throttle_key);
        // Counted as a failure up front, undone on success: parallel guesses
        // see each other's attempts.
        if let Some(key) = key
            && let Err(wait) = self.admit(key)
        {
            return LoginResult::Throttled(wait);
        }
        let user_ok = digests_eq(&digest(username.as_bytes()), &self.username);
        let pass_ok = match &self.credential {
            Credential::Plain(d) => digests_eq(&digest(password.as_bytes()), d),
            Credential::Hash(phc) => {
                let Ok(_slot) = self.argon2_slots.acquire().await else {
                    return LoginResult::Wrong;
                };
                // Argon2 is deliberately slow: keep it off the async threads.
                let (phc, password) = (phc.clone(), password.to_string());
                tokio::task::spawn_blocking(move || {
                    PasswordHash::new(&phc)
                        .map(|h| {
                            Argon2::default()
                                .verify_password(password.as_bytes(), &h)
                                .is_ok()
                        })
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false)
            }
        };
        if user_ok && pass_ok {
            if let Some(key) = key {
                self.lock_failures().remove(&key);
            }
            match self.open_session() {
                Ok(token) => LoginResult::Ok(token),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open a dashboard session");
                    LoginResult::Unavailable
                }
            }
        } else {
            LoginResult::Wrong
        }
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], AdminSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses an address that must still wait; otherwise counts this attempt.
    fn admit(&self, key: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failures = self.lock_failures();
        if let Some(f) = failures.get(&key) {
            let ready = f.last + delay_after(f.count);
            if ready > now && now.duration_since(f.last) < FAILURE_MEMORY {
                return Err(ready - now);
            }
        }
        failures.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
        if failures.len() >= MAX_TRACKED
            && !failures.contains_key(&key)
            && let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
        {
            failures.remove(&oldest);
        }
        let f = failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        f.count += 1;
        f.last = now;
        Ok(())
    }

    fn open_session(&self) -> Result<String, crate::model::RngError> {
        let token = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut sessions = self.lock_sessions();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(token.as_bytes()),
            AdminSession {
                username: self.username_plain.clone(),
                csrf,
                expires: now + SESSION_TTL,
            },
        );
        Ok(token)
    }

    /// The signed-in admin of this request, from its cookie.
    pub fn session(&self, req: &Request) -> Option<AdminSession> {
        let token = cookie(req, COOKIE)?;
        let key = digest(token.as_bytes());
        let mut sessions = self.lock_sessions();
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of this request, if any.
    pub fn logout(&self, req: &Request) {
        if let Some(token) = cookie(req, COOKIE) {
            self.lock_sessions().remove(&digest(token.as_bytes()));
        }
    }

    /// The `Set-Cookie` value for a new session.
    pub fn set_cookie(&self, token: &str) -> String {
        format!(
            "{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_TTL.as_secs(),
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }
}

/// Whether `given` is this session's CSRF token (constant time).
pub fn csrf_ok(session: &AdminSession, given: Option<&str>) -> bool {
    given.is_some_and(|g| secret_eq(g.as_bytes(), session.csrf.as_bytes()))
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AdminAuth {
        AdminAuth::new(Some("admin"), Some(&Secret::new("pw")), None, false).unwrap()
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(secret_eq(b"tok_123", b"tok_123"));
        assert!(!secret_eq(b"tok_123", b"tok_124"));
        assert!(!secret_eq(b"tok_12", b"tok_123"));
        assert!(!secret_eq(b"", b"tok_123"));
    }

    #[test]
    fn delays_double_after_the_free_failures_and_are_capped() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(delay_after(FREE_FAILURES), Duration::from_secs(2));
        assert_eq!(delay_after(FREE_FAILURES + 1), Duration::from_secs(4));
        assert_eq!(delay_after(FREE_FAILURES + 40), MAX_DELAY);
    }

    #[tokio::test]
    async fn sessions_end_at_logout_or_expiry() {
        let a = auth();
        let LoginResult::Ok(token) = a.login(None, "admin", "pw").await else {
            panic!("the right password signs in");
        };
        let request = |t: &str| {
            Request::builder()
                .header("cookie", format!("other=1; {COOKIE}={t}"))
                .finish()
        };
        assert_eq!(a.session(&request(&token)).unwrap().username, "admin");
        assert!(a.session(&request("forged")).is_none());
        // Expired: as if SESSION_TTL had passed.
        for s in a.lock_sessions().values_mut() {
            s.expires = Instant::now() - Duration::from_secs(1);
        }
        assert!(a.session(&request(&token)).is_none());
        let LoginResult::Ok(second) = a.login(None, "admin", "pw").await else {
            panic!("signs in again");
        };
        a.logout(&request(&second));
        assert!(a.session(&request(&second)).is_none());
    }

    #[test]
    fn an_ipv6_subscriber_counts_as_one_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(throttle_key(a), throttle_key(b));
        assert_ne!(throttle_key(a), throttle_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(throttle_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn parallel_guesses_get_no_more_tries_than_sequential_ones() {
        let a = std::sync::Arc::new(auth());
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let guesses = (0..40).map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.login(Some(ip), "admin", "guess").await })
        });
        let mut checked = 0;
        for g in guesses {
            if matches!(g.await.unwrap(), LoginResult::Wrong) {
                checked += 1;
            }
        }
        assert_eq!(checked, FREE_FAILURES as usize);
    }

    #[tokio::test]
    async fn wrong_credentials_fail_and_throttle_the_address() {
        let a = auth();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(
            a.login(Some(ip), "admin", "nope").await,
            LoginResult::Wrong
        ));
        assert!(matches!(
            a.login(Some(ip), "root", "pw").await,
            LoginResult::Wrong
        ));
        assert!(matches!(
            a.login(Some(ip), "admin", "").await,
            LoginResult::Wrong
        ));
        // The right password is refused too while the address waits.
        assert!(matches!(
            a.login(Some(ip), "admin", "pw").await,
            LoginResult::Throttled(_)
        ));
        // Another address is not affected.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(matches!(
            a.login(Some(other), "admin", "pw").await,
            LoginResult::Ok(_)
        ));
    }

    #[tokio::test]
    async fn argon2_hashes_verify() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        let a = AdminAuth::new(Some("admin"), None, Some(&Secret::new(phc)), true).unwrap();
        assert!(matches!(
            a.login(None, "admin", "s3cret").await,
            LoginResult::Ok(_)
        ));
        assert!(matches!(
            a.login(None, "admin", "s3cret!").await,
            LoginResult::Wrong
        ));
        assert!(a.set_cookie("x").ends_with("; Secure"));
        assert!(matches!(
            AdminAuth::new(Some("admin"), None, Some(&Secret::new("plain")), false),
            Err(AuthError::BadHash(_))
        ));
    }
}
