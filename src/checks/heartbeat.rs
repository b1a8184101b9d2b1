//! Heartbeat (push) checks: no agent runs them; a job signals each run to a collector's
//! heartbeat listener with its check's token, and the writers call the check DOWN by
//! time ([`crate::pb::HeartbeatCheck`]). Each signal is stored as a `site_checks` row
//! whose `method` says which signal it was ([`Signal`]).

use std::time::SystemTime;

use base64::Engine as _;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::cron::{self, Cron};
use super::error::DefinitionError;
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
    Schedule::of(heartbeat)?;
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

/// When a heartbeat's job is expected: every so many seconds, or at the times a cron
/// expression names in a time zone.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Seconds between two runs.
    Every(u32),
    /// The times `cron` names, read in `zone`.
    Cron {
        /// The expression as written.
        expression: String,
        /// It parsed.
        cron: Cron,
        /// The zone's name as written (`UTC` when none was).
        zone_name: String,
        /// The zone.
        zone: TimeZone,
    },
}

impl Schedule {
    /// The schedule of a heartbeat: its period, or its cron expression and time zone;
    /// the error names the field.
    pub fn of(heartbeat: &HeartbeatCheck) -> Result<Schedule, DefinitionError> {
        let expression = heartbeat.cron.trim();
        let zone_name = heartbeat.time_zone.trim();
        if expression.is_empty() {
            if !zone_name.is_empty() {
                return Err(DefinitionError::new(
                    "check.heartbeat.time_zone",
                    "applies to a `cron` schedule only: set `cron`, or remove the time zone",
                ));
            }
            if !(MIN_PERIOD_SECONDS..=MAX_PERIOD_SECONDS).contains(&heartbeat.period_seconds) {
                return Err(DefinitionError::new(
                    "check.heartbeat.period_seconds",
                    format!(
                        "is {}: use {MIN_PERIOD_SECONDS} to {MAX_PERIOD_SECONDS} seconds (how often the job runs), or set `cron` (when it runs)",
                        heartbeat.period_seconds
                    ),
                ));
            }
            return Ok(Schedule::Every(heartbeat.period_seconds));
        }
        if heartbeat.period_seconds != 0 {
            return Err(DefinitionError::new(
                "check.heartbeat.cron",
                "and period_seconds are both set: keep one (a period, or the times the job runs)",
            ));
        }
        let cron = Cron::parse(expression)
            .map_err(|message| DefinitionError::new("check.heartbeat.cron", message))?;
        let zone_name = if zone_name.is_empty() {
            "UTC"
        } else {
            zone_name
        };
        let zone = cron::zone(zone_name)
            .map_err(|message| DefinitionError::new("check.heartbeat.time_zone", message))?;
        Ok(Schedule::Cron {
            expression: expression.to_owned(),
            cron,
            zone_name: zone_name.to_owned(),
            zone,
        })
    }

    /// When the next success is due (before the grace) after one at `success`.
    pub fn due_after(&self, success: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(period) => success
                .checked_add(SignedDuration::from_secs(i64::from(*period)))
                .ok(),
            Schedule::Cron { cron, zone, .. } => cron.next_after(success, zone),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(period) => write!(f, "every {period} s"),
            Schedule::Cron {
                expression,
                zone_name,
                ..
            } => write!(f, "at `{expression}` ({zone_name})"),
        }
    }
}

/// The latest signals of a heartbeat, as stored.
#[derive(Debug, Clone)]
pub struct Latest {
    /// The latest signal's method ([`Signal::method`]).
    pub method: String,
    /// Whether it reported a passing run.
    pub ok: bool,
    /// Its message (a failure's).
    pub message: String,
    /// When it arrived.
    pub at: SystemTime,
    /// When the latest success arrived, if one ever did.
    pub success: Option<SystemTime>,
}

