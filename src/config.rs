//! Configuration: built-in defaults < `config.toml` < `FULFILLD_<SECTION>__<KEY>`
//! environment variables. Every secret may be given as `<key>_file` instead.
//! Unknown keys are errors, and every error names the key it is about.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::signature;

/// The Stripe API version sent as `Stripe-Version` unless configured otherwise.
pub const DEFAULT_STRIPE_API_VERSION: &str = "2026-10-28.endive";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
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

/// A secret string: never printed in full by `Debug`, `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// A masked form: a known key prefix and, for long keys, the last four
    /// characters (`sk_test_…wxyz`), as Stripe's dashboard shows keys.
    /// Anything else (passwords, URLs with credentials) is masked entirely.
    pub fn masked(&self) -> String {
        const PREFIXES: [&str; 5] = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_"];
        let s = &self.0;
        let Some(prefix) = PREFIXES.iter().find(|p| s.starts_with(*p)) else {
            return "********".into();
        };
        let rest = &s[prefix.len()..];
        if rest.chars().count() >= 16 {
            let tail: String = rest.chars().skip(rest.chars().count() - 4).collect();
            format!("{prefix}…{tail}")
        } else {
            format!("{prefix}****")
        }
    }
}

/// A Stripe signing secret keys an HMAC without being handed out as a string.
impl crate::signature::StripeKey for Secret {
    fn stripe_mac(&self) -> crate::signature::HmacSha256 {
        self.0.stripe_mac()
    }
}

impl AsRef<str> for Secret {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(scalar_string(d)?))
    }
}

/// Prints a URL without what may be a credential: its user info and query.
fn masked_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    let Some(raw) = url else {
        return s.serialize_none();
    };
    match reqwest::Url::parse(raw) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("****");
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some("****"));
            }
            s.serialize_str(u.as_str())
        }
        Err(_) => s.serialize_str("********"),
    }
}

/// Accepts any scalar as a string: environment values such as `1234` are
/// parsed as numbers by figment, but a password is still a string.
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
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
fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
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

