//! Heartbeat (push) checks: no agent runs them; a job signals each run to a collector's
//! heartbeat listener with its check's token, and the writers call the check DOWN by
//! time ([`crate::pb::HeartbeatCheck`]). Each signal is stored as a `site_checks` row
//! whose `method` says which signal it was ([`Signal`]).

use base64::Engine as _;

use super::definition::DefinitionError;
use crate::pb::{CheckDefinition, HeartbeatCheck, check_definition};

/// Shortest period.
pub const MIN_PERIOD_SECONDS: u32 = 10;
/// Longest period: a year.
pub const MAX_PERIOD_SECONDS: u32 = 366 * 86_400;
/// Longest grace: a week.
pub const MAX_GRACE_SECONDS: u32 = 7 * 86_400;

/// What a job said about a run; its `method` is stored in the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A run succeeded (`/ping/TOKEN`, or exit code 0).
    Success,
    /// A run began (`/ping/TOKEN/start`): the next success measures its duration.
    Start,
    /// A run failed (`/ping/TOKEN/fail`).
    Fail,
    /// A run ended with this exit code (`/ping/TOKEN/CODE`); 0 is a success.
    Exit(u8),
}

impl Signal {
    /// The `method` of its row.
    pub fn method(self) -> &'static str {
        match self {
            Signal::Success => "PING",
            Signal::Start => "START",
            Signal::Fail => "FAIL",
            Signal::Exit(_) => "EXIT",
        }
    }

    /// Whether the run it reports passed (a start is neither: stored as passed, never
    /// counted as a success).
    pub fn ok(self) -> bool {
        matches!(self, Signal::Success | Signal::Start | Signal::Exit(0))
    }

    /// The signal a path segment after the token names (`None`: no such signal).
    pub fn parse(segment: Option<&str>) -> Option<Signal> {
        match segment {
            None | Some("") => Some(Signal::Success),
            Some("start") => Some(Signal::Start),
            Some("fail") => Some(Signal::Fail),
            Some(code) if code.len() <= 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
                code.parse().ok().map(Signal::Exit)
            }
            Some(_) => None,
        }
    }
}

/// Whether a `site_checks` row with this `method` is a heartbeat signal.
pub fn is_signal(method: &str) -> bool {
    matches!(method, "PING" | "START" | "FAIL" | "EXIT")
}

/// The heartbeat of a definition, if it is one.
pub fn of(definition: &CheckDefinition) -> Option<&HeartbeatCheck> {
    match &definition.kind {
        Some(check_definition::Kind::Heartbeat(heartbeat)) => Some(heartbeat),
        _ => None,
    }
}

/// Checks a heartbeat definition's fields: a period and grace in range, no assertions.
/// Its assignment runs nothing: it names the agents that may ping it over their mutual
/// TLS (`fleetmon-agent ping`).
pub fn validate(
    definition: &CheckDefinition,
    heartbeat: &HeartbeatCheck,
) -> Result<(), DefinitionError> {
    super::validate_id(&definition.id)?;
    if !(MIN_PERIOD_SECONDS..=MAX_PERIOD_SECONDS).contains(&heartbeat.period_seconds) {
        return Err(DefinitionError::new(
            "check.heartbeat.period_seconds",
            format!(
                "is {}: use {MIN_PERIOD_SECONDS} to {MAX_PERIOD_SECONDS} seconds (how often the job runs)",
                heartbeat.period_seconds
            ),
        ));
    }
    if heartbeat.grace_seconds > MAX_GRACE_SECONDS {
        return Err(DefinitionError::new(
            "check.heartbeat.grace_seconds",
            format!(
                "is {}: use at most {MAX_GRACE_SECONDS} seconds (how late a run may be)",
                heartbeat.grace_seconds
            ),
        ));
    }
    if definition.assertions.is_some() {
        return Err(DefinitionError::new(
            "check.assertions",
            "do not apply to a heartbeat: remove them",
        ));
    }
    Ok(())
}

/// A new ping token (32 characters, 192 random bits) and its SHA-256 (hex), the form
/// stored in the definition.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 24] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_sha256(&token);
    (token, hash)
}

/// The SHA-256 (hex) of `token`, as definitions store it.
pub fn token_sha256(token: &str) -> String {
    crate::pki::sha256_hex(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_from_the_path_and_stored_by_method() {
        assert_eq!(Signal::parse(None), Some(Signal::Success));
        assert_eq!(Signal::parse(Some("start")), Some(Signal::Start));
        assert_eq!(Signal::parse(Some("fail")), Some(Signal::Fail));
        assert_eq!(Signal::parse(Some("0")), Some(Signal::Exit(0)));
        assert_eq!(Signal::parse(Some("255")), Some(Signal::Exit(255)));
        assert_eq!(Signal::parse(Some("256")), None);
        assert_eq!(Signal::parse(Some("-1")), None);
        assert_eq!(Signal::parse(Some("log")), None);
        assert!(Signal::Exit(0).ok() && !Signal::Exit(1).ok() && !Signal::Fail.ok());
        for signal in [
            Signal::Success,
            Signal::Start,
            Signal::Fail,
            Signal::Exit(3),
        ] {
            assert!(is_signal(signal.method()));
        }
        assert!(!is_signal("GET"));
    }

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let (a, hash) = new_token();
        let (b, _) = new_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(hash, token_sha256(&a));
        assert_eq!(hash.len(), 64);
    }

    #[test]
    fn a_heartbeat_is_refused_naming_the_field() {
        let definition = |all| CheckDefinition {
            id: "backup".into(),
            assignment: Some(crate::pb::Assignment {
                all,
                ..Default::default()
            }),
            ..Default::default()
        };
        let beat = |period, grace| HeartbeatCheck {
            period_seconds: period,
            grace_seconds: grace,
            token_sha256: String::new(),
        };
        assert!(validate(&definition(false), &beat(60, 0)).is_ok());
        let error = validate(&definition(false), &beat(5, 0)).unwrap_err();
        assert_eq!(error.field, "check.heartbeat.period_seconds");
        let error = validate(&definition(false), &beat(60, 8 * 86_400)).unwrap_err();
        assert_eq!(error.field, "check.heartbeat.grace_seconds");
        // An assignment names the agents that may ping it.
        assert!(validate(&definition(true), &beat(60, 0)).is_ok());
        let mut asserted = definition(false);
        asserted.assertions = Some(Default::default());
        let error = validate(&asserted, &beat(60, 0)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`check.assertions` do not apply to a heartbeat: remove them"
        );
    }
}
