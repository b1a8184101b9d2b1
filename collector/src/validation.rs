//! Per-sample validation: what the collector refuses to publish, and why.
//!
//! A sample is checked alone; an invalid one becomes a [`Rejection`] reported in the
//! ack with its `seq`, and its valid neighbours go through. Validation also stamps the
//! verified `agent_id` over whatever the payload claimed.

use std::time::{Duration, SystemTime};

use fleetmon::pb::{self, HostSample, SiteCheck, sample::Kind};
use fleetmon::samples::{
    Reason, Sample, Violation, check_failure_kind, check_identity, check_text,
};

use crate::config::Limits;

/// Earliest accepted sample time (2000-01-01T00:00:00Z): anything older is a broken clock.
const EARLIEST_UNIX_SECONDS: i64 = 946_684_800;

/// A sample that passed validation, with its agent id set from the certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidSample {
    /// A host sample.
    Host(HostSample),
    /// A site check.
    Site(SiteCheck),
}

impl ValidSample {
    /// The stream the sample belongs to.
    pub fn stream_id(&self) -> &str {
        match self {
            ValidSample::Host(s) => s.stream_id(),
            ValidSample::Site(s) => s.stream_id(),
        }
    }

    /// The sample's sequence number within its stream.
    pub fn seq(&self) -> u64 {
        match self {
            ValidSample::Host(s) => s.seq(),
            ValidSample::Site(s) => s.seq(),
        }
    }

    /// When the sample was taken.
    pub fn timestamp(&self) -> Option<SystemTime> {
        let (_, ts) = match self {
            ValidSample::Host(s) => s.taken_at(),
            ValidSample::Site(s) => s.taken_at(),
        };
        SystemTime::try_from(ts?).ok()
    }
}

/// Why one sample was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The stream the sample claimed.
    pub stream_id: String,
    /// The sample's `seq` (0 if it had none).
    pub seq: u64,
    /// The rule it broke (a metrics label).
    pub reason: Reason,
    /// Human-readable detail naming the field.
    pub message: String,
}

impl From<Rejection> for pb::Rejection {
    fn from(r: Rejection) -> Self {
        pb::Rejection {
            stream_id: r.stream_id,
            seq: r.seq,
            reason: r.reason.as_str().to_owned(),
            message: r.message,
        }
    }
}

struct Check<'a> {
    limits: &'a Limits,
    now: SystemTime,
    stream_id: &'a str,
    seq: u64,
}

impl Check<'_> {
    fn new<'a>(sample: &'a impl Sample, limits: &'a Limits, now: SystemTime) -> Check<'a> {
        Check {
            limits,
            now,
            stream_id: sample.stream_id(),
            seq: sample.seq(),
        }
    }

    fn reject(&self, reason: Reason, message: impl Into<String>) -> Rejection {
        Rejection {
            stream_id: self.stream_id.to_owned(),
            seq: self.seq,
            reason,
            message: message.into(),
        }
    }

    /// A shared rule's violation as this sample's rejection.
    fn broke(&self, violation: Violation) -> Rejection {
        self.reject(violation.reason, violation.message)
    }

    /// Stream, sequence number and sample time.
    fn identity(&self, sample: &impl Sample) -> Result<(), Rejection> {
        check_identity(sample).map_err(|v| self.broke(v))?;
        let (field, ts) = sample.taken_at();
        self.timestamp(field, ts.as_ref())
    }

    /// Every text field: no NUL, at most `max_string_bytes`.
    fn text(&self, sample: &impl Sample) -> Result<(), Rejection> {
        check_text(sample, Some(self.limits.max_string_bytes)).map_err(|v| self.broke(v))
    }

    fn timestamp(&self, field: &str, ts: Option<&prost_types::Timestamp>) -> Result<(), Rejection> {
        let ts =
            ts.ok_or_else(|| self.reject(Reason::MissingTimestamp, format!("{field} is missing")))?;
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return Err(self.reject(
                Reason::InvalidTimestamp,
                format!("{field}.nanos is out of range"),
            ));
        }
        if ts.seconds < EARLIEST_UNIX_SECONDS {
            return Err(self.reject(
                Reason::TimestampTooOld,
                format!("{field} is before 2000-01-01 (check the agent's clock)"),
            ));
        }
        let latest = self.now + Duration::from_secs(self.limits.max_future_seconds);
        let at = SystemTime::try_from(*ts).map_err(|_| {
            self.reject(Reason::InvalidTimestamp, format!("{field} is out of range"))
        })?;
        if at > latest {
            return Err(self.reject(
                Reason::TimestampInFuture,
                format!(
                    "{field} is more than {} s in the future (check the agent's clock)",
                    self.limits.max_future_seconds
                ),
            ));
        }
        Ok(())
    }

    fn list(&self, field: &str, len: usize) -> Result<(), Rejection> {
        if len > self.limits.max_list_len {
            return Err(self.reject(
                Reason::ListTooLong,
                format!("{field} has more than {} entries", self.limits.max_list_len),
            ));
        }
        Ok(())
    }

    fn number(&self, field: &str, value: f64, max: f64) -> Result<(), Rejection> {
        if !value.is_finite() || value < 0.0 || value > max {
            return Err(self.reject(
                Reason::InvalidNumber,
                format!("{field} is {value}, expected a finite number from 0 to {max}"),
            ));
        }
        Ok(())
    }
}

