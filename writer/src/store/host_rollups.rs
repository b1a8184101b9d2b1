//! Host samples added up per agent into minute, hour and day buckets (UTC), so that
//! a chart over weeks or years reads a few hundred rollup rows, never the raw ones.
//!
//! Each bucket keeps, per gauge, the sum (the average is sum / samples), the minimum,
//! the maximum and the last value (of the latest sample, `last_ts`). The network
//! counters are kept as the rates the agent computed over each interval, so a
//! bucket's average rate is the bytes moved per second over it.
//!
//! Like the check rollups, a batch adds only the host rows it inserted to the minute
//! buckets, in the rows' transaction, so a redelivered or replayed sample adds
//! nothing. The hour and day buckets are worked out again from the finer tier, not
//! added to: each batch marks the hours it touched in `host_rollup_pending`, per Kafka
//! partition, and a mark falls due within `postgres.host_rollup_delay_seconds`. A due
//! mark is folded ([`fold_due`]) under its partition's lock, as the partition's
//! batches are written: by the next batch of that partition, or by [`fold_idle`] when
//! none comes. Folding sets the hour from its minute buckets and the day from its hour
//! buckets, so it gives the same figures however often it runs. A fleet of agents
//! sampling every second so writes one rollup row a sample, not three.
//!
//! Rows stored before these rollups existed are added once by [`backfill_next_day`],
//! which holds folds off meanwhile.
//!
//! Each tier is a partition of `host_rollups` (by resolution), itself partitioned by
//! time (`store/partitions.rs`) and kept as long as `postgres.rollup_retention_days`
//! says for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Transaction;
use fleetmon::pb::HostSample;

use super::SinkError;
use super::buckets::{Tier, bucket_start};
use crate::consume::row_batch::{HostRow, RowBatch};

/// A gauge rolled up: its column in `host_samples` (and the stem of its four
/// rollup columns) and its value in a sample.
struct Gauge {
    column: &'static str,
    of: fn(&HostSample) -> f64,
}

/// The gauges rolled up, in column order.
const GAUGES: [Gauge; 9] = [
    Gauge {
        column: "cpu_usage_percent",
        of: |s| s.cpu_usage_percent,
    },
    Gauge {
        column: "load_average_1m",
        of: |s| s.load_average_1m,
    },
    Gauge {
        column: "memory_used_bytes",
        of: |s| s.memory_used_bytes as f64,
    },
    Gauge {
        column: "memory_available_bytes",
        of: |s| s.memory_available_bytes as f64,
    },
    Gauge {
        column: "swap_used_bytes",
        of: |s| s.swap_used_bytes as f64,
    },
    Gauge {
        column: "disk_used_bytes",
        of: |s| s.disk_used_bytes as f64,
    },
    Gauge {
        column: "network_rx_bytes_per_second",
        of: |s| s.network_rx_bytes_per_second,
    },
    Gauge {
        column: "network_tx_bytes_per_second",
        of: |s| s.network_tx_bytes_per_second,
    },
    Gauge {
        column: "process_count",
        of: |s| f64::from(s.process_count),
    },
];

/// The four figures kept of each gauge, as column suffixes.
const FIGURES: [&str; 4] = ["sum", "min", "max", "last"];

/// `host_rollups`' value columns after the key: samples, last_ts, then each gauge's
/// sum, min, max and last.
fn value_columns() -> Vec<String> {
    let mut columns = vec!["samples".to_owned(), "last_ts".to_owned()];
    for gauge in &GAUGES {
        columns.extend(FIGURES.iter().map(|f| format!("{}_{f}", gauge.column)));
    }
    columns
}

