//! Configuration: built-in defaults < `config.toml` < `FULFILLD_<SECTION>__<KEY>`
//! environment variables. Every secret may be given as `<key>_file` instead.
//! Unknown keys are errors, and every error names the key it is about.
//!
//! Values are parsed into their types (`SocketAddr`, URLs, mailboxes, an
//! SMTP URL) while the configuration is loaded, so no use site re-parses a
//! string. `load` reads the layers, `validate` checks what `serve` needs
//! across keys, `masked` prints it.

mod cidr;
mod delivery;
mod explain;
mod load;
mod masked;
mod secret;
mod smtp_url;
mod types;
mod validate;

use std::{net::SocketAddr, path::PathBuf};

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

pub use cidr::{IpNet, TrustedProxies};
pub use delivery::{DeliveryConfig, DeliveryProduct, RevokeOnRefund, unsafe_relative};
pub use secret::{Mask, Secret};
pub use smtp_url::{SmtpCredentials, SmtpScheme, SmtpUrl, TlsMode};
pub use types::{ConfigValue, HttpUrl};

/// The Stripe API version sent as `Stripe-Version` unless configured otherwise.
pub const DEFAULT_STRIPE_API_VERSION: &str = "2026-10-28.endive";

/// `stripe.api_base` unless configured otherwise.
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that cannot be read, in the merchant's words (see `explain`).
    #[error("{0}")]
    Load(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub stripe: StripeConfig,
    pub admin: AdminConfig,
    pub fulfillment: FulfillmentConfig,
    pub smtp: SmtpConfig,
    pub notifications: NotificationsConfig,
    pub shop: ShopConfig,
    pub log: LogConfig,
    pub jobs: JobsConfig,
    pub delivery: DeliveryConfig,
}

/// The shop's identity on customer pages and emails (CONTRACT.md "The
/// shop's identity"). Unset, pages and emails name no shop.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopConfig {
    /// Shown on the landing page, in emails' From name and subjects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// "Back to the shop" on the landing page and in emails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<HttpUrl>,
    /// Where customers are told to write; `Reply-To` of customer emails.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "masked::print_mailbox",
        deserialize_with = "types::recipient"
    )]
    pub support_email: Option<Mailbox>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "types::socket_addr")]
    pub listen: SocketAddr,
    pub public_url: HttpUrl,
    /// Reverse proxies whose `X-Forwarded-For` is believed (none by default).
    pub trusted_proxies: TrustedProxies,
    /// Open client connections at most; one more is closed at once, never queued.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub path: PathBuf,
    /// `postgres://…`: keep all state in PostgreSQL instead of the redb
    /// file at `path`, so several replicas can share it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret<crate::store::pg::Target>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// Raw Stripe event bodies older than this many days are pruned (their
    /// records, and everything about sessions, are kept).
    pub event_retention_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    #[serde(deserialize_with = "types::secret_list")]
    pub webhook_secrets: Vec<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secrets_file: Option<PathBuf>,
    pub api_base: HttpUrl,
    pub tolerance_secs: u64,
    pub api_version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FulfillmentConfig {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "masked::masked_url"
    )]
    pub callback_url: Option<HttpUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_secret_file: Option<PathBuf>,
    pub receipt_email: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret<SmtpUrl>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "masked::print_mailbox",
        deserialize_with = "types::sender"
    )]
    pub from: Option<Mailbox>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "masked::print_mailbox",
        deserialize_with = "types::recipient"
    )]
    pub merchant_email: Option<Mailbox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Secret<HttpUrl>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url_file: Option<PathBuf>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "masked::masked_url"
    )]
    pub retry_url: Option<HttpUrl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    pub retry_base_ms: u64,
    pub retry_max_secs: u64,
    pub give_up_after_secs: u64,
    pub lease_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4242)),
            public_url: default_url("http://localhost:4242"),
            trusted_proxies: TrustedProxies::default(),
            max_connections: 1024,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data/fulfilld.redb"),
            url: None,
            url_file: None,
            event_retention_days: 90,
        }
    }
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig {
            secret_key: None,
            secret_key_file: None,
            webhook_secrets: Vec::new(),
            webhook_secrets_file: None,
            api_base: default_url(DEFAULT_STRIPE_API_BASE),
            tolerance_secs: 300,
            api_version: DEFAULT_STRIPE_API_VERSION.into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            retry_base_ms: 1000,
            retry_max_secs: 3600,
            give_up_after_secs: 259_200,
            lease_secs: 60,
        }
    }
}

/// A built-in default, known to parse.
fn default_url(raw: &str) -> HttpUrl {
    match raw.parse() {
        Ok(url) => url,
        Err(e) => unreachable!("built-in default {raw} {e}"),
    }
}

/// Where the configuration file is: `--config`, else `FULFILLD_CONFIG`, else `./config.toml`.
/// `explicit` is true when the user named it, in which case it must exist.
pub struct ConfigSource {
    pub path: PathBuf,
    pub explicit: bool,
}

#[cfg(test)]
mod tests;
