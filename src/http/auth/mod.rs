//! Dashboard login: password check, session cookies, device cookies, CSRF
//! tokens, and the brakes on failed logins and wrong API tokens.
//!
//! Guarantees:
//! - the username and password are compared in constant time (over SHA-256
//!   digests, so lengths do not leak), or verified against an Argon2 PHC hash;
//! - a session is a 256-bit random token in an HttpOnly, SameSite=Strict
//!   cookie (Secure when `server.public_url` is https), kept only as the
//!   SHA-256 of the token with the username and credential (so a changed
//!   password ends it), and it ends at logout or after `SESSION_TTL`;
//! - each session has its own CSRF token, required on every state-changing form;
//! - failed logins are throttled after `FREE_FAILURES`, with a delay that
//!   doubles with each failure up to `MAX_DELAY`. An attempt is counted
//!   before its password is checked, so a burst of parallel guesses gets no
//!   more tries than a sequence; Argon2 checks run at most `ARGON2_SLOTS` at a time;
//! - what is throttled follows OWASP's device cookies ("Slow Down Online
//!   Guessing Attacks with Device Cookies"): a browser that signed in before
//!   carries a device cookie (HMAC-signed, bound to the admin's username and
//!   credential), and its attempts are counted for that device alone; every
//!   other attempt is counted for its client address (an IPv6 /64 counts as
//!   one). So an attacker who shares the admin's address (the same proxy,
//!   the same NAT) can slow down only browsers without a device cookie, never
//!   the admin's own; a device cookie cannot be forged without the key, and
//!   a bad one counts as none;
//! - a success removes only its own attempt from an address's count: the
//!   admin signing in does not hand an attacker on the same address fresh tries;
//! - wrong API tokens are counted per client address: after
//!   `API_FREE_FAILURES` the address's wrong tokens get 429 (neither counted
//!   nor logged) until its delay passes. The right token is always accepted, so
//!   nobody sharing an address can lock the merchant's scripts out; guessing
//!   is prevented by the token's strength, enforced at startup.
//!
//! Sessions live in memory (a restart signs the admin out), or, when
//! several replicas share a PostgreSQL database, in the database
//! (`with_shared`): a sign-in on one replica works on every other, and a
//! logout ends it on all of them at once. The throttles stay per process:
//! behind a load balancer with N replicas an address or device gets at
//! most N times `FREE_FAILURES` free attempts, and each replica's delays
//! double on their own. The device-cookie key is derived from the
//! database's secret (`with_device_key`), so device cookies stay valid
//! across restarts and replicas.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use hmac::Mac;
use poem::Request;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{config::Secret, signature::HmacSha256};

pub const COOKIE: &str = "fulfilld_admin";
/// The device cookie of a browser that signed in before.
pub const DEVICE_COOKIE: &str = "fulfilld_device";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a device cookie lasts; every sign-in issues a fresh one.
pub const DEVICE_TTL: Duration = Duration::from_secs(90 * 86_400);
/// Logins kept at once; the oldest is dropped past this.
const MAX_SESSIONS: usize = crate::store::SIGN_INS_KEPT;
/// Failed logins from one address or device before it is slowed down.
pub const FREE_FAILURES: u32 = 3;
/// Wrong API tokens from one address before it gets 429.
pub const API_FREE_FAILURES: u32 = 5;
/// The longest an address or device waits between attempts.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A quiet address's or device's failures are forgotten after this long.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Addresses (and, separately, devices) tracked at once, so a scan cannot
/// grow the tables forever; the quietest is forgotten first.
const MAX_TRACKED: usize = 4096;
/// Argon2 verifications at once (each takes tens of MiB and a core).
const ARGON2_SLOTS: usize = 2;
/// Signed into every device cookie, so the key signs nothing else.
const DEVICE_CONTEXT: &[u8] = b"fulfilld device cookie v1\0";
/// Hashed into every sign-in's key, with the username and credential.
const SESSION_CONTEXT: &[u8] = b"fulfilld sign-in v1\0";