/// How a stored bucket and one being added (`EXCLUDED`) combine: counts and sums
/// add, minimum and maximum widen, the last value is the later sample's.
fn merge_clause() -> String {
    let mut sets = vec![
        "samples = r.samples + EXCLUDED.samples".to_owned(),
        "last_ts = GREATEST(r.last_ts, EXCLUDED.last_ts)".to_owned(),
    ];
    for gauge in &GAUGES {
        let c = gauge.column;
        sets.extend([
            format!("{c}_sum = r.{c}_sum + EXCLUDED.{c}_sum"),
            format!("{c}_min = LEAST(r.{c}_min, EXCLUDED.{c}_min)"),
            format!("{c}_max = GREATEST(r.{c}_max, EXCLUDED.{c}_max)"),
            format!(
                "{c}_last = CASE WHEN EXCLUDED.last_ts >= r.last_ts THEN EXCLUDED.{c}_last ELSE r.{c}_last END"
            ),
        ]);
    }
    format!(
        "ON CONFLICT (agent_id, resolution, bucket_start) DO UPDATE SET {}",
        sets.join(", ")
    )
}

/// Adds a batch's buckets, given as one array per column, to `host_rollups`.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let values = value_columns();
    let mut arrays = vec![
        "$1::text[]".to_owned(),
        "$2::text[]".to_owned(),
        "$3::timestamptz[]".to_owned(),
        "$4::int8[]".to_owned(),
        "$5::timestamptz[]".to_owned(),
    ];
    arrays.extend((6..=values.len() + 3).map(|n| format!("${n}::float8[]")));
    format!(
        "INSERT INTO host_rollups AS r (agent_id, resolution, bucket_start, {}) \
         SELECT * FROM unnest({}) {}",
        values.join(", "),
        arrays.join(", "),
        merge_clause()
    )
});

/// One bucket's figures.
struct Bucket {
    samples: i64,
    last_ts: SystemTime,
    sum: [f64; GAUGES.len()],
    min: [f64; GAUGES.len()],
    max: [f64; GAUGES.len()],
    last: [f64; GAUGES.len()],
}

impl Bucket {
    fn new(row: &HostRow) -> Self {
        let values = GAUGES.each_ref().map(|g| (g.of)(&row.sample));
        Bucket {
            samples: 0,
            last_ts: row.ts,
            sum: [0.0; GAUGES.len()],
            min: values,
            max: values,
            last: values,
        }
    }

    fn add(&mut self, row: &HostRow) {
        self.samples += 1;
        for (i, gauge) in GAUGES.iter().enumerate() {
            let value = (gauge.of)(&row.sample);
            self.sum[i] += value;
            self.min[i] = self.min[i].min(value);
            self.max[i] = self.max[i].max(value);
            if row.ts >= self.last_ts {
                self.last[i] = value;
            }
        }
        if row.ts >= self.last_ts {
            self.last_ts = row.ts;
        }
    }
}

