//! What the collector and the writer both know about samples: the fields they
//! share ([`Sample`]), the rules a sample must keep to be published and stored, with
//! one [`Reason`] per rule, and figures derived from samples that more than one binary
//! shows or stores.

use crate::pb::{CheckFailure, HostSample, SiteCheck};

/// Longest accepted `stream_id`.
pub const MAX_STREAM_ID_BYTES: usize = 128;

/// The bounds of every number a sample carries, in one place: the collector refuses a
/// sample outside them, naming the field, its value and the range. Each bound keeps
/// the value storable and every sum and average the writer and the queries take of
/// it finite (PostgreSQL fails a whole statement on a float overflow).
pub mod bounds {
    /// A percentage.
    pub const PERCENT: (f64, f64) = (0.0, 100.0);
    /// A load average (a run-queue length).
    pub const LOAD_AVERAGE: (f64, f64) = (0.0, 1e6);
    /// A network rate in bytes per second (a petabyte per second).
    pub const BYTES_PER_SECOND: (f64, f64) = (0.0, 1e15);
    /// A duration in milliseconds: a check's response time, time to first byte (a day).
    pub const DURATION_MS: (f64, f64) = (0.0, 86_400_000.0);
    /// A process's CPU usage, 100 per core as `top` counts (4096 cores).
    pub const PROCESS_CPU_PERCENT: (f64, f64) = (0.0, 409_600.0);
    /// `interval_seconds` of a host sample or a site check (0: unknown, older agents).
    pub const INTERVAL_SECONDS: (u32, u32) = (1, 86_400);
    /// How far a certificate's expiry may lie from now, in seconds (100 years).
    pub const CERT_EXPIRY_SECONDS: i64 = 100 * 366 * 86_400;
    /// The longest text a monitored target controls (`final_url`, `error_message`,
    /// `matched_text`): the agent truncates to this, the collector's default
    /// `limits.max_string_bytes`.
    pub const TARGET_TEXT_BYTES: usize = 4096;
}

/// Marks a text the agent shortened to [`bounds::TARGET_TEXT_BYTES`].
pub const TRUNCATED_MARK: &str = "…[truncated]";

/// `text` cut to at most `max` bytes on a character boundary, ending with
/// [`TRUNCATED_MARK`] when it was cut (`max` must exceed the mark's length).
pub fn truncate_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(TRUNCATED_MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(TRUNCATED_MARK);
}

/// Why a sample is refused: a stable name, the `reason` of a rejection and a metrics
/// label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The sample holds neither a host sample nor a site check.
    MissingKind,
    /// `stream_id` is empty.
    MissingStreamId,
    /// `stream_id` is longer than [`MAX_STREAM_ID_BYTES`].
    StreamIdTooLong,
    /// `seq` is 0.
    MissingSeq,
    /// The sample time is missing.
    MissingTimestamp,
    /// A timestamp is out of range.
    InvalidTimestamp,
    /// The sample time is too far ahead of the receiver's clock.
    TimestampInFuture,
    /// The sample time is before 2000.
    TimestampTooOld,
    /// A text field is longer than the limit.
    StringTooLong,
    /// A text field holds a NUL character, which PostgreSQL text cannot store.
    StringHasNul,
    /// A repeated field has too many entries.
    ListTooLong,
    /// A number is negative, not finite or above its bound.
    InvalidNumber,
    /// A site check without a URL.
    MissingUrl,
    /// A site check without a method.
    MissingMethod,
    /// A status code outside 100–999.
    InvalidStatusCode,
    /// A failure kind this version does not know.
    InvalidFailureKind,
    /// A result for a `check_id` that names no check.
    UnknownCheck,
    /// A result for a check not assigned to the agent that sent it.
    UnassignedCheck,
    /// A result for a check version the collector never sent.
    UnknownCheckVersion,
    /// A sample of one stream more than a connection may carry.
    TooManyStreams,
    /// A host sample's process list names a pid twice, or ranks a process out of
    /// its list.
    InvalidProcess,
}

