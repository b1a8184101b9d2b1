//! The stored and displayed name of each site-check failure kind, in one place for
//! the agent (metrics labels), the writer (the `site_checks.failure` column) and the
//! CLI.

use crate::pb::CheckFailure;

/// Every failure kind and its name.
pub const NAMES: [(CheckFailure, &str); 13] = [
    (CheckFailure::StatusMismatch, "status_mismatch"),
    (CheckFailure::RegexMismatch, "regex_mismatch"),
    (CheckFailure::RegexPresent, "regex_present"),
    (CheckFailure::Timeout, "timeout"),
    (CheckFailure::Dns, "dns"),
    (CheckFailure::Connect, "connect"),
    (CheckFailure::Tls, "tls"),
    (CheckFailure::BodyTooLarge, "body_too_large"),
    (CheckFailure::Other, "other"),
    (CheckFailure::Slow, "slow"),
    (CheckFailure::TlsExpiring, "tls_expiring"),
    (CheckFailure::AnswerMismatch, "answer_mismatch"),
    (CheckFailure::JsonMismatch, "json_mismatch"),
];

/// The name of a failure kind; `None` for a check that passed (`Unspecified`).
pub fn name(failure: CheckFailure) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(kind, _)| *kind == failure)
        .map(|(_, name)| *name)
}

/// The name of a wire value (`SiteCheck.failure`); unknown values are `other`.
pub fn name_of(value: i32) -> Option<&'static str> {
    name(CheckFailure::try_from(value).unwrap_or(CheckFailure::Other))
}

/// The failure kind a name stands for (`None` = passed); unknown names are `Other`.
pub fn from_name(stored: Option<&str>) -> CheckFailure {
    match stored {
        None => CheckFailure::Unspecified,
        Some(stored) => NAMES
            .iter()
            .find(|(_, name)| *name == stored)
            .map_or(CheckFailure::Other, |(kind, _)| *kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (kind, text) in NAMES {
            assert_eq!(name(kind), Some(text));
            assert_eq!(from_name(Some(text)), kind);
        }
        assert_eq!(name(CheckFailure::Unspecified), None);
        assert_eq!(from_name(None), CheckFailure::Unspecified);
        assert_eq!(name_of(999), Some("other"));
    }
}
