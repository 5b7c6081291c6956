//! The configuration as a whole: layers, keys named in errors, the example file.

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};

use super::*;

const GOOD: &str = r#"
    [stripe]
    secret_key = "sk_test_1234567890abcdefghij"
    webhook_secrets = ["whsec_one", "whsec_two"]
    [admin]
    username = "admin"
    password = "correct horse battery"
"#;

fn url(raw: &str) -> HttpUrl {
    raw.parse().unwrap()
}

fn parse(raw: &str) -> Result<Config, ConfigError> {
    Config::from_figment(
        Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(raw)),
    )
}

#[test]
fn defaults_follow_the_contract() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.server.listen, SocketAddr::from(([127, 0, 0, 1], 4242)));
    assert_eq!(c.server.public_url.to_string(), "http://localhost:4242");
    assert_eq!(c.storage.path, PathBuf::from("./data/fulfilld.redb"));
    assert_eq!(c.storage.event_retention_days, 90);
    assert_eq!(c.stripe.api_base.to_string(), "https://api.stripe.com");
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
    with_token.fulfillment.callback_url = Some(url("https://u:pw@shop.test/hook?token=abc"));
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
    let raw = include_str!("../../config.toml.example");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in raw.lines() {
        let line = line.trim();
        // An array of tables (`[[delivery.products]]`, commented or not):
        // its keys are named `delivery.products[].key`.
        let header = line.strip_prefix("# ").unwrap_or(line);
        if let Some(name) = header.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            section = format!("{name}[]");
            continue;
        }
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
    let example = include_str!("../../config.toml.example");
    // Its placeholder password is refused: a copy must not go live with it.
    let err = parse(example).unwrap_err().to_string();
    assert!(err.starts_with("admin.password: "), "{err}");
    parse(&example.replace(super::validate::EXAMPLE_PASSWORD, "a passphrase of my own"))
        .expect("config.toml.example validates with its own password");

    // Every key it names (commented or not) is a real key.
    let mut all = String::new();
    let mut current = String::new();
    for (path, value) in example_keys() {
        let (section, key, header) = match path.split_once("[].") {
            Some((array, key)) => (array, key, format!("[[{array}]]")),
            None => {
                let (section, key) = path.split_once('.').unwrap();
                (section, key, format!("[{section}]"))
            }
        };
        if section != current {
            all.push_str(&format!("{header}\n"));
            current = section.to_string();
        }
        all.push_str(&format!("{key} = {value}\n"));
    }
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&all));
    figment
        .extract::<Config>()
        .expect("every key in the example is known");

    // Every key the configuration knows is in the example (the `_file`
    // variants are described once, at the top).
    let mut full = parse(GOOD).unwrap();
    full.admin.password_hash = Some(Secret::new("x"));
    full.admin.api_token = Some(Secret::new("x"));
    full.fulfillment.callback_url = Some(url("https://x.test/"));
    full.fulfillment.callback_secret = Some(Secret::new("x"));
    full.smtp.url = Some(Secret::from_value("smtp://x.test".parse().unwrap()));
    full.smtp.from = Some("x@x.test".parse().unwrap());
    full.notifications = NotificationsConfig {
        merchant_email: Some("x@x.test".parse().unwrap()),
        webhook_url: Some(Secret::from_value(url("https://x.test/"))),
        webhook_url_file: None,
        retry_url: Some(url("https://x.test/")),
    };
    full.delivery.products = vec![crate::config::DeliveryProduct {
        stripe_product: Some("prod_x".into()),
        stripe_price: Some("price_x".into()),
        files: vec!["x".into()],
        license_keys: Some("x".into()),
        message: Some("x".into()),
    }];
    let value = toml::Value::try_from(&full).unwrap();
    let named: Vec<String> = example_keys().into_iter().map(|(k, _)| k).collect();
    for (section, table) in value.as_table().unwrap() {
        for (key, v) in table.as_table().unwrap() {
            let path = format!("{section}.{key}");
            let keys: Vec<String> = match v.as_array().and_then(|a| a.first()?.as_table()) {
                Some(entry) => entry.keys().map(|k| format!("{path}[].{k}")).collect(),
                None => vec![path],
            };
            for path in keys {
                assert!(
                    named.contains(&path),
                    "config.toml.example does not document {path}"
                );
            }
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
        // Digits only: figment reads it as a number, it is still a string.
        jail.set_env("FULFILLD_ADMIN__PASSWORD", "918273645501");
        jail.set_env("FULFILLD_CONFIG", "c.toml");
        let c = Config::load(&ConfigSource {
            path: "c.toml".into(),
            explicit: true,
        })
        .map_err(|e| e.to_string())?;
        assert_eq!(c.stripe.webhook_secrets.len(), 3);
        assert_eq!(c.admin.password.unwrap().expose(), "918273645501");
        // A variable that names no key is a warning naming it, not an error.
        jail.set_env("FULFILLD_SERVER__NOPE", "1");
        let (_, warnings) = Config::load_with_warnings(&ConfigSource {
            path: "c.toml".into(),
            explicit: true,
        })
        .map_err(|e| e.to_string())?;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("FULFILLD_SERVER__NOPE"),
            "{warnings:?}"
        );
        Ok(())
    });
}

