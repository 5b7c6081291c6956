use std::fs;

use super::*;
use crate::config::{DeliveryConfig, DeliveryProduct};

fn shop() -> (tempfile::TempDir, DeliveryConfig) {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    fs::create_dir_all(files.join("keys")).unwrap();
    fs::write(files.join("guide.pdf"), b"%PDF-1.4 guide").unwrap();
    fs::write(
        files.join("keys/app.txt"),
        "# keys for App\nAAAA-1111\n\n  BBBB-2222  \n",
    )
    .unwrap();
    let config = DeliveryConfig {
        files_dir: files,
        products: vec![
            DeliveryProduct {
                stripe_product: Some("prod_book".into()),
                files: vec!["guide.pdf".into()],
                ..Default::default()
            },
            DeliveryProduct {
                stripe_price: Some("price_app".into()),
                license_keys: Some("keys/app.txt".into()),
                message: Some("Thanks!".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    (dir, config)
}

fn error(config: &DeliveryConfig) -> String {
    Catalogue::load(config).unwrap_err().to_string()
}

#[test]
fn a_good_catalogue_resolves_files_and_reads_keys() {
    let (_dir, config) = shop();
    let c = Catalogue::load(&config).unwrap();
    assert!(c.enabled());
    assert_eq!(c.products[0].files[0].size, 14);
    assert!(c.products[0].files[0].path.starts_with(&c.root));
    assert_eq!(
        c.products[1].keys.as_ref().unwrap().keys,
        ["AAAA-1111", "BBBB-2222"],
        "comments and blank lines skipped, spaces trimmed"
    );
    assert!(
        c.summary()
            .starts_with("2 products, 1 file (14 B), 1 key file with 2 keys in "),
        "{}",
        c.summary()
    );
}

#[test]
fn no_products_reads_nothing() {
    let config = DeliveryConfig {
        files_dir: "/nonexistent/anywhere".into(),
        ..Default::default()
    };
    let c = Catalogue::load(&config).unwrap();
    assert!(!c.enabled());
}

#[test]
fn a_missing_folder_or_file_names_its_key() {
    let (dir, mut config) = shop();
    config.products[0].files.push("missing.pdf".into());
    assert_eq!(
        error(&config),
        "delivery.products[1].files[2]: (prod_book) \"missing.pdf\" does not exist"
    );
    config.files_dir = dir.path().join("nope");
    assert!(
        error(&config).starts_with("delivery.files_dir: "),
        "{}",
        error(&config)
    );
    assert!(error(&config).ends_with("does not exist"));
    config.files_dir = dir.path().join("files/guide.pdf");
    assert!(
        error(&config).ends_with("is not a folder"),
        "{}",
        error(&config)
    );
}

#[test]
fn symlinks_out_of_files_dir_and_folders_are_refused() {
    let (dir, mut config) = shop();
    let outside = dir.path().join("secret.txt");
    fs::write(&outside, "not for sale").unwrap();
    let files = dir.path().join("files");
    std::os::unix::fs::symlink(&outside, files.join("link.pdf")).unwrap();
    std::os::unix::fs::symlink(files.join("guide.pdf"), files.join("alias.pdf")).unwrap();
    config.products[0].files = vec!["alias.pdf".into()];
    let c = Catalogue::load(&config).expect("a symlink inside files_dir is fine");
    assert!(c.products[0].files[0].path.ends_with("guide.pdf"));
    config.products[0].files = vec!["link.pdf".into()];
    assert!(
        error(&config).contains("leads outside delivery.files_dir"),
        "{}",
        error(&config)
    );
    config.products[0].files = vec!["keys".into()];
    assert!(
        error(&config).contains("is not a regular file"),
        "{}",
        error(&config)
    );
    // The config-level checks hold here too, for paths built elsewhere.
    assert!(
        resolve(&c.root, "../secret.txt")
            .unwrap_err()
            .contains("climbs out")
    );
    assert!(
        resolve(&c.root, &outside.display().to_string())
            .unwrap_err()
            .contains("absolute")
    );
}

#[test]
fn a_key_file_with_a_key_twice_or_binary_is_refused() {
    let (dir, config) = shop();
    let keys = dir.path().join("files/keys/app.txt");
    fs::write(&keys, "K-1\nK-2\nK-1\n").unwrap();
    assert_eq!(
        error(&config),
        "delivery.products[2].license_keys: (price_app) \"keys/app.txt\" line 3 repeats the key of line 1: each key must be unique, or it would be issued twice"
    );
    fs::write(&keys, b"K-1\n\xff\xfe\n").unwrap();
    assert!(
        error(&config).contains("is not UTF-8"),
        "{}",
        error(&config)
    );
    fs::write(&keys, "K-1\n").unwrap();
    assert!(Catalogue::load(&config).is_ok());
    fs::write(&keys, "").unwrap();
    let c = Catalogue::load(&config).expect("an empty key file: grants wait for keys");
    assert!(c.products[1].keys.as_ref().unwrap().keys.is_empty());
    assert!(parse_keys(&"x".repeat(MAX_KEY_CHARS + 1)).is_err());
}

#[test]
fn the_rules_name_what_the_catalogue_resolved() {
    let (_dir, config) = shop();
    let c = Catalogue::load(&config).unwrap();
    assert_eq!(c.rules.products.len(), 2);
    assert_eq!(
        c.rules.products[0].matcher,
        Matcher::Product("prod_book".into())
    );
    assert_eq!(c.rules.products[0].files, ["guide.pdf"]);
    assert_eq!(
        c.rules.products[1].key_pool.as_deref(),
        Some("keys/app.txt")
    );
    assert_eq!(c.rules.link_ttl_ms, 168 * 3_600_000);
    assert_eq!(c.rules.max_downloads, 5);
}
