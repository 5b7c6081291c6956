//! The configuration as `check-config` prints it: TOML, every secret masked,
//! URLs without their user info and query.

use lettre::message::Mailbox;
use serde::Serializer;

use super::{Config, HttpUrl};

impl Config {
    /// The configuration as TOML with every secret masked.
    pub fn masked_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }
}

pub(super) fn print_mailbox<S: Serializer>(m: &Option<Mailbox>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(&m.to_string()),
        None => s.serialize_none(),
    }
}

/// Prints a URL without what may be a credential: its user info and query.
pub(super) fn masked_url<S: Serializer>(url: &Option<HttpUrl>, s: S) -> Result<S::Ok, S::Error> {
    let Some(url) = url else {
        return s.serialize_none();
    };
    let mut u = url.url().clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("****");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        u.set_query(Some("****"));
    }
    s.serialize_str(super::types::written(&u))
}
