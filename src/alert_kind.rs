//! The kinds of alert the writers decide, as stored in `alerts.kind`, and how urgent
//! each is to the channels that page people.

/// A quorum of a check's locations call it DOWN.
pub const CHECK_DOWN: &str = "check_down";
/// One location fails checks that pass elsewhere.
pub const LOCATION_UNREACHABLE: &str = "location_unreachable";
/// No sample from an agent for three of its intervals.
pub const AGENT_SILENT: &str = "agent_silent";
/// A host's disks are nearly full.
pub const DISK_FULL: &str = "disk_full";
/// A host's memory is nearly used up.
pub const MEMORY_FULL: &str = "memory_full";
/// A host's CPU has been busy for minutes.
pub const CPU_BUSY: &str = "cpu_busy";
/// A checked site's certificate expires soon.
pub const TLS_EXPIRING: &str = "tls_expiring";
/// An agent's clock is off from its collector's.
pub const CLOCK_SKEW: &str = "clock_skew";
/// A heartbeat check's job did not ping in time, or reported a failure.
pub const HEARTBEAT_MISSED: &str = "heartbeat_missed";

/// Every kind.
pub const ALL: [&str; 9] = [
    CHECK_DOWN,
    LOCATION_UNREACHABLE,
    AGENT_SILENT,
    DISK_FULL,
    MEMORY_FULL,
    CPU_BUSY,
    TLS_EXPIRING,
    CLOCK_SKEW,
    HEARTBEAT_MISSED,
];

/// How urgent an alert of `kind` is, in the words PagerDuty and Alertmanager routes
/// use: `critical` (a check or a host is down), `error` (it soon will be, or a location
/// is cut off), `warning` (something to fix in working hours).
pub fn severity(kind: &str) -> &'static str {
    match kind {
        CHECK_DOWN | AGENT_SILENT | HEARTBEAT_MISSED => "critical",
        LOCATION_UNREACHABLE | DISK_FULL | MEMORY_FULL => "error",
        _ => "warning",
    }
}