/// Why a sign-in could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("no session token could be made")]
    Rng(#[source] crate::model::RngError),
    #[error("the sign-in could not be stored")]
    Store(#[source] crate::store::StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("admin.password_hash is not a valid Argon2 PHC string: {0}")]
    BadHash(String),
    #[error("admin.username and admin.password (or admin.password_hash) are required")]
    Missing,
    #[error("cannot make the device-cookie key")]
    Rng(#[source] crate::model::RngError),
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

/// A sign-in as the shared store keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSession {
    username: String,
    csrf: String,
}

struct Failures {
    count: u32,
    last: Instant,
}

/// Failure counts per key (an address or a device), bounded in size.
struct Throttle<K> {
    free: u32,
    map: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Copy> Throttle<K> {
    fn new(free: u32) -> Self {
        Throttle {
            free,
            map: HashMap::new(),
        }
    }

    /// How long `key` must still wait, if it must.
    fn waiting(&self, key: &K, now: Instant) -> Option<Duration> {
        let f = self.map.get(key)?;
        let ready = f.last + delay_after_free(f.count, self.free);
        (ready > now && now.duration_since(f.last) < FAILURE_MEMORY).then(|| ready - now)
    }

    /// Counts a failure of `key`; returns its count.
    fn count(&mut self, key: K, now: Instant) -> u32 {
        self.map
            .retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
        if self.map.len() >= MAX_TRACKED
            && !self.map.contains_key(&key)
            && let Some(oldest) = self.map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
        {
            self.map.remove(&oldest);
        }
        let f = self.map.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        f.count += 1;
        f.last = now;
        f.count
    }

    /// Refuses a key that must still wait; otherwise counts this attempt.
    fn admit(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if let Some(wait) = self.waiting(&key, now) {
            return Err(wait);
        }
        self.count(key, now);
        Ok(())
    }

    /// Takes back one counted attempt (it succeeded).
    fn undo(&mut self, key: &K) {
        if let Some(f) = self.map.get_mut(key) {
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                self.map.remove(key);
            }
        }
    }
}

/// What a login attempt's failures are counted under.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    /// A client address (IPv6: its /64), for browsers without a device cookie.
    Address(IpAddr),
    /// A valid device cookie (the SHA-256 of its nonce).
    Device([u8; 32]),
}

pub enum LoginResult {
    /// The cookie values to set: the session, then a fresh device cookie.
    Ok {
        session: String,
        device: String,
    },
    Wrong,
    /// Too many failures from this address or device: try again after this long.
    Throttled(Duration),
    /// No session token could be made (the OS RNG failed).
    Unavailable,
}

pub struct AdminAuth {
    username: [u8; 32],
    username_plain: String,
    credential: Credential,
    secure_cookie: bool,
    /// Keys device cookies; random per process.
    device_key: [u8; 32],
    sessions: Mutex<HashMap<[u8; 32], AdminSession>>,
    /// Sign-ins shared by every replica, instead of `sessions`.
    shared: Option<std::sync::Arc<dyn crate::store::SignIns>>,
    addresses: Mutex<Throttle<IpAddr>>,
    devices: Mutex<Throttle<[u8; 32]>>,
    api_failures: Mutex<Throttle<IpAddr>>,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The delay a login address or device must wait after `count` failures.
pub fn delay_after(count: u32) -> Duration {
    delay_after_free(count, FREE_FAILURES)
}

/// The delay after `count` failures when `free` of them cost nothing:
/// 2 s, 4 s, 8 s… up to `MAX_DELAY`.
fn delay_after_free(count: u32, free: u32) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let exp = (count - free + 1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

/// The key failures are counted under: the address, or its /64 for IPv6
/// (one subscriber usually holds a whole /64).
pub fn throttle_key(ip: IpAddr) -> IpAddr {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        let device_key = digest(random_token().map_err(AuthError::Rng)?.as_bytes());
        Ok(AdminAuth {
            username: digest(username.as_bytes()),
            username_plain: username.to_string(),
            credential,
            secure_cookie,
            device_key,
            sessions: Mutex::new(HashMap::new()),
            shared: None,
            addresses: Mutex::new(Throttle::new(FREE_FAILURES)),
            devices: Mutex::new(Throttle::new(FREE_FAILURES)),
            api_failures: Mutex::new(Throttle::new(API_FREE_FAILURES)),
            argon2_slots: tokio::sync::Semaphore::new(ARGON2_SLOTS),
        })
    }

    /// Signs device cookies with `key` (derived from the database's secret)
    /// instead of a key made at start: a browser that signed in before stays
    /// known across restarts, and to every process sharing the database.
    pub fn with_device_key(mut self, key: [u8; 32]) -> Self {
        self.device_key = key;
        self
    }

    /// Keeps sign-ins in `shared` (a database every replica uses).
    pub fn with_shared(
        mut self,
        shared: Option<std::sync::Arc<dyn crate::store::SignIns>>,
    ) -> Self {
        self.shared = shared;
        self
    }

    /// The MAC of a device cookie's nonce: bound to the username and the
    /// credential, so changing either retires every device cookie.
    fn device_mac(&self, nonce: &str) -> Option<[u8; 32]> {
        let mut mac = HmacSha256::new_from_slice(&self.device_key).ok()?;
        mac.update(DEVICE_CONTEXT);
        mac.update(&self.username);
        mac.update(&self.credential_digest());
        mac.update(nonce.as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    fn credential_digest(&self) -> [u8; 32] {
        match &self.credential {
            Credential::Plain(d) => *d,
            Credential::Hash(phc) => digest(phc.as_bytes()),
        }
    }

    /// The key a sign-in is kept under: its token's digest, bound to the
    /// username and credential. Shared sign-ins outlive a restart, so a
    /// changed password (or username) must end them: their keys no longer
    /// match, and the database never holds the token itself.
    fn session_key(&self, token: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(SESSION_CONTEXT);
        h.update(self.username);
        h.update(self.credential_digest());
        h.update(token.as_bytes());
        h.finalize().into()
    }

    /// A new device cookie value, `<nonce>.<mac>` in hex.
    fn new_device(&self) -> Result<String, crate::model::RngError> {
        let nonce = crate::model::random_hex()?;
        let mac = self.device_mac(&nonce).map(|m| hex(&m)).unwrap_or_default();
        Ok(format!("{nonce}.{mac}"))
    }

    /// The device a cookie value names, if it is one this process signed
    /// (checked in constant time).
    fn device(&self, value: &str) -> Option<[u8; 32]> {
        let (nonce, given) = value.split_once('.')?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let expected = hex(&self.device_mac(nonce)?);
        secret_eq(given.as_bytes(), expected.as_bytes()).then(|| digest(nonce.as_bytes()))
    }

    /// Checks a login attempt from `ip` carrying the device cookie `device`
    /// (if any); on success opens a session and issues a fresh device cookie.
    pub async fn login(
        &self,
        ip: Option<IpAddr>,
        device: Option<&str>,
        username: &str,
        password: &str,
    ) -> LoginResult {
        let bucket = match device.and_then(|d| self.device(d)) {
            Some(id) => Some(Bucket::Device(id)),
            None => ip.map(|ip| Bucket::Address(throttle_key(ip))),
        };
        // Counted as a failure up front, taken back on success: parallel
        // guesses see each other's attempts.
        if let Some(bucket) = bucket
            && let Err(wait) = self.admit(bucket)
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
        if !(user_ok && pass_ok) {
            return LoginResult::Wrong;
        }
        match bucket {
            // The device's own typos are forgiven; nobody else shares them.
            Some(Bucket::Device(id)) => {
                lock(&self.devices).map.remove(&id);
            }
            Some(Bucket::Address(key)) => lock(&self.addresses).undo(&key),
            None => {}
        }
        match (self.open_session().await, self.new_device()) {
            (Ok(session), Ok(device)) => LoginResult::Ok { session, device },
            (Err(e), _) => {
                tracing::error!(error = %crate::report::chain(&e), "cannot open a dashboard session");
                LoginResult::Unavailable
            }
            (_, Err(e)) => {
                tracing::error!(error = %crate::report::chain(&e), "cannot open a dashboard session");
                LoginResult::Unavailable
            }
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], AdminSession>> {
        lock(&self.sessions)
    }

    /// Refuses a bucket that must still wait; otherwise counts this attempt.
    fn admit(&self, bucket: Bucket) -> Result<(), Duration> {
        let now = Instant::now();
        match bucket {
            Bucket::Address(key) => lock(&self.addresses).admit(key, now),
            Bucket::Device(id) => lock(&self.devices).admit(id, now),
        }
    }

    /// Records a wrong API token from `ip`. `Some(wait)` while the address
    /// must wait (that attempt is neither counted nor logged, so a flood
    /// costs one log line per counted failure); `None` once it is counted.
    pub fn api_token_failed(&self, ip: IpAddr) -> Option<Duration> {
        let key = throttle_key(ip);
        let now = Instant::now();
        let mut failures = lock(&self.api_failures);
        if let Some(wait) = failures.waiting(&key, now) {
            return Some(wait);
        }
        let count = failures.count(key, now);
        drop(failures);
        // The address only: never the token.
        tracing::warn!(client = %ip, failures = count, "wrong API token");
        None
    }

    async fn open_session(&self) -> Result<String, OpenError> {
        let token = random_token().map_err(OpenError::Rng)?;
        let csrf = random_token().map_err(OpenError::Rng)?;
        let key = self.session_key(&token);
        if let Some(shared) = &self.shared {
            let value = serde_json::to_vec(&StoredSession {
                username: self.username_plain.clone(),
                csrf,
            })
            .map_err(|e| OpenError::Store(crate::store::StoreError::Encode(e)))?;
            let ttl = u64::try_from(SESSION_TTL.as_millis()).unwrap_or(u64::MAX);
            let expires = crate::time::now_ms().saturating_add(ttl);
            shared
                .put(key, value, expires)
                .await
                .map_err(OpenError::Store)?;
            return Ok(token);
        }
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
            key,
            AdminSession {
                username: self.username_plain.clone(),
                csrf,
                expires: now + SESSION_TTL,
            },
        );
        Ok(token)
    }

    /// The signed-in admin of this request, from its cookie. With a shared
    /// store, a store that does not answer signs nobody in (and says why).
    pub async fn session(&self, req: &Request) -> Option<AdminSession> {
        let token = cookie(req, COOKIE)?;
        let key = self.session_key(&token);
        if let Some(shared) = &self.shared {
            let stored = match shared.get(key, crate::time::now_ms()).await {
                Ok(stored) => stored?,
                Err(e) => {
                    tracing::error!(error = %crate::report::chain(&e), "cannot read dashboard sign-ins");
                    return None;
                }
            };
            let s: StoredSession = serde_json::from_slice(&stored).ok()?;
            return Some(AdminSession {
                username: s.username,
                csrf: s.csrf,
                expires: Instant::now() + SESSION_TTL,
            });
        }
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

    /// Ends the session of this request, if any. The device cookie stays:
    /// the browser is still one that signed in before. Fails when a shared
    /// store did not answer: the sign-in then still works, and the admin
    /// must be told so.
    pub async fn logout(&self, req: &Request) -> Result<(), crate::store::StoreError> {
        let Some(token) = cookie(req, COOKIE) else {
            return Ok(());
        };
        let key = self.session_key(&token);
        if let Some(shared) = &self.shared {
            return shared.remove(key).await;
        }
        self.lock_sessions().remove(&key);
        Ok(())
    }

    /// The `Set-Cookie` value for a new session.
    pub fn set_cookie(&self, token: &str) -> String {
        format!(
            "{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_TTL.as_secs(),
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value for a device cookie: sent only to the login form.
    pub fn set_device_cookie(&self, value: &str) -> String {
        format!(
            "{DEVICE_COOKIE}={value}; Path=/admin/login; HttpOnly; SameSite=Strict; Max-Age={}{}",
            DEVICE_TTL.as_secs(),
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

/// The device cookie a request carries, unchecked.
pub fn device_cookie(req: &Request) -> Option<String> {
    cookie(req, DEVICE_COOKIE)
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
mod tests;
