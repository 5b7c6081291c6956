//! Configuration errors in the merchant's words: where the value came from
//! (the file and line, or the environment variable by its real name), the
//! key, what was wrong, and for a misspelt key the one that was probably
//! meant. figment's own wording ("unknown field: found `x`, expected `one
//! of …` for key "default.stripe.x" in … TOML file") is only the input.

use std::path::Path;

use figment::{
    Source,
    error::{Actual, Kind},
};

use super::load::ENV_PREFIX;

/// Where a value came from.
enum Origin {
    File(String),
    Env,
    Unknown,
}

/// One figment error as a sentence.
pub(super) fn explain(e: &figment::Error) -> String {
    let path: Vec<&str> = e
        .path
        .iter()
        .map(String::as_str)
        .skip_while(|p| *p == "default")
        .collect();
    let origin = match e.metadata.as_ref() {
        Some(m) => match &m.source {
            Some(Source::File(p)) => Origin::File(p.display().to_string()),
            _ if m.name.contains("environment") => Origin::Env,
            _ => Origin::Unknown,
        },
        None => Origin::Unknown,
    };
    let key = path.join(".").to_ascii_lowercase();
    let what = match &e.kind {
        Kind::UnknownField(found, expected) => {
            let parent = &path[..path.len().saturating_sub(1)];
            let full = |k: &str| {
                let mut p: Vec<String> = parent.iter().map(|s| s.to_ascii_lowercase()).collect();
                p.push(k.to_string());
                p.join(".")
            };
            let mut s = format!("unknown key `{}`", full(found));
            match did_you_mean(found, expected) {
                Some(best) => s.push_str(&format!("; did you mean `{}`?", full(best))),
                None if !expected.is_empty() => s.push_str(&format!(
                    " (the keys here are {})",
                    expected
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => {}
            }
            s
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "`{key}` must be {}, not {}",
                words(expected),
                actual_words(actual)
            )
        }
        Kind::MissingField(field) => format!("`{key}.{field}` is required"),
        Kind::UnknownVariant(found, expected) => format!(
            "`{key}` cannot be \"{found}\": it takes {}",
            expected
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Message(m) if key.is_empty() => m.clone(),
        Kind::Message(m) => format!("{key}: {m}"),
        other if key.is_empty() => other.to_string(),
        other => format!("{key}: {other}"),
    };
    match origin {
        Origin::File(file) => match line_of(Path::new(&file), &path) {
            Some(line) => format!("{file}, line {line}: {what}"),
            None => format!("{file}: {what}"),
        },
        Origin::Env if !path.is_empty() => {
            format!("environment variable {}: {what}", env_name(&path))
        }
        _ => what,
    }
}

/// `FULFILLD_JOBS__RETRY_BASE_MS` for `jobs.retry_base_ms`.
pub(super) fn env_name(path: &[&str]) -> String {
    let keys: Vec<String> = path.iter().map(|k| k.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", keys.join("__"))
}

/// The known key closest to `found`, if it is close enough to be a typo.
pub(super) fn did_you_mean<'a>(found: &str, known: &[&'a str]) -> Option<&'a str> {
    let found = found.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&found, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// serde's type names, as a merchant would say them.
fn words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a sequence" => "a list, like [\"a\", \"b\"]".into(),
        "a string" => "a string in quotes".into(),
        other => other.to_string(),
    }
}

fn actual_words(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("\"{s}\""),
        Actual::Bool(b) => b.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        other => other.to_string(),
    }
}

/// The line of `path` (`["stripe", "secret_kye"]`) in a TOML file: the key
/// under its `[section]` header, or written dotted.
fn line_of(file: &Path, path: &[&str]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let mut current = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().trim_matches('"');
        let full = if current.is_empty() {
            lhs.to_string()
        } else {
            format!("{current}.{lhs}")
        };
        if full.eq_ignore_ascii_case(&path.join(".")) {
            return Some(n + 1);
        }
    }
    // A whole unknown section: its header.
    text.lines()
        .position(|l| l.trim().trim_matches(['[', ']']).trim() == path.join("."))
        .map(|n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_its_key_and_nonsense_does_not() {
        let known = [
            "secret_key",
            "secret_key_file",
            "webhook_secrets",
            "api_base",
        ];
        assert_eq!(did_you_mean("secret_kye", &known), Some("secret_key"));
        assert_eq!(did_you_mean("SECRETKEY", &known), Some("secret_key"));
        assert_eq!(
            did_you_mean("webhook_secret", &known),
            Some("webhook_secrets")
        );
        assert_eq!(did_you_mean("colour", &known), None);
        assert_eq!(
            env_name(&["jobs", "retry_base_ms"]),
            "FULFILLD_JOBS__RETRY_BASE_MS"
        );
    }

    #[test]
    fn the_line_of_a_key_under_its_section_or_dotted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "# x\n[server]\nlisten = \"a\"\n\n[stripe]\n  secret_kye = \"x\"\nstripe.other = 1\n",
        )
        .unwrap();
        assert_eq!(line_of(&file, &["stripe", "secret_kye"]), Some(6));
        assert_eq!(line_of(&file, &["server", "listen"]), Some(3));
        assert_eq!(line_of(&file, &["stripe"]), Some(5));
        assert_eq!(line_of(&file, &["nope", "x"]), None);
        assert_eq!(line_of(&file, &[]), None);
    }
}