/// Adds the host rows `inserted` to their minute rollups.
pub(super) async fn add_to_host_rollups(
    tx: &Transaction<'_>,
    inserted: &[&HostRow],
) -> Result<(), SinkError> {
    if inserted.is_empty() {
        return Ok(());
    }
    // Ordered by key, so concurrent writers lock rollup rows in the same order.
    let mut buckets: BTreeMap<(&str, Tier, SystemTime), Bucket> = BTreeMap::new();
    for &row in inserted {
        let start = bucket_start(row.ts, Tier::Minute.seconds());
        buckets
            .entry((row.sample.agent_id.as_str(), Tier::Minute, start))
            .or_insert_with(|| Bucket::new(row))
            .add(row);
    }
    let agents: Vec<&str> = buckets.keys().map(|(agent, ..)| *agent).collect();
    let tiers: Vec<&str> = buckets.keys().map(|(_, tier, _)| tier.name()).collect();
    let starts: Vec<SystemTime> = buckets.keys().map(|(.., start)| *start).collect();
    let samples: Vec<i64> = buckets.values().map(|b| b.samples).collect();
    let last_ts: Vec<SystemTime> = buckets.values().map(|b| b.last_ts).collect();
    let mut figures: Vec<Vec<f64>> = Vec::with_capacity(GAUGES.len() * FIGURES.len());
    for i in 0..GAUGES.len() {
        figures.push(buckets.values().map(|b| b.sum[i]).collect());
        figures.push(buckets.values().map(|b| b.min[i]).collect());
        figures.push(buckets.values().map(|b| b.max[i]).collect());
        figures.push(buckets.values().map(|b| b.last[i]).collect());
    }
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&agents, &tiers, &starts, &samples, &last_ts];
    params.extend(
        figures
            .iter()
            .map(|f| f as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    let upsert = tx.prepare_cached(&UPSERT).await?;
    tx.execute(&upsert, &params).await?;
    Ok(())
}

/// Taken exclusively by a backfill and shared by every fold, so that a fold never
/// sets a bucket from a snapshot without the backfill's rows while the backfill adds
/// to it (a single 64-bit key: a key space apart from the partitions' locks).
const BACKFILL_LOCK: i64 = 0x686f_7374_5f66_6f6c; // "host_fol"

/// How long before a mark falls due this writer stops trusting that it is still
/// there: room for the clocks (this host's and PostgreSQL's) and the statement's
/// own time.
const MARK_MARGIN: Duration = Duration::from_secs(2);

/// The hour marks this writer inserted, and until when (this host's monotonic clock)
/// each is sure to be in `host_rollup_pending`. A mark is folded only once due
/// (`due <= now()` under the partition's lock), so until shortly before then a batch
/// that changes that hour's minutes need not mark it again: it checks here after
/// taking the partition's lock, which it holds until its minutes are committed.
#[derive(Debug, Default)]
pub(super) struct MarkedHours {
    inner: Mutex<Marked>,
}

/// An agent's hours marked, each with until when its mark is sure.
type AgentMarks = Vec<(SystemTime, Instant)>;

/// Per topic, partition and agent: each hour marked and until when the mark is sure.
#[derive(Debug, Default)]
struct Marked {
    by_partition: HashMap<String, HashMap<i32, HashMap<String, AgentMarks>>>,
    /// When expired entries were last dropped.
    swept: Option<Instant>,
}

/// A mark as the batch's statement inserted it: topic, partition, agent, hour, and
/// the seconds until it falls due from the transaction's start (PostgreSQL's clock).
pub(super) type NewMark = (String, i32, String, SystemTime, f64);

impl MarkedHours {
    /// Drops from `marks` those sure to be there at `now`.
    fn drop_sure(&self, marks: &mut BTreeSet<(&str, i32, &str, SystemTime)>, now: Instant) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        marks.retain(|&(topic, partition, agent, hour)| {
            !inner
                .by_partition
                .get(topic)
                .and_then(|partitions| partitions.get(&partition))
                .and_then(|agents| agents.get(agent))
                .is_some_and(|hours| hours.iter().any(|&(h, until)| h == hour && until > now))
        });
    }

    /// Remembers the marks a committed batch inserted in a transaction begun at
    /// `began` (on this host's clock, before PostgreSQL's `now()` of it).
    pub(super) fn remember(&self, marks: Vec<NewMark>, began: Instant) {
        if marks.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner
            .swept
            .is_none_or(|swept| now.duration_since(swept) > Duration::from_secs(60))
        {
            for partitions in inner.by_partition.values_mut() {
                for agents in partitions.values_mut() {
                    agents.retain(|_, hours| {
                        hours.retain(|&(_, until)| until > now);
                        !hours.is_empty()
                    });
                }
                partitions.retain(|_, agents| !agents.is_empty());
            }
            inner
                .by_partition
                .retain(|_, partitions| !partitions.is_empty());
            inner.swept = Some(now);
        }
        for (topic, partition, agent, hour, due_in) in marks {
            let Some(until) = Duration::try_from_secs_f64(due_in)
                .ok()
                .and_then(|due_in| due_in.checked_sub(MARK_MARGIN))
                .map(|sure| began + sure)
            else {
                continue;
            };
            let hours = inner
                .by_partition
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_default()
                .entry(agent)
                .or_default();
            hours.retain(|&(h, until)| h != hour && until > now);
            hours.push((hour, until));
        }
    }
}