impl Reason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Reason; 21] = [
        Reason::MissingKind,
        Reason::MissingStreamId,
        Reason::StreamIdTooLong,
        Reason::MissingSeq,
        Reason::MissingTimestamp,
        Reason::InvalidTimestamp,
        Reason::TimestampInFuture,
        Reason::TimestampTooOld,
        Reason::StringTooLong,
        Reason::StringHasNul,
        Reason::ListTooLong,
        Reason::InvalidNumber,
        Reason::MissingUrl,
        Reason::MissingMethod,
        Reason::InvalidStatusCode,
        Reason::InvalidFailureKind,
        Reason::UnknownCheck,
        Reason::UnassignedCheck,
        Reason::UnknownCheckVersion,
        Reason::TooManyStreams,
        Reason::InvalidProcess,
    ];

    /// The stable name, in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingKind => "missing_kind",
            Reason::MissingStreamId => "missing_stream_id",
            Reason::StreamIdTooLong => "stream_id_too_long",
            Reason::MissingSeq => "missing_seq",
            Reason::MissingTimestamp => "missing_timestamp",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::TimestampInFuture => "timestamp_in_future",
            Reason::TimestampTooOld => "timestamp_too_old",
            Reason::StringTooLong => "string_too_long",
            Reason::StringHasNul => "string_has_nul",
            Reason::ListTooLong => "list_too_long",
            Reason::InvalidNumber => "invalid_number",
            Reason::MissingUrl => "missing_url",
            Reason::MissingMethod => "missing_method",
            Reason::InvalidStatusCode => "invalid_status_code",
            Reason::InvalidFailureKind => "invalid_failure_kind",
            Reason::UnknownCheck => "unknown_check",
            Reason::UnassignedCheck => "unassigned_check",
            Reason::UnknownCheckVersion => "unknown_check_version",
            Reason::TooManyStreams => "too_many_streams",
            Reason::InvalidProcess => "invalid_process",
        }
    }
}

/// A broken rule: which one, and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Violation {
    /// The rule.
    pub reason: Reason,
    /// What is wrong, naming the field.
    pub message: String,
}

impl Violation {
    /// A violation of `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Violation {
            reason,
            message: message.into(),
        }
    }
}

/// What a site check's result counts toward in the alert rules: its central check's
/// id, or, for a site from the agent's own config, `AGENT URL` (one location of its
/// own). A check id is a slug and an agent name has no space, so a key with a space is
/// always a local site's.
pub fn alert_check_key(check: &SiteCheck) -> std::borrow::Cow<'_, str> {
    if check.check_id.is_empty() {
        std::borrow::Cow::Owned(format!("{} {}", check.agent_id, check.url))
    } else {
        std::borrow::Cow::Borrowed(&check.check_id)
    }
}

/// The agent and URL of an alert rule key ([`alert_check_key`]) that is a local
/// site's; `None` for a central check's.
pub fn local_site_of(key: &str) -> Option<(&str, &str)> {
    key.split_once(' ')
}

/// The kinds of sample, and what each is called wherever it appears (metric labels,
/// tables, record headers): one list, so a new kind is a new variant here and the
/// compiler names every `match` that must handle it, one per crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleKind {
    /// A host sample (`HostSample`).
    Host,
    /// A site check result (`SiteCheck`).
    Site,
}

impl SampleKind {
    /// Every kind.
    pub const ALL: [SampleKind; 2] = [SampleKind::Host, SampleKind::Site];

    /// The kind of a sample on the wire.
    pub fn of(kind: &crate::pb::sample::Kind) -> SampleKind {
        match kind {
            crate::pb::sample::Kind::Host(_) => SampleKind::Host,
            crate::pb::sample::Kind::Site(_) => SampleKind::Site,
        }
    }

    /// The `kind` label of the agent's and the collector's metrics.
    pub const fn label(self) -> &'static str {
        match self {
            SampleKind::Host => "host",
            SampleKind::Site => "site",
        }
    }

    /// The table (partitioned by day) its rows are stored in.
    pub const fn table(self) -> &'static str {
        match self {
            SampleKind::Host => "host_samples",
            SampleKind::Site => "site_checks",
        }
    }

    /// The `content-type` header of its Kafka records.
    pub const fn content_type(self) -> &'static str {
        match self {
            SampleKind::Host => crate::pb::HOST_SAMPLE_CONTENT_TYPE,
            SampleKind::Site => crate::pb::SITE_CHECK_CONTENT_TYPE,
        }
    }
}

