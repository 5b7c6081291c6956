//! `Secret<T>`: a configuration value that is never printed. The value is
//! reachable through [`Secret::expose`] alone (no public field, no `Deref`,
//! no `AsRef`), so every use of a secret can be found by searching for it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::types::{ConfigValue, scalar_string};

/// A secret: `Debug` and `Serialize` print only its masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T = String>(T);

/// How a secret value prints when masked.
pub trait Mask {
    /// Safe to log and print. The default hides everything.
    fn masked(&self) -> String {
        "********".into()
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
}

impl<T> Secret<T> {
    /// Wraps an already parsed value (a URL, an SMTP URL).
    pub fn from_value(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Mask> Secret<T> {
    pub fn masked(&self) -> String {
        self.0.masked()
    }
}

impl Mask for String {
    /// A known key prefix and, for long keys, the last four characters
    /// (`sk_test_…wxyz`), as Stripe's dashboard shows keys. Anything else
    /// (passwords, tokens) is masked entirely.
    fn masked(&self) -> String {
        const PREFIXES: [&str; 5] = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_"];
        let s = self.as_str();
        let Some(prefix) = PREFIXES.iter().find(|p| s.starts_with(*p)) else {
            return "********".into();
        };
        let rest = &s[prefix.len()..];
        let count = rest.chars().count();
        if count >= 16 {
            let tail: String = rest.chars().skip(count - 4).collect();
            format!("{prefix}…{tail}")
        } else {
            format!("{prefix}****")
        }
    }
}

impl<T: Mask> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl<T: Mask> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

impl<'de, T: ConfigValue> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = scalar_string(d)?;
        T::parse_value(&raw)
            .map(Secret)
            .map_err(serde::de::Error::custom)
    }
}

/// A Stripe signing secret keys an HMAC without being handed out as a string.
impl crate::signature::StripeKey for Secret {
    fn stripe_mac(&self) -> crate::signature::HmacSha256 {
        self.0.stripe_mac()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_a_prefix_and_a_short_tail() {
        assert_eq!(
            Secret::new("sk_live_abcdefghijklmnopqrstuvwxyz").masked(),
            "sk_live_…wxyz"
        );
        assert_eq!(Secret::new("correct horse battery").masked(), "********");
        assert_eq!(Secret::new("whsec_short").masked(), "whsec_****");
        assert_eq!(Secret::new("smtp://u:p@host:25").masked(), "********");
        assert_eq!(format!("{:?}", Secret::new("hunter22")), "********");
        let json = serde_json::to_string(&Secret::new("sk_test_abcdefghijklmnopqrst")).unwrap();
        assert_eq!(json, "\"sk_test_…qrst\"");
    }
}
