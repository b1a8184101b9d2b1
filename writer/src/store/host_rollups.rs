//! Host samples added up per agent into minute, hour and day buckets (UTC), so that
//! a chart over weeks or years reads a few hundred rollup rows, never the raw ones.
//!
//! Each bucket keeps, per gauge, the sum (the average is sum / samples), the minimum,
//! the maximum and the last value (of the latest sample, `last_ts`). The network
//! counters are kept as the rates the agent computed over each interval, so a
//! bucket's average rate is the bytes moved per second over it.
//!
//! Buckets are worked out, never added to: a batch stores its host rows and marks
//! the minutes they fall in (`host_rollup_pending`, per Kafka partition), due after
//! `postgres.host_rollup_delay_seconds` and, with a delay of a minute or more, once
//! the minute is over (`sql/host_rollup_mark.sql`; at once when it is 0). A due mark is folded ([`fold_due`]) under its
//! partition's lock, the lock the partition's batches take: by the partition's next
//! batch, or by [`fold_idle`] when none comes. Folding sets the minute from its raw
//! rows, the hour from its minutes and the day from its hours, so a redelivered or
//! replayed sample (not stored twice) adds nothing and folding twice gives the same
//! row. A fleet sampling every second so writes about one mark and three bucket rows
//! an agent a minute, instead of three rollup rows a sample.
//!
//! A writer does not mark a minute again while a mark it inserted is sure to be there
//! ([`MarkedMinutes`]): a mark is folded only once due.
//!
//! Days whose rows were stored before these rollups existed are worked out once by
//! [`backfill_next_day`], which holds folds off meanwhile.
//!
//! Each tier is a partition of `host_rollups` (by resolution), itself partitioned by
//! time (`store/partitions.rs`) and kept as long as `postgres.rollup_retention_days`
//! says for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Transaction;

use super::SinkError;
use super::buckets::{Tier, bucket_start};
use crate::consume::row_batch::RowBatch;

/// The gauges rolled up, in column order: each a column of `host_samples` and the
/// stem of four rollup columns.
const GAUGES: [&str; 9] = [
    "cpu_usage_percent",
    "load_average_1m",
    "memory_used_bytes",
    "memory_available_bytes",
    "swap_used_bytes",
    "disk_used_bytes",
    "network_rx_bytes_per_second",
    "network_tx_bytes_per_second",
    "process_count",
];

/// The tier a tier's buckets are worked out from (`None`: the raw host rows).
fn source(tier: Tier) -> Option<Tier> {
    match tier {
        Tier::Minute => None,
        Tier::Hour => Some(Tier::Minute),
        Tier::Day => Some(Tier::Hour),
    }
}

/// How a bucket of `tier` reads the tier below it (`f`): the rows, the time that
/// places a row, the time of its latest sample, and the order that picks one of
/// several rows of that time.
struct Source {
    /// The raw host rows (`None`), or a rollup tier.
    from: Option<Tier>,
    rows: String,
    time: &'static str,
    latest: &'static str,
    tie: &'static str,
    /// ` AND f.resolution = '…'` for a rollup tier.
    resolution: String,
}

fn source_of(tier: Tier) -> Source {
    let from = source(tier);
    match from {
        None => Source {
            from,
            rows: "host_samples f".to_owned(),
            time: "f.ts",
            latest: "f.ts",
            tie: "f.stream_id DESC, f.seq DESC",
            resolution: String::new(),
        },
        Some(below) => Source {
            from,
            rows: format!("{} f", below.table()),
            time: "f.bucket_start",
            latest: "f.last_ts",
            tie: "f.bucket_start DESC",
            resolution: format!(" AND f.resolution = '{}'", below.name()),
        },
    }
}

impl Source {
    /// What a row gives to a bucket's figure `fig` (sum, min, max or last) of
    /// `gauge`: a raw row its value, a rollup row its own figure.
    fn value(&self, gauge: &str, fig: &str) -> String {
        match self.from {
            None => format!("f.{gauge}::float8"),
            Some(_) => format!("f.{gauge}_{fig}"),
        }
    }

    /// The figures a group of its rows adds up to, each `AS` its column: samples,
    /// last_ts, and each gauge's sum, min and max.
    fn aggregates(&self) -> Vec<String> {
        let samples = match self.from {
            None => "count(*)",
            Some(_) => "sum(f.samples)::bigint",
        };
        let mut figures = vec![
            format!("{samples} AS samples"),
            format!("max({}) AS last_ts", self.latest),
        ];
        for gauge in GAUGES {
            figures.extend(
                ["sum", "min", "max"]
                    .map(|fig| format!("{fig}({}) AS {gauge}_{fig}", self.value(gauge, fig))),
            );
        }
        figures
    }
}

