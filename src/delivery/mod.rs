//! Digital delivery's catalogue: the `[[delivery.products]]` entries with
//! their files resolved on disk and their key files read, once, at startup
//! (and by `check-config`).
//!
//! Guarantees: every file the catalogue names is a regular, readable file
//! inside `files_dir` after every symlink is resolved, so a download can
//! only ever open one of these paths (never a path built from a request);
//! a key file holds no key twice.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

pub use crate::domain::delivery::Matcher;
use crate::{
    config::{DeliveryConfig, DeliveryProduct},
    domain::delivery::{DeliveryRules, ProductRule},
};

/// A key file larger than this is refused: at 40 bytes a key it holds
/// 400,000 keys, far beyond what a small shop sells, and it is read whole.
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// A longer line is not a license key (real ones are 16 to 64 characters).
pub const MAX_KEY_CHARS: usize = 512;

/// Why the catalogue cannot be built, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CatalogueError {
    pub key: String,
    pub message: String,
}

/// A file a product grants, resolved.
#[derive(Debug, Clone)]
pub struct DeliverableFile {
    /// As configured (relative to `files_dir`): the grant refers to it.
    pub name: String,
    /// Canonical, inside the canonical `files_dir`.
    pub path: PathBuf,
    pub size: u64,
}

/// A product's key file, read.
#[derive(Debug, Clone)]
pub struct KeyFile {
    /// As configured (relative to `files_dir`).
    pub name: String,
    pub path: PathBuf,
    /// In file order, each once.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Product {
    pub matcher: Matcher,
    pub files: Vec<DeliverableFile>,
    pub keys: Option<KeyFile>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Canonical `files_dir` (empty when delivery is off).
    pub root: PathBuf,
    pub products: Vec<Product>,
    /// What the domain's rules need of it.
    pub rules: DeliveryRules,
}

