//! The login, throttles, sessions and cookies, without a server.
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
    let LoginResult::Ok { session: token, .. } = a.login(None, None, "admin", "pw").await else {
        panic!("the right password signs in");
    };
    let request = |t: &str| {
        Request::builder()
            .header("cookie", format!("other=1; {COOKIE}={t}"))
            .finish()
    };
    assert_eq!(a.session(&request(&token)).await.unwrap().username, "admin");
    assert!(a.session(&request("forged")).await.is_none());
    // Expired: as if SESSION_TTL had passed.
    for s in a.lock_sessions().values_mut() {
        s.expires = Instant::now() - Duration::from_secs(1);
    }
    assert!(a.session(&request(&token)).await.is_none());
    let LoginResult::Ok {
        session: second, ..
    } = a.login(None, None, "admin", "pw").await
    else {
        panic!("signs in again");
    };
    a.logout(&request(&second)).await.unwrap();
    assert!(a.session(&request(&second)).await.is_none());
}

/// Sign-ins kept as a database would keep them, optionally failing.
#[derive(Default)]
struct Shared {
    rows: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    down: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn check(&self) -> crate::store::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(crate::store::StoreError::Stopped)
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl crate::store::SignIns for Shared {
    async fn put(&self, key: [u8; 32], value: Vec<u8>, _expires: u64) -> crate::store::Result<()> {
        self.check()?;
        lock(&self.rows).insert(key, value);
        Ok(())
    }
    async fn get(&self, key: [u8; 32], _now: u64) -> crate::store::Result<Option<Vec<u8>>> {
        self.check()?;
        Ok(lock(&self.rows).get(&key).cloned())
    }
    async fn remove(&self, key: [u8; 32]) -> crate::store::Result<()> {
        self.check()?;
        lock(&self.rows).remove(&key);
        Ok(())
    }
}

#[tokio::test]
async fn a_shared_sign_in_ends_when_the_password_or_username_changes() {
    let shared = std::sync::Arc::new(Shared::default());
    let with = |user: &str, pw: &str| {
        AdminAuth::new(Some(user), Some(&Secret::new(pw)), None, false)
            .unwrap()
            .with_shared(Some(shared.clone()))
    };
    let first = with("admin", "pw");
    let LoginResult::Ok { session: token, .. } = first.login(None, None, "admin", "pw").await
    else {
        panic!("the right password signs in");
    };
    let request = Request::builder()
        .header("cookie", format!("{COOKIE}={token}"))
        .finish();
    // Another replica (or a restart) with the same credentials: still signed in.
    assert!(with("admin", "pw").session(&request).await.is_some());
    // The stored key is not the token's plain digest.
    assert!(!lock(&shared.rows).contains_key(&digest(token.as_bytes())));
    // A new password or username ends it.
    assert!(with("admin", "new-pw").session(&request).await.is_none());
    assert!(with("owner", "pw").session(&request).await.is_none());
    // A logout the database did not take is reported, and the sign-in stays.
    shared.down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(first.logout(&request).await.is_err());
    shared
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(first.session(&request).await.is_some());
    first.logout(&request).await.unwrap();
    assert!(with("admin", "pw").session(&request).await.is_none());
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
        tokio::spawn(async move { a.login(Some(ip), None, "admin", "guess").await })
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
        a.login(Some(ip), None, "admin", "nope").await,
        LoginResult::Wrong
    ));
    assert!(matches!(
        a.login(Some(ip), None, "root", "pw").await,
        LoginResult::Wrong
    ));
    assert!(matches!(
        a.login(Some(ip), None, "admin", "").await,
        LoginResult::Wrong
    ));
    // The right password is refused too while the address waits.
    assert!(matches!(
        a.login(Some(ip), None, "admin", "pw").await,
        LoginResult::Throttled(_)
    ));
    // Another address is not affected.
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    assert!(matches!(
        a.login(Some(other), None, "admin", "pw").await,
        LoginResult::Ok { .. }
    ));
}

async fn sign_in(a: &AdminAuth, ip: IpAddr, device: Option<&str>) -> String {
    match a.login(Some(ip), device, "admin", "pw").await {
        LoginResult::Ok { device, .. } => device,
        _ => panic!("the right password signs in"),
    }
}