/// Sets the buckets of `tier` that `groups` (a `SELECT agent_id, bucket,
/// aggregates…`) adds up, each with the last values of the latest sample in it
/// (one lookup a bucket, not a sort a gauge), every figure set anew over a stored
/// bucket's; returns each bucket set.
fn set_buckets(tier: Tier, groups: &str) -> String {
    let src = source_of(tier);
    let mut columns = vec!["samples".to_owned(), "last_ts".to_owned()];
    for gauge in GAUGES {
        columns.extend(["sum", "min", "max"].map(|fig| format!("{gauge}_{fig}")));
    }
    let lasts: Vec<String> = GAUGES
        .iter()
        .map(|gauge| src.value(gauge, "last"))
        .collect();
    let from_groups: Vec<String> = columns.iter().map(|c| format!("g.{c}")).collect();
    columns.extend(GAUGES.iter().map(|gauge| format!("{gauge}_last")));
    let sets: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO host_rollups AS r (agent_id, resolution, bucket_start, {columns}) \
         SELECT g.agent_id, '{name}', g.bucket, {from_groups}, l.* FROM ({groups}) g \
         CROSS JOIN LATERAL (SELECT {lasts} FROM {rows} \
           WHERE f.agent_id = g.agent_id{resolution} AND {time} >= g.bucket \
             AND {time} < g.bucket + interval '{seconds} seconds' AND {latest} = g.last_ts \
           ORDER BY {tie} LIMIT 1) l \
         ORDER BY 1, 3 \
         ON CONFLICT (agent_id, resolution, bucket_start) DO UPDATE SET {sets} \
         RETURNING agent_id, bucket_start",
        columns = columns.join(", "),
        name = tier.name(),
        from_groups = from_groups.join(", "),
        lasts = lasts.join(", "),
        rows = src.rows,
        resolution = src.resolution,
        time = src.time,
        seconds = tier.seconds(),
        latest = src.latest,
        tie = src.tie,
        sets = sets.join(", "),
    )
}

/// Works out the buckets of `tier` a CTE `due(agent_id, bucket)` names from the tier
/// below (each found by the index on agent and time); returns each bucket set.
fn fold_sql(tier: Tier, due: &str) -> String {
    let src = source_of(tier);
    let groups = format!(
        "SELECT d.agent_id, d.bucket, {aggregates} \
         FROM (SELECT DISTINCT agent_id, bucket FROM due) d \
         JOIN {rows} ON f.agent_id = d.agent_id{resolution} \
           AND {time} >= d.bucket AND {time} < d.bucket + interval '{seconds} seconds' \
         GROUP BY d.agent_id, d.bucket",
        aggregates = src.aggregates().join(", "),
        rows = src.rows,
        resolution = src.resolution,
        time = src.time,
        seconds = tier.seconds(),
    );
    format!("{due} {}", set_buckets(tier, &groups))
}

/// Takes at most $3 due marks of the partitions ($1 topics, $2 partitions), oldest
/// first, and works their minutes out from the raw rows.
static FOLD_MINUTES: LazyLock<String> = LazyLock::new(|| {
    fold_sql(
        Tier::Minute,
        "WITH due AS ( \
           DELETE FROM host_rollup_pending p USING ( \
             SELECT topic, partition, agent_id, minute FROM host_rollup_pending \
             WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::int4[])) AND due <= now() \
             ORDER BY due LIMIT $3) m \
           WHERE p.topic = m.topic AND p.partition = m.partition AND p.agent_id = m.agent_id AND p.minute = m.minute \
           RETURNING p.agent_id, p.minute AS bucket)",
    )
});

/// Works out the buckets $2 of the agents $1 of a tier from the tier below.
fn fold_given(tier: Tier) -> String {
    fold_sql(
        tier,
        "WITH due AS (SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS d(agent_id, bucket))",
    )
}

static FOLD_HOURS: LazyLock<String> = LazyLock::new(|| fold_given(Tier::Hour));
static FOLD_DAYS: LazyLock<String> = LazyLock::new(|| fold_given(Tier::Day));

/// Taken exclusively by a backfill and shared by every fold, so that a fold never
/// sets a bucket from a snapshot without the backfill's while the backfill sets it (a
/// single 64-bit key: a key space apart from the partitions' locks).
const BACKFILL_LOCK: i64 = 0x686f_7374_5f66_6f6c; // "host_fol"

/// How long before a mark falls due this writer stops trusting that it is still
/// there: room for the clocks (this host's and PostgreSQL's) and the statement's
/// own time.
const MARK_MARGIN: Duration = Duration::from_secs(2);

