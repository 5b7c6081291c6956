//! Digital delivery (CONTRACT.md "Digital delivery"): the catalogue is
//! checked by `check-config` and at startup, naming the product entry at fault.

use std::path::Path;

use fulfilld::{app::Application, config::DeliveryProduct};

use crate::helpers::test_config;

const CONFIG: &str = r#"
[stripe]
secret_key = "sk_test_51HfakeFAKEfake1234567890"
webhook_secrets = ["whsec_abcdefghijklmnop"]
[admin]
username = "admin"
password = "correct horse battery"
[delivery]
files_dir = "files"
[[delivery.products]]
stripe_product = "prod_ebook"
files = ["ebook.pdf", "extras/bonus.txt"]
[[delivery.products]]
stripe_price = "price_app"
license_keys = "keys/app.txt"
message = "Thanks! Your key is below."
"#;

/// A shop folder: the files `CONFIG` names, and a secret beside them.
fn shop() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("extras")).unwrap();
    std::fs::create_dir_all(files.join("keys")).unwrap();
    std::fs::write(files.join("ebook.pdf"), b"%PDF-1.4 ebook").unwrap();
    std::fs::write(files.join("extras/bonus.txt"), b"bonus").unwrap();
    std::fs::write(files.join("keys/app.txt"), "KEY-1\nKEY-2\nKEY-3\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"not for sale").unwrap();
    dir
}

fn check_config(dir: &Path, toml: &str) -> (i32, String) {
    let (code, _, err) = crate::ops::check_config(dir, toml);
    (code, err)
}

#[test]
fn check_config_resolves_every_file_and_key_file_and_names_the_entry_at_fault() {
    let dir = shop();
    let (code, err) = check_config(dir.path(), CONFIG);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("delivery: 2 products, 2 files (19 B), 1 key file with 3 keys in "),
        "{err}"
    );
    let refused = |toml: String, expected: &str| {
        let (code, err) = check_config(dir.path(), &toml);
        assert_eq!(code, 2, "{toml}\n{err}");
        assert!(
            err.contains(&format!("fulfilld: invalid configuration: {expected}")),
            "expected {expected}\n{err}"
        );
    };
    refused(
        CONFIG.replace("ebook.pdf", "missing.pdf"),
        "delivery.products[1].files[1]: (prod_ebook) \"missing.pdf\" does not exist",
    );
    refused(
        CONFIG.replace("ebook.pdf", "../secret.txt"),
        "delivery.products[1].files[1]: (prod_ebook) \"../secret.txt\" climbs out",
    );
    let absolute = dir.path().join("secret.txt").display().to_string();
    refused(
        CONFIG.replace("ebook.pdf", &absolute),
        "delivery.products[1].files[1]: (prod_ebook) ",
    );
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("files/sneaky.pdf"),
    )
    .unwrap();
    refused(
        CONFIG.replace("ebook.pdf", "sneaky.pdf"),
        "delivery.products[1].files[1]: (prod_ebook) \"sneaky.pdf\" leads outside delivery.files_dir",
    );
    std::fs::write(dir.path().join("files/keys/dup.txt"), "A\nB\nA\n").unwrap();
    refused(
        CONFIG.replace("keys/app.txt", "keys/dup.txt"),
        "delivery.products[2].license_keys: (price_app) \"keys/dup.txt\" line 3 repeats the key of line 1",
    );
    refused(
        CONFIG.replace(
            "stripe_price = \"price_app\"",
            "stripe_price = \"prod_app\"",
        ),
        "delivery.products[2].stripe_price: must be a Stripe price id",
    );
    refused(
        CONFIG.replace("files_dir = \"files\"", "files_dir = \"nowhere\""),
        "delivery.files_dir: nowhere: does not exist",
    );
}

#[tokio::test]
async fn serve_refuses_to_start_with_a_deliverable_file_missing() {
    let dir = shop();
    let mut config = test_config(&dir.path().join("db.redb"), "http://127.0.0.1:9", None);
    config.delivery.files_dir = dir.path().join("files");
    config.delivery.products = vec![DeliveryProduct {
        stripe_product: Some("prod_ebook".into()),
        files: vec!["ebook.pdf".into(), "gone.pdf".into()],
        ..Default::default()
    }];
    config.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = fulfilld::app::open_store(&config).await.unwrap();
    let err = match Application::build_with_store(&config, listener, store).await {
        Ok(_) => panic!("started with a missing file"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err,
        "delivery.products[1].files[2]: (prod_ebook) \"gone.pdf\" does not exist"
    );
}