/// Validates one sample and stamps `agent_id`; `now` is injected for tests.
pub fn validate(
    sample: pb::Sample,
    agent_id: &str,
    limits: &Limits,
    now: SystemTime,
) -> Result<ValidSample, Rejection> {
    // The certificate's name replaces whatever the payload claimed, before any rule
    // reads the sample.
    match sample.kind {
        None => Err(Rejection {
            stream_id: String::new(),
            seq: 0,
            reason: Reason::MissingKind,
            message: "sample holds neither a host sample nor a site check".to_owned(),
        }),
        Some(Kind::Host(mut host)) => {
            host.agent_id = agent_id.to_owned();
            validate_host(&host, limits, now)?;
            Ok(ValidSample::Host(host))
        }
        Some(Kind::Site(mut site)) => {
            site.agent_id = agent_id.to_owned();
            validate_site(&site, limits, now)?;
            Ok(ValidSample::Site(site))
        }
    }
}

fn validate_host(s: &HostSample, limits: &Limits, now: SystemTime) -> Result<(), Rejection> {
    let c = Check::new(s, limits, now);
    c.identity(s)?;
    c.text(s)?;
    c.list("cpu_core_usage_percent", s.cpu_core_usage_percent.len())?;
    c.list("disks", s.disks.len())?;
    c.list("interfaces", s.interfaces.len())?;
    c.number("cpu_usage_percent", s.cpu_usage_percent, 100.0)?;
    for core in &s.cpu_core_usage_percent {
        c.number("cpu_core_usage_percent", *core, 100.0)?;
    }
    for (field, value) in [
        ("load_average_1m", s.load_average_1m),
        ("load_average_5m", s.load_average_5m),
        ("load_average_15m", s.load_average_15m),
        ("network_rx_bytes_per_second", s.network_rx_bytes_per_second),
        ("network_tx_bytes_per_second", s.network_tx_bytes_per_second),
    ] {
        c.number(field, value, f64::MAX)?;
    }
    for iface in &s.interfaces {
        c.number(
            "interfaces.rx_bytes_per_second",
            iface.rx_bytes_per_second,
            f64::MAX,
        )?;
        c.number(
            "interfaces.tx_bytes_per_second",
            iface.tx_bytes_per_second,
            f64::MAX,
        )?;
    }
    Ok(())
}

fn validate_site(s: &SiteCheck, limits: &Limits, now: SystemTime) -> Result<(), Rejection> {
    let c = Check::new(s, limits, now);
    c.identity(s)?;
    if s.url.is_empty() {
        return Err(c.reject(Reason::MissingUrl, "url is empty"));
    }
    if s.method.is_empty() {
        return Err(c.reject(Reason::MissingMethod, "method is empty"));
    }
    c.text(s)?;
    if let Some(code) = s.status_code
        && !(100..=999).contains(&code)
    {
        return Err(c.reject(
            Reason::InvalidStatusCode,
            format!("status_code {code} is not an HTTP status (100-999)"),
        ));
    }
    check_failure_kind(s.failure).map_err(|v| c.broke(v))?;
    c.number("response_time_ms", s.response_time_ms, f64::MAX)?;
    if let Some(ttfb) = s.time_to_first_byte_ms {
        c.number("time_to_first_byte_ms", ttfb, f64::MAX)?;
    }
    if let Some(ts) = &s.tls_cert_not_after
        && !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(c.reject(
            Reason::InvalidTimestamp,
            "tls_cert_not_after.nanos is out of range",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn host(seq: u64) -> HostSample {
        HostSample {
            agent_id: "evil".into(),
            stream_id: "s1".into(),
            seq,
            sampled_at: ts(1_800_000_000),
            cpu_usage_percent: 12.5,
            ..Default::default()
        }
    }

    fn check(sample: HostSample) -> Result<ValidSample, Rejection> {
        validate(
            pb::Sample {
                kind: Some(Kind::Host(sample)),
            },
            "a1",
            &Limits::default(),
            now(),
        )
    }

    #[test]
    fn agent_id_comes_from_the_certificate() {
        let ValidSample::Host(valid) = check(host(1)).unwrap() else {
            panic!("host sample expected");
        };
        assert_eq!(valid.agent_id, "a1");
    }

    #[test]
    fn each_rule_names_the_field() {
        let cases: Vec<(HostSample, &str, &str)> = vec![
            (
                HostSample {
                    stream_id: String::new(),
                    ..host(1)
                },
                "missing_stream_id",
                "stream_id is empty",
            ),
            (
                host(0),
                "missing_seq",
                "seq is 0 (sequence numbers start at 1)",
            ),
            (
                HostSample {
                    sampled_at: None,
                    ..host(1)
                },
                "missing_timestamp",
                "sampled_at is missing",
            ),
            (
                HostSample {
                    sampled_at: ts(1_800_000_301),
                    ..host(1)
                },
                "timestamp_in_future",
                "sampled_at is more than 300 s in the future (check the agent's clock)",
            ),
            (
                HostSample {
                    cpu_usage_percent: f64::NAN,
                    ..host(1)
                },
                "invalid_number",
                "cpu_usage_percent is NaN, expected a finite number from 0 to 100",
            ),
            (
                HostSample {
                    hostname: "h".repeat(5000),
                    ..host(1)
                },
                "string_too_long",
                "hostname is longer than 4096 bytes",
            ),
            (
                HostSample {
                    os_name: "Debian\0".into(),
                    ..host(1)
                },
                "string_has_nul",
                "os_name contains a NUL character, which PostgreSQL text cannot store",
            ),
            (
                HostSample {
                    cpu_core_usage_percent: vec![1.0; 2000],
                    ..host(1)
                },
                "list_too_long",
                "cpu_core_usage_percent has more than 1024 entries",
            ),
        ];
        for (sample, reason, message) in cases {
            let rejection = check(sample).unwrap_err();
            assert_eq!(
                (rejection.reason.as_str(), rejection.message.as_str()),
                (reason, message)
            );
        }
        // Exactly at the limit is fine.
        check(HostSample {
            sampled_at: ts(1_800_000_300),
            ..host(1)
        })
        .unwrap();
    }
}
