//! Digital delivery's rules: which grants a fulfilled session's line items
//! earn (CONTRACT.md "Digital delivery"). Pure: the catalogue is given as
//! [`DeliveryRules`] (built from the configuration by `crate::delivery`),
//! the time as a number.
//!
//! Guarantees (tested below):
//! * a line item matches at most one entry: its price's before its product's;
//! * each matching line item earns each of its entry's files once, and one
//!   license key per unit bought (at most [`MAX_KEYS_PER_ITEM`]);
//! * grant ids are stable and in order (`gr_1`, `gr_2`, …), so planning the
//!   same session twice gives the same grants.

use crate::model::{Grant, Granted, LineItemRecord};

/// License keys one line item earns at most: a quantity beyond it is
/// almost certainly a mistake, and keys are a finite resource.
pub const MAX_KEYS_PER_ITEM: u32 = 100;

/// What one entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Product(String),
    Price(String),
}

impl Matcher {
    pub fn as_str(&self) -> &str {
        match self {
            Matcher::Product(s) | Matcher::Price(s) => s,
        }
    }
}

/// One `[[delivery.products]]` entry, as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRule {
    pub matcher: Matcher,
    /// File names as configured (relative to `files_dir`).
    pub files: Vec<String>,
    /// The key file's name as configured, when the entry issues keys.
    pub key_pool: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryRules {
    pub products: Vec<ProductRule>,
    /// How long a link works after it is issued.
    pub link_ttl_ms: u64,
    /// Downloads per file and order.
    pub max_downloads: u32,
}

impl DeliveryRules {
    pub fn enabled(&self) -> bool {
        !self.products.is_empty()
    }

    /// The entry `item` matches: its price's before its product's.
    pub fn matching(&self, item: &LineItemRecord) -> Option<&ProductRule> {
        let find =
            |want: &dyn Fn(&Matcher) -> bool| self.products.iter().find(|p| want(&p.matcher));
        item.price_id
            .as_deref()
            .and_then(|price| find(&|m| matches!(m, Matcher::Price(p) if p == price)))
            .or_else(|| {
                let product = item.product_id.as_deref()?;
                find(&|m| matches!(m, Matcher::Product(p) if p == product))
            })
    }

    /// The grants `items` earn, issued at `now`: files with their links,
    /// keys still to be taken from their pool (`key: None`).
    pub fn plan(&self, items: &[LineItemRecord], now: u64) -> Vec<Grant> {
        let mut grants = Vec::new();
        for item in items {
            let Some(rule) = self.matching(item) else {
                continue;
            };
            for file in &rule.files {
                grants.push(self.grant(item, rule, Granted::File { name: file.clone() }, now));
            }
            if let Some(pool) = &rule.key_pool {
                let units = item
                    .quantity
                    .unwrap_or(1)
                    .clamp(1, i64::from(MAX_KEYS_PER_ITEM));
                for _ in 0..units {
                    grants.push(self.grant(
                        item,
                        rule,
                        Granted::LicenseKey {
                            pool: pool.clone(),
                            key: None,
                        },
                        now,
                    ));
                }
            }
        }
        for (i, g) in grants.iter_mut().enumerate() {
            g.id = format!("gr_{}", i + 1);
        }
        grants
    }

    /// A grant without its id (`plan` numbers them in order).
    fn grant(&self, item: &LineItemRecord, rule: &ProductRule, what: Granted, now: u64) -> Grant {
        Grant {
            id: String::new(),
            line_item: item.id.clone(),
            product: rule.matcher.as_str().to_string(),
            what,
            downloads: 0,
            max_downloads: self.max_downloads,
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(self.link_ttl_ms),
            revoked_at_ms: None,
            generation: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, price: &str, product: &str, quantity: i64) -> LineItemRecord {
        LineItemRecord {
            id: id.into(),
            description: None,
            quantity: Some(quantity),
            amount_total: 100,
            amount_subtotal: 100,
            currency: Some("eur".into()),
            price_id: Some(price.into()),
            unit_amount: Some(100),
            product_id: Some(product.into()),
        }
    }

    fn rules() -> DeliveryRules {
        DeliveryRules {
            products: vec![
                ProductRule {
                    matcher: Matcher::Product("prod_book".into()),
                    files: vec!["book.pdf".into(), "book.epub".into()],
                    key_pool: None,
                },
                ProductRule {
                    matcher: Matcher::Price("price_app".into()),
                    files: vec![],
                    key_pool: Some("keys/app.txt".into()),
                },
                ProductRule {
                    matcher: Matcher::Product("prod_app".into()),
                    files: vec!["wrong.zip".into()],
                    key_pool: None,
                },
            ],
            link_ttl_ms: 3_600_000,
            max_downloads: 5,
        }
    }

    #[test]
    fn files_once_per_item_and_a_key_per_unit_with_stable_ids() {
        let items = [
            item("li_1", "price_book", "prod_book", 2),
            item("li_2", "price_app", "prod_app", 3),
            item("li_3", "price_mug", "prod_mug", 1),
        ];
        let grants = rules().plan(&items, 1_000);
        let seen: Vec<(&str, &str, String)> = grants
            .iter()
            .map(|g| {
                let what = match &g.what {
                    Granted::File { name } => name.clone(),
                    Granted::LicenseKey { pool, key } => format!("{pool}:{key:?}"),
                };
                (g.id.as_str(), g.line_item.as_str(), what)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("gr_1", "li_1", "book.pdf".to_string()),
                ("gr_2", "li_1", "book.epub".to_string()),
                ("gr_3", "li_2", "keys/app.txt:None".to_string()),
                ("gr_4", "li_2", "keys/app.txt:None".to_string()),
                ("gr_5", "li_2", "keys/app.txt:None".to_string()),
            ],
            "the price entry wins over prod_app's; the mug earns nothing"
        );
        assert!(grants.iter().all(|g| g.expires_at_ms == 3_601_000
            && g.max_downloads == 5
            && g.downloads == 0
            && g.revoked_at_ms.is_none()));
        assert_eq!(
            rules().plan(&items, 1_000),
            grants,
            "planning is repeatable"
        );
    }

    #[test]
    fn quantities_are_bounded_and_nothing_matches_without_rules() {
        let grants = rules().plan(&[item("li_1", "price_app", "prod_app", 1_000_000)], 0);
        assert_eq!(grants.len(), MAX_KEYS_PER_ITEM as usize);
        let grants = rules().plan(&[item("li_1", "price_app", "prod_app", 0)], 0);
        assert_eq!(grants.len(), 1, "a missing or zero quantity is one unit");
        let none = DeliveryRules::default();
        assert!(!none.enabled());
        assert!(
            none.plan(&[item("li_1", "price_app", "prod_app", 1)], 0)
                .is_empty()
        );
    }
}