/// Marks the hours of a batch's host rows, per Kafka partition, to be folded within
/// `delay` (at a random point of its second half, so the marks of a fleet that starts
/// together do not all fall due in one batch), except those `marked` is sure of. A
/// mark already there keeps its time. Called with the batch's partitions locked;
/// returns the marks inserted, for [`MarkedHours::remember`] once committed.
pub(super) async fn mark_hours(
    tx: &Transaction<'_>,
    batch: &RowBatch,
    delay: Duration,
    marked: &MarkedHours,
) -> Result<Vec<NewMark>, SinkError> {
    let now = Instant::now();
    let mut marks: BTreeSet<(&str, i32, &str, SystemTime)> = BTreeSet::new();
    for ((topic, partition), rows) in batch.partitions() {
        for row in &rows.hosts {
            let hour = bucket_start(row.ts, Tier::Hour.seconds());
            marks.insert((topic, *partition, &row.sample.agent_id, hour));
        }
    }
    marked.drop_sure(&mut marks, now);
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    let topics: Vec<&str> = marks.iter().map(|m| m.0).collect();
    let partitions: Vec<i32> = marks.iter().map(|m| m.1).collect();
    let agents: Vec<&str> = marks.iter().map(|m| m.2).collect();
    let hours: Vec<SystemTime> = marks.iter().map(|m| m.3).collect();
    let mark = tx
        .prepare_cached(include_str!("../../sql/host_rollup_mark.sql"))
        .await?;
    let inserted = tx
        .query(
            &mark,
            &[&topics, &partitions, &agents, &hours, &delay.as_secs_f64()],
        )
        .await?;
    Ok(inserted
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect())
}

/// How a bucket of `tier` is worked out from the buckets of the tier below it, given
/// the buckets to work out as `due(agent_id, bucket)`: every figure set anew, so
/// working one out twice gives the same row.
fn fold_sql(tier: Tier, due: &str) -> String {
    let from = match tier {
        Tier::Hour => Tier::Minute,
        Tier::Day => Tier::Hour,
        Tier::Minute => unreachable!("minute buckets are added to, not worked out"),
    };
    let mut figures = vec![
        "sum(f.samples)::bigint".to_owned(),
        "max(f.last_ts)".to_owned(),
    ];
    let mut sets = vec![
        "samples = EXCLUDED.samples".to_owned(),
        "last_ts = EXCLUDED.last_ts".to_owned(),
    ];
    for gauge in &GAUGES {
        let c = gauge.column;
        figures.extend([
            format!("sum(f.{c}_sum)"),
            format!("min(f.{c}_min)"),
            format!("max(f.{c}_max)"),
            format!("(array_agg(f.{c}_last ORDER BY f.last_ts DESC))[1]"),
        ]);
        sets.extend(FIGURES.map(|fig| format!("{c}_{fig} = EXCLUDED.{c}_{fig}")));
    }
    format!(
        "{due} INSERT INTO host_rollups AS r (agent_id, resolution, bucket_start, {columns}) \
         SELECT d.agent_id, '{tier}', d.bucket, {figures} \
         FROM (SELECT DISTINCT agent_id, bucket FROM due) d \
         JOIN {table} f ON f.agent_id = d.agent_id AND f.resolution = '{from}' \
           AND f.bucket_start >= d.bucket AND f.bucket_start < d.bucket + interval '{seconds} seconds' \
         GROUP BY d.agent_id, d.bucket ORDER BY 1, 3 \
         ON CONFLICT (agent_id, resolution, bucket_start) DO UPDATE SET {sets} \
         RETURNING agent_id, bucket_start",
        columns = value_columns().join(", "),
        tier = tier.name(),
        figures = figures.join(", "),
        table = from.table(),
        from = from.name(),
        seconds = tier.seconds(),
        sets = sets.join(", "),
    )
}

