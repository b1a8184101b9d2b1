//! From Kafka records to rows: decoding and validating one record, and the batch
//! of rows (with the offsets they came from) that goes into one transaction.

use std::collections::BTreeMap;
use std::time::SystemTime;

use fleetmon::pb::{
    DiskUsage, HOST_SAMPLE_CONTENT_TYPE, HostSample, NetworkInterface, SITE_CHECK_CONTENT_TYPE,
    SiteCheck,
};
use fleetmon::samples::{Sample, check_failure_kind, check_identity, check_text};
use prost::Message as _;
use serde::{Serialize, Serializer};

/// Why a record cannot become a row; it goes to the dead-letter topic with this text.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// No value at all.
    #[error("record has no value")]
    Empty,
    /// The `content-type` header names another message.
    #[error("content-type `{found}` does not match topic (expected `{expected}`)")]
    ContentType {
        /// The header value.
        found: String,
        /// What the topic holds.
        expected: &'static str,
    },
    /// The bytes are not the expected protobuf message.
    #[error("value is not a valid {message}: {reason}")]
    NotProtobuf {
        /// The message type.
        message: &'static str,
        /// prost's explanation.
        reason: String,
    },
    /// Decoded, but a field makes it unstorable.
    #[error("invalid {message}: {reason}")]
    Invalid {
        /// The message type.
        message: &'static str,
        /// Which field and why.
        reason: String,
    },
}

/// A host sample as stored in `host_samples`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    /// `sample.seq` as a bigint.
    pub seq: i64,
    /// `sample.sampled_at`.
    pub ts: SystemTime,
    /// The decoded sample; its per-core, per-disk and per-interface figures are
    /// written as JSON straight from it ([`DisksJson`], [`InterfacesJson`]).
    pub sample: HostSample,
}

/// A sample's disks as the `disks` JSONB column holds them: one object per mount.
#[derive(Debug)]
pub struct DisksJson<'a>(pub &'a [DiskUsage]);

impl Serialize for DisksJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Disk<'a> {
            mount_point: &'a str,
            device: &'a str,
            file_system: &'a str,
            total_bytes: u64,
            used_bytes: u64,
            available_bytes: u64,
        }
        serializer.collect_seq(self.0.iter().map(|d| Disk {
            mount_point: &d.mount_point,
            device: &d.device,
            file_system: &d.file_system,
            total_bytes: d.total_bytes,
            used_bytes: d.used_bytes,
            available_bytes: d.available_bytes,
        }))
    }
}

/// A sample's interfaces as the `interfaces` JSONB column holds them.
#[derive(Debug)]
pub struct InterfacesJson<'a>(pub &'a [NetworkInterface]);

impl Serialize for InterfacesJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Interface<'a> {
            name: &'a str,
            rx_bytes: u64,
            tx_bytes: u64,
            rx_bytes_per_second: f64,
            tx_bytes_per_second: f64,
        }
        serializer.collect_seq(self.0.iter().map(|i| Interface {
            name: &i.name,
            rx_bytes: i.rx_bytes,
            tx_bytes: i.tx_bytes,
            rx_bytes_per_second: i.rx_bytes_per_second,
            tx_bytes_per_second: i.tx_bytes_per_second,
        }))
    }
}

/// A site check as stored in `site_checks`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    /// `check.seq` as a bigint.
    pub seq: i64,
    /// `check.checked_at`.
    pub ts: SystemTime,
    /// `None` when the check passed, else the failure kind in snake case.
    pub failure: Option<&'static str>,
    /// `check.tls_cert_not_after`.
    pub tls_cert_not_after: Option<SystemTime>,
    /// The decoded check.
    pub check: SiteCheck,
}

/// The unique key of a stored sample, as PostgreSQL compares it:
/// `(agent_id, stream_id, seq, ts)`, the time in whole microseconds.
pub type SampleKey<'a> = (&'a str, &'a str, i64, i64);

impl HostRow {
    /// The row's [`SampleKey`].
    pub fn key(&self) -> SampleKey<'_> {
        (
            &self.sample.agent_id,
            &self.sample.stream_id,
            self.seq,
            micros(self.ts),
        )
    }
}

impl CheckRow {
    /// The row's [`SampleKey`].
    pub fn key(&self) -> SampleKey<'_> {
        (
            &self.check.agent_id,
            &self.check.stream_id,
            self.seq,
            micros(self.ts),
        )
    }
}

