//! The decisions behind alerts, apart from where their inputs come from: when one
//! location calls a check DOWN or UP, when enough locations make the check DOWN, and
//! when a location's own network is the likelier cause.

use std::time::SystemTime;

use fleetmon::pb::CheckDefinition;

/// Failed runs in a row that make a location DOWN when the check does not say.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Passed runs in a row that make a DOWN location UP again when the check does not say.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 2;
/// A location DOWN on at least this many checks, each seen UP elsewhere, and on at
/// least half of the checks it runs, is called unreachable instead of its checks down.
pub const LOCATION_MIN_CHECKS: i64 = 2;

/// A check's alerting settings with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failed runs in a row for DOWN.
    pub failure: u32,
    /// Passed runs in a row for UP.
    pub success: u32,
    /// DOWN locations for the check to be DOWN; `None`: a majority of those reporting.
    pub quorum: Option<u32>,
    /// The check's interval, which says how fresh a stored state must be kept.
    pub interval_seconds: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            failure: DEFAULT_FAILURE_THRESHOLD,
            success: DEFAULT_SUCCESS_THRESHOLD,
            quorum: None,
            interval_seconds: fleetmon::config::DEFAULT_CHECK_INTERVAL_SECONDS,
        }
    }
}

impl Thresholds {
    /// The settings of `definition` (defaults where it says 0 or is unknown).
    pub fn of(definition: Option<&CheckDefinition>) -> Self {
        let alerting = definition.and_then(|d| d.alerting.as_ref());
        let or = |value: u32, default: u32| if value == 0 { default } else { value };
        Thresholds {
            failure: or(
                alerting.map_or(0, |a| a.failure_threshold),
                DEFAULT_FAILURE_THRESHOLD,
            ),
            success: or(
                alerting.map_or(0, |a| a.success_threshold),
                DEFAULT_SUCCESS_THRESHOLD,
            ),
            // A host check's locations are each about their own host: one DOWN is
            // enough, unless the check says otherwise.
            quorum: alerting.map(|a| a.quorum).filter(|q| *q > 0).or_else(|| {
                definition
                    .and_then(|d| d.kind.as_ref())
                    .and_then(fleetmon::checks::host::kind_of)
                    .map(|_| 1)
            }),
            interval_seconds: match definition.map_or(0, |d| d.interval_seconds) {
                0 => fleetmon::config::DEFAULT_CHECK_INTERVAL_SECONDS,
                seconds => seconds,
            },
        }
    }

    /// How stale a stored state's newest-run time may get before it is written again
    /// though nothing else changed: half the reporting window (three intervals), at
    /// least 5 s.
    pub fn refresh(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.interval_seconds) * 1500)
            .max(std::time::Duration::from_secs(5))
    }

    /// The DOWN locations needed when `reporting` locations report the check.
    pub fn quorum_of(&self, reporting: usize) -> usize {
        match self.quorum {
            Some(quorum) => quorum as usize,
            None => reporting / 2 + 1,
        }
    }
}

/// One location's view of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationState {
    /// This location calls the check DOWN.
    pub down: bool,
    /// Failed runs in a row, up to the newest.
    pub consecutive_failures: u32,
    /// Passed runs in a row, up to the newest.
    pub consecutive_successes: u32,
    /// The newest run taken into account.
    pub last_ts: SystemTime,
    /// The failure kind and error message of the newest failed run.
    pub last_failure: Option<String>,
    /// Its error text.
    pub last_error: String,
    /// The certificate expiry the newest https run saw.
    pub tls_cert_not_after: Option<SystemTime>,
    /// When `down` last changed (or the state began).
    pub changed_at: SystemTime,
}

/// One run of a check at one location, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    /// When the agent ran it.
    pub ts: SystemTime,
    /// It passed.
    pub ok: bool,
    /// Its failure kind, when it failed.
    pub failure: Option<String>,
    /// Its error text.
    pub error_message: String,
    /// The certificate expiry seen, for https.
    pub tls_cert_not_after: Option<SystemTime>,
}

impl LocationState {
    /// The state before any run: UP.
    pub fn new(ts: SystemTime) -> Self {
        LocationState {
            down: false,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_ts: SystemTime::UNIX_EPOCH,
            last_failure: None,
            last_error: String::new(),
            tls_cert_not_after: None,
            changed_at: ts,
        }
    }

    /// Takes one run into account; returns true when `down` changed. A run not newer
    /// than the newest one already taken (a late or repeated delivery) changes nothing.
    pub fn apply(&mut self, run: &CheckRun, thresholds: Thresholds) -> bool {
        if run.ts <= self.last_ts {
            return false;
        }
        self.last_ts = run.ts;
        if run.tls_cert_not_after.is_some() {
            self.tls_cert_not_after = run.tls_cert_not_after;
        }
        if run.ok {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            self.last_failure = run.failure.clone();
            self.last_error = run.error_message.clone();
        }
        let flips = if self.down {
            self.consecutive_successes >= thresholds.success
        } else {
            self.consecutive_failures >= thresholds.failure
        };
        if flips {
            self.down = !self.down;
            self.changed_at = run.ts;
        }
        flips
    }
}

/// Whether `after` (what the runs made of `before`, the stored state) must be written.
/// A location that stays UP on passing runs changes only its newest-run time (and a
/// success count that matters only while DOWN): that is written once it is `refresh`
/// older than the newest run, so a steady check costs no write per run.
pub fn needs_storing(
    before: Option<&LocationState>,
    after: &LocationState,
    refresh: std::time::Duration,
) -> bool {
    let Some(before) = before else {
        return true;
    };
    before.down != after.down
        || before.consecutive_failures != after.consecutive_failures
        || (after.down && before.consecutive_successes != after.consecutive_successes)
        || before.last_failure != after.last_failure
        || before.last_error != after.last_error
        || before.tls_cert_not_after != after.tls_cert_not_after
        || after
            .last_ts
            .duration_since(before.last_ts)
            .is_ok_and(|moved| moved >= refresh)
}

