//! `smtp.url`, parsed once: what `check-config` warns about and what the
//! lettre transport is built from are the same value.
//!
//! - `smtps://user:pass@host[:465]`: TLS from the first byte;
//! - `smtp://user:pass@host[:587]` (or `?tls=starttls`, `?tls=required`): STARTTLS, required;
//! - `smtp://host[:25]?tls=opportunistic`: STARTTLS when offered;
//! - `smtp://host[:25]?tls=none`: plain, for a local relay.

use std::{fmt, net::IpAddr, str::FromStr};

use reqwest::Url;

use super::{secret::Mask, types::ConfigValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpScheme {
    Smtp,
    Smtps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// STARTTLS, and the connection fails without it.
    Required,
    /// STARTTLS when the server offers it, else plain.
    Opportunistic,
    /// Plain text (a local relay).
    None,
}

/// A user name and password, percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub user: String,
    pub password: String,
}

/// A parsed `smtp.url`. Holds a password: `Debug` omits it, and the
/// configuration keeps it inside a `Secret`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    scheme: SmtpScheme,
    host: String,
    port: u16,
    tls: TlsMode,
    credentials: Option<SmtpCredentials>,
}

impl SmtpUrl {
    pub fn scheme(&self) -> SmtpScheme {
        self.scheme
    }
    /// The host name or IP address (without the brackets of an IPv6 literal).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port given, else the usual one for the TLS mode (465, 587 or 25).
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn tls(&self) -> TlsMode {
        self.tls
    }
    pub fn credentials(&self) -> Option<&SmtpCredentials> {
        self.credentials.as_ref()
    }
    /// Whether the server is this machine (`localhost` or a loopback address).
    pub fn is_local(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl FromStr for SmtpUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let u = Url::parse(raw).map_err(|_| "is not a URL (smtp://host:port or smtps://…)")?;
        let scheme = match u.scheme() {
            "smtp" => SmtpScheme::Smtp,
            "smtps" => SmtpScheme::Smtps,
            _ => return Err("scheme must be smtp or smtps".into()),
        };
        let host = u
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?
            .to_string();
        let tls = u
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let tls = match (scheme, tls.as_deref()) {
            (SmtpScheme::Smtps, None) => TlsMode::Implicit,
            (SmtpScheme::Smtp, None | Some("starttls" | "required")) => TlsMode::Required,
            (SmtpScheme::Smtp, Some("opportunistic")) => TlsMode::Opportunistic,
            (SmtpScheme::Smtp, Some("none")) => TlsMode::None,
            _ => {
                return Err("tls= must be none, starttls or opportunistic (smtp:// only)".into());
            }
        };
        let port = u.port().unwrap_or(match tls {
            TlsMode::Implicit => 465,
            TlsMode::Required => 587,
            TlsMode::Opportunistic | TlsMode::None => 25,
        });
        // No user name, no authentication (a password alone is ignored).
        let credentials = (!u.username().is_empty()).then(|| SmtpCredentials {
            user: percent_decode(u.username()),
            password: percent_decode(u.password().unwrap_or("")),
        });
        Ok(SmtpUrl {
            scheme,
            host,
            port,
            tls,
            credentials,
        })
    }
}

impl ConfigValue for SmtpUrl {
    fn parse_value(raw: &str) -> Result<Self, String> {
        raw.parse()
    }
}

/// Masked entirely, as every URL that may hold a password.
impl Mask for SmtpUrl {}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|c| c.user.as_str()))
            .finish_non_exhaustive()
    }
}

/// Undoes percent-encoding (credentials in a URL). An invalid escape is kept
/// as it is, and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> SmtpUrl {
        raw.parse().unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn schemes_and_tls_modes_choose_their_default_ports() {
        let cases = [
            (
                "smtps://smtp.example.com",
                SmtpScheme::Smtps,
                TlsMode::Implicit,
                465,
            ),
            (
                "smtp://smtp.example.com",
                SmtpScheme::Smtp,
                TlsMode::Required,
                587,
            ),
            (
                "smtp://smtp.example.com?tls=starttls",
                SmtpScheme::Smtp,
                TlsMode::Required,
                587,
            ),
            (
                "smtp://smtp.example.com?tls=required",
                SmtpScheme::Smtp,
                TlsMode::Required,
                587,
            ),
            (
                "smtp://smtp.example.com?tls=opportunistic",
                SmtpScheme::Smtp,
                TlsMode::Opportunistic,
                25,
            ),
            (
                "smtp://127.0.0.1:2525?tls=none",
                SmtpScheme::Smtp,
                TlsMode::None,
                2525,
            ),
            (
                "smtps://smtp.example.com:2465",
                SmtpScheme::Smtps,
                TlsMode::Implicit,
                2465,
            ),
        ];
        for (raw, scheme, tls, port) in cases {
            let u = parse(raw);
            assert_eq!(
                (u.scheme(), u.tls(), u.port()),
                (scheme, tls, port),
                "{raw}"
            );
        }
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let u = parse("smtps://us%65r%40shop:p%40ss%2F%zz@smtp.example.com:465");
        let c = u.credentials().unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("user@shop", "p@ss/%zz")
        );
        assert_eq!(
            parse("smtp://user@smtp.example.com")
                .credentials()
                .unwrap()
                .password,
            ""
        );
        assert!(parse("smtp://:pw@smtp.example.com").credentials().is_none());
        assert!(parse("smtp://smtp.example.com").credentials().is_none());
        let debug = format!("{u:?}");
        assert!(
            !debug.contains("p@ss") && !debug.contains("p%40ss"),
            "{debug}"
        );
    }

    #[test]
    fn hosts_and_locality() {
        assert_eq!(parse("smtp://[::1]:25?tls=none").host(), "::1");
        assert!(parse("smtp://[::1]:25?tls=none").is_local());
        assert!(parse("smtp://u:p@LOCALHOST?tls=none").is_local());
        assert!(parse("smtp://127.0.0.2?tls=none").is_local());
        assert!(!parse("smtp://mail.example.com?tls=none").is_local());
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("not a url", "is not a URL (smtp://host:port or smtps://…)"),
            ("http://smtp.example.com", "scheme must be smtp or smtps"),
            ("smtp:relay", "has no host"),
            (
                "smtp://smtp.example.com?tls=maybe",
                "tls= must be none, starttls or opportunistic (smtp:// only)",
            ),
            (
                "smtps://smtp.example.com?tls=none",
                "tls= must be none, starttls or opportunistic (smtp:// only)",
            ),
        ];
        for (raw, message) in cases {
            assert_eq!(raw.parse::<SmtpUrl>().unwrap_err(), message, "{raw}");
        }
    }
}