#[tokio::test]
async fn a_device_cookie_is_throttled_on_its_own_not_with_its_address() {
    let a = auth();
    let shared: IpAddr = "192.0.2.50".parse().unwrap();
    let device = sign_in(&a, shared, None).await;
    // An attacker on the same address fails until the address waits.
    for _ in 0..FREE_FAILURES {
        assert!(matches!(
            a.login(Some(shared), None, "admin", "guess").await,
            LoginResult::Wrong
        ));
    }
    assert!(matches!(
        a.login(Some(shared), None, "admin", "pw").await,
        LoginResult::Throttled(_)
    ));
    // A forged or foreign device cookie counts as none.
    let forged = format!("{}.{}", "0".repeat(32), "0".repeat(64));
    let other = auth();
    let foreign = sign_in(&other, shared, None).await;
    for bad in [forged.as_str(), foreign.as_str(), "x", ""] {
        assert!(matches!(
            a.login(Some(shared), Some(bad), "admin", "pw").await,
            LoginResult::Throttled(_)
        ));
    }
    // The admin's browser still gets in, from the same address.
    let renewed = sign_in(&a, shared, Some(&device)).await;
    assert_ne!(renewed, device, "each sign-in issues a fresh device cookie");
    // The device's own failures slow down that device alone.
    for _ in 0..FREE_FAILURES {
        assert!(matches!(
            a.login(Some(shared), Some(&renewed), "admin", "typo").await,
            LoginResult::Wrong
        ));
    }
    assert!(matches!(
        a.login(Some(shared), Some(&renewed), "admin", "pw").await,
        LoginResult::Throttled(_)
    ));
    sign_in(&a, shared, Some(&device)).await;
}

#[tokio::test]
async fn a_success_does_not_reset_an_address_for_others() {
    let a = auth();
    let ip: IpAddr = "192.0.2.60".parse().unwrap();
    for _ in 0..FREE_FAILURES - 1 {
        a.login(Some(ip), None, "admin", "guess").await;
    }
    sign_in(&a, ip, None).await;
    // The admin's success took back only its own attempt.
    a.login(Some(ip), None, "admin", "guess").await;
    assert!(matches!(
        a.login(Some(ip), None, "admin", "guess").await,
        LoginResult::Throttled(_)
    ));
}

#[test]
fn wrong_api_tokens_are_counted_per_address_then_refused_unchecked() {
    let a = auth();
    let ip: IpAddr = "2001:db8:7:7::1".parse().unwrap();
    let same_64: IpAddr = "2001:db8:7:7::2".parse().unwrap();
    for _ in 0..API_FREE_FAILURES {
        assert_eq!(a.api_token_failed(ip), None);
    }
    let wait = a.api_token_failed(same_64).expect("the /64 must wait");
    assert!(wait > Duration::ZERO && wait <= MAX_DELAY);
    assert_eq!(a.api_token_failed("192.0.2.1".parse().unwrap()), None);
}

#[test]
fn device_cookies_are_bound_to_the_credential() {
    let a = auth();
    let value = a.new_device().unwrap();
    assert!(a.device(&value).is_some());
    let mut other = auth();
    other.device_key = a.device_key;
    assert!(other.device(&value).is_some(), "same key and credential");
    other.credential = Credential::Plain(digest(b"a new password"));
    assert!(other.device(&value).is_none(), "a new password retires it");
    assert!(
        a.set_device_cookie(&value)
            .contains("Path=/admin/login; HttpOnly; SameSite=Strict")
    );
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
        a.login(None, None, "admin", "s3cret").await,
        LoginResult::Ok { .. }
    ));
    assert!(matches!(
        a.login(None, None, "admin", "s3cret!").await,
        LoginResult::Wrong
    ));
    assert!(a.set_cookie("x").ends_with("; Secure"));
    assert!(matches!(
        AdminAuth::new(Some("admin"), None, Some(&Secret::new("plain")), false),
        Err(AuthError::BadHash(_))
    ));
}
