//! What `serve` needs across keys (each value already has its type), and
//! warnings about settings that are valid but probably wrong.

use super::{Config, ConfigError, StripeConfig, TlsMode};
use crate::signature;

/// Values in `config.toml.example` that are not marked `replace_me`/`…`.
const EXAMPLE_API_TOKEN: &str = "a-long-random-token";
const EXAMPLE_CALLBACK_URL: &str = "https://shop.example.com/hooks/fulfilld";
const EXAMPLE_SMTP_HOST: &str = "smtp.example.com";
/// The shortest accepted `admin.password`, in characters. The login is
/// throttled, but a password also guards every customer's personal data:
/// 12 characters is where the common lists run out (NIST SP 800-63B asks
/// for at least 8; passphrases of three or more words pass easily).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// A password made of fewer different characters than this is refused
/// (`aaaaaaaaaaaa`, `abababababab`, `112211221122`).
pub const MIN_PASSWORD_DISTINCT: usize = 5;
/// The shortest accepted `admin.api_token`, in characters: 20 random hex
/// digits are 80 bits, beyond online guessing at any rate.
pub const MIN_TOKEN_CHARS: usize = 20;
/// A token made of fewer different characters than this is refused: a
/// random 20-character hex token has about 14, a repeated one 1 or 2.
pub const MIN_TOKEN_DISTINCT: usize = 10;

/// The placeholder password of `config.toml.example`.
pub const EXAMPLE_PASSWORD: &str = "change me, please";

/// The most common passwords of the public breach lists (lower case, with
/// spaces and punctuation removed), and words people build them from. A
/// password is refused when, so normalised, it is one of these, optionally
/// repeated, with digits or punctuation around it.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "passw0rd",
    "p4ssw0rd",
    "p4ssword",
    "admin",
    "administrator",
    "root",
    "login",
    "letmein",
    "welcome",
    "qwerty",
    "qwertz",
    "azerty",
    "qwertyuiop",
    "asdfgh",
    "asdfghjkl",
    "zxcvbnm",
    "1q2w3e4r",
    "1qaz2wsx",
    "zaq12wsx",
    "qazwsx",
    "abc",
    "abcd",
    "abcdef",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "soccer",
    "master",
    "shadow",
    "sunshine",
    "princess",
    "superman",
    "batman",
    "starwars",
    "trustno",
    "whatever",
    "secret",
    "changeme",
    "default",
    "test",
    "guest",
    "user",
    "fulfilld",
    "stripe",
    "shop",
    "store",
    "hello",
    "freedom",
    "mustang",
    "michael",
    "jordan",
    "hunter",
    "killer",
    "pokemon",
    "computer",
    "internet",
    "correcthorsebatterystaple",
];