/// Why the heartbeat `id` is DOWN at `now`, or `None` while it is not: its latest signal
/// is a failure; or it is a start and the run has not finished within the grace; or
/// the next success was due (by the schedule, after the latest one) more than the
/// grace ago. A heartbeat that never succeeded and is not running is new, not DOWN.
pub fn missed(
    id: &str,
    schedule: &Schedule,
    grace_seconds: u32,
    latest: &Latest,
    now: SystemTime,
) -> Option<String> {
    let now = Timestamp::try_from(now).ok()?;
    let at = Timestamp::try_from(latest.at).ok()?;
    let ago = |at: Timestamp| (now - at).get_seconds().max(0);
    let grace = SignedDuration::from_secs(i64::from(grace_seconds));
    if !latest.ok {
        return Some(format!(
            "heartbeat {id}: the job reported a failure {} s ago: {}",
            ago(at),
            latest.message
        ));
    }
    if latest.method == Signal::Start.method() {
        return (at + grace < now).then(|| {
            format!(
                "heartbeat {id}: a run started {} s ago and has not finished (grace {grace_seconds} s)",
                ago(at)
            )
        });
    }
    let success = Timestamp::try_from(latest.success?).ok()?;
    let due = schedule.due_after(success)?;
    if due + grace >= now {
        return None;
    }
    Some(match schedule {
        Schedule::Every(period) => format!(
            "heartbeat {id}: no success for {} s (period {period} s + grace {grace_seconds} s)",
            ago(success)
        ),
        Schedule::Cron { zone, .. } => format!(
            "heartbeat {id}: no success since {}; a run was due at {} ({schedule}) + grace {grace_seconds} s",
            success
                .to_zoned(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z"),
            due.to_zoned(zone.clone()).strftime("%Y-%m-%d %H:%M %Z"),
        ),
    })
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

    fn beat(period_seconds: u32, cron: &str, time_zone: &str) -> HeartbeatCheck {
        HeartbeatCheck {
            period_seconds,
            cron: cron.to_owned(),
            time_zone: time_zone.to_owned(),
            ..Default::default()
        }
    }

    fn at(text: &str) -> SystemTime {
        text.parse::<Timestamp>().unwrap().into()
    }

    fn latest(method: &str, ok: bool, at_: &str, success: Option<&str>) -> Latest {
        Latest {
            method: method.to_owned(),
            ok,
            message: "disk full".to_owned(),
            at: at(at_),
            success: success.map(at),
        }
    }

    #[test]
    fn a_schedule_is_a_period_or_a_cron_expression_in_a_zone_and_errors_name_the_field() {
        let error = |beat: HeartbeatCheck| Schedule::of(&beat).unwrap_err().to_string();
        assert_eq!(
            Schedule::of(&beat(60, "", "")).unwrap().to_string(),
            "every 60 s"
        );
        assert_eq!(
            Schedule::of(&beat(0, "30 2 * * *", "Europe/Berlin"))
                .unwrap()
                .to_string(),
            "at `30 2 * * *` (Europe/Berlin)"
        );
        assert_eq!(
            Schedule::of(&beat(0, "@daily", "")).unwrap().to_string(),
            "at `@daily` (UTC)"
        );
        assert_eq!(
            error(beat(0, "", "")),
            "`check.heartbeat.period_seconds` is 0: use 10 to 31622400 seconds (how often the job runs), or set `cron` (when it runs)"
        );
        assert_eq!(
            error(beat(60, "@daily", "")),
            "`check.heartbeat.cron` and period_seconds are both set: keep one (a period, or the times the job runs)"
        );
        assert_eq!(
            error(beat(0, "30 26 * * *", "")),
            "`check.heartbeat.cron` is `30 26 * * *`: the hour `26` is not a number from 0 to 23"
        );
        assert_eq!(
            error(beat(0, "@daily", "Europe/Atlantis")),
            "`check.heartbeat.time_zone` is `Europe/Atlantis`, not a time zone: use an IANA name such as Europe/Berlin, America/New_York or UTC"
        );
        assert_eq!(
            error(beat(60, "", "UTC")),
            "`check.heartbeat.time_zone` applies to a `cron` schedule only: set `cron`, or remove the time zone"
        );
    }

    #[test]
    fn a_cron_heartbeat_is_down_once_the_run_after_its_last_success_is_later_than_the_grace() {
        let nightly = Schedule::of(&beat(0, "30 2 * * *", "Europe/Berlin")).unwrap();
        // Succeeded at 02:31 Berlin on the 5th: the next run is due 02:30 on the 6th.
        let ran = latest(
            "PING",
            true,
            "2026-12-05T01:31:00Z",
            Some("2026-12-05T01:31:00Z"),
        );
        assert_eq!(
            missed("nightly", &nightly, 3600, &ran, at("2026-12-06T02:30:00Z")),
            None,
            "within the hour of grace"
        );
        assert_eq!(
            missed("nightly", &nightly, 3600, &ran, at("2026-12-06T02:31:00Z")).unwrap(),
            "heartbeat nightly: no success since 2026-12-05 02:31:00 CET; a run was due at 2026-12-06 02:30 CET (at `30 2 * * *` (Europe/Berlin)) + grace 3600 s"
        );
        // A period counts from the success itself.
        let hourly = Schedule::Every(3600);
        assert_eq!(
            missed("h", &hourly, 60, &ran, at("2026-12-05T02:32:00Z")),
            None
        );
        assert_eq!(
            missed("h", &hourly, 60, &ran, at("2026-12-05T02:32:01Z")).unwrap(),
            "heartbeat h: no success for 3661 s (period 3600 s + grace 60 s)"
        );
    }

    #[test]
    fn a_failure_is_down_at_once_a_start_after_the_grace_and_a_new_heartbeat_never() {
        let every = Schedule::Every(60);
        let now = at("2026-12-06T12:00:00Z");
        let failed = latest(
            "FAIL",
            false,
            "2026-12-06T11:59:50Z",
            Some("2026-12-06T11:59:00Z"),
        );
        assert_eq!(
            missed("b", &every, 30, &failed, now).unwrap(),
            "heartbeat b: the job reported a failure 10 s ago: disk full"
        );
        let started = latest("START", true, "2026-12-06T11:59:00Z", None);
        assert_eq!(missed("b", &every, 60, &started, now), None);
        assert_eq!(
            missed("b", &every, 59, &started, now).unwrap(),
            "heartbeat b: a run started 60 s ago and has not finished (grace 59 s)"
        );
        // Pinged only by a start that is still within its grace: not DOWN, whatever
        // the period says.
        assert_eq!(
            missed("b", &every, 3600, &started, at("2026-12-06T12:30:00Z")),
            None
        );
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
            ..Default::default()
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