/// A sample on the wire, whatever its kind: where the agent and the collector read
/// what every kind has, so they need no `match` of their own.
impl crate::pb::sample::Kind {
    /// The sample's sequence number within its stream.
    pub fn seq(&self) -> u64 {
        match self {
            crate::pb::sample::Kind::Host(s) => s.seq,
            crate::pb::sample::Kind::Site(s) => s.seq,
        }
    }

    /// Puts the sample in `stream_id` as number `seq`.
    pub fn number(&mut self, stream_id: &str, seq: u64) {
        let (stream, number) = match self {
            crate::pb::sample::Kind::Host(s) => (&mut s.stream_id, &mut s.seq),
            crate::pb::sample::Kind::Site(s) => (&mut s.stream_id, &mut s.seq),
        };
        stream_id.clone_into(stream);
        *number = seq;
    }
}

/// A live event, whatever kind of sample it carries.
impl crate::pb::watch_event::Kind {
    /// The agent the sample is from.
    pub fn agent_id(&self) -> &str {
        match self {
            crate::pb::watch_event::Kind::Host(s) => &s.agent_id,
            crate::pb::watch_event::Kind::Site(s) => &s.agent_id,
        }
    }
}

/// What host samples and site checks share.
pub trait Sample {
    /// The fully qualified protobuf message name.
    const MESSAGE: &'static str;
    /// Its kind.
    const KIND: SampleKind;
    /// The agent the sample is from.
    fn agent_id(&self) -> &str;
    /// The stream the sample belongs to.
    fn stream_id(&self) -> &str;
    /// The sample's sequence number within its stream.
    fn seq(&self) -> u64;
    /// The name of the sample-time field (`sampled_at`, `checked_at`) and its value.
    fn taken_at(&self) -> (&'static str, Option<prost_types::Timestamp>);
    /// Every text field, named as in the proto (`disks.device` for repeated ones).
    fn text_fields(&self) -> Vec<(&'static str, &str)>;
    /// The key of its Kafka record, which picks the partition and so the writer that
    /// stores it.
    fn partition_key(&self) -> &str;
}

impl Sample for HostSample {
    const KIND: SampleKind = SampleKind::Host;
    const MESSAGE: &'static str = "fleetmon.v1.HostSample";

    fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn taken_at(&self) -> (&'static str, Option<prost_types::Timestamp>) {
        ("sampled_at", self.sampled_at)
    }

    /// Its agent: one writer stores an agent's host rows in order.
    fn partition_key(&self) -> &str {
        &self.agent_id
    }

    fn text_fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![
            ("agent_id", self.agent_id.as_str()),
            ("stream_id", &self.stream_id),
            ("hostname", &self.hostname),
            ("os_name", &self.os_name),
            ("os_version", &self.os_version),
            ("kernel_version", &self.kernel_version),
            ("agent_version", &self.agent_version),
        ];
        for disk in &self.disks {
            fields.extend([
                ("disks.mount_point", disk.mount_point.as_str()),
                ("disks.device", &disk.device),
                ("disks.file_system", &disk.file_system),
            ]);
        }
        fields.extend(
            self.interfaces
                .iter()
                .map(|i| ("interfaces.name", i.name.as_str())),
        );
        for process in &self.processes {
            fields.extend([
                ("processes.name", process.name.as_str()),
                ("processes.user", &process.user),
                ("processes.command_line", &process.command_line),
            ]);
        }
        fields
    }
}

impl Sample for SiteCheck {
    const KIND: SampleKind = SampleKind::Site;
    const MESSAGE: &'static str = "fleetmon.v1.SiteCheck";

    fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn taken_at(&self) -> (&'static str, Option<prost_types::Timestamp>) {
        ("checked_at", self.checked_at)
    }

    /// Its check: every location's result for one check lands in one partition, so
    /// one writer owns its rollups and alert state; a site of an agent's own config by
    /// its URL.
    fn partition_key(&self) -> &str {
        if self.check_id.is_empty() {
            &self.url
        } else {
            &self.check_id
        }
    }

    fn text_fields(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("agent_id", self.agent_id.as_str()),
            ("stream_id", &self.stream_id),
            ("url", &self.url),
            ("method", &self.method),
            ("error_message", &self.error_message),
            ("regex", &self.regex),
            ("matched_text", &self.matched_text),
            ("final_url", &self.final_url),
            ("check_id", &self.check_id),
        ]
    }
}