/// The minute marks this writer inserted, and until when (this host's monotonic
/// clock) each is sure to be in `host_rollup_pending`. A mark is folded only once due
/// (`due <= now()` under the partition's lock), so until shortly before then a batch
/// with rows in that minute need not mark it again: it checks here after taking the
/// partition's lock, which it holds until its rows are committed.
#[derive(Debug, Default)]
pub(super) struct MarkedMinutes {
    inner: Mutex<Marked>,
}

/// An agent's minutes marked, each with until when its mark is sure.
type AgentMarks = Vec<(SystemTime, Instant)>;

/// Per topic, partition and agent: each minute marked and until when the mark is sure.
#[derive(Debug, Default)]
struct Marked {
    by_partition: HashMap<String, HashMap<i32, HashMap<String, AgentMarks>>>,
    /// When expired entries were last dropped.
    swept: Option<Instant>,
}

/// A mark as the batch's statement inserted it: topic, partition, agent, minute, and
/// the seconds until it falls due from the transaction's start (PostgreSQL's clock).
pub(super) type NewMark = (String, i32, String, SystemTime, f64);

/// A mark a batch would make: topic, partition, agent, minute.
type Mark<'a> = (&'a str, i32, &'a str, SystemTime);

impl MarkedMinutes {
    /// Drops from `marks` those sure to be there at `now`.
    fn drop_sure(&self, marks: &mut BTreeSet<Mark<'_>>, now: Instant) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        marks.retain(|&(topic, partition, agent, minute)| {
            !inner
                .by_partition
                .get(topic)
                .and_then(|partitions| partitions.get(&partition))
                .and_then(|agents| agents.get(agent))
                .is_some_and(|minutes| minutes.iter().any(|&(m, until)| m == minute && until > now))
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
                    agents.retain(|_, minutes| {
                        minutes.retain(|&(_, until)| until > now);
                        !minutes.is_empty()
                    });
                }
                partitions.retain(|_, agents| !agents.is_empty());
            }
            inner
                .by_partition
                .retain(|_, partitions| !partitions.is_empty());
            inner.swept = Some(now);
        }
        for (topic, partition, agent, minute, due_in) in marks {
            let Some(until) = Duration::try_from_secs_f64(due_in)
                .ok()
                .and_then(|due_in| due_in.checked_sub(MARK_MARGIN))
                .map(|sure| began + sure)
            else {
                continue;
            };
            let minutes = inner
                .by_partition
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_default()
                .entry(agent)
                .or_default();
            minutes.retain(|&(m, until)| m != minute && until > now);
            minutes.push((minute, until));
        }
    }
}

/// Marks the minutes of a batch's host rows, per Kafka partition, to be folded
/// within `delay` (at a random point of its second half, so the marks of a fleet that
/// starts together do not all fall due in one batch), except those `marked` is sure
/// of. A mark already there keeps its time. Called with the batch's partitions
/// locked; returns the marks inserted, for [`MarkedMinutes::remember`] once committed.
pub(super) async fn mark_minutes(
    tx: &Transaction<'_>,
    batch: &RowBatch,
    delay: Duration,
    marked: &MarkedMinutes,
) -> Result<Vec<NewMark>, SinkError> {
    let now = Instant::now();
    let mut marks: BTreeSet<Mark<'_>> = BTreeSet::new();
    for ((topic, partition), rows) in batch.partitions() {
        for row in &rows.hosts {
            let minute = bucket_start(row.ts, Tier::Minute.seconds());
            marks.insert((topic, *partition, &row.sample.agent_id, minute));
        }
    }
    marked.drop_sure(&mut marks, now);
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    let topics: Vec<&str> = marks.iter().map(|m| m.0).collect();
    let partitions: Vec<i32> = marks.iter().map(|m| m.1).collect();
    let agents: Vec<&str> = marks.iter().map(|m| m.2).collect();
    let minutes: Vec<SystemTime> = marks.iter().map(|m| m.3).collect();
    let mark = tx
        .prepare_cached(include_str!("../../sql/host_rollup_mark.sql"))
        .await?;
    let inserted = tx
        .query(
            &mark,
            &[
                &topics,
                &partitions,
                &agents,
                &minutes,
                &delay.as_secs_f64(),
            ],
        )
        .await?;
    Ok(inserted
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect())
}

/// The buckets of `tier` holding the buckets `set` (agent, start), once each.
fn coarser(set: &[tokio_postgres::Row], tier: Tier) -> (Vec<String>, Vec<SystemTime>) {
    let buckets: BTreeSet<(String, SystemTime)> = set
        .iter()
        .map(|row| (row.get(0), bucket_start(row.get(1), tier.seconds())))
        .collect();
    buckets.into_iter().unzip()
}

