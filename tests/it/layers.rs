//! The module graph stays one-way: the rules know nothing of storage, HTTP,
//! Stripe or the runtime; storage knows nothing of what uses it. Checked by
//! reading each layer's source for paths into the layers above it.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every `needle` found in the layer's code (comments aside), as `file: line`.
fn uses(layer: &str, needles: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = if layer.ends_with(".rs") {
        vec![root.join(layer)]
    } else {
        sources(&root.join(layer))
    };
    assert!(!files.is_empty(), "{layer} has no sources");
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            if let Some(n) = needles.iter().find(|n| code.contains(*n)) {
                found.push(format!("{}: {n} in `{}`", file.display(), line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_rules_use_nothing_above_them() {
    let above = [
        "crate::store",
        "crate::http",
        "crate::stripe",
        "crate::fulfill",
        "crate::worker",
        "crate::app",
        "crate::views",
        "crate::notify",
        "crate::config",
        "crate::delivery",
        "tokio",
        "redb",
        "poem",
        "reqwest",
        "std::time::SystemTime",
        "now_ms()",
        "getrandom",
    ];
    assert_eq!(uses("domain", &above), Vec::<String>::new());
    assert_eq!(uses("model.rs", &above[..12]), Vec::<String>::new());
}

#[test]
fn storage_and_fulfillment_use_nothing_above_them() {
    let above_store = [
        "crate::fulfill",
        "crate::http",
        "crate::worker",
        "crate::app",
        "crate::views",
        "crate::notify",
        "crate::stripe",
        "poem",
    ];
    assert_eq!(uses("store", &above_store), Vec::<String>::new());
    let above_fulfill = [
        "crate::http",
        "crate::worker",
        "crate::app",
        "crate::views",
        "crate::notify",
        "poem",
        "redb",
    ];
    assert_eq!(uses("fulfill", &above_fulfill), Vec::<String>::new());
}
