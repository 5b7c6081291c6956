//! `[delivery]` and `[[delivery.products]]` (CONTRACT.md "Digital
//! delivery"): what a fulfilled session hands the customer. This file holds
//! the keys and the checks that need no disk; `crate::delivery::Catalogue`
//! resolves the files and reads the key files.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The most products one configuration may list.
pub const MAX_PRODUCTS: usize = 500;
/// The most files one product may grant.
pub const MAX_FILES_PER_PRODUCT: usize = 50;
/// `message` at most, in characters (shown on the page and in the email).
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// `link_ttl_hours` at most: ten years.
pub const MAX_LINK_TTL_HOURS: u32 = 87_600;
/// `max_downloads` at most per file and order.
pub const MAX_DOWNLOADS: u32 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Deliverable files (and key files) live here; nothing outside it is
    /// ever served.
    pub files_dir: PathBuf,
    /// A download link works this long after it is issued.
    pub link_ttl_hours: u32,
    /// Downloads per file and order (a resumed download counts once).
    pub max_downloads: u32,
    /// Which refunds revoke the order's downloads and keys.
    pub revoke_on_refund: RevokeOnRefund,
    pub products: Vec<DeliveryProduct>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            files_dir: PathBuf::from("./data/files"),
            link_ttl_hours: 168,
            max_downloads: 5,
            revoke_on_refund: RevokeOnRefund::Full,
            products: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeOnRefund {
    /// A full refund revokes.
    Full,
    /// Any refund, even a partial one, revokes.
    Any,
    /// Refunds never revoke (the merchant revokes by hand).
    Never,
}

/// One product entry: which line items it matches and what they grant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryProduct {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_price: Option<String>,
    /// Paths relative to `files_dir`.
    pub files: Vec<String>,
    /// A file (relative to `files_dir`) of license keys, one per line; one
    /// unused key is issued per unit bought.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_keys: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl DeliveryProduct {
    /// `prod_…` or `price_…`: what the entry matches, for messages.
    pub fn matcher(&self) -> &str {
        self.stripe_product
            .as_deref()
            .or(self.stripe_price.as_deref())
            .unwrap_or("?")
    }
}

impl DeliveryConfig {
    /// Whether digital delivery is on: some product is listed.
    pub fn enabled(&self) -> bool {
        !self.products.is_empty()
    }

    /// The checks that need no disk. Errors name the product entry
    /// (`delivery.products[2]`, counted from 1 as people count) and what it
    /// matches.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_LINK_TTL_HOURS).contains(&self.link_ttl_hours) {
            return Err(ConfigError::invalid(
                "delivery.link_ttl_hours",
                format!("must be between 1 and {MAX_LINK_TTL_HOURS}"),
            ));
        }
        if !(1..=MAX_DOWNLOADS).contains(&self.max_downloads) {
            return Err(ConfigError::invalid(
                "delivery.max_downloads",
                format!("must be between 1 and {MAX_DOWNLOADS}"),
            ));
        }
        if !self.enabled() {
            return Ok(());
        }
        if self.files_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "delivery.files_dir",
                "must not be empty when delivery.products are listed",
            ));
        }
        if self.products.len() > MAX_PRODUCTS {
            return Err(ConfigError::invalid(
                "delivery.products",
                format!(
                    "lists {} entries; at most {MAX_PRODUCTS}",
                    self.products.len()
                ),
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, p) in self.products.iter().enumerate() {
            let key = |field: &str| format!("delivery.products[{}]{field}", i + 1);
            let what = match (&p.stripe_product, &p.stripe_price) {
                (Some(prod), None) if prod.starts_with("prod_") && prod.len() > 5 => prod,
                (None, Some(price)) if price.starts_with("price_") && price.len() > 6 => price,
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        &key(""),
                        "give stripe_product or stripe_price, not both",
                    ));
                }
                (None, None) => {
                    return Err(ConfigError::invalid(
                        &key(""),
                        "needs stripe_product = \"prod_…\" or stripe_price = \"price_…\" to match line items",
                    ));
                }
                (Some(_), None) => {
                    return Err(ConfigError::invalid(
                        &key(".stripe_product"),
                        "must be a Stripe product id (prod_…)",
                    ));
                }
                (None, Some(_)) => {
                    return Err(ConfigError::invalid(
                        &key(".stripe_price"),
                        "must be a Stripe price id (price_…)",
                    ));
                }
            };
            if seen.contains(&what.as_str()) {
                return Err(ConfigError::invalid(
                    &key(""),
                    format!("{what} is listed twice; merge the two entries"),
                ));
            }
            seen.push(what);
            if p.files.is_empty() && p.license_keys.is_none() {
                return Err(ConfigError::invalid(
                    &key(""),
                    format!("({what}) grants nothing: give files, license_keys or both"),
                ));
            }
            if p.files.len() > MAX_FILES_PER_PRODUCT {
                return Err(ConfigError::invalid(
                    &key(".files"),
                    format!(
                        "({what}) lists {} files; at most {MAX_FILES_PER_PRODUCT}",
                        p.files.len()
                    ),
                ));
            }
            for (j, f) in p.files.iter().enumerate() {
                if let Some(why) = unsafe_relative(f) {
                    return Err(ConfigError::invalid(
                        &key(&format!(".files[{}]", j + 1)),
                        format!("({what}) \"{}\" {why}", f.escape_debug()),
                    ));
                }
                if p.files[..j].contains(f) {
                    return Err(ConfigError::invalid(
                        &key(&format!(".files[{}]", j + 1)),
                        format!("({what}) \"{}\" is listed twice", f.escape_debug()),
                    ));
                }
            }
            if let Some(k) = &p.license_keys
                && let Some(why) = unsafe_relative(k)
            {
                return Err(ConfigError::invalid(
                    &key(".license_keys"),
                    format!("({what}) \"{}\" {why}", k.escape_debug()),
                ));
            }
            if let Some(m) = &p.message
                && (m.trim().is_empty() || m.chars().count() > MAX_MESSAGE_CHARS)
            {
                return Err(ConfigError::invalid(
                    &key(".message"),
                    format!("({what}) must be 1 to {MAX_MESSAGE_CHARS} characters"),
                ));
            }
        }
        Ok(())
    }
}