#[test]
fn typed_values_are_parsed_once_and_name_their_key() {
    let cases = [
        (
            "[server]\npublic_url = \"localhost:4242\"",
            "server.public_url",
        ),
        ("[server]\nlisten = 4242", "server.listen"),
        (
            "[stripe]\napi_base = \"ftp://api.stripe.com\"",
            "stripe.api_base",
        ),
        (
            "[fulfillment]\ncallback_url = \"not a url\"",
            "fulfillment.callback_url",
        ),
        ("[smtp]\nurl = \"smtp://mail.test?tls=maybe\"", "smtp.url"),
        ("[smtp]\nfrom = \"Shop <nowhere>\"", "smtp.from"),
        (
            "[notifications]\nmerchant_email = \"merchant\"",
            "notifications.merchant_email",
        ),
        (
            "[notifications]\nwebhook_url = \"hooks.slack.test/x\"",
            "notifications.webhook_url",
        ),
        (
            "[notifications]\nretry_url = \"mailto:pay@shop.test\"",
            "notifications.retry_url",
        ),
    ];
    for (section, key) in cases {
        // GOOD has a [stripe] table already: add to it rather than repeat it.
        let raw = match section.strip_prefix("[stripe]") {
            Some(keys) => GOOD.replace("[stripe]", &format!("[stripe]{keys}")),
            None => format!("{GOOD}\n{section}\n"),
        };
        match parse(&raw) {
            Err(ConfigError::Invalid { key: k, message }) => {
                assert_eq!(k, key, "{message}")
            }
            other => panic!("{key}: expected Invalid, got {other:?}"),
        }
    }
    // The messages are the ones validation gave before the values were typed.
    let err = parse(&format!(
        "{GOOD}\n[notifications]\nmerchant_email = \"m\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "notifications.merchant_email: is not an email address"
    );
    let err = parse(&format!(
        "{GOOD}\n[server]\npublic_url = \"ftp://x.test\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "server.public_url: must be an http or https URL"
    );
}

#[test]
fn typed_secrets_from_files_are_parsed_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("smtp");
    std::fs::write(&file, "smtps://u:p%40ss@mail.test\n").unwrap();
    let with_file = |extra: &str| {
        format!(
            "{GOOD}\n[smtp]\nurl_file = {:?}\nfrom = \"orders@shop.test\"\n{extra}",
            file.display().to_string()
        )
    };
    let c = parse(&with_file("")).unwrap();
    let smtp = c.smtp.url.as_ref().unwrap().expose();
    assert_eq!(
        (smtp.host(), smtp.port(), smtp.tls()),
        ("mail.test", 465, TlsMode::Implicit)
    );
    assert_eq!(smtp.credentials().unwrap().password, "p@ss");
    assert!(!c.masked_toml().contains("p%40ss"));
    std::fs::write(&file, "http://mail.test\n").unwrap();
    let err = parse(&with_file("")).unwrap_err().to_string();
    assert_eq!(err, "smtp.url: scheme must be smtp or smtps");
    let err = parse(&with_file("url = \"smtp://mail.test\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("smtp.url_file: give either"), "{err}");
}

#[test]
fn values_print_as_parsed() {
    let raw = format!(
        "{GOOD}\n[server]\nlisten = \"[::1]:4242\"\n[notifications]\nmerchant_email = \"Merchant <m@shop.test>\"\nwebhook_url = \"https://hooks.test/T0/B0/secret\"\nretry_url = \"https://shop.test/pay?token=abc\"\n"
    );
    let c = parse(&raw).unwrap();
    assert_eq!(c.server.listen, "[::1]:4242".parse::<SocketAddr>().unwrap());
    let printed = c.masked_toml();
    assert!(printed.contains("listen = \"[::1]:4242\""), "{printed}");
    assert!(
        printed.contains("merchant_email = \"Merchant <m@shop.test>\""),
        "{printed}"
    );
    assert!(printed.contains("webhook_url = \"********\""), "{printed}");
    assert!(
        printed.contains("retry_url = \"https://shop.test/pay?****\""),
        "{printed}"
    );
    assert!(
        !printed.contains("T0/B0") && !printed.contains("abc"),
        "{printed}"
    );
}

#[test]
fn typed_values_from_the_environment_name_their_key_too() {
    #[allow(clippy::result_large_err)]
    figment::Jail::expect_with(|jail| {
        jail.create_file("c.toml", GOOD)?;
        jail.set_env("FULFILLD_SERVER__LISTEN", "[::]:8080");
        jail.set_env("FULFILLD_NOTIFICATIONS__MERCHANT_EMAIL", "m@shop.test");
        let source = ConfigSource {
            path: "c.toml".into(),
            explicit: true,
        };
        let c = Config::load(&source).map_err(|e| e.to_string())?;
        assert_eq!(c.server.listen, "[::]:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(Config::listen_from(&source).ok(), Some(c.server.listen));
        jail.set_env("FULFILLD_SERVER__PUBLIC_URL", "orders.shop.test");
        let err = Config::load(&source).unwrap_err().to_string();
        assert_eq!(
            err,
            "server.public_url (environment variable FULFILLD_SERVER__PUBLIC_URL): is not a valid URL"
        );
        Ok(())
    });
}

#[test]
fn orchestrators_variables_warn_and_known_keys_still_apply() {
    #[allow(clippy::result_large_err)]
    figment::Jail::expect_with(|jail| {
        jail.create_file("c.toml", GOOD)?;
        // What Kubernetes injects for a Service named fulfilld.
        jail.set_env("FULFILLD_PORT", "tcp://10.0.0.1:4242");
        jail.set_env("FULFILLD_PORT_4242_TCP_ADDR", "10.0.0.1");
        jail.set_env("FULFILLD_SERVICE_HOST", "10.0.0.1");
        jail.set_env("FULFILLD_SERVER__LISTEN", "0.0.0.0:9000");
        let source = ConfigSource {
            path: "c.toml".into(),
            explicit: true,
        };
        let (c, warnings) = Config::load_with_warnings(&source).map_err(|e| e.to_string())?;
        assert_eq!(c.server.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        let mut named: Vec<&str> = warnings
            .iter()
            .filter_map(|w| w.split_whitespace().nth(2))
            .collect();
        named.sort_unstable();
        assert_eq!(
            named,
            [
                "FULFILLD_PORT",
                "FULFILLD_PORT_4242_TCP_ADDR",
                "FULFILLD_SERVICE_HOST"
            ],
            "{warnings:?}"
        );
        assert_eq!(
            Config::listen_from(&source).map_err(|e| e.to_string())?,
            SocketAddr::from(([0, 0, 0, 0], 9000))
        );
        // A known key with a bad value is still an error naming the key.
        jail.set_env("FULFILLD_JOBS__LEASE_SECS", "soon");
        let err = Config::load(&source).unwrap_err().to_string();
        assert!(err.to_ascii_lowercase().contains("lease_secs"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_keys_in_the_file_stay_errors() {
    let err = parse(&format!("{GOOD}\n[server]\nport = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("port"), "{err}");
}

#[test]
fn every_placeholder_of_the_example_is_refused_naming_its_key() {
    let example = include_str!("../../config.toml.example");
    // The password rules refuse the example's password at any load...
    let err = parse(example).unwrap_err().to_string();
    assert!(err.starts_with("admin.password: "), "{err}");
    // ...and check-config then names every other placeholder.
    let own = example.replace("change me, please", "a passphrase of my own");
    let err = parse(&own)
        .unwrap()
        .refuse_placeholders()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("stripe.secret_key: "), "{err}");
    assert!(parse(GOOD).unwrap().refuse_placeholders().is_ok());
    let mut refused = Vec::new();
    for (path, value) in example_keys() {
        let (section, key) = path.split_once('.').unwrap();
        let one = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(GOOD))
            .merge(Toml::string(&format!("[{section}]\n{key} = {value}\n")));
        let Ok(c) = one.extract::<Config>() else {
            continue;
        };
        if let Err(e) = c.refuse_placeholders() {
            let e = e.to_string();
            assert!(e.starts_with(&format!("{path}: ")), "{path}: {e}");
            assert!(e.contains("placeholder"), "{e}");
            refused.push(path);
        }
    }
    assert_eq!(
        refused,
        [
            "stripe.secret_key",
            "stripe.webhook_secrets",
            "admin.password",
            "admin.password_hash",
            "admin.api_token",
            "fulfillment.callback_url",
            "fulfillment.callback_secret",
            "smtp.url",
            "notifications.webhook_url",
        ]
    );
}

#[cfg(unix)]
#[test]
fn an_existing_database_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = folder.join("fulfilld.redb");
    let mut c = parse(GOOD).unwrap();
    c.storage.path = db.clone();
    // Not there yet: it will be created private, nothing to say.
    assert!(c.storage_warnings().is_empty());
    std::fs::write(&db, b"x").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        c.storage_warnings().is_empty(),
        "{:?}",
        c.storage_warnings()
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    let w = c.storage_warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains(&format!("chmod 600 {}", db.display())) && w[0].contains("0644"),
        "{w:?}"
    );
    assert!(
        w[1].contains(&format!("chmod 700 {}", folder.display())),
        "{w:?}"
    );
    assert!(c.warnings().iter().any(|x| x.contains("chmod 600")));
}

#[test]
fn weak_admin_passwords_are_refused() {
    for weak in [
        "password",
        "12345678",
        "admin",
        "letmein",
        "qwerty",
        "Password123!",
        "passwordpassword",
        "qwertyqwerty",
        "123456789012",
        "000000000000",
        "Admin2024Admin2024",
        "adminadminadmin",
        "change me, please",
        "Correct Horse Battery Staple",
        "short pass1",
        "aaaaaaaaaaaaaaaa",
        "abababababab",
    ] {
        let raw = GOOD.replace("correct horse battery", weak);
        let err = parse(&raw).unwrap_err().to_string();
        assert!(err.starts_with("admin.password: "), "{weak}: {err}");
    }
    for fine in [
        "correct horse battery",
        "a long test password",
        "918273645501",
        "demo-0123456789abcdef",
    ] {
        let raw = GOOD.replace("correct horse battery", fine);
        assert!(parse(&raw).is_ok(), "{fine}");
    }
}

#[test]
fn low_entropy_api_tokens_are_refused() {
    for weak in [
        "aaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababababab",
        "0123456789abcdef",
        "short-but-varied",
    ] {
        let raw = format!("{GOOD}\napi_token = \"{weak}\"\n");
        let err = parse(&raw).unwrap_err().to_string();
        assert!(err.starts_with("admin.api_token: "), "{weak}: {err}");
        assert!(!err.contains(weak), "the token is not echoed: {err}");
    }
    for fine in [
        "test-api-token-0123456789abcdef",
        "0123456789abcdef0123",
        "demo_token_0123456789abcdef01234567",
    ] {
        let raw = format!("{GOOD}\napi_token = \"{fine}\"\n");
        assert!(parse(&raw).is_ok(), "{fine}");
    }
}

#[test]
fn trusted_proxies_parse_from_the_file_and_the_environment() {
    let c = parse(&format!(
        "{GOOD}\n[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n"
    ))
    .unwrap();
    assert!(
        c.server
            .trusted_proxies
            .contains("10.1.2.3".parse().unwrap())
    );
    assert!(c.server.trusted_proxies.contains("::1".parse().unwrap()));
    assert!(parse(GOOD).unwrap().server.trusted_proxies.is_empty());
    let err = parse(&format!(
        "{GOOD}\n[server]\ntrusted_proxies = [\"10.0.0.1/8\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.trusted_proxies"), "{err}");
    assert!(err.contains("10.0.0.1/8"), "{err}");
    #[allow(clippy::result_large_err)]
    figment::Jail::expect_with(|jail| {
        jail.create_file("c.toml", GOOD)?;
        jail.set_env("FULFILLD_SERVER__TRUSTED_PROXIES", "127.0.0.1, fd00::/8");
        let c = Config::load(&ConfigSource {
            path: "c.toml".into(),
            explicit: true,
        })
        .map_err(|e| e.to_string())?;
        assert!(
            c.server
                .trusted_proxies
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            c.server
                .trusted_proxies
                .contains("127.0.0.1".parse().unwrap())
        );
        Ok(())
    });
}

#[test]
fn event_retention_is_between_a_day_and_ten_years() {
    for (days, ok) in [(0, false), (1, true), (3650, true), (3651, false)] {
        let raw = format!("{GOOD}\n[storage]\nevent_retention_days = {days}\n");
        match parse(&raw) {
            Ok(c) => {
                assert!(ok, "{days} accepted");
                assert_eq!(c.storage.event_retention_days, days);
            }
            Err(e) => {
                assert!(!ok, "{days} refused: {e}");
                assert!(
                    e.to_string().contains("storage.event_retention_days"),
                    "{e}"
                );
            }
        }
    }
}
