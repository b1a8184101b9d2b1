//! Per-sample validation: what the collector refuses to publish, and why.
//!
//! A sample is checked alone; an invalid one becomes a [`Rejection`] reported in the
//! ack with its `seq`, and its valid neighbours go through. Validation also stamps the
//! verified `agent_id` over whatever the payload claimed.

use std::time::SystemTime;

use fleetmon::pb::{self, HostSample, SiteCheck, sample::Kind};
use fleetmon::samples::{
    Reason, Sample, SampleKind, Violation, bounds, check_failure_kind, check_identity, check_text,
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
    /// Its kind.
    pub fn kind(&self) -> SampleKind {
        match self {
            ValidSample::Host(_) => SampleKind::Host,
            ValidSample::Site(_) => SampleKind::Site,
        }
    }

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

    /// The key of its Kafka record ([`Sample::partition_key`]).
    pub fn partition_key(&self) -> &str {
        match self {
            ValidSample::Host(s) => s.partition_key(),
            ValidSample::Site(s) => s.partition_key(),
        }
    }

    /// Appends its protobuf encoding, the value of its Kafka record, to `buf`, which
    /// grows at most once (field by field, a fresh buffer would grow six times).
    pub fn encode(&self, buf: &mut Vec<u8>) {
        fn append(message: &impl prost::Message, buf: &mut Vec<u8>) {
            buf.reserve(message.encoded_len());
            message.encode_raw(buf);
        }
        match self {
            ValidSample::Host(s) => append(s, buf),
            ValidSample::Site(s) => append(s, buf),
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

    /// A sample time: set, within what PostgreSQL and the writer's retention hold
    /// (`limits.max_sample_age_seconds`) and not ahead of this collector's clock by more
    /// than `limits.max_clock_skew_seconds`; the refusal names the agent's offset.
    fn timestamp(&self, field: &str, ts: Option<&prost_types::Timestamp>) -> Result<(), Rejection> {
        let ts =
            ts.ok_or_else(|| self.reject(Reason::MissingTimestamp, format!("{field} is missing")))?;
        let at = self.instant(field, ts)?;
        let now = unix_seconds(self.now);
        let skew = self.limits.max_clock_skew_seconds;
        let ahead = at.saturating_sub(now);
        if ahead > skew as i64 {
            return Err(self.reject(
                Reason::TimestampInFuture,
                format!(
                    "{field} is {ahead} s ahead of the collector's clock; at most {skew} s is allowed (limits.max_clock_skew_seconds): fix the agent's clock"
                ),
            ));
        }
        let max_age = self.limits.max_sample_age_seconds;
        let age = now.saturating_sub(at);
        if at < EARLIEST_UNIX_SECONDS || age > max_age as i64 {
            return Err(self.reject(
                Reason::TimestampTooOld,
                format!(
                    "{field} is {age} s old; at most {max_age} s is kept (limits.max_sample_age_seconds): fix the agent's clock if the sample is new"
                ),
            ));
        }
        Ok(())
    }

    /// A timestamp's valid nanos and its unix seconds.
    fn instant(&self, field: &str, ts: &prost_types::Timestamp) -> Result<i64, Rejection> {
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return Err(self.reject(
                Reason::InvalidTimestamp,
                format!("{field}.nanos is {}, expected 0 to 999999999", ts.nanos),
            ));
        }
        Ok(ts.seconds)
    }

    /// `interval_seconds`: within [`bounds::INTERVAL_SECONDS`], or 0 (unknown).
    fn interval(&self, seconds: u32) -> Result<(), Rejection> {
        let (shortest, longest) = bounds::INTERVAL_SECONDS;
        if seconds != 0 && !(shortest..=longest).contains(&seconds) {
            return Err(self.reject(
                Reason::InvalidNumber,
                format!(
                    "interval_seconds is {seconds}, expected {shortest} to {longest} (or 0: unknown)"
                ),
            ));
        }
        Ok(())
    }

    /// A time within [`bounds::CERT_EXPIRY_SECONDS`] (a century) of now: a certificate's
    /// expiry, a process's start.
    fn within_a_century(&self, field: &str, ts: &prost_types::Timestamp) -> Result<(), Rejection> {
        let at = self.instant(field, ts)?;
        let now = unix_seconds(self.now);
        let span = bounds::CERT_EXPIRY_SECONDS;
        if at < now - span || at > now + span {
            return Err(self.reject(
                Reason::InvalidTimestamp,
                format!(
                    "{field} is {at} (unix seconds), expected within 100 years of now ({} to {})",
                    now - span,
                    now + span
                ),
            ));
        }
        Ok(())
    }

    /// The busiest processes: each pid once, figures in bounds, each ranked in at
    /// least one of the two lists and within the list's length.
    fn processes(&self, processes: &[pb::ProcessUsage]) -> Result<(), Rejection> {
        let mut pids = std::collections::HashSet::with_capacity(processes.len());
        let longest = processes.len() as u32;
        for p in processes {
            if !pids.insert(p.pid) {
                return Err(self.reject(
                    Reason::InvalidProcess,
                    format!(
                        "processes lists pid {} twice; list each process once",
                        p.pid
                    ),
                ));
            }
            if (p.cpu_rank == 0 && p.memory_rank == 0)
                || p.cpu_rank > longest
                || p.memory_rank > longest
            {
                return Err(self.reject(
                    Reason::InvalidProcess,
                    format!(
                        "processes: pid {} has cpu_rank {} and memory_rank {}, expected at least one from 1 to {longest} (the list's length)",
                        p.pid, p.cpu_rank, p.memory_rank
                    ),
                ));
            }
            self.number(
                "processes.cpu_usage_percent",
                p.cpu_usage_percent,
                bounds::PROCESS_CPU_PERCENT,
            )?;
            if let Some(started) = &p.started_at {
                self.within_a_century("processes.started_at", started)?;
            }
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

    /// A float within `(lowest, highest)`; NaN and infinity are refused.
    fn number(
        &self,
        field: &str,
        value: f64,
        (lowest, highest): (f64, f64),
    ) -> Result<(), Rejection> {
        if !value.is_finite() || value < lowest || value > highest {
            return Err(self.reject(
                Reason::InvalidNumber,
                format!("{field} is {value}, expected a finite number from {lowest} to {highest}"),
            ));
        }
        Ok(())
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
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
    // reads the sample (into the claimed name's buffer: an honest agent's fits).
    match sample.kind {
        None => Err(Rejection {
            stream_id: String::new(),
            seq: 0,
            reason: Reason::MissingKind,
            message: "sample holds neither a host sample nor a site check".to_owned(),
        }),
        Some(Kind::Host(mut host)) => {
            agent_id.clone_into(&mut host.agent_id);
            validate_host(&host, limits, now)?;
            Ok(ValidSample::Host(host))
        }
        Some(Kind::Site(mut site)) => {
            agent_id.clone_into(&mut site.agent_id);
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
    c.list("processes", s.processes.len())?;
    c.number("cpu_usage_percent", s.cpu_usage_percent, bounds::PERCENT)?;
    for core in &s.cpu_core_usage_percent {
        c.number("cpu_core_usage_percent", *core, bounds::PERCENT)?;
    }
    for (field, value, range) in [
        ("load_average_1m", s.load_average_1m, bounds::LOAD_AVERAGE),
        ("load_average_5m", s.load_average_5m, bounds::LOAD_AVERAGE),
        ("load_average_15m", s.load_average_15m, bounds::LOAD_AVERAGE),
        (
            "network_rx_bytes_per_second",
            s.network_rx_bytes_per_second,
            bounds::BYTES_PER_SECOND,
        ),
        (
            "network_tx_bytes_per_second",
            s.network_tx_bytes_per_second,
            bounds::BYTES_PER_SECOND,
        ),
    ] {
        c.number(field, value, range)?;
    }
    for iface in &s.interfaces {
        c.number(
            "interfaces.rx_bytes_per_second",
            iface.rx_bytes_per_second,
            bounds::BYTES_PER_SECOND,
        )?;
        c.number(
            "interfaces.tx_bytes_per_second",
            iface.tx_bytes_per_second,
            bounds::BYTES_PER_SECOND,
        )?;
    }
    c.processes(&s.processes)?;
    c.interval(s.interval_seconds)
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
    c.number("response_time_ms", s.response_time_ms, bounds::DURATION_MS)?;
    if let Some(ttfb) = s.time_to_first_byte_ms {
        c.number("time_to_first_byte_ms", ttfb, bounds::DURATION_MS)?;
    }
    if let Some(ts) = &s.tls_cert_not_after {
        c.within_a_century("tls_cert_not_after", ts)?;
    }
    c.interval(s.interval_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
                "sampled_at is 301 s ahead of the collector's clock; at most 300 s is allowed (limits.max_clock_skew_seconds): fix the agent's clock",
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
            (
                HostSample {
                    processes: vec![process(7, 1, 0), process(7, 0, 1)],
                    ..host(1)
                },
                "invalid_process",
                "processes lists pid 7 twice; list each process once",
            ),
            (
                HostSample {
                    processes: vec![process(7, 2, 0)],
                    ..host(1)
                },
                "invalid_process",
                "processes: pid 7 has cpu_rank 2 and memory_rank 0, expected at least one from 1 to 1 (the list's length)",
            ),
            (
                HostSample {
                    processes: vec![pb::ProcessUsage {
                        cpu_usage_percent: -1.0,
                        ..process(7, 1, 1)
                    }],
                    ..host(1)
                },
                "invalid_number",
                "processes.cpu_usage_percent is -1, expected a finite number from 0 to 409600",
            ),
            (
                HostSample {
                    processes: vec![pb::ProcessUsage {
                        command_line: "x\0y".into(),
                        ..process(7, 1, 1)
                    }],
                    ..host(1)
                },
                "string_has_nul",
                "processes.command_line contains a NUL character, which PostgreSQL text cannot store",
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

    fn process(pid: u32, cpu_rank: u32, memory_rank: u32) -> pb::ProcessUsage {
        pb::ProcessUsage {
            pid,
            name: "nginx".into(),
            cpu_rank,
            memory_rank,
            ..Default::default()
        }
    }

    fn site(sample: SiteCheck) -> Result<ValidSample, Rejection> {
        validate(
            pb::Sample {
                kind: Some(Kind::Site(sample)),
            },
            "a1",
            &Limits::default(),
            now(),
        )
    }

    #[test]
    fn values_the_database_or_the_retention_cannot_hold_are_refused_by_name() {
        let refused = |r: Result<ValidSample, Rejection>| {
            let r = r.unwrap_err();
            (r.reason.as_str(), r.message)
        };
        // 2001-03-04: older than the 30 days kept.
        assert_eq!(
            refused(check(HostSample {
                sampled_at: ts(983_664_000),
                ..host(1)
            })),
            (
                "timestamp_too_old",
                "sampled_at is 816336000 s old; at most 2592000 s is kept (limits.max_sample_age_seconds): fix the agent's clock if the sample is new".to_owned()
            )
        );
        assert_eq!(
            refused(check(HostSample {
                interval_seconds: u32::MAX,
                ..host(1)
            })),
            (
                "invalid_number",
                "interval_seconds is 4294967295, expected 1 to 86400 (or 0: unknown)".to_owned()
            )
        );
        assert_eq!(
            refused(check(HostSample {
                load_average_5m: f64::INFINITY,
                ..host(1)
            })),
            (
                "invalid_number",
                "load_average_5m is inf, expected a finite number from 0 to 1000000".to_owned()
            )
        );
        let good = SiteCheck {
            stream_id: "s1".into(),
            seq: 1,
            checked_at: ts(1_800_000_000),
            url: "https://example.com/".into(),
            method: "GET".into(),
            ..Default::default()
        };
        site(good.clone()).unwrap();
        assert_eq!(
            refused(site(SiteCheck {
                tls_cert_not_after: ts(i64::MAX / 2),
                ..good.clone()
            })),
            (
                "invalid_timestamp",
                format!(
                    "tls_cert_not_after is {} (unix seconds), expected within 100 years of now (-1362240000 to 4962240000)",
                    i64::MAX / 2
                )
            )
        );
        assert_eq!(
            refused(site(SiteCheck {
                response_time_ms: f64::MAX,
                ..good.clone()
            })),
            (
                "invalid_number",
                format!(
                    "response_time_ms is {}, expected a finite number from 0 to 86400000",
                    f64::MAX
                )
            )
        );
        assert_eq!(
            refused(site(SiteCheck {
                checked_at: Some(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: -1
                }),
                ..good
            })),
            (
                "invalid_timestamp",
                "checked_at.nanos is -1, expected 0 to 999999999".to_owned()
            )
        );
    }
}