/// Why `password` is too weak for `admin.password`, if it is.
pub fn weak_password(password: &str, username: &str) -> Option<String> {
    if password == EXAMPLE_PASSWORD {
        return Some("is the placeholder from config.toml.example: choose your own".into());
    }
    let normal: String = password
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    let core = normal.trim_matches(|c: char| c.is_ascii_digit());
    let user: String = username
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    // Also without any digits: `Admin2024Admin2024` is `admin` twice.
    let letters: String = normal.chars().filter(|c| !c.is_ascii_digit()).collect();
    let common =
        |word: &str| COMMON_PASSWORDS.iter().any(|w| repeats(word, w)) || repeats(word, &user);
    if common(core) || common(&letters) {
        return Some(
            "is one of the most common passwords (or the username): choose another".into(),
        );
    }
    if core.is_empty() && is_digit_run(&normal) {
        return Some("is a run of consecutive digits: choose another".into());
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if distinct(password) < MIN_PASSWORD_DISTINCT {
        return Some(format!(
            "must use at least {MIN_PASSWORD_DISTINCT} different characters"
        ));
    }
    None
}

/// Why `token` is too weak for `admin.api_token`, if it is.
pub fn weak_token(token: &str) -> Option<String> {
    if token.chars().count() < MIN_TOKEN_CHARS || distinct(token) < MIN_TOKEN_DISTINCT {
        return Some(format!(
            "must be at least {MIN_TOKEN_CHARS} characters with at least {MIN_TOKEN_DISTINCT} different ones (make one with: openssl rand -hex 32)"
        ));
    }
    None
}

fn distinct(s: &str) -> usize {
    s.chars().collect::<std::collections::HashSet<_>>().len()
}

/// Whether `s` is `unit` written once or more times in a row.
fn repeats(s: &str, unit: &str) -> bool {
    !s.is_empty()
        && !unit.is_empty()
        && s.len().is_multiple_of(unit.len())
        && s.as_bytes()
            .chunks(unit.len())
            .all(|c| c == unit.as_bytes())
}

/// `123456789012`, `987654321`, `0000…`: digits that count up, down, or stand still.
fn is_digit_run(digits: &str) -> bool {
    let d: Vec<i32> = digits
        .bytes()
        .map(|b| i32::from(b) - i32::from(b'0'))
        .collect();
    if d.len() < 2 {
        return true;
    }
    let step = (d[1] - d[0]).rem_euclid(10);
    matches!(step, 0 | 1 | 9) && d.windows(2).all(|w| (w[1] - w[0]).rem_euclid(10) == step)
}

impl Config {
    /// Checks what `serve` needs. Each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // It goes into email subjects and From names: one short line.
        if let Some(name) = &self.shop.name
            && (name.trim().is_empty()
                || name.chars().count() > 100
                || name.chars().any(char::is_control))
        {
            return Err(ConfigError::invalid(
                "shop.name",
                "must be one line of 1 to 100 characters",
            ));
        }
        if self.storage.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.path", "must not be empty"));
        }
        // A day at least (Stripe redelivers for three); ten years at most.
        if !(1..=3650).contains(&self.storage.event_retention_days) {
            return Err(ConfigError::invalid(
                "storage.event_retention_days",
                "must be between 1 and 3650",
            ));
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
            (Some(p), None) => {
                if let Some(why) =
                    weak_password(p.expose(), self.admin.username.as_deref().unwrap_or(""))
                {
                    return Err(ConfigError::invalid("admin.password", why));
                }
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
            && let Some(why) = weak_token(t.expose())
        {
            return Err(ConfigError::invalid("admin.api_token", why));
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
        self.delivery.validate()?;
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

    /// Refuses the placeholder values of `config.toml.example` (used by
    /// `check-config`). They are public, so a copied example left unedited
    /// would run with a webhook secret and an admin password anyone can read.
    /// Each error names the key and says what to put there.
    pub fn refuse_placeholders(&self) -> Result<(), ConfigError> {
        /// The example's placeholders contain one of these: `replace_me`,
        /// or the ellipsis of a commented example (`whsec_…`), also
        /// percent-encoded as a URL parser writes it.
        fn placeholder(v: &str) -> bool {
            v.contains("replace_me") || v.contains('…') || v.contains("%E2%80%A6")
        }
        let refuse = |key: &str, what: &str| {
            Err(ConfigError::invalid(
                key,
                format!("is the placeholder of config.toml.example: set {what}"),
            ))
        };
        if self
            .stripe
            .secret_key
            .as_ref()
            .is_some_and(|k| placeholder(k.expose()))
        {
            return refuse(
                "stripe.secret_key",
                "your secret key from the Stripe Dashboard (sk_test_…/sk_live_…/rk_…)",
            );
        }
        if self
            .stripe
            .webhook_secrets
            .iter()
            .any(|s| placeholder(s.expose()))
        {
            return refuse(
                "stripe.webhook_secrets",
                "your endpoint's signing secret (whsec_…, from the Dashboard or `stripe listen`)",
            );
        }
        if self
            .admin
            .password
            .as_ref()
            .is_some_and(|p| p.expose() == EXAMPLE_PASSWORD || placeholder(p.expose()))
        {
            return refuse("admin.password", "a long passphrase of your own");
        }
        if self
            .admin
            .password_hash
            .as_ref()
            .is_some_and(|h| placeholder(h.expose()))
        {
            return refuse(
                "admin.password_hash",
                "the Argon2 hash of your own passphrase",
            );
        }
        if self
            .admin
            .api_token
            .as_ref()
            .is_some_and(|t| t.expose() == EXAMPLE_API_TOKEN || placeholder(t.expose()))
        {
            return refuse(
                "admin.api_token",
                "a random token, e.g. from `head -c 32 /dev/urandom | base64`",
            );
        }
        if self
            .fulfillment
            .callback_secret
            .as_ref()
            .is_some_and(|s| placeholder(s.expose()))
        {
            return refuse(
                "fulfillment.callback_secret",
                "a secret of your own: echo \"whsec_$(head -c 32 /dev/urandom | base64)\"",
            );
        }
        if self
            .fulfillment
            .callback_url
            .as_ref()
            .is_some_and(|u| u.as_str() == EXAMPLE_CALLBACK_URL)
        {
            return refuse("fulfillment.callback_url", "your shop's endpoint");
        }
        if self
            .smtp
            .url
            .as_ref()
            .is_some_and(|u| u.expose().host() == EXAMPLE_SMTP_HOST)
        {
            return refuse("smtp.url", "your mail provider's server and credentials");
        }
        if self
            .notifications
            .webhook_url
            .as_ref()
            .is_some_and(|u| placeholder(u.expose().as_str()))
        {
            return refuse(
                "notifications.webhook_url",
                "your Slack-compatible webhook URL",
            );
        }
        Ok(())
    }

    /// Warnings about the database's file permissions: an existing
    /// `storage.path` (or its folder) that its group or others can read
    /// exposes customers' personal data. fulfilld creates both private
    /// (0600 / 0700) but leaves an existing file's mode alone: changing an
    /// operator's file behind their back would surprise more than help.
    #[cfg(unix)]
    pub fn storage_warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let path = &self.storage.path;
        // Only an existing database: a missing one will be created private.
        let Ok(meta) = std::fs::metadata(path) else {
            return out;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            out.push(format!(
                "storage.path {} is readable by other users (mode {mode:04o}); it holds customers' personal data: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        if let Ok(meta) = std::fs::metadata(folder) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(format!(
                    "the folder of storage.path, {}, is open to other users (mode {mode:04o}); backups and the per-boot token live there too: chmod 700 {}",
                    folder.display(),
                    folder.display()
                ));
            }
        }
        out
    }

    #[cfg(not(unix))]
    pub fn storage_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Warnings about settings that are valid but probably wrong.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.storage_warnings();
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
        if self.delivery.enabled() {
            out.push("delivery.products is set: this build checks the files and key files but does not hand them to customers yet (digital delivery is being built; CONTRACT.md \"Digital delivery\")".into());
            if self.smtp.url.is_none() {
                out.push("delivery.products is set but smtp.url is not: customers will see their downloads and keys on the landing page only, with no email to keep".into());
            }
        }
        if self.fulfillment.callback_url.is_none() && !self.delivery.enabled() {
            out.push(
                "fulfillment.callback_url is not set: fulfillments are recorded but nothing is told about them"
                    .into(),
            );
        }
        // Settings that ask for email but cannot send any.
        if self.smtp.url.is_none() {
            if self.fulfillment.receipt_email {
                out.push("fulfillment.receipt_email is true but smtp.url is not set: no receipt will be sent".into());
            }
            if self.notifications.merchant_email.is_some() {
                out.push("notifications.merchant_email is set but smtp.url is not: no email will reach it (alerts still go to notifications.webhook_url, if set)".into());
            }
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
