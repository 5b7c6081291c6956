//! Reading the layers: defaults, the file, the environment, then `_file` secrets.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};

use super::{
    Config, ConfigError, ConfigSource,
    secret::Secret,
    types::{ConfigValue, split_secrets},
};

/// The keys whose values are parsed into a type while extracting: their
/// parse messages become `ConfigError::Invalid` naming the key, as every
/// other invalid value does. (Other figment errors keep figment's wording.)
const TYPED_KEYS: [&str; 9] = [
    "server.listen",
    "server.public_url",
    "stripe.api_base",
    "fulfillment.callback_url",
    "smtp.url",
    "smtp.from",
    "notifications.merchant_email",
    "notifications.webhook_url",
    "notifications.retry_url",
];

fn extract_error(e: figment::Error) -> ConfigError {
    let key = e.path.join(".").to_ascii_lowercase();
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    match &e.kind {
        figment::error::Kind::Message(message) if TYPED_KEYS.contains(&key.as_str()) => {
            if from_env {
                let path: Vec<&str> = key.split('.').collect();
                let name = super::explain::env_name(&path);
                ConfigError::invalid(
                    &format!("{key} (environment variable {name})"),
                    message.clone(),
                )
            } else {
                ConfigError::invalid(&key, message.clone())
            }
        }
        _ => ConfigError::Load(super::explain::explain(&e)),
    }
}

/// The prefix of the environment layer.
pub(super) const ENV_PREFIX: &str = "FULFILLD_";

/// The environment layer, without the variables that name no key.
///
/// Orchestrators inject their own `FULFILLD_*` variables (Kubernetes sets
/// `FULFILLD_PORT=tcp://10.0.0.1:4242`, `FULFILLD_SERVICE_HOST`… for a
/// Service named fulfilld), so an unknown variable is a warning naming it,
/// never a reason not to start. Unknown keys in the file stay errors.
///
/// A variable is unknown when, extracted on its own over the defaults, it
/// fails with serde's "unknown field": so the rule follows the typed
/// configuration exactly, with no list to keep in step. A known key with a
/// bad value is kept, so it still fails loading with its key named.
fn known_env(env: Env) -> (Env, Vec<String>) {
    let env = env.ignore(&["config"]).split("__");
    let mut unknown = Vec::new();
    for (key, value) in env.iter() {
        let value = figment::value::Value::from(value);
        let alone = Figment::from(Serialized::defaults(Config::default())).merge(
            Serialized::globals(figment::util::nest(key.as_str(), value)),
        );
        let unknown_field = alone.extract::<Config>().err().and_then(|e| {
            e.into_iter().find_map(|e| match e.kind {
                figment::error::Kind::UnknownField(found, expected) => {
                    Some((e.path, found, expected))
                }
                _ => None,
            })
        });
        if let Some((path, found, expected)) = unknown_field {
            // What was probably meant: the closest key where the name went astray.
            let hint = super::explain::did_you_mean(&found, expected).map(|best| {
                let mut p: Vec<&str> = path
                    .iter()
                    .map(String::as_str)
                    .skip_while(|p| *p == "default")
                    .collect();
                p.pop();
                p.push(best);
                format!("; did you mean {}?", super::explain::env_name(&p))
            });
            unknown.push((key.as_str().to_string(), hint.unwrap_or_default()));
        }
    }
    let names = unknown
        .iter()
        .map(|(k, hint)| {
            format!(
                "environment variable {ENV_PREFIX}{} names no configuration key and is ignored{hint} (orchestrators such as Kubernetes set such variables; if it is yours, check its spelling: FULFILLD_<SECTION>__<KEY>)",
                k.to_ascii_uppercase().replace('.', "__")
            )
        })
        .collect();
    let env = env.filter(move |k| !unknown.iter().any(|(u, _)| k == u.as_str()));
    (env, names)
}

impl super::ShopConfig {
    /// The `[shop]` table of `path` alone (the demo shows it); the file's
    /// other tables are read but not checked beyond their keys.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::invalid(
                "--config",
                format!("file {} does not exist", path.display()),
            ));
        }
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .extract()
            .map_err(extract_error)?;
        Ok(config.shop)
    }
}

impl Config {
    /// Loads every layer, reads `_file` secrets and validates the result for `serve`.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Self::load_with_warnings(source).map(|(c, _)| c)
    }

    /// As [`Config::load`], with the warnings about the environment (each
    /// ignored `FULFILLD_*` variable, by name). `serve` and `check-config`
    /// print them with [`Config::warnings`].
    pub fn load_with_warnings(source: &ConfigSource) -> Result<(Config, Vec<String>), ConfigError> {
        Self::load_with_env(source, Env::prefixed(ENV_PREFIX))
    }

    fn load_with_env(
        source: &ConfigSource,
        env: Env,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let (figment, warnings) = Self::layers(source, env)?;
        match Self::from_figment(figment) {
            Ok(c) => Ok((c, warnings)),
            Err(e) => {
                // What was read, and what was not, is often the answer.
                let mut notes = warnings;
                if !source.path.exists() {
                    notes.push(format!(
                        "no configuration file at {} (read the defaults and FULFILLD_* environment variables only; pass --config FILE or copy config.toml.example)",
                        source.path.display()
                    ));
                }
                if notes.is_empty() {
                    return Err(e);
                }
                Err(ConfigError::Load(format!(
                    "{e}\n{}",
                    notes
                        .iter()
                        .map(|n| format!("  note: {n}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )))
            }
        }
    }

    fn layers(source: &ConfigSource, env: Env) -> Result<(Figment, Vec<String>), ConfigError> {
        if source.explicit && !source.path.exists() {
            return Err(ConfigError::invalid(
                "--config",
                format!("file {} does not exist", source.path.display()),
            ));
        }
        let (env, warnings) = known_env(env);
        Ok((
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::file(&source.path))
                .merge(env),
            warnings,
        ))
    }

    /// Only `server.listen`, without requiring secrets (for `healthcheck`).
    pub fn listen_from(source: &ConfigSource) -> Result<SocketAddr, ConfigError> {
        let (figment, _) = Self::layers(source, Env::prefixed(ENV_PREFIX))?;
        let config: Config = figment.extract().map_err(extract_error)?;
        Ok(config.server.listen)
    }

    /// Extracts and checks a configuration from any figment (tests use TOML strings).
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(extract_error)?;
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces every `<key>_file` with the contents of the file it names,
    /// parsed as the key's value would be.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        fn take<T: ConfigValue>(
            key: &str,
            value: &mut Option<Secret<T>>,
            file: &mut Option<PathBuf>,
        ) -> Result<(), ConfigError> {
            if let Some(path) = file.take() {
                if value.is_some() {
                    return Err(ConfigError::invalid(
                        &format!("{key}_file"),
                        format!("give either {key} or {key}_file, not both"),
                    ));
                }
                let raw = read_secret_file(&format!("{key}_file"), &path)?;
                let parsed = T::parse_value(&raw).map_err(|m| ConfigError::invalid(key, m))?;
                *value = Some(Secret::from_value(parsed));
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
            "storage.url",
            &mut self.storage.url,
            &mut self.storage.url_file,
        )?;
        take(
            "notifications.webhook_url",
            &mut self.notifications.webhook_url,
            &mut self.notifications.webhook_url_file,
        )?;
        Ok(())
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