/// Why `path` is not a plain path inside `files_dir`, if it is not: it must
/// be relative, name a file below the folder and never climb out of it.
/// (Symlinks out of the folder are refused when the files are resolved.)
pub fn unsafe_relative(path: &str) -> Option<&'static str> {
    if path.trim().is_empty() {
        return Some("is empty");
    }
    if path.chars().any(char::is_control) {
        return Some("holds a control character");
    }
    let p = Path::new(path);
    if p.is_absolute() || path.starts_with('/') || path.starts_with('\\') {
        return Some("is absolute: give a path relative to delivery.files_dir");
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Some("climbs out with \"..\": give a path inside delivery.files_dir");
            }
            Component::RootDir | Component::Prefix(_) => {
                return Some("is absolute: give a path relative to delivery.files_dir");
            }
        }
    }
    if path.ends_with('/') {
        return Some("names a folder: give a file");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(prod: &str, files: &[&str]) -> DeliveryProduct {
        DeliveryProduct {
            stripe_product: Some(prod.into()),
            files: files.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        }
    }

    fn with(products: Vec<DeliveryProduct>) -> DeliveryConfig {
        DeliveryConfig {
            products,
            ..Default::default()
        }
    }

    fn err(c: &DeliveryConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn no_products_is_off_and_valid() {
        let c = DeliveryConfig::default();
        assert!(!c.enabled());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn paths_that_leave_files_dir_are_refused_naming_the_entry() {
        for (bad, why) in [
            ("../secret.pdf", "climbs out"),
            ("books/../../etc/passwd", "climbs out"),
            ("/etc/passwd", "is absolute"),
            ("", "is empty"),
            ("books/", "names a folder"),
            ("a\nb", "control character"),
        ] {
            let c = with(vec![
                product("prod_ok", &["fine.pdf"]),
                product("prod_bad", &["fine.pdf", bad]),
            ]);
            let e = err(&c);
            assert!(
                e.starts_with("delivery.products[2].files[2]: (prod_bad)"),
                "{bad}: {e}"
            );
            assert!(e.contains(why), "{bad}: {e}");
        }
        let mut keys = product("prod_keys", &[]);
        keys.license_keys = Some("../keys.txt".into());
        assert!(err(&with(vec![keys])).starts_with("delivery.products[1].license_keys: "));
        assert!(unsafe_relative("books/guide.pdf").is_none());
        assert!(unsafe_relative("./guide.pdf").is_none());
    }

    #[test]
    fn an_entry_matches_one_product_or_price_and_grants_something() {
        let mut both = product("prod_a", &["a.pdf"]);
        both.stripe_price = Some("price_a".into());
        assert!(err(&with(vec![both])).contains("not both"));
        let neither = DeliveryProduct {
            files: vec!["a.pdf".into()],
            ..Default::default()
        };
        assert!(err(&with(vec![neither])).contains("needs stripe_product"));
        assert!(err(&with(vec![product("price_x", &["a.pdf"])])).contains("prod_…"));
        assert!(err(&with(vec![product("prod_a", &[])])).contains("grants nothing"));
        let twice = with(vec![
            product("prod_a", &["a.pdf"]),
            product("prod_a", &["b.pdf"]),
        ]);
        assert!(err(&twice).starts_with("delivery.products[2]: prod_a is listed twice"));
        let dup = with(vec![product("prod_a", &["a.pdf", "a.pdf"])]);
        assert!(err(&dup).contains("listed twice"));
        let price = DeliveryProduct {
            stripe_price: Some("price_1".into()),
            license_keys: Some("keys.txt".into()),
            ..Default::default()
        };
        assert!(with(vec![price]).validate().is_ok());
    }

    #[test]
    fn limits_are_checked() {
        let mut c = with(vec![product("prod_a", &["a.pdf"])]);
        c.max_downloads = 0;
        assert!(err(&c).starts_with("delivery.max_downloads"));
        c.max_downloads = 5;
        c.link_ttl_hours = MAX_LINK_TTL_HOURS + 1;
        assert!(err(&c).starts_with("delivery.link_ttl_hours"));
        c.link_ttl_hours = 1;
        c.products[0].message = Some(" ".into());
        assert!(err(&c).starts_with("delivery.products[1].message"));
    }
}
