//! Agent labels (`role=db`): what an enrollment token gives an agent, and what
//! assignments, maintenance windows and alert channels select agents by. One rule for
//! what a label may be and one for what selecting by labels means.

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 63;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 255;

/// The first pair that is not a label a selector may name (a key of 1 to
/// [`MAX_KEY_BYTES`] bytes, a value of at most [`MAX_VALUE_BYTES`]), if any.
pub fn out_of_bounds<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Option<(&'a str, &'a str)> {
    labels
        .into_iter()
        .find(|(key, value)| {
            key.is_empty() || key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES
        })
        .map(|(key, value)| (key.as_str(), value.as_str()))
}

/// Whether an agent whose labels `has` looks up carries every pair of `wanted` (no
/// pairs: any agent does).
pub fn includes<'a, 'b>(
    wanted: impl IntoIterator<Item = (&'a String, &'a String)>,
    has: impl Fn(&str) -> Option<&'b String>,
) -> bool {
    wanted
        .into_iter()
        .all(|(key, value)| has(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_selector_is_included_pair_by_pair_and_bounded() {
        let agent = map(&[("role", "db"), ("location", "eu-west")]);
        assert!(includes(&map(&[("role", "db")]), |k| agent.get(k)));
        assert!(includes(&map(&[]), |k| agent.get(k)));
        assert!(!includes(&map(&[("role", "web")]), |k| agent.get(k)));
        assert!(!includes(&map(&[("tier", "db")]), |k| agent.get(k)));
        assert_eq!(out_of_bounds(&agent), None);
        let long = "x".repeat(64);
        assert_eq!(
            out_of_bounds(&map(&[("role", "db"), (&long, "v")])),
            Some((long.as_str(), "v"))
        );
        assert_eq!(out_of_bounds(&map(&[("", "v")])), Some(("", "v")));
    }
}