impl Catalogue {
    /// Resolves every file and reads every key file of `config`. With no
    /// products, delivery is off and nothing is read.
    pub fn load(config: &DeliveryConfig) -> Result<Catalogue, CatalogueError> {
        if !config.enabled() {
            return Ok(Catalogue::default());
        }
        let root = std::fs::canonicalize(&config.files_dir).map_err(|e| CatalogueError {
            key: "delivery.files_dir".into(),
            message: format!("{}: {}", config.files_dir.display(), io_words(&e)),
        })?;
        if !root.is_dir() {
            return Err(CatalogueError {
                key: "delivery.files_dir".into(),
                message: format!("{} is not a folder", config.files_dir.display()),
            });
        }
        let products = config
            .products
            .iter()
            .enumerate()
            .map(|(i, p)| product(&root, i, p))
            .collect::<Result<Vec<Product>, _>>()?;
        let rules = DeliveryRules {
            products: products
                .iter()
                .map(|p| ProductRule {
                    matcher: p.matcher.clone(),
                    files: p.files.iter().map(|f| f.name.clone()).collect(),
                    key_pool: p.keys.as_ref().map(|k| k.name.clone()),
                })
                .collect(),
            link_ttl_ms: u64::from(config.link_ttl_hours) * 3_600_000,
            max_downloads: config.max_downloads,
        };
        Ok(Catalogue {
            root,
            products,
            rules,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.products.is_empty()
    }

    /// One line for `check-config` and the startup log.
    pub fn summary(&self) -> String {
        let files: Vec<&DeliverableFile> = self.products.iter().flat_map(|p| &p.files).collect();
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let key_files: Vec<&KeyFile> = self
            .products
            .iter()
            .filter_map(|p| p.keys.as_ref())
            .collect();
        let keys: usize = key_files.iter().map(|k| k.keys.len()).sum();
        format!(
            "{} product{}, {} file{} ({}), {} key file{} with {} key{} in {}",
            self.products.len(),
            plural(self.products.len()),
            files.len(),
            plural(files.len()),
            human_bytes(bytes),
            key_files.len(),
            plural(key_files.len()),
            keys,
            plural(keys),
            self.root.display()
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn human_bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

fn product(root: &Path, i: usize, p: &DeliveryProduct) -> Result<Product, CatalogueError> {
    let what = p.matcher().to_string();
    let fail = |field: String, message: String| CatalogueError {
        key: format!("delivery.products[{}]{field}", i + 1),
        message: format!("({what}) {message}"),
    };
    let matcher = match (&p.stripe_product, &p.stripe_price) {
        (Some(prod), _) => Matcher::Product(prod.clone()),
        (None, Some(price)) => Matcher::Price(price.clone()),
        (None, None) => return Err(fail(String::new(), "matches nothing".into())),
    };
    let mut files = Vec::with_capacity(p.files.len());
    for (j, name) in p.files.iter().enumerate() {
        let (path, size) = resolve(root, name).map_err(|m| {
            fail(
                format!(".files[{}]", j + 1),
                format!("\"{}\" {m}", name.escape_debug()),
            )
        })?;
        files.push(DeliverableFile {
            name: name.clone(),
            path,
            size,
        });
    }
    let keys = match &p.license_keys {
        None => None,
        Some(name) => {
            let field = ".license_keys".to_string();
            let (path, size) = resolve(root, name)
                .map_err(|m| fail(field.clone(), format!("\"{}\" {m}", name.escape_debug())))?;
            if size > MAX_KEY_FILE_BYTES {
                return Err(fail(
                    field,
                    format!(
                        "\"{}\" is larger than {MAX_KEY_FILE_BYTES} bytes",
                        name.escape_debug()
                    ),
                ));
            }
            let keys = read_keys(&path)
                .map_err(|m| fail(field, format!("\"{}\" {m}", name.escape_debug())))?;
            Some(KeyFile {
                name: name.clone(),
                path,
                keys,
            })
        }
    };
    Ok(Product {
        matcher,
        files,
        keys,
        message: p.message.clone(),
    })
}

/// `root/name` with every symlink resolved: a readable regular file inside
/// `root`, and its size.
pub fn resolve(root: &Path, name: &str) -> Result<(PathBuf, u64), String> {
    if let Some(why) = crate::config::unsafe_relative(name) {
        return Err(why.to_string());
    }
    let path = std::fs::canonicalize(root.join(name)).map_err(|e| io_words(&e))?;
    if !path.starts_with(root) {
        return Err("leads outside delivery.files_dir (through a symlink)".into());
    }
    let file = File::open(&path).map_err(|e| io_words(&e))?;
    let meta = file.metadata().map_err(|e| io_words(&e))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    Ok((path, meta.len()))
}

/// The keys of a key file: one per line, surrounding spaces dropped, blank
/// lines and `#` comments skipped; a key twice is an error (it would be
/// issued twice).
pub fn read_keys(path: &Path) -> Result<Vec<String>, String> {
    let mut raw = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut raw))
        .map_err(|e| io_words(&e))?;
    let text = String::from_utf8(raw).map_err(|e| {
        format!(
            "is not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    parse_keys(&text)
}

pub fn parse_keys(text: &str) -> Result<Vec<String>, String> {
    let mut keys: Vec<String> = Vec::new();
    let mut first_line: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        if key.chars().count() > MAX_KEY_CHARS {
            return Err(format!(
                "line {}: longer than {MAX_KEY_CHARS} characters",
                n + 1
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(format!("line {}: holds a control character", n + 1));
        }
        if let Some(first) = first_line.insert(key, n + 1) {
            return Err(format!(
                "line {} repeats the key of line {first}: each key must be unique, or it would be issued twice",
                n + 1
            ));
        }
        keys.push(key.to_string());
    }
    Ok(keys)
}

/// An I/O error as a merchant reads it.
fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "cannot be read (permission denied)".into(),
        _ => format!("cannot be read: {e}"),
    }
}

#[cfg(test)]
mod tests;