/// Takes at most $3 due marks of the partitions ($1 topics, $2 partitions), oldest
/// first, and works their hours out from the minute buckets.
static FOLD_HOURS: LazyLock<String> = LazyLock::new(|| {
    fold_sql(
        Tier::Hour,
        "WITH due AS ( \
           DELETE FROM host_rollup_pending p USING ( \
             SELECT topic, partition, agent_id, hour FROM host_rollup_pending \
             WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::int4[])) AND due <= now() \
             ORDER BY due LIMIT $3) m \
           WHERE p.topic = m.topic AND p.partition = m.partition AND p.agent_id = m.agent_id AND p.hour = m.hour \
           RETURNING p.agent_id, p.hour AS bucket)",
    )
});

/// Works out the days $2 of the agents $1 from their hour buckets.
static FOLD_DAYS: LazyLock<String> = LazyLock::new(|| {
    fold_sql(
        Tier::Day,
        "WITH due AS (SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS d(agent_id, bucket))",
    )
});

/// Folds at most `limit` due marks of `partitions`, whose locks the caller holds:
/// sets their hours from the minute buckets and those hours' days from the hour
/// buckets. Returns the hours folded; none while a backfill runs (they stay due).
pub(super) async fn fold_due(
    tx: &Transaction<'_>,
    partitions: &[(&str, i32)],
    limit: i64,
) -> Result<u64, SinkError> {
    let backfill_idle: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock_shared($1)",
            &[&BACKFILL_LOCK],
        )
        .await?
        .get(0);
    if !backfill_idle || partitions.is_empty() {
        return Ok(0);
    }
    let (topics, numbers): (Vec<&str>, Vec<i32>) = partitions.iter().copied().unzip();
    let fold_hours = tx.prepare_cached(&FOLD_HOURS).await?;
    let hours = tx.query(&fold_hours, &[&topics, &numbers, &limit]).await?;
    let days: BTreeSet<(String, SystemTime)> = hours
        .iter()
        .map(|row| {
            let hour: SystemTime = row.get(1);
            (row.get(0), bucket_start(hour, Tier::Day.seconds()))
        })
        .collect();
    if !days.is_empty() {
        let (agents, starts): (Vec<String>, Vec<SystemTime>) = days.into_iter().unzip();
        let fold_days = tx.prepare_cached(&FOLD_DAYS).await?;
        tx.execute(&fold_days, &[&agents, &starts]).await?;
    }
    Ok(hours.len() as u64)
}

/// The most marks one transaction of [`fold_idle`] folds (the partition's batches
/// wait meanwhile).
const IDLE_FOLD_LIMIT: i64 = 2_000;

