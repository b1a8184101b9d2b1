//! Body patterns of site checks (`regex`, `regex_absent`), compiled once per distinct
//! pattern and shared by every site that uses it.
//!
//! The regex engine is the one behind the `regex` crate, configured for what a check
//! does (find the first match, no capture groups): without the one-pass DFA, which only
//! capture groups use, a pattern with a Unicode class such as `\w` takes about 70 KiB
//! instead of 400 KiB, which matters for an agent checking thousands of sites.

use std::collections::HashMap;
use std::sync::Arc;

use regex_automata::meta;

/// Most memory a pattern's compiled form and its search cache may take each.
const SIZE_LIMIT: usize = 1 << 20;

/// Why a pattern does not compile, in words like the `regex` crate's (the pattern with
/// a caret under the problem) or naming the size limit and how to stay under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

/// A compiled pattern; clones share the compiled form and its search cache.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Arc<str>,
    /// In an `Arc`: cloning a `meta::Regex` itself gives the clone a cache of its own
    /// (about 70 KiB once used), which would be one per site.
    regex: Arc<meta::Regex>,
}

impl Pattern {
    /// Compiles `source`; the error reads like the `regex` crate's (the pattern with a
    /// caret under the problem).
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        let config = meta::Config::new()
            .nfa_size_limit(Some(SIZE_LIMIT))
            .hybrid_cache_capacity(SIZE_LIMIT)
            .onepass(false);
        let regex = meta::Regex::builder()
            .configure(config)
            .build(source)
            .map_err(|e| match (e.syntax_error(), e.size_limit()) {
                (Some(syntax), _) => syntax.to_string(),
                (None, Some(limit)) => format!(
                    "compiled regex exceeds size limit of {limit} bytes: use a simpler \
                     pattern (fewer repetitions of large classes; `(?-u)` makes \\w, \\d \
                     and \\s ASCII only and much smaller)"
                ),
                (None, None) => e.to_string(),
            })
            .map_err(PatternError)?;
        Ok(Pattern {
            source: source.into(),
            regex: Arc::new(regex),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The leftmost-first match in `haystack`, if any.
    pub fn find<'h>(&self, haystack: &'h str) -> Option<&'h str> {
        self.regex.find(haystack).map(|m| &haystack[m.range()])
    }
}

/// Compiles each distinct pattern once.
#[derive(Debug, Default)]
pub struct Patterns {
    compiled: HashMap<String, Pattern>,
}

impl Patterns {
    /// The compiled `source`, shared with earlier calls for the same text.
    pub fn get(&mut self, source: &str) -> Result<Pattern, PatternError> {
        if let Some(pattern) = self.compiled.get(source) {
            return Ok(pattern.clone());
        }
        let pattern = Pattern::new(source)?;
        self.compiled.insert(source.to_owned(), pattern.clone());
        Ok(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_leftmost_first_match_like_the_regex_crate() {
        let pattern = Pattern::new(r"status: (ok|fine)\w*").unwrap();
        assert_eq!(
            pattern.find("x status: fine1 status: ok"),
            Some("status: fine1")
        );
        assert_eq!(pattern.find("status: bad"), None);
        assert_eq!(pattern.as_str(), r"status: (ok|fine)\w*");
        assert_eq!(Pattern::new("é+").unwrap().find("aéé"), Some("éé"));
    }

    #[test]
    fn a_syntax_error_shows_where() {
        assert_eq!(
            Pattern::new("(unclosed").unwrap_err().to_string(),
            "regex parse error:\n    (unclosed\n    ^\nerror: unclosed group"
        );
    }

    #[test]
    fn the_same_pattern_is_compiled_once() {
        let mut patterns = Patterns::default();
        let a = patterns.get(r"\w+").unwrap();
        let b = patterns.get(r"\w+").unwrap();
        assert!(Arc::ptr_eq(&a.regex, &b.regex));
        assert_eq!(patterns.compiled.len(), 1);
        patterns.get(r"\d+").unwrap();
        assert_eq!(patterns.compiled.len(), 2);
    }
}