/// A time as PostgreSQL stores it: whole microseconds since the epoch.
pub fn micros(ts: SystemTime) -> i64 {
    match ts.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// `ts` as PostgreSQL gives it back: truncated to whole microseconds ([`micros`]).
pub fn as_stored(ts: SystemTime) -> SystemTime {
    let micros = micros(ts);
    let magnitude = std::time::Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

fn check_content_type(
    content_type: Option<&str>,
    expected: &'static str,
) -> Result<(), DecodeError> {
    match content_type {
        // Records without the header are accepted: the topic says what they are.
        None => Ok(()),
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(DecodeError::ContentType {
            found: found.to_owned(),
            expected,
        }),
    }
}

/// Seconds either side of 2000-01-01 whose microseconds fit the `i64` a binary COPY
/// sends (PostgreSQL holds less: the rest it refuses, and that record is quarantined).
const ENCODABLE_SECONDS: i64 = i64::MAX / 1_000_000;

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in unix seconds.
const POSTGRES_EPOCH: i64 = 946_684_800;

fn timestamp(
    message: &'static str,
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<SystemTime, DecodeError> {
    let invalid = |reason: String| DecodeError::Invalid { message, reason };
    let ts = ts.ok_or_else(|| invalid(format!("{field} is missing")))?;
    if ts.seconds.saturating_sub(POSTGRES_EPOCH).unsigned_abs() >= ENCODABLE_SECONDS as u64 {
        return Err(invalid(format!(
            "{field} is {} (unix seconds), beyond what a timestamp column can hold",
            ts.seconds
        )));
    }
    SystemTime::try_from(ts).map_err(|e| invalid(format!("{field} is out of range: {e}")))
}

/// The rules a record must keep to become a row, shared with the collector: an
/// agent id (the collector stamps it), stream and sequence number, a sample time, and
/// text that PostgreSQL can store. Returns `(seq, sample time)`.
fn storable<S: Sample>(sample: &S) -> Result<(i64, SystemTime), DecodeError> {
    let invalid = |reason: String| DecodeError::Invalid {
        message: S::MESSAGE,
        reason,
    };
    if sample.agent_id().is_empty() {
        return Err(invalid("agent_id is empty".to_owned()));
    }
    check_identity(sample).map_err(|v| invalid(v.message))?;
    let seq =
        i64::try_from(sample.seq()).map_err(|_| invalid("seq does not fit a bigint".into()))?;
    let (field, ts) = sample.taken_at();
    let ts = timestamp(S::MESSAGE, field, ts)?;
    check_text(sample, None).map_err(|v| invalid(v.message))?;
    Ok((seq, ts))
}

/// Decodes a record of the host-samples topic.
pub fn decode_host(
    payload: Option<&[u8]>,
    content_type: Option<&str>,
) -> Result<HostRow, DecodeError> {
    const MESSAGE: &str = HostSample::MESSAGE;
    check_content_type(content_type, HOST_SAMPLE_CONTENT_TYPE)?;
    let payload = payload.ok_or(DecodeError::Empty)?;
    let sample = HostSample::decode(payload).map_err(|e| DecodeError::NotProtobuf {
        message: MESSAGE,
        reason: e.to_string(),
    })?;
    let (seq, ts) = storable(&sample)?;
    Ok(HostRow { seq, ts, sample })
}

/// Decodes a record of the site-checks topic.
pub fn decode_site(
    payload: Option<&[u8]>,
    content_type: Option<&str>,
) -> Result<CheckRow, DecodeError> {
    const MESSAGE: &str = SiteCheck::MESSAGE;
    check_content_type(content_type, SITE_CHECK_CONTENT_TYPE)?;
    let payload = payload.ok_or(DecodeError::Empty)?;
    let check = SiteCheck::decode(payload).map_err(|e| DecodeError::NotProtobuf {
        message: MESSAGE,
        reason: e.to_string(),
    })?;
    let (seq, ts) = storable(&check)?;
    let invalid = |reason: String| DecodeError::Invalid {
        message: MESSAGE,
        reason,
    };
    if check.url.is_empty() {
        return Err(invalid("url is empty".to_owned()));
    }
    let failure = check_failure_kind(check.failure).map_err(|v| invalid(v.message))?;
    if check.status_code.is_some_and(|c| c > i32::MAX as u32) {
        return Err(invalid("status_code does not fit an integer".to_owned()));
    }
    let tls_cert_not_after = check
        .tls_cert_not_after
        .map(|t| timestamp(MESSAGE, "tls_cert_not_after", Some(t)))
        .transpose()?;
    Ok(CheckRow {
        seq,
        ts,
        failure: fleetmon::check_failure::name(failure),
        tls_cert_not_after,
        check,
    })
}

/// Where a batch's rows came from: topic and partition.
pub type PartitionKey = (String, i32);

/// Rows of one partition and the last offset they (and dead-lettered records) cover.
#[derive(Debug, Default)]
pub struct PartitionRows {
    /// Host rows.
    pub hosts: Vec<HostRow>,
    /// Check rows.
    pub checks: Vec<CheckRow>,
    /// Offset of the last record handled (stored, after commit, as the resume point).
    pub last_offset: i64,
}

/// The rows of one Postgres transaction, grouped by source partition so a revoked
/// partition's share can be dropped.
#[derive(Debug, Default)]
pub struct RowBatch {
    partitions: BTreeMap<PartitionKey, PartitionRows>,
    rows: usize,
}

impl RowBatch {
    fn partition(&mut self, topic: &str, partition: i32, offset: i64) -> &mut PartitionRows {
        // A batch holds a few partitions: finding one by a scan spares every record
        // the allocation of an owned key.
        let key = |(t, p): &PartitionKey| t == topic && *p == partition;
        if !self.partitions.keys().any(key) {
            self.partitions
                .insert((topic.to_owned(), partition), PartitionRows::default());
        }
        let rows = self
            .partitions
            .iter_mut()
            .find_map(|(k, rows)| key(k).then_some(rows))
            .expect("inserted above");
        rows.last_offset = rows.last_offset.max(offset);
        rows
    }

    /// Adds a host row read at `offset`.
    pub fn push_host(&mut self, topic: &str, partition: i32, offset: i64, row: HostRow) {
        self.partition(topic, partition, offset).hosts.push(row);
        self.rows += 1;
    }

    /// Adds a check row read at `offset`.
    pub fn push_check(&mut self, topic: &str, partition: i32, offset: i64, row: CheckRow) {
        self.partition(topic, partition, offset).checks.push(row);
        self.rows += 1;
    }

    /// Marks a record handled without a row (dead-lettered).
    pub fn skip(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partition(topic, partition, offset);
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when nothing (not even a skipped record) is pending.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Forgets everything read from `key` (its offsets will not be stored).
    pub fn drop_partition(&mut self, key: &PartitionKey) {
        if let Some(dropped) = self.partitions.remove(key) {
            self.rows -= dropped.hosts.len() + dropped.checks.len();
        }
    }

    /// The partitions and their rows.
    pub fn partitions(&self) -> &BTreeMap<PartitionKey, PartitionRows> {
        &self.partitions
    }

    /// Every host row.
    pub fn hosts(&self) -> impl Iterator<Item = &HostRow> {
        self.partitions.values().flat_map(|p| p.hosts.iter())
    }

    /// Every check row.
    pub fn checks(&self) -> impl Iterator<Item = &CheckRow> {
        self.partitions.values().flat_map(|p| p.checks.iter())
    }

    /// The days (UTC midnight, unix seconds) the rows fall on.
    pub fn days(&self) -> std::collections::BTreeSet<i64> {
        let day = crate::store::day_of;
        self.hosts()
            .map(|r| day(r.ts))
            .chain(self.checks().map(|r| day(r.ts)))
            .collect()
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.partitions.clear();
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_sample() {
        let error = decode_host(Some(b"\xff\xff\xff not protobuf"), None).unwrap_err();
        assert!(matches!(error, DecodeError::NotProtobuf { .. }), "{error}");
        assert_eq!(decode_host(None, None).unwrap_err(), DecodeError::Empty);
        let wrong = decode_site(Some(b""), Some(HOST_SAMPLE_CONTENT_TYPE)).unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "content-type `application/x-protobuf; message=fleetmon.v1.HostSample` does not match topic \
             (expected `application/x-protobuf; message=fleetmon.v1.SiteCheck`)"
        );
    }

    #[test]
    fn a_time_no_timestamp_column_can_hold_is_refused_before_it_is_encoded() {
        let check = SiteCheck {
            agent_id: "a".into(),
            stream_id: "s".into(),
            seq: 1,
            checked_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            url: "https://x.example/".into(),
            tls_cert_not_after: Some(prost_types::Timestamp {
                seconds: i64::MAX / 2,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            decode_site(Some(&check.encode_to_vec()), None)
                .unwrap_err()
                .to_string(),
            format!(
                "invalid fleetmon.v1.SiteCheck: tls_cert_not_after is {} (unix seconds), beyond what a timestamp column can hold",
                i64::MAX / 2
            )
        );
    }

    #[test]
    fn an_empty_message_lacks_its_identity() {
        assert_eq!(
            decode_host(Some(b""), None).unwrap_err().to_string(),
            "invalid fleetmon.v1.HostSample: agent_id is empty"
        );
    }

    #[test]
    fn batches_drop_a_revoked_partition_whole() {
        let sample = HostSample {
            agent_id: "a".into(),
            stream_id: "s".into(),
            seq: 1,
            sampled_at: Some(prost_types::Timestamp {
                seconds: 86_400 * 3 + 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        let row = decode_host(
            Some(&sample.encode_to_vec()),
            Some(HOST_SAMPLE_CONTENT_TYPE),
        )
        .unwrap();
        let mut batch = RowBatch::default();
        batch.push_host("t", 0, 10, row.clone());
        batch.push_host("t", 1, 7, row);
        batch.skip("t", 1, 8);
        assert_eq!(batch.rows(), 2);
        assert_eq!(batch.partitions()[&("t".to_owned(), 1)].last_offset, 8);
        assert_eq!(batch.days().into_iter().collect::<Vec<_>>(), [86_400 * 3]);
        batch.drop_partition(&("t".to_owned(), 0));
        assert_eq!(batch.rows(), 1);
        assert!(!batch.is_empty());
    }
}
