//! `fulfilld check-config`: loads and validates the configuration, prints it
//! with secrets masked, and exits 2 with a message naming the bad key.

use std::{io::Write, process::ExitCode};

use crate::config::{Config, ConfigError, ConfigSource};

/// Exit code of a configuration that does not load or validate.
pub const INVALID: u8 = 2;

pub fn run(source: &ConfigSource) -> ExitCode {
    let loaded = Config::load_with_warnings(source).and_then(|(config, env_warnings)| {
        // Only check-config refuses the example's placeholders: it is what
        // people run after copying the example (serve then fails at Stripe).
        config.refuse_placeholders()?;
        Ok((config, env_warnings))
    });
    let code = report(
        &loaded,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    if code != 0 {
        return ExitCode::from(code);
    }
    let Ok((config, _)) = &loaded else {
        return ExitCode::from(code);
    };
    let delivery = check_delivery(config, &mut std::io::stderr().lock());
    if delivery != 0 {
        return ExitCode::from(delivery);
    }
    if config.storage.url.is_some() {
        return ExitCode::from(check_database(config));
    }
    ExitCode::from(code)
}

/// Resolves every deliverable file and reads every key file, as `serve`
/// does at startup: a file that is missing, unreadable or outside
/// `files_dir`, or a key file that does not parse, exits 2 naming the
/// product entry.
fn check_delivery(config: &Config, err: &mut dyn Write) -> u8 {
    if !config.delivery.enabled() {
        return 0;
    }
    match crate::delivery::Catalogue::load(&config.delivery) {
        Ok(c) => {
            let _ = writeln!(err, "delivery: {}", c.summary());
            0
        }
        Err(e) => {
            let _ = writeln!(err, "fulfilld: invalid configuration: {e}");
            INVALID
        }
    }
}

/// How long check-config waits for PostgreSQL to answer.
const DATABASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to `storage.url` and reads the schema version: the database
/// answers, and its schema is one this build can use (or none yet: the
/// first start creates it).
fn check_database(config: &Config) -> u8 {
    use crate::store::pg::{Target, migrate};
    let Some(url) = &config.storage.url else {
        return 0;
    };
    let target: Target = url.expose().clone();
    let checked = super::runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            let client = tokio::time::timeout(DATABASE_TIMEOUT, target.connect())
                .await
                .map_err(|_| format!("PostgreSQL did not answer within {DATABASE_TIMEOUT:?}"))?
                .map_err(|e| crate::report::chain(&e))?;
            migrate::schema_version(&client)
                .await
                .map_err(|e| crate::report::chain(&e))
        })
    });
    match checked {
        Ok(None) => {
            eprintln!(
                "storage.url: PostgreSQL answers; it has no fulfilld schema yet (the first start creates version {})",
                migrate::LATEST
            );
            0
        }
        Ok(Some(v)) if v <= migrate::LATEST => {
            eprintln!(
                "storage.url: PostgreSQL answers; schema version {v} (this build knows up to {})",
                migrate::LATEST
            );
            0
        }
        Ok(Some(v)) => {
            eprintln!(
                "fulfilld: storage.url: the database's schema is version {v}, newer than this build knows ({}); run the newer version",
                migrate::LATEST
            );
            INVALID
        }
        Err(e) => {
            eprintln!("fulfilld: storage.url: {e}");
            INVALID
        }
    }
}

/// Writes the verdict on `loaded` (a configuration with the warnings about
/// the environment): the masked TOML on `out`, warnings and the verdict on
/// `err`. Returns the exit code.
pub fn report(
    loaded: &Result<(Config, Vec<String>), ConfigError>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    // Nothing sensible is left to do if the terminal is gone: the exit code
    // still tells.
    match loaded {
        Ok((config, env_warnings)) => {
            let _ = write!(out, "{}", config.masked_toml());
            let _ = out.flush();
            for w in env_warnings.iter().cloned().chain(config.warnings()) {
                let _ = writeln!(err, "warning: {w}");
            }
            let _ = writeln!(err, "configuration OK");
            0
        }
        Err(e) => {
            let _ = writeln!(err, "fulfilld: invalid configuration: {e}");
            INVALID
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::{
        Figment,
        providers::{Format, Serialized, Toml},
    };

    use super::*;

    fn check(raw: &str) -> (u8, String, String) {
        let loaded = Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(raw)),
        )
        .and_then(|c| {
            c.refuse_placeholders()?;
            Ok((
                c,
                vec!["environment variable FULFILLD_PORT names no key".into()],
            ))
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = report(&loaded, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const GOOD: &str = r#"
        [stripe]
        secret_key = "sk_test_1234567890abcdefghij"
        webhook_secrets = ["whsec_one"]
        [admin]
        username = "admin"
        password = "correct horse battery"
        [smtp]
        url = "smtp://mailer:s3cr%40t@mail.example.com?tls=none"
        from = "Shop <orders@shop.example>"
    "#;

    #[test]
    fn prints_masked_and_warns_through_the_parsed_smtp_url() {
        let (code, out, err) = check(GOOD);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("url = \"********\""), "{out}");
        assert!(!out.contains("s3cr") && !out.contains("mailer"), "{out}");
        assert!(out.contains("listen = \"127.0.0.1:4242\""), "{out}");
        assert!(err.contains("warning: smtp.url uses tls=none"), "{err}");
        assert!(
            err.contains("warning: environment variable FULFILLD_PORT"),
            "{err}"
        );
        assert!(err.ends_with("configuration OK\n"), "{err}");
        let local = GOOD.replace("mail.example.com", "localhost");
        let (_, _, err) = check(&local);
        assert!(!err.contains("tls=none"), "{err}");
    }

    #[test]
    fn a_bad_value_exits_2_naming_its_key() {
        for (bad, key) in [
            ("tls=none", "tls=maybe", "smtp.url"),
            ("Shop <orders@shop.example>", "not an address", "smtp.from"),
        ]
        .map(|(from, to, key)| (GOOD.replace(from, to), key))
        {
            let (code, out, err) = check(&bad);
            assert_eq!(code, INVALID);
            assert!(out.is_empty(), "{out}");
            assert!(
                err.starts_with(&format!("fulfilld: invalid configuration: {key}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_example_placeholders_exit_2_naming_the_key() {
        let example = include_str!("../../config.toml.example");
        // The example's password is refused by the password rules first...
        let (code, out, err) = check(example);
        assert_eq!(code, INVALID, "{err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.starts_with("fulfilld: invalid configuration: admin.password: is the placeholder"),
            "{err}"
        );
        // ...and with a password of one's own, the next placeholder is named.
        let example = example.replace("change me, please", "a passphrase of my own");
        let (code, out, err) = check(&example);
        assert_eq!(code, INVALID, "{err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.starts_with(
                "fulfilld: invalid configuration: stripe.secret_key: is the placeholder"
            ),
            "{err}"
        );
        let token = GOOD.replace("[smtp]", "api_token = \"a-long-random-token\"\n[smtp]");
        let (code, _, err) = check(&token);
        assert_eq!(code, INVALID, "{err}");
        // Refused naming the key (the example's token is also too short).
        assert!(
            err.contains("invalid configuration: admin.api_token: "),
            "{err}"
        );
    }
}
