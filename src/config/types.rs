//! The typed values of the configuration, each parsed once from its string
//! (inline, from the environment or from a `_file`), and the serde glue that
//! parses them while figment extracts the configuration. A parse error is a
//! plain message; `load` adds the key it is about.

use std::{fmt, net::SocketAddr, str::FromStr};

use lettre::message::Mailbox;
use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::secret::{Mask, Secret};

/// A value parsed from one configuration string.
pub trait ConfigValue: Sized {
    fn parse_value(raw: &str) -> Result<Self, String>;
}

impl ConfigValue for crate::store::pg::Target {
    fn parse_value(raw: &str) -> Result<Self, String> {
        crate::store::pg::Target::parse(raw).map_err(|e| e.to_string())
    }
}

/// Masked entirely: the URL may hold a password.
impl Mask for crate::store::pg::Target {}

impl ConfigValue for String {
    fn parse_value(raw: &str) -> Result<Self, String> {
        Ok(raw.to_string())
    }
}

/// An absolute `http` or `https` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl(Url);

impl HttpUrl {
    pub fn url(&self) -> &Url {
        &self.0
    }
    /// The URL as parsed and normalised (`https://host` gains a `/` path).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }
}

/// The URL as people write it: without the `/` that parsing adds to a bare
/// origin (`https://api.stripe.com`). Parses back to the same URL.
pub(super) fn written(url: &Url) -> &str {
    let s = url.as_str();
    match s.strip_suffix('/') {
        Some(origin) if url.path() == "/" && url.query().is_none() && url.fragment().is_none() => {
            origin
        }
        _ => s,
    }
}

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = Url::parse(s).map_err(|_| "is not a valid URL".to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        Ok(HttpUrl(url))
    }
}

impl ConfigValue for HttpUrl {
    fn parse_value(raw: &str) -> Result<Self, String> {
        raw.parse()
    }
}

/// As a secret (`notifications.webhook_url` carries its token in the path),
/// a URL is masked entirely.
impl Mask for HttpUrl {}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(written(&self.0))
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", written(&self.0))
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(written(&self.0))
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d)
    }
}

/// Any `ConfigValue` from a scalar, with its parse message as the error.
fn parsed<'de, T: ConfigValue, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    T::parse_value(&scalar_string(d)?).map_err(serde::de::Error::custom)
}

/// `server.listen`: what `SocketAddr::from_str` accepts (`127.0.0.1:4242`, `[::1]:4242`).
/// `server.listen`: an address (`127.0.0.1:4242`, `[::]:4242`) or a host
/// name with a port (`localhost:4242`), resolved once at load (an IPv4
/// address first, where the name has one).
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let raw = scalar_string(d)?;
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    let bad =
        || serde::de::Error::custom("must be an address like 127.0.0.1:4242 or localhost:4242");
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let found: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(raw.as_str())
        .map_err(|e| serde::de::Error::custom(format!("cannot resolve {host}: {e}")))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("{host} resolves to no address")))
}

fn mailbox<'de, D: Deserializer<'de>>(d: D, hint: &str) -> Result<Option<Mailbox>, D::Error> {
    let raw = scalar_string(d)?;
    raw.parse::<Mailbox>()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("is not an email address{hint}")))
}

/// `smtp.from`: `Shop <orders@example.com>` or `orders@example.com`.
pub(super) fn sender<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mailbox>, D::Error> {
    mailbox(d, " (\"Shop <orders@example.com>\" or orders@example.com)")
}

/// `notifications.merchant_email`.
pub(super) fn recipient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mailbox>, D::Error> {
    mailbox(d, "")
}

/// Accepts any scalar as a string: environment values such as `1234` are
/// parsed as numbers by figment, but a password is still a string.
pub(super) fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

/// A list given either as an array or as one comma-separated string (handy in env vars).
pub(super) fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Secret>),
        One(Secret),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(s) => split_secrets(s.expose()),
    })
}

pub(super) fn split_secrets(raw: &str) -> Vec<Secret> {
    raw.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_must_be_absolute_http_or_https() {
        let u: HttpUrl = "https://shop.example/hook?x=1".parse().unwrap();
        assert!(u.is_https());
        assert_eq!(u.as_str(), "https://shop.example/hook?x=1");
        let bare: HttpUrl = "http://localhost:4242".parse().unwrap();
        assert_eq!(bare.as_str(), "http://localhost:4242/");
        assert_eq!(bare.to_string(), "http://localhost:4242");
        assert_eq!(bare.to_string().parse::<HttpUrl>().unwrap(), bare);
        let root: HttpUrl = "https://shop.example/?q".parse().unwrap();
        assert_eq!(root.to_string(), "https://shop.example/?q");
        assert_eq!(
            "shop.example/hook".parse::<HttpUrl>().unwrap_err(),
            "is not a valid URL"
        );
        assert_eq!(
            "ftp://shop.example/".parse::<HttpUrl>().unwrap_err(),
            "must be an http or https URL"
        );
    }
}
