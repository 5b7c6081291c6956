//! Fulfillment ids derived from the session, not drawn at random: the id of
//! a session's n-th fulfillment is an HMAC of the session id and n under the
//! installation's secret. A database restored from a backup therefore gives
//! a session fulfilled after the backup the same id (the merchant's
//! idempotency key) when it is fulfilled again, and ids stay unguessable to
//! anyone without the secret.

use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::Sha256;

/// The installation's secret, made once when the database is created.
pub type InstallationKey = [u8; 32];

/// The id of fulfillment number `seq` (0 for the first; forced ones follow) of `session_id`.
pub fn fulfillment_id(key: &InstallationKey, session_id: &str, seq: u32) -> String {
    // A key shorter than SHA-256's block is zero-padded by HMAC itself, so
    // padding it here gives the same MAC through the infallible constructor.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(b"fulfillment\0");
    mac.update(session_id.as_bytes());
    mac.update(b"\0");
    mac.update(&seq.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(36);
    out.push_str("ful_");
    for b in &digest[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A key for `purpose` (e.g. signing device cookies) derived from the
/// installation's secret: stable across restarts and processes sharing the
/// database, different for every purpose.
pub fn derived_key(key: &InstallationKey, purpose: &str) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(b"derived key\0");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_secret() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(derived_key(&k1, "a"), derived_key(&k1, "a"));
        assert_ne!(derived_key(&k1, "a"), derived_key(&k1, "b"));
        assert_ne!(derived_key(&k1, "a"), derived_key(&k2, "a"));
        assert_ne!(derived_key(&k1, "a"), k1);
    }

    #[test]
    fn ids_are_stable_per_session_and_sequence_and_secret() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let a = fulfillment_id(&k1, "cs_test_a", 0);
        assert!(a.starts_with("ful_") && a.len() == 36, "{a}");
        assert_eq!(a, fulfillment_id(&k1, "cs_test_a", 0));
        assert_ne!(a, fulfillment_id(&k1, "cs_test_a", 1));
        assert_ne!(a, fulfillment_id(&k1, "cs_test_b", 0));
        assert_ne!(a, fulfillment_id(&k2, "cs_test_a", 0));
        // Not a plain hash of the id: equal to HMAC-SHA256 with the raw key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k1).unwrap();
        mac.update(b"fulfillment\0cs_test_a\0\0\0\0\0");
        let want: String = mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a, format!("ful_{want}"));
    }
}
