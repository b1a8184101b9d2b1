//! Binary COPY of sample rows. Each table's columns are listed once, with their
//! types and how a row fills them; the COPY statements and the staging
//! `INSERT … SELECT` are built from that list.

use std::sync::LazyLock;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use deadpool_postgres::Transaction;
use foldhash::{HashSet, HashSetExt as _};
use futures::SinkExt as _;
use tokio_postgres::types::{IsNull, Json, ToSql, Type};

use fleetmon::checks::heartbeat::{self, Signal};
use fleetmon::pb::ProcessUsage;
use fleetmon::samples::SampleKind;

use super::SinkError;
use crate::consume::row_batch::{CheckRow, DisksJson, HostRow, InterfacesJson, SampleKey, micros};

/// Encoded rows go to the connection in chunks of about this many bytes
/// (tokio-postgres' `BinaryCopyInWriter` hands over every 4 KiB, and encodes each
/// value through `dyn ToSql`; here each column's type is known where it is encoded).
const COPY_CHUNK: usize = 64 * 1024;

/// A binary COPY stream's header: the signature, no flags, no header extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Appends one field of a binary COPY row: its length (-1 for NULL), then its value
/// in `ty`'s binary form.
fn put_field<T: ToSql + ?Sized>(
    buf: &mut BytesMut,
    value: &T,
    ty: &Type,
    column: &'static str,
) -> Result<(), SinkError> {
    let at = buf.len();
    buf.put_i32(0);
    let length = match value
        .to_sql_checked(ty, buf)
        .map_err(|source| SinkError::Encode { column, source })?
    {
        IsNull::Yes => -1,
        IsNull::No => i32::try_from(buf.len() - at - 4).map_err(|_| SinkError::Encode {
            column,
            source: "value longer than a COPY field can hold (2 GiB)".into(),
        })?,
    };
    buf[at..at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Declares a table's COPY columns in one list: `NAMES` in column order, and
/// `copy_into`, a binary COPY of rows into a table of that shape, which encodes each
/// row's values in that same order with their types.
macro_rules! copy_columns {
    (
        $names:ident,
        $(#[$doc:meta])*
        $vis:vis async fn $copy_into:ident($row:ident: &$Row:ty) { let $s:ident = $init:expr; }
        { $($column:ident: $ty:ident = $value:expr,)+ }
    ) => {
        const $names: &[&str] = &[$(stringify!($column)),+];

        $(#[$doc])*
        $vis async fn $copy_into<'a>(
            tx: &Transaction<'_>,
            table: &str,
            rows: impl Iterator<Item = &'a $Row>,
        ) -> Result<u64, SinkError> {
            let sql = with_columns(&format!("COPY {table} ({{columns}}) FROM STDIN BINARY"), $names);
            let copy = tx.prepare_cached(&sql).await?;
            let sink = tx.copy_in::<_, Bytes>(&copy).await?;
            let mut sink = std::pin::pin!(sink);
            let fields = i16::try_from($names.len()).expect("a table has fewer than 32768 columns");
            let mut buf = BytesMut::with_capacity(2 * COPY_CHUNK);
            buf.put_slice(COPY_HEADER);
            let mut count = 0;
            for $row in rows {
                let $s = $init;
                buf.put_i16(fields);
                $(put_field(&mut buf, &$value, &Type::$ty, stringify!($column))?;)+
                count += 1;
                if buf.len() >= COPY_CHUNK {
                    sink.send(buf.split().freeze()).await?;
                    buf.reserve(2 * COPY_CHUNK);
                }
            }
            buf.put_i16(-1);
            sink.send(buf.freeze()).await?;
            sink.as_mut().finish().await?;
            Ok(count)
        }
    };
}

copy_columns! {
    HOST_COLUMNS,
    /// Binary COPY of host rows into `table` (the staging table, `host_samples`, or
    /// for benchmarks a table of that shape); returns the rows copied.
    pub async fn copy_hosts_into(row: &HostRow) { let s = &row.sample; }
    {
        agent_id: TEXT = s.agent_id,
        stream_id: TEXT = s.stream_id,
        seq: INT8 = row.seq,
        ts: TIMESTAMPTZ = row.ts,
        hostname: TEXT = s.hostname,
        os_name: TEXT = s.os_name,
        os_version: TEXT = s.os_version,
        kernel_version: TEXT = s.kernel_version,
        agent_version: TEXT = s.agent_version,
        cpu_usage_percent: FLOAT8 = s.cpu_usage_percent,
        load_average_1m: FLOAT8 = s.load_average_1m,
        load_average_5m: FLOAT8 = s.load_average_5m,
        load_average_15m: FLOAT8 = s.load_average_15m,
        memory_total_bytes: INT8 = big(s.memory_total_bytes),
        memory_used_bytes: INT8 = big(s.memory_used_bytes),
        memory_available_bytes: INT8 = big(s.memory_available_bytes),
        swap_total_bytes: INT8 = big(s.swap_total_bytes),
        swap_used_bytes: INT8 = big(s.swap_used_bytes),
        disk_total_bytes: INT8 = big(s.disk_total_bytes),
        disk_used_bytes: INT8 = big(s.disk_used_bytes),
        disk_available_bytes: INT8 = s.disk_available_bytes.map(big),
        network_rx_bytes: INT8 = big(s.network_rx_bytes),
        network_tx_bytes: INT8 = big(s.network_tx_bytes),
        network_rx_bytes_per_second: FLOAT8 = s.network_rx_bytes_per_second,
        network_tx_bytes_per_second: FLOAT8 = s.network_tx_bytes_per_second,
        process_count: INT4 = i32::try_from(s.process_count).unwrap_or(i32::MAX),
        uptime_seconds: INT8 = big(s.uptime_seconds),
        cpu_cores: JSONB = Json(&s.cpu_core_usage_percent),
        disks: JSONB = Json(DisksJson(&s.disks)),
        interfaces: JSONB = Json(InterfacesJson(&s.interfaces)),
    }
}

/// One of a host row's busiest processes, as a `host_processes` row.
struct ProcessRow<'a> {
    host: &'a HostRow,
    process: &'a ProcessUsage,
}

copy_columns! {
    PROCESS_COLUMNS,
    /// Binary COPY of the busiest processes of host rows into `table`
    /// (`host_processes`); returns the rows copied.
    async fn copy_processes_into(row: &ProcessRow<'a>) { let p = row.process; }
    {
        agent_id: TEXT = row.host.sample.agent_id,
        stream_id: TEXT = row.host.sample.stream_id,
        seq: INT8 = row.host.seq,
        ts: TIMESTAMPTZ = row.host.ts,
        pid: INT8 = i64::from(p.pid),
        name: TEXT = p.name,
        username: TEXT = p.user,
        command_line: TEXT = p.command_line,
        cpu_usage_percent: FLOAT8 = p.cpu_usage_percent,
        resident_bytes: INT8 = big(p.resident_bytes),
        threads: INT8 = i64::from(p.threads),
        started_at: TIMESTAMPTZ = p.started_at.and_then(|t| SystemTime::try_from(t).ok()),
        cpu_rank: INT4 = rank(p.cpu_rank),
        memory_rank: INT4 = rank(p.memory_rank),
    }
}

copy_columns! {
    CHECK_COLUMNS,
    /// Binary COPY of check rows into `table` (the staging table, or for benchmarks
    /// `site_checks`); returns the rows copied.
    pub async fn copy_checks_into(row: &CheckRow) { let c = &row.check; }
    {
        agent_id: TEXT = c.agent_id,
        stream_id: TEXT = c.stream_id,
        seq: INT8 = row.seq,
        ts: TIMESTAMPTZ = row.ts,
        url: TEXT = c.url,
        method: TEXT = c.method,
        status_code: INT4 = status_code(c),
        ok: BOOL = c.ok,
        failure: TEXT = row.failure,
        error_message: TEXT = c.error_message,
        response_time_ms: FLOAT8 = c.response_time_ms,
        time_to_first_byte_ms: FLOAT8 = c.time_to_first_byte_ms,
        regex: TEXT = c.regex,
        regex_matched: BOOL = c.regex_matched,
        matched_text: TEXT = c.matched_text,
        body_bytes: INT8 = big(c.body_bytes),
        final_url: TEXT = c.final_url,
        tls_cert_not_after: TIMESTAMPTZ = row.tls_cert_not_after,
        check_id: TEXT = c.check_id,
        check_version: INT8 = big(c.check_version),
    }
}

/// `{columns}` in a statement, replaced by a table's column list.
fn with_columns(sql: &str, columns: &[&str]) -> String {
    sql.replace("{columns}", &columns.join(", "))
}

static INSERT_HOST_SAMPLES: LazyLock<String> = LazyLock::new(|| {
    with_columns(
        include_str!("../../sql/insert_host_samples.sql"),
        HOST_COLUMNS,
    )
});
static INSERT_SITE_CHECKS: LazyLock<String> = LazyLock::new(|| {
    with_columns(
        include_str!("../../sql/insert_site_checks.sql"),
        CHECK_COLUMNS,
    )
});

/// A check's HTTP status as an integer column.
fn status_code(check: &fleetmon::pb::SiteCheck) -> Option<i32> {
    check
        .status_code
        .map(|code| i32::try_from(code).unwrap_or(i32::MAX))
}

/// A 1-based rank as a nullable integer: 0 (not ranked) is NULL.
fn rank(rank: u32) -> Option<i32> {
    (rank > 0).then(|| i32::try_from(rank).unwrap_or(i32::MAX))
}

/// Clamps an unsigned counter into a bigint.
fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Stores host rows, skipping those already stored or repeated, and the busiest
/// processes of those it inserted; returns the host rows inserted (their rollups are
/// worked out later from them, `host_rollups`). The common case,
/// a batch of new rows, is one COPY into `host_samples`; a batch that meets a stored
/// or repeated row goes through the staging table.
pub(super) async fn insert_hosts(
    tx: &Transaction<'_>,
    hosts: &[&HostRow],
) -> Result<u64, SinkError> {
    let inserted = if super::direct::stored_directly(
        tx,
        copy_hosts_into(tx, SampleKind::Host.table(), hosts.iter().copied()),
    )
    .await?
    {
        hosts.to_vec()
    } else {
        tx.batch_execute(include_str!("../../sql/create_staging_host_samples.sql"))
            .await?;
        let hosts = distinct(hosts.iter().copied(), HostRow::key);
        copy_hosts_into(tx, "staging_host_samples", hosts.iter().copied()).await?;
        inserted_rows(tx, &INSERT_HOST_SAMPLES, &hosts, HostRow::key).await?
    };
    let processes: Vec<ProcessRow<'_>> = inserted
        .iter()
        .flat_map(|&host| {
            host.sample
                .processes
                .iter()
                .map(move |process| ProcessRow { host, process })
        })
        .collect();
    if !processes.is_empty() {
        copy_processes_into(tx, super::partitions::PROCESS_TABLE, processes.iter()).await?;
    }
    Ok(inserted.len() as u64)
}

/// Runs `insert`, an `INSERT … SELECT` from a staging table that returns the key of
/// each row it inserted, and gives those of `rows` it inserted.
async fn inserted_rows<'a, R>(
    tx: &Transaction<'_>,
    insert: &str,
    rows: &[&'a R],
    key: impl Fn(&'a R) -> SampleKey<'a>,
) -> Result<Vec<&'a R>, SinkError> {
    let insert = tx.prepare_cached(insert).await?;
    let returned = tx.query(&insert, &[]).await?;
    let keys: HashSet<SampleKey<'_>> = returned
        .iter()
        .map(|row| {
            (
                row.get("agent_id"),
                row.get("stream_id"),
                row.get("seq"),
                micros(row.get("ts")),
            )
        })
        .collect();
    Ok(rows
        .iter()
        .filter(|&&row| keys.contains(&key(row)))
        .copied()
        .collect())
}

/// What [`insert_checks`] stored.
pub(super) struct ChecksInserted<'a> {
    /// Rows newly stored.
    pub rows: u64,
    /// Of those, the results the alert rules take ([`record_checks`]).
    pub results: Vec<&'a CheckRow>,
}

/// Stores check rows, skipping those already stored or repeated, as [`insert_hosts`]
/// does, then what the inserted ones add up to ([`record_checks`]: rollups and the
/// alert rules' input), so a redelivered row adds nothing.
pub(super) async fn insert_checks<'a>(
    tx: &Transaction<'_>,
    checks: &[&'a CheckRow],
) -> Result<ChecksInserted<'a>, SinkError> {
    let inserted = if super::direct::stored_directly(
        tx,
        copy_checks_into(tx, SampleKind::Site.table(), checks.iter().copied()),
    )
    .await?
    {
        checks.to_vec()
    } else {
        tx.batch_execute(include_str!("../../sql/create_staging_site_checks.sql"))
            .await?;
        let checks = distinct(checks.iter().copied(), CheckRow::key);
        copy_checks_into(tx, "staging_site_checks", checks.iter().copied()).await?;
        inserted_rows(tx, &INSERT_SITE_CHECKS, &checks, CheckRow::key).await?
    };
    let results = record_checks(tx, &inserted).await?;
    Ok(ChecksInserted {
        rows: inserted.len() as u64,
        results,
    })
}

/// What the check rows `inserted` add up to: their rollups, and the alert rules'
/// input, which it returns: every check alerts, central or the agent's own.
///
/// Heartbeat signals are decided by time (`heartbeat_missed`), not by these rules; a
/// heartbeat's start is no run of its own, so it adds nothing to the rollups either.
async fn record_checks<'a>(
    tx: &Transaction<'_>,
    inserted: &[&'a CheckRow],
) -> Result<Vec<&'a CheckRow>, SinkError> {
    let runs: Vec<&CheckRow> = inserted
        .iter()
        .filter(|row| row.check.method != Signal::Start.method())
        .copied()
        .collect();
    super::rollups::add_to_rollups(tx, &runs).await?;
    Ok(inserted
        .iter()
        .filter(|row| !heartbeat::is_signal(&row.check.method))
        .copied()
        .collect())
}

/// The rows whose [`SampleKey`] was not seen before, in order.
fn distinct<'a, R>(
    rows: impl Iterator<Item = &'a R>,
    key: impl Fn(&'a R) -> SampleKey<'a>,
) -> Vec<&'a R> {
    // foldhash: SipHash over these keys was 3 % of the writer's CPU in a profile
    // (when every batch was de-duplicated here).
    let mut seen = HashSet::with_capacity(rows.size_hint().0);
    rows.filter(|row| seen.insert(key(row))).collect()
}