fn split_secrets(raw: &str) -> Vec<Secret> {
    raw.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
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
    pub log: LogConfig,
    pub jobs: JobsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub public_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    #[serde(deserialize_with = "secret_list")]
    pub webhook_secrets: Vec<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secrets_file: Option<PathBuf>,
    pub api_base: String,
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
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "masked_url")]
    pub callback_url: Option<String>,
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
    pub url: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "masked_url")]
    pub retry_url: Option<String>,
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
            listen: "127.0.0.1:4242".into(),
            public_url: "http://localhost:4242".into(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data/fulfilld.redb"),
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
            api_base: "https://api.stripe.com".into(),
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

/// Where the configuration file is: `--config`, else `FULFILLD_CONFIG`, else `./config.toml`.
/// `explicit` is true when the user named it, in which case it must exist.
pub struct ConfigSource {
    pub path: PathBuf,
    pub explicit: bool,
}

impl Config {
    /// Loads every layer, reads `_file` secrets and validates the result for `serve`.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Self::load_with_env(source, Env::prefixed("FULFILLD_"))
    }

    fn load_with_env(source: &ConfigSource, env: Env) -> Result<Config, ConfigError> {
        Self::from_figment(Self::layers(source, env)?)
    }

    fn layers(source: &ConfigSource, env: Env) -> Result<Figment, ConfigError> {
        if source.explicit && !source.path.exists() {
            return Err(ConfigError::invalid(
                "--config",
                format!("file {} does not exist", source.path.display()),
            ));
        }
        Ok(Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&source.path))
            .merge(env.ignore(&["config"]).split("__")))
    }

    /// Only `server.listen`, without requiring secrets (for `healthcheck`).
    pub fn listen_from(source: &ConfigSource) -> Result<SocketAddr, ConfigError> {
        let figment = Self::layers(source, Env::prefixed("FULFILLD_"))?;
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.listen_addr()
    }

    /// Extracts and checks a configuration from any figment (tests use TOML strings).
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces every `<key>_file` with the contents of the file it names.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        fn take(
            key: &str,
            value: &mut Option<Secret>,
            file: &mut Option<PathBuf>,
        ) -> Result<(), ConfigError> {
            if let Some(path) = file.take() {
                if value.is_some() {
                    return Err(ConfigError::invalid(
                        &format!("{key}_file"),
                        format!("give either {key} or {key}_file, not both"),
                    ));
                }
                *value = Some(Secret::new(read_secret_file(
                    &format!("{key}_file"),
                    &path,
                )?));
            }
            Ok(())
        }
        take(
            "stripe.secret_key",
            &mut self.stripe.secret_key,
            &mut self.stripe.secret_key_file,
        )?;
        if let Some(path) = self.stripe.webhook_secrets_file.take() {
            if !self.stripe.webhook_secrets.is_empty() {
                return Err(ConfigError::invalid(
                    "stripe.webhook_secrets_file",
                    "give either stripe.webhook_secrets or stripe.webhook_secrets_file, not both",
                ));
            }
            let raw = read_secret_file("stripe.webhook_secrets_file", &path)?;
            self.stripe.webhook_secrets = split_secrets(&raw);
        }
        take(
            "admin.password",
            &mut self.admin.password,
            &mut self.admin.password_file,
        )?;
        take(
            "admin.password_hash",
            &mut self.admin.password_hash,
            &mut self.admin.password_hash_file,
        )?;
        take(
            "admin.api_token",
            &mut self.admin.api_token,
            &mut self.admin.api_token_file,
        )?;
        take(
            "fulfillment.callback_secret",
            &mut self.fulfillment.callback_secret,
            &mut self.fulfillment.callback_secret_file,
        )?;
        take("smtp.url", &mut self.smtp.url, &mut self.smtp.url_file)?;
        take(
            "notifications.webhook_url",
            &mut self.notifications.webhook_url,
            &mut self.notifications.webhook_url_file,
        )?;
        Ok(())
    }

    /// Checks what `serve` needs. Each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        check_url("server.public_url", &self.server.public_url)?;
        if self.storage.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.path", "must not be empty"));
        }
        match &self.stripe.secret_key {
            None => return Err(ConfigError::invalid("stripe.secret_key", "is required")),
            Some(k)
                if !["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
                    .iter()
                    .any(|p| k.expose().starts_with(p)) =>
            {
                return Err(ConfigError::invalid(
                    "stripe.secret_key",
                    "must start with sk_test_, sk_live_, rk_test_ or rk_live_",
                ));
            }
            Some(_) => {}
        }
        if self.stripe.webhook_secrets.is_empty() {
            return Err(ConfigError::invalid(
                "stripe.webhook_secrets",
                "is required: at least one whsec_… signing secret",
            ));
        }
        if let Some(i) = self
            .stripe
            .webhook_secrets
            .iter()
            .position(|s| !s.expose().starts_with("whsec_") || s.expose().len() <= 6)
        {
            return Err(ConfigError::invalid(
                "stripe.webhook_secrets",
                format!(
                    "entry {} must be a signing secret starting with whsec_",
                    i + 1
                ),
            ));
        }
        check_url("stripe.api_base", &self.stripe.api_base)?;
        if self.stripe.tolerance_secs == 0 {
            return Err(ConfigError::invalid(
                "stripe.tolerance_secs",
                "must be greater than 0 (0 would accept replays of any age)",
            ));
        }
        if self.stripe.api_version.trim().is_empty() {
            return Err(ConfigError::invalid(
                "stripe.api_version",
                "must not be empty",
            ));
        }
        match self.admin.username.as_deref() {
            None | Some("") => return Err(ConfigError::invalid("admin.username", "is required")),
            Some(_) => {}
        }
        match (&self.admin.password, &self.admin.password_hash) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    "admin.password",
                    "is required (or admin.password_hash)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "admin.password_hash",
                    "give either admin.password or admin.password_hash, not both",
                ));
            }
            (Some(p), None) if p.expose().chars().count() < 8 => {
                return Err(ConfigError::invalid(
                    "admin.password",
                    "must be at least 8 characters",
                ));
            }
            (None, Some(h))
                if !h.expose().starts_with("$argon2")
                    || argon2::PasswordHash::new(h.expose()).is_err() =>
            {
                return Err(ConfigError::invalid(
                    "admin.password_hash",
                    "must be an Argon2 PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)",
                ));
            }
            _ => {}
        }
        if let Some(t) = &self.admin.api_token
            && t.expose().len() < 16
        {
            return Err(ConfigError::invalid(
                "admin.api_token",
                "must be at least 16 characters",
            ));
        }
        if let Some(url) = &self.fulfillment.callback_url {
            check_url("fulfillment.callback_url", url)?;
            match &self.fulfillment.callback_secret {
                None => {
                    return Err(ConfigError::invalid(
                        "fulfillment.callback_secret",
                        "is required when fulfillment.callback_url is set",
                    ));
                }
                Some(s) => {
                    signature::standard_webhooks_key(s.expose()).map_err(|e| {
                        ConfigError::invalid(
                            "fulfillment.callback_secret",
                            format!("{e} (expected whsec_<base64 key>)"),
                        )
                    })?;
                }
            }
        }
        if let Some(url) = &self.smtp.url {
            let parsed = reqwest::Url::parse(url.expose()).map_err(|_| {
                ConfigError::invalid("smtp.url", "is not a URL (smtp://host:port or smtps://…)")
            })?;
            if !matches!(parsed.scheme(), "smtp" | "smtps") {
                return Err(ConfigError::invalid(
                    "smtp.url",
                    "scheme must be smtp or smtps",
                ));
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(ConfigError::invalid("smtp.url", "has no host"));
            }
            let tls = parsed
                .query_pairs()
                .find(|(k, _)| k == "tls")
                .map(|(_, v)| v.to_string());
            match (parsed.scheme(), tls.as_deref()) {
                ("smtps", None) | ("smtp", None) => {}
                ("smtp", Some("none" | "starttls" | "required" | "opportunistic")) => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "smtp.url",
                        "tls= must be none, starttls or opportunistic (smtp:// only)",
                    ));
                }
            }
            match &self.smtp.from {
                None => {
                    return Err(ConfigError::invalid(
                        "smtp.from",
                        "is required when smtp.url is set",
                    ));
                }
                Some(from) if from.parse::<lettre::message::Mailbox>().is_err() => {
                    return Err(ConfigError::invalid(
                        "smtp.from",
                        "is not an email address (\"Shop <orders@example.com>\" or orders@example.com)",
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(m) = &self.notifications.merchant_email
            && m.parse::<lettre::message::Mailbox>().is_err()
        {
            return Err(ConfigError::invalid(
                "notifications.merchant_email",
                "is not an email address",
            ));
        }
        if let Some(url) = &self.notifications.webhook_url {
            check_url("notifications.webhook_url", url.expose())?;
        }
        if let Some(url) = &self.notifications.retry_url {
            check_url("notifications.retry_url", url)?;
        }
        let jobs = &self.jobs;
        let ranges: [(&str, u64, u64, u64); 5] = [
            (
                "stripe.tolerance_secs",
                self.stripe.tolerance_secs,
                1,
                7 * 86_400,
            ),
            ("jobs.retry_base_ms", jobs.retry_base_ms, 1, 3_600_000),
            ("jobs.retry_max_secs", jobs.retry_max_secs, 1, 30 * 86_400),
            (
                "jobs.give_up_after_secs",
                jobs.give_up_after_secs,
                0,
                365 * 86_400,
            ),
            ("jobs.lease_secs", jobs.lease_secs, 1, 86_400),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be between {min} and {max}"),
                ));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::invalid("server.listen", "must be an address like 127.0.0.1:4242")
        })
    }

    /// Warnings about settings that are valid but probably wrong.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let live = self.is_live();
        if live && !self.server.public_url.starts_with("https://") {
            out.push("server.public_url is not https, but stripe.secret_key is a live key: customers' landing pages and the dashboard login would travel in clear text".into());
        }
        if live && self.stripe.api_base != StripeConfig::default().api_base {
            out.push(format!(
                "stripe.secret_key is a live key, but stripe.api_base points at {} rather than Stripe",
                self.stripe.api_base
            ));
        }
        if live
            && self
                .fulfillment
                .callback_url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://"))
        {
            out.push("fulfillment.callback_url is plain http in live mode: orders would travel unencrypted".into());
        }
        if live && self.admin.api_token.is_none() {
            out.push("admin.api_token is not set: `fulfilld backup` cannot ask the running server for a copy".into());
        }
        if let Some(url) = &self.smtp.url {
            let u = url.expose();
            let local = u.contains("@localhost")
                || u.contains("@127.0.0.1")
                || u.contains("//localhost")
                || u.contains("//127.0.0.1");
            if u.contains("tls=none") && !local {
                out.push("smtp.url uses tls=none with a remote server: mail and the SMTP password travel in clear text".into());
            }
        }
        if self.fulfillment.callback_url.is_none() {
            out.push(
                "fulfillment.callback_url is not set: fulfillments are recorded but nothing is told about them"
                    .into(),
            );
        }
        out
    }

    /// Whether `stripe.secret_key` is a live-mode key. Stripe's webhook
    /// secrets do not say which mode they belong to, so a test secret with a
    /// live key shows only at runtime: events whose `livemode` differs from
    /// the key's are logged as a warning.
    pub fn is_live(&self) -> bool {
        self.stripe
            .secret_key
            .as_ref()
            .is_some_and(|k| k.expose().contains("_live_"))
    }

    /// The configuration as TOML with every secret masked.
    pub fn masked_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let value = raw.trim().to_string();
    if value.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(value)
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url =
        reqwest::Url::parse(value).map_err(|_| ConfigError::invalid(key, "is not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(key, "must be an http or https URL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [stripe]
        secret_key = "sk_test_1234567890abcdefghij"
        webhook_secrets = ["whsec_one", "whsec_two"]
        [admin]
        username = "admin"
        password = "correct horse battery"
    "#;

    fn parse(raw: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(raw)),
        )
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:4242");
        assert_eq!(c.server.public_url, "http://localhost:4242");
        assert_eq!(c.storage.path, PathBuf::from("./data/fulfilld.redb"));
        assert_eq!(c.stripe.api_base, "https://api.stripe.com");
        assert_eq!(c.stripe.tolerance_secs, 300);
        assert_eq!(c.jobs.retry_base_ms, 1000);
        assert_eq!(c.jobs.retry_max_secs, 3600);
        assert_eq!(c.jobs.give_up_after_secs, 259_200);
        assert_eq!(c.jobs.lease_secs, 60);
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(!c.fulfillment.receipt_email);
        assert_eq!(c.stripe.webhook_secrets.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse(&format!("{GOOD}\n[server]\nlisten_port = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
        let err = parse(&format!("{GOOD}\n[serverr]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("serverr"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (GOOD.replace("sk_test_", "pk_test_"), "stripe.secret_key"),
            (GOOD.replace("whsec_two", "two"), "stripe.webhook_secrets"),
            (
                GOOD.replace("correct horse battery", "short"),
                "admin.password",
            ),
            (
                format!("{GOOD}\n[server]\nlisten = \"nope\"\n"),
                "server.listen",
            ),
            (
                format!("{GOOD}\n[fulfillment]\ncallback_url = \"http://x.test/cb\"\n"),
                "fulfillment.callback_secret",
            ),
            (
                format!(
                    "{GOOD}\n[fulfillment]\ncallback_url = \"http://x.test/cb\"\ncallback_secret = \"whsec_%%%\"\n"
                ),
                "fulfillment.callback_secret",
            ),
            (
                format!("{GOOD}\n[smtp]\nurl = \"smtp://localhost:25\"\n"),
                "smtp.from",
            ),
            (
                format!("{GOOD}\n[jobs]\nlease_secs = 99999999999\n"),
                "jobs.lease_secs",
            ),
            (
                format!("{GOOD}\n[jobs]\nretry_base_ms = 0\n"),
                "jobs.retry_base_ms",
            ),
            (
                GOOD.replace("[stripe]", "[stripe]\ntolerance_secs = 0"),
                "stripe.tolerance_secs",
            ),
        ];
        for (raw, key) in cases {
            let err = parse(&raw).unwrap_err().to_string();
            assert!(err.starts_with(key), "expected {key}, got {err}");
        }
        let missing = parse("").unwrap_err().to_string();
        assert!(missing.starts_with("stripe.secret_key"), "{missing}");
    }

    #[test]
    fn secrets_come_from_files_and_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "sk_live_abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let raw = GOOD.replace(
            "secret_key = \"sk_test_1234567890abcdefghij\"",
            &format!("secret_key_file = {:?}", key.display().to_string()),
        );
        let c = parse(&raw).unwrap();
        assert_eq!(
            c.stripe.secret_key.as_ref().unwrap().expose(),
            "sk_live_abcdefghijklmnopqrstuvwxyz"
        );
        let printed = c.masked_toml();
        assert!(printed.contains("sk_live_…wxyz"), "{printed}");
        assert!(!printed.contains("abcdefghijklmnop"), "{printed}");
        assert!(!printed.contains("correct horse"), "{printed}");
        assert!(!format!("{c:?}").contains("correct horse"));
        assert_eq!(Secret::new("correct horse battery").masked(), "********");
        assert_eq!(Secret::new("whsec_short").masked(), "whsec_****");
        assert_eq!(Secret::new("smtp://u:p@host:25").masked(), "********");
        let mut with_token = c.clone();
        with_token.fulfillment.callback_url = Some("https://u:pw@shop.test/hook?token=abc".into());
        let printed = with_token.masked_toml();
        assert!(
            printed.contains("https://****@shop.test/hook?****"),
            "{printed}"
        );
        assert!(
            !printed.contains("abc") && !printed.contains("pw@"),
            "{printed}"
        );
        assert!(c.warnings().iter().any(|w| w.contains("https")));
    }

    /// `key = …` and `# key = …` lines of the example, as `section.key`.
    fn example_keys() -> Vec<(String, String)> {
        let raw = include_str!("../config.toml.example");
        let mut section = String::new();
        let mut out = Vec::new();
        for line in raw.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let body = line.strip_prefix("# ").unwrap_or(line);
            if let Some((key, value)) = body.split_once(" = ")
                && !key.contains(' ')
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                out.push((format!("{section}.{key}"), value.to_string()));
            }
        }
        out
    }

    #[test]
    fn the_example_config_is_valid_and_names_every_key() {
        let example = include_str!("../config.toml.example");
        parse(example).expect("config.toml.example validates as it is");

        // Every key it names (commented or not) is a real key.
        let mut all = String::new();
        let mut current = String::new();
        for (path, value) in example_keys() {
            let (section, key) = path.split_once('.').unwrap();
            if section != current {
                all.push_str(&format!("[{section}]\n"));
                current = section.to_string();
            }
            all.push_str(&format!("{key} = {value}\n"));
        }
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&all));
        figment
            .extract::<Config>()
            .expect("every key in the example is known");

        // Every key the configuration knows is in the example (the `_file`
        // variants are described once, at the top).
        let mut full = parse(GOOD).unwrap();
        full.admin.password_hash = Some(Secret::new("x"));
        full.admin.api_token = Some(Secret::new("x"));
        full.fulfillment.callback_url = Some("x".into());
        full.fulfillment.callback_secret = Some(Secret::new("x"));
        full.smtp.url = Some(Secret::new("x"));
        full.smtp.from = Some("x".into());
        full.notifications = NotificationsConfig {
            merchant_email: Some("x".into()),
            webhook_url: Some(Secret::new("x")),
            webhook_url_file: None,
            retry_url: Some("x".into()),
        };
        let value = toml::Value::try_from(&full).unwrap();
        let named: Vec<String> = example_keys().into_iter().map(|(k, _)| k).collect();
        for (section, table) in value.as_table().unwrap() {
            for key in table.as_table().unwrap().keys() {
                let path = format!("{section}.{key}");
                assert!(
                    named.contains(&path),
                    "config.toml.example does not document {path}"
                );
            }
        }
        assert!(
            example.contains("_file"),
            "the _file form of secrets is documented"
        );
    }

    #[test]
    fn env_overrides_file_and_lists_split_on_commas() {
        #[allow(clippy::result_large_err)]
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", GOOD)?;
            jail.set_env(
                "FULFILLD_STRIPE__WEBHOOK_SECRETS",
                "whsec_a,whsec_b,whsec_c",
            );
            jail.set_env("FULFILLD_ADMIN__PASSWORD", "12345678");
            jail.set_env("FULFILLD_CONFIG", "c.toml");
            let c = Config::load(&ConfigSource {
                path: "c.toml".into(),
                explicit: true,
            })
            .map_err(|e| e.to_string())?;
            assert_eq!(c.stripe.webhook_secrets.len(), 3);
            assert_eq!(c.admin.password.unwrap().expose(), "12345678");
            jail.set_env("FULFILLD_SERVER__NOPE", "1");
            let err = Config::load(&ConfigSource {
                path: "c.toml".into(),
                explicit: true,
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("nope"), "{err}");
            Ok(())
        });
    }
}