/// How a check stands across its locations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Locations whose newest run is recent enough to count.
    pub reporting: usize,
    /// Of those, the DOWN ones.
    pub down: usize,
}

impl Tally {
    /// The check is DOWN: at least the quorum of its locations are.
    pub fn is_down(&self, thresholds: Thresholds) -> bool {
        let quorum = thresholds.quorum_of(self.reporting);
        quorum > 0 && self.down >= quorum
    }
}

/// How one location stands across the checks it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationTally {
    /// Checks it reports recently.
    pub checks: i64,
    /// Of those, the ones it calls DOWN.
    pub down: i64,
    /// Of the DOWN ones, those another location sees UP.
    pub down_but_up_elsewhere: i64,
}

impl LocationTally {
    /// The location, not its targets, is the likelier cause: it is DOWN on at least
    /// [`LOCATION_MIN_CHECKS`] checks and on at least half of its checks, and every
    /// one of them is UP somewhere else.
    pub fn is_unreachable(&self) -> bool {
        self.down >= LOCATION_MIN_CHECKS
            && self.down * 2 >= self.checks
            && self.down_but_up_elsewhere == self.down
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(second: u64, ok: bool) -> CheckRun {
        CheckRun {
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(second),
            ok,
            failure: (!ok).then(|| "CONNECT".to_owned()),
            error_message: if ok { String::new() } else { "refused".into() },
            tls_cert_not_after: None,
        }
    }

    #[test]
    fn a_location_goes_down_after_the_failure_threshold_and_up_after_the_success_threshold() {
        let thresholds = Thresholds::default();
        let mut state = LocationState::new(SystemTime::UNIX_EPOCH);
        assert!(!state.apply(&run(1, false), thresholds));
        assert!(!state.apply(&run(2, false), thresholds));
        assert!(state.apply(&run(3, false), thresholds), "third failure");
        assert!(state.down);
        assert!(
            !state.apply(&run(4, true), thresholds),
            "one success is not enough"
        );
        assert!(!state.apply(&run(5, false), thresholds));
        assert!(!state.apply(&run(6, true), thresholds));
        assert!(
            state.apply(&run(7, true), thresholds),
            "second success in a row"
        );
        assert!(!state.down);
        assert_eq!(state.last_error, "refused");
    }

    #[test]
    fn a_late_or_repeated_run_changes_nothing() {
        let thresholds = Thresholds::default();
        let mut state = LocationState::new(SystemTime::UNIX_EPOCH);
        state.apply(&run(10, false), thresholds);
        let before = state.clone();
        assert!(!state.apply(&run(10, false), thresholds));
        assert!(!state.apply(&run(9, false), thresholds));
        assert_eq!(state, before);
    }

    #[test]
    fn a_steady_up_location_is_written_only_when_its_time_grows_stale() {
        let thresholds = Thresholds::default();
        let refresh = thresholds.refresh();
        assert_eq!(refresh, Duration::from_secs(90));
        let mut state = LocationState::new(SystemTime::UNIX_EPOCH);
        state.apply(&run(60, true), thresholds);
        let stored = state.clone();
        state.apply(&run(120, true), thresholds);
        assert!(!needs_storing(Some(&stored), &state, refresh));
        state.apply(&run(180, true), thresholds);
        assert!(needs_storing(Some(&stored), &state, refresh), "120 s stale");
        let mut failing = stored.clone();
        failing.apply(&run(61, false), thresholds);
        assert!(needs_storing(Some(&stored), &failing, refresh));
        assert!(needs_storing(None, &stored, refresh));
    }

    #[test]
    fn the_default_quorum_is_a_majority_of_the_reporting_locations() {
        let thresholds = Thresholds::default();
        let tally = |reporting, down| Tally { reporting, down };
        assert!(!tally(3, 1).is_down(thresholds));
        assert!(tally(3, 2).is_down(thresholds));
        assert!(tally(1, 1).is_down(thresholds));
        assert!(!tally(4, 2).is_down(thresholds));
        let one = Thresholds {
            quorum: Some(1),
            ..thresholds
        };
        assert!(tally(4, 1).is_down(one));
        assert!(!tally(0, 0).is_down(thresholds));
    }

    #[test]
    fn a_host_check_is_down_when_one_host_is_unless_it_says_otherwise() {
        let mut process = CheckDefinition {
            kind: Some(fleetmon::pb::check_definition::Kind::Process(
                fleetmon::pb::ProcessCheck {
                    name: "nginx".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        assert_eq!(Thresholds::of(Some(&process)).quorum_of(10), 1);
        process.alerting = Some(fleetmon::pb::Alerting {
            quorum: 3,
            ..Default::default()
        });
        assert_eq!(Thresholds::of(Some(&process)).quorum_of(10), 3);
        assert_eq!(Thresholds::of(None).quorum_of(10), 6);
    }

    #[test]
    fn a_location_is_unreachable_when_its_down_checks_are_up_elsewhere() {
        let tally = |checks, down, down_but_up_elsewhere| LocationTally {
            checks,
            down,
            down_but_up_elsewhere,
        };
        assert!(tally(3, 3, 3).is_unreachable());
        assert!(
            !tally(3, 3, 2).is_unreachable(),
            "one target is down everywhere"
        );
        assert!(
            !tally(3, 1, 1).is_unreachable(),
            "one check is not the location"
        );
        assert!(!tally(10, 3, 3).is_unreachable(), "most of its checks pass");
    }
}