/// Folds at most `limit` due marks of `partitions`, whose locks the caller holds:
/// sets their minutes from the raw rows, those minutes' hours from the minute
/// buckets and those hours' days from the hour buckets. Returns the minutes folded;
/// none while a backfill runs (they stay due).
pub(super) async fn fold_due(
    tx: &Transaction<'_>,
    partitions: &[(&str, i32)],
    limit: i64,
) -> Result<u64, SinkError> {
    if partitions.is_empty() {
        return Ok(0);
    }
    let backfill_idle: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock_shared($1)",
            &[&BACKFILL_LOCK],
        )
        .await?
        .get(0);
    if !backfill_idle {
        return Ok(0);
    }
    let (topics, numbers): (Vec<&str>, Vec<i32>) = partitions.iter().copied().unzip();
    let fold_minutes = tx.prepare_cached(&FOLD_MINUTES).await?;
    let mut set = tx
        .query(&fold_minutes, &[&topics, &numbers, &limit])
        .await?;
    let folded = set.len() as u64;
    for (tier, sql) in [(Tier::Hour, &*FOLD_HOURS), (Tier::Day, &*FOLD_DAYS)] {
        if set.is_empty() {
            break;
        }
        let (agents, starts) = coarser(&set, tier);
        let fold = tx.prepare_cached(sql).await?;
        set = tx.query(&fold, &[&agents, &starts]).await?;
    }
    Ok(folded)
}

/// The most marks one transaction of [`fold_idle`] folds (the partition's batches
/// wait meanwhile).
const IDLE_FOLD_LIMIT: i64 = 2_000;

/// Folds the due marks of partitions no batch is writing (a batch folds its own
/// partitions' marks): each partition whose lock is free, in transactions of at most
/// [`IDLE_FOLD_LIMIT`] marks. Returns the minutes folded.
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

/// Works out the buckets of `tier` of every agent in one UTC day ($1, its midnight)
/// from the tier below, in one pass over the day.
fn backfill_sql(tier: Tier) -> String {
    let src = source_of(tier);
    let groups = format!(
        "SELECT f.agent_id, date_bin(interval '{seconds} seconds', {time}, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, {aggregates} \
         FROM {rows} WHERE {time} >= $1 AND {time} < $1 + interval '1 day'{resolution} \
         GROUP BY 1, 2",
        seconds = tier.seconds(),
        time = src.time,
        aggregates = src.aggregates().join(", "),
        rows = src.rows,
        resolution = src.resolution,
    );
    set_buckets(tier, &groups)
}

static BACKFILL: LazyLock<[String; 3]> = LazyLock::new(|| Tier::ALL.map(backfill_sql));

const NEXT_BACKFILL_DAY: &str = include_str!("../../sql/next_backfill_day.sql");
const BACKFILL_DONE: &str = include_str!("../../sql/backfill_done.sql");

/// Works out every tier of one day not yet backfilled from its raw rows, and marks
/// the day done, in one transaction (so each day is done once, also with several
/// writers: a day being backfilled is skipped by the others). Returns the day (its
/// UTC midnight), or `None` when none is left.
pub(super) async fn backfill_next_day(
    client: &mut deadpool_postgres::Client,
) -> Result<Option<SystemTime>, SinkError> {
    let tx = client.transaction().await?;
    let Some(row) = tx.query_opt(NEXT_BACKFILL_DAY, &[]).await? else {
        return Ok(None);
    };
    // Folds set buckets of this day too: wait for those running and hold off new
    // ones until the commit.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BACKFILL_LOCK])
        .await?;
    let day: SystemTime = row.get("day");
    for sql in BACKFILL.iter() {
        let backfill = tx.prepare_cached(sql).await?;
        tx.execute(&backfill, &[&day]).await?;
    }
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
        .map(|c| format!("(sum({c}_sum) / sum(samples))::float8 AS {c}"))
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
    fn each_tier_is_set_from_the_one_below_with_every_column() {
        let mut columns = vec!["samples".to_owned(), "last_ts".to_owned()];
        for gauge in GAUGES {
            columns.extend(["sum", "min", "max", "last"].map(|f| format!("{gauge}_{f}")));
        }
        for tier in Tier::ALL {
            let fold = if tier == Tier::Minute {
                FOLD_MINUTES.clone()
            } else {
                fold_given(tier)
            };
            let rows = source_of(tier).rows;
            for sql in [fold, backfill_sql(tier)] {
                assert!(sql.contains(&rows), "{sql}");
                assert!(sql.contains(&format!("'{}'", tier.name())), "{sql}");
                for c in &columns {
                    assert!(sql.contains(&format!("{c} = EXCLUDED.{c}")), "{c} in {sql}");
                }
            }
        }
    }
}