/// Folds the due marks of partitions no batch is writing (a batch folds its own
/// partitions' marks): each partition whose lock is free, in transactions of at most
/// [`IDLE_FOLD_LIMIT`] marks. Returns the hours folded.
pub(super) async fn fold_idle(client: &mut deadpool_postgres::Client) -> Result<u64, SinkError> {
    let due = client
        .query(
            "SELECT DISTINCT topic, partition FROM host_rollup_pending WHERE due <= now() ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut folded = 0;
    for row in due {
        let topic: String = row.get(0);
        let partition: i32 = row.get(1);
        loop {
            let tx = client.transaction().await?;
            let free: bool = tx
                .query_one(
                    include_str!("../../sql/try_lock_partition.sql"),
                    &[&topic, &partition],
                )
                .await?
                .get(0);
            if !free {
                break;
            }
            let n = fold_due(&tx, &[(topic.as_str(), partition)], IDLE_FOLD_LIMIT).await?;
            tx.commit().await?;
            folded += n;
            if n < IDLE_FOLD_LIMIT as u64 {
                break;
            }
        }
    }
    Ok(folded)
}

/// Adds up the host rows of one UTC day ($1, its midnight) stored before $2 (when
/// the rollups began) into every tier, added to what the writer added since.
static BACKFILL: LazyLock<String> = LazyLock::new(|| {
    let mut selects = vec!["count(*)".to_owned(), "max(ts)".to_owned()];
    for gauge in &GAUGES {
        let c = format!("{}::float8", gauge.column);
        selects.extend([
            format!("sum({c})"),
            format!("min({c})"),
            format!("max({c})"),
            format!("(array_agg({c} ORDER BY ts DESC, stream_id DESC, seq DESC))[1]"),
        ]);
    }
    let tiers: Vec<String> = Tier::ALL
        .iter()
        .map(|tier| {
            format!(
                "SELECT agent_id, '{name}', date_bin(interval '{seconds} seconds', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'), {selects} \
                 FROM host_samples WHERE ts >= $1 AND ts < $1 + interval '1 day' AND stored_at < $2 \
                 GROUP BY 1, 2, 3",
                name = tier.name(),
                seconds = tier.seconds(),
                selects = selects.join(", ")
            )
        })
        .collect();
    format!(
        "INSERT INTO host_rollups AS r (agent_id, resolution, bucket_start, {}) {} ORDER BY 1, 2, 3 {}",
        value_columns().join(", "),
        tiers.join(" UNION ALL "),
        merge_clause()
    )
});

const NEXT_BACKFILL_DAY: &str = include_str!("../../sql/next_backfill_day.sql");
const BACKFILL_DONE: &str = include_str!("../../sql/backfill_done.sql");

/// Adds up the rows stored before the rollups began of one day not yet backfilled,
/// and marks the day done, in one transaction (so each day is added exactly once,
/// also with several writers: a day being backfilled is skipped by the others).
/// Returns the day (its UTC midnight), or `None` when none is left.
pub(super) async fn backfill_next_day(
    client: &mut deadpool_postgres::Client,
) -> Result<Option<SystemTime>, SinkError> {
    let tx = client.transaction().await?;
    let Some(row) = tx.query_opt(NEXT_BACKFILL_DAY, &[]).await? else {
        return Ok(None);
    };
    // Folds set buckets this day's rows are added to: wait for those running and
    // hold off new ones until the commit.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BACKFILL_LOCK])
        .await?;
    let day: SystemTime = row.get("day");
    let cutoff: SystemTime = row.get("cutoff");
    let backfill = tx.prepare_cached(&BACKFILL).await?;
    tx.execute(&backfill, &[&day, &cutoff]).await?;
    tx.execute(BACKFILL_DONE, &[&day]).await?;
    tx.commit().await?;
    Ok(Some(day))
}

/// The History query of a host series over [$1, $2) in steps of $3 seconds, from
/// `tier` (`None`: raw rows): one agent's ($4), or with `fleet` every agent's
/// samples averaged together.
pub fn series_sql(tier: Option<Tier>, fleet: bool) -> String {
    let agent = if fleet { "" } else { "agent_id = $4 AND" };
    let Some(tier) = tier else {
        return include_str!("../../sql/host_series.sql").replace("{agent}", agent);
    };
    let averages: Vec<String> = GAUGES
        .iter()
        .map(|g| format!("(sum({c}_sum) / sum(samples))::float8 AS {c}", c = g.column))
        .collect();
    format!(
        "SELECT date_bin(make_interval(secs => $3::double precision), bucket_start, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, \
         sum(samples)::bigint AS samples, {} \
         FROM host_rollups WHERE {agent} resolution = '{}' AND bucket_start >= $1 AND bucket_start < $2 \
         GROUP BY bucket ORDER BY bucket",
        averages.join(", "),
        tier.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_names_as_many_arrays_as_columns() {
        let columns = 3 + value_columns().len();
        assert_eq!(columns, 3 + 2 + 4 * GAUGES.len());
        assert!(UPSERT.contains(&format!("${columns}::float8[]")));
        assert!(!UPSERT.contains(&format!("${}::", columns + 1)));
    }
}