/// The stream and sequence number are set: `stream_id` non-empty and at most
/// [`MAX_STREAM_ID_BYTES`], `seq` from 1.
pub fn check_identity(sample: &impl Sample) -> Result<(), Violation> {
    let stream_id = sample.stream_id();
    if stream_id.is_empty() {
        return Err(Violation::new(
            Reason::MissingStreamId,
            "stream_id is empty",
        ));
    }
    if stream_id.len() > MAX_STREAM_ID_BYTES {
        return Err(Violation::new(
            Reason::StreamIdTooLong,
            format!("stream_id is longer than {MAX_STREAM_ID_BYTES} bytes"),
        ));
    }
    if sample.seq() == 0 {
        return Err(Violation::new(
            Reason::MissingSeq,
            "seq is 0 (sequence numbers start at 1)",
        ));
    }
    if sample.seq() > i64::MAX as u64 {
        return Err(Violation::new(
            Reason::InvalidNumber,
            format!(
                "seq is {}, expected 1 to {} (a PostgreSQL bigint)",
                sample.seq(),
                i64::MAX
            ),
        ));
    }
    Ok(())
}

/// Every text field holds no NUL and, with `max_bytes`, is at most that long.
pub fn check_text(sample: &impl Sample, max_bytes: Option<usize>) -> Result<(), Violation> {
    for (field, value) in sample.text_fields() {
        if let Some(max) = max_bytes
            && value.len() > max
        {
            return Err(Violation::new(
                Reason::StringTooLong,
                format!("{field} is longer than {max} bytes"),
            ));
        }
        if value.contains('\0') {
            return Err(Violation::new(
                Reason::StringHasNul,
                format!("{field} contains a NUL character, which PostgreSQL text cannot store"),
            ));
        }
    }
    Ok(())
}

/// The failure kind is one this version knows.
pub fn check_failure_kind(code: i32) -> Result<CheckFailure, Violation> {
    CheckFailure::try_from(code).map_err(|_| {
        Violation::new(
            Reason::InvalidFailureKind,
            format!("failure {code} is not a known CheckFailure"),
        )
    })
}

/// Disk use in percent as `df`'s Use% counts it: used of the space an unprivileged
/// process could fill (used + available), so blocks reserved for root do not make an
/// empty disk look full. Samples of older agents carry no available space; their
/// used is size − available, taken against the size. `None` without any disk.
pub fn disk_used_percent(sample: &HostSample) -> Option<f64> {
    // In floating point: an agent's figures can be any u64, and their sum must not
    // overflow (it panicked the writer's write task).
    let used = sample.disk_used_bytes as f64;
    let of = match sample.disk_available_bytes {
        Some(available) => used + available as f64,
        None => sample.disk_total_bytes as f64,
    };
    (of > 0.0).then(|| used * 100.0 / of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters_and_marks_the_cut() {
        let mut short = "ok".to_owned();
        truncate_text(&mut short, 20);
        assert_eq!(short, "ok");
        let mut long = "é".repeat(3000);
        truncate_text(&mut long, bounds::TARGET_TEXT_BYTES);
        assert!(long.len() <= bounds::TARGET_TEXT_BYTES, "{}", long.len());
        assert!(long.ends_with(TRUNCATED_MARK));
        assert!(
            long.trim_end_matches(TRUNCATED_MARK)
                .chars()
                .all(|c| c == 'é')
        );
    }

    #[test]
    fn reserved_blocks_are_neither_used_nor_available() {
        // The machine of the report: 270 GB, 19 GB used, 78 GB available.
        let sample = HostSample {
            disk_total_bytes: 270_000_000_000,
            disk_used_bytes: 19_000_000_000,
            disk_available_bytes: Some(78_000_000_000),
            ..Default::default()
        };
        assert_eq!(disk_used_percent(&sample).map(f64::round), Some(20.0));
        let older = HostSample {
            disk_available_bytes: None,
            disk_used_bytes: 27_000_000_000,
            ..sample
        };
        assert_eq!(disk_used_percent(&older), Some(10.0));
        assert_eq!(disk_used_percent(&HostSample::default()), None);
        let absurd = HostSample {
            disk_used_bytes: u64::MAX,
            disk_available_bytes: Some(u64::MAX),
            ..Default::default()
        };
        assert_eq!(disk_used_percent(&absurd), Some(50.0));
    }
}
