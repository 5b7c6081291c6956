//! Webhook signature schemes, pure and I/O free.
//!
//! * Stripe's `Stripe-Signature: t=…,v1=…` scheme (verification for incoming
//!   webhooks, and signing for the demo and tests), following
//!   `reference/stripe-protocol.md` §1.7: HMAC-SHA256 keyed with the whole
//!   `whsec_…` string over `"{t}.{raw body}"`, any `v1` of any configured secret
//!   may match, other schemes are ignored, only the age of `t` is limited, and
//!   comparisons are constant-time.
//! * The Standard Webhooks scheme (standardwebhooks.com) for callbacks fulfilld
//!   sends to the merchant.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub type HmacSha256 = Hmac<Sha256>;

/// A Stripe webhook signing secret (`whsec_…`), which keys HMAC-SHA256 as
/// the whole string. Lets the configuration's `Secret` start a MAC without
/// handing out its value.
pub trait StripeKey {
    fn stripe_mac(&self) -> HmacSha256;
}

impl StripeKey for str {
    fn stripe_mac(&self) -> HmacSha256 {
        mac(self.as_bytes())
    }
}

impl StripeKey for String {
    fn stripe_mac(&self) -> HmacSha256 {
        self.as_str().stripe_mac()
    }
}

impl<K: StripeKey + ?Sized> StripeKey for &K {
    fn stripe_mac(&self) -> HmacSha256 {
        (**self).stripe_mac()
    }
}

/// HMAC-SHA256 keyed with `key`: HMAC takes a key of any length.
fn mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(hmac::digest::InvalidLength) => unreachable!("HMAC takes any key length"),
    }
}

/// Why a Stripe webhook request was rejected. The `as_str` names match the
/// `reason` column of `fixtures/stripe/signature-vectors.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no Stripe-Signature header")]
    MissingHeader,
    #[error("empty request body")]
    EmptyPayload,
    #[error("Stripe-Signature header has no valid timestamp")]
    MalformedHeader,
    #[error("Stripe-Signature header has no v1 signature")]
    NoSignaturesWithExpectedScheme,
    #[error("no v1 signature matches any configured webhook secret")]
    NoMatchingSignature,
    #[error("timestamp is older than the tolerance")]
    TimestampOutsideTolerance,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MissingHeader => "missing_header",
            Rejection::EmptyPayload => "empty_payload",
            Rejection::MalformedHeader => "malformed_header",
            Rejection::NoSignaturesWithExpectedScheme => "no_signatures_with_expected_scheme",
            Rejection::NoMatchingSignature => "no_matching_signature",
            Rejection::TimestampOutsideTolerance => "timestamp_outside_tolerance",
        }
    }
}

/// A successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Index into the configured secrets of the one that matched.
    pub secret_index: usize,
    /// The signed timestamp (Unix seconds).
    pub timestamp: i64,
}

/// Verifies a Stripe webhook. `header` is the raw `Stripe-Signature` value
/// (`None` or empty when absent), `body` the exact bytes received, `now` Unix
/// seconds. Timestamps in the future pass, as in every official Stripe SDK.
pub fn verify_stripe(
    header: Option<&str>,
    body: &[u8],
    secrets: &[impl StripeKey],
    tolerance_secs: u64,
    now: i64,
) -> Result<Verified, Rejection> {
    let header = match header {
        Some(h) if !h.is_empty() => h,
        _ => return Err(Rejection::MissingHeader),
    };
    if body.is_empty() {
        return Err(Rejection::EmptyPayload);
    }
    let mut timestamp: Option<&str> = None;
    let mut candidates: Vec<&str> = Vec::new();
    for element in header.split(',') {
        // Elements without '=' are ignored, as stripe-node/python/ruby do.
        let Some((key, value)) = element.split_once('=') else {
            continue;
        };
        match key {
            // The first `t` wins (stripe-python, stripe-ruby).
            "t" if timestamp.is_none() => timestamp = Some(value),
            "v1" => candidates.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or(Rejection::MalformedHeader)?;
    if candidates.is_empty() {
        return Err(Rejection::NoSignaturesWithExpectedScheme);
    }
    // Hex that is not lowercase, or not 32 bytes, matches nothing (Stripe
    // sends lowercase; the length is checked by `verify_slice`).
    let candidates: Vec<Vec<u8>> = candidates
        .into_iter()
        .filter_map(hex_decode_lower)
        .collect();
    let mut matched = None;
    for (index, secret) in secrets.iter().enumerate() {
        let mac = stripe_mac_of(secret.stripe_mac(), timestamp, body);
        // Check every candidate, in constant time (`verify_slice`), so the
        // time taken does not depend on which one matched.
        let hit = candidates
            .iter()
            .fold(false, |acc, c| acc | mac.clone().verify_slice(c).is_ok());
        if hit && matched.is_none() {
            matched = Some(index);
        }
    }
    let secret_index = matched.ok_or(Rejection::NoMatchingSignature)?;
    let age = now.saturating_sub(timestamp);
    if age > 0 && age as u64 > tolerance_secs {
        return Err(Rejection::TimestampOutsideTolerance);
    }
    Ok(Verified {
        secret_index,
        timestamp,
    })
}

/// Lowercase hex of HMAC-SHA256(secret, "{timestamp}.{body}"): Stripe's `v1`.
pub fn stripe_v1(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = stripe_mac_of(secret.stripe_mac(), timestamp, body);
    hex_lower(&mac.finalize().into_bytes())
}

/// `mac` fed with Stripe's signed payload, `"{timestamp}.{body}"`.
fn stripe_mac_of(mut mac: HmacSha256, timestamp: i64, body: &[u8]) -> HmacSha256 {
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// A `Stripe-Signature` header value for `body`, as Stripe would send it.
pub fn stripe_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", stripe_v1(secret, timestamp, body))
}

/// Errors in a Standard Webhooks secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with `whsec_`")]
    Prefix,
    #[error("the part after `whsec_` is not valid base64")]
    Base64,
    #[error("the key is empty")]
    Empty,
}

/// Decodes a Standard Webhooks secret `whsec_<base64 key>` into its key bytes.
pub fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::Base64)?;
    if key.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(key)
}

