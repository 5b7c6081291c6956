//! What `serve` needs across keys (each value already has its type), and
//! warnings about settings that are valid but probably wrong.

use super::{Config, ConfigError, StripeConfig, TlsMode};
use crate::signature;

impl Config {
    /// Checks what `serve` needs. Each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.storage.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.path", "must not be empty"));
        }
        // At least one, so the server can answer at all; at most what one
        // process can hold open (every connection costs a file descriptor).
        if !(1..=65_536).contains(&self.server.max_connections) {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be between 1 and 65536",
            ));
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
        if self.fulfillment.callback_url.is_some() {
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
        if self.smtp.url.is_some() && self.smtp.from.is_none() {
            return Err(ConfigError::invalid(
                "smtp.from",
                "is required when smtp.url is set",
            ));
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

    /// Warnings about settings that are valid but probably wrong.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let live = self.is_live();
        if live && !self.server.public_url.is_https() {
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
                .as_ref()
                .is_some_and(|u| !u.is_https())
        {
            out.push("fulfillment.callback_url is plain http in live mode: orders would travel unencrypted".into());
        }
        if live && self.admin.api_token.is_none() {
            out.push("admin.api_token is not set: `fulfilld backup` cannot ask the running server for a copy".into());
        }
        if let Some(url) = &self.smtp.url
            && url.expose().tls() == TlsMode::None
            && !url.expose().is_local()
        {
            out.push("smtp.url uses tls=none with a remote server: mail and the SMTP password travel in clear text".into());
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
}
