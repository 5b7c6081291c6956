//! Errors as one line for a log or a terminal.

use std::error::Error as StdError;

/// `error: source: source…`, skipping a source whose message its parent
/// already contains (many errors print their source themselves).
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut last = out.clone();
    let mut next = err.source();
    while let Some(e) = next {
        let m = e.to_string();
        if !last.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        last = m;
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wraps: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let io = || std::io::Error::other("disk gone");
        assert_eq!(super::chain(&Outer(io())), "outer: disk gone");
        assert_eq!(super::chain(&Repeats(io())), "wraps: disk gone");
    }
}