/// The `webhook-signature` header value of the Standard Webhooks scheme:
/// `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>`.
pub fn standard_webhooks_signature(
    key: &[u8],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut mac = mac(key);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Constant-time equality of two byte strings (the length is not secret),
/// by `subtle`, the crate the HMAC's own `verify_slice` uses.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Bytes of lowercase hex; `None` for anything else.
fn hex_decode_lower(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        secret: String,
        now: i64,
        tolerance: u64,
        payload: String,
        header: String,
        valid: bool,
        reason: String,
    }

    fn vectors() -> Vec<Vector> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stripe/signature-vectors.json"
        );
        let raw = std::fs::read_to_string(path).expect("the shared signature vectors are readable");
        serde_json::from_str(&raw).expect("the vectors parse")
    }

    /// The verdict the webhook endpoint gives: signature first, then JSON.
    fn verdict(v: &Vector) -> String {
        let header = (!v.header.is_empty()).then_some(v.header.as_str());
        match verify_stripe(
            header,
            v.payload.as_bytes(),
            &[&v.secret],
            v.tolerance,
            v.now,
        ) {
            Err(r) => r.as_str().to_string(),
            Ok(_) => match serde_json::from_slice::<serde_json::Value>(v.payload.as_bytes()) {
                Ok(_) => "ok".to_string(),
                Err(_) => "bad_json".to_string(),
            },
        }
    }

    #[test]
    fn every_shared_vector_gets_its_verdict() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 23);
        for v in &vectors {
            let got = verdict(v);
            assert_eq!(got, v.reason, "vector {}", v.name);
            assert_eq!(got == "ok", v.valid, "vector {}", v.name);
        }
    }

    #[test]
    fn any_of_several_secrets_may_match() {
        let body = br#"{"id":"evt_1"}"#;
        let header = stripe_header("whsec_new", 100, body);
        let got =
            verify_stripe(Some(&header), body, &["whsec_old", "whsec_new"], 300, 100).unwrap();
        assert_eq!(got.secret_index, 1);
        assert_eq!(
            verify_stripe(Some(&header), body, &["whsec_old"], 300, 100),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn hand_checkable_vector() {
        assert_eq!(
            stripe_v1(
                "whsec_test_secret",
                1492774577,
                br#"{"id":"evt_test_webhook","object":"event"}"#
            ),
            "88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a"
        );
    }

    #[test]
    fn standard_webhooks_matches_the_spec_example() {
        // The example from the Standard Webhooks specification.
        let key = standard_webhooks_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = standard_webhooks_signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(standard_webhooks_key("whsec_"), Err(SecretError::Empty));
        assert_eq!(standard_webhooks_key("sk_abc"), Err(SecretError::Prefix));
        assert_eq!(standard_webhooks_key("whsec_!!"), Err(SecretError::Base64));
    }

    #[test]
    fn only_lowercase_hex_of_the_right_length_can_match() {
        let body = br#"{"id":"evt_1"}"#;
        let sig = stripe_v1("whsec_k", 100, body);
        let check = |v1: &str| {
            verify_stripe(
                Some(&format!("t=100,v1={v1}")),
                body,
                &["whsec_k"],
                300,
                100,
            )
        };
        assert!(check(&sig).is_ok());
        assert_eq!(
            check(&sig.to_uppercase()),
            Err(Rejection::NoMatchingSignature)
        );
        assert_eq!(check(&sig[..62]), Err(Rejection::NoMatchingSignature));
        assert_eq!(
            check(&format!("{sig}00")),
            Err(Rejection::NoMatchingSignature)
        );
        assert_eq!(check("zz"), Err(Rejection::NoMatchingSignature));
        assert_eq!(hex_decode_lower("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(hex_decode_lower("0"), None);
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
