//! The writer's Prometheus metrics (`fleetmon_writer_*`), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: which table.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// `host_samples` or `site_checks`.
    pub table: &'static str,
}

/// Label: one partition of one topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// Label: why a record was quarantined (a SQLSTATE, `encode`, or `outside_window`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// Every metric the writer exports.
#[derive(Debug)]
pub struct WriterMetrics {
    /// Rows newly stored.
    pub rows_inserted: Family<TableLabel, Counter>,
    /// Rows skipped because they were already stored (redelivery).
    pub duplicates_skipped: Counter,
    /// Records sent to the dead-letter topic.
    pub dead_letters: Counter,
    /// Batches that failed and were retried.
    pub flush_failures: Counter,
    /// Records decoded fine but not storable (PostgreSQL refused them on data, or
    /// dated outside the window the writer keeps), sent to the dead-letter topic.
    pub records_quarantined: Family<ReasonLabel, Counter>,
    /// Alert evaluations (a batch's check rules, or one timed rule's round) that failed
    /// on their data and were skipped.
    pub alert_evaluations_skipped: Counter,
    /// Rounds of the timed alert rules this writer evaluated to the end (tests and
    /// operators wait on it: a round after a change has seen the change).
    pub alert_rounds: Counter,
    /// Rows per committed batch.
    pub batch_rows: Histogram,
    /// Time to store one batch.
    pub flush_seconds: Histogram,
    /// Messages behind the end of each partition, from librdkafka statistics.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// 1 for each partition this writer holds in its consumer group, 0 once revoked.
    pub assigned_partitions: Family<PartitionLabel, Gauge>,
}

impl WriterMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = WriterMetrics {
            rows_inserted: Family::default(),
            duplicates_skipped: Counter::default(),
            dead_letters: Counter::default(),
            flush_failures: Counter::default(),
            records_quarantined: Family::default(),
            alert_evaluations_skipped: Counter::default(),
            alert_rounds: Counter::default(),
            batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            consumer_lag: Family::default(),
            assigned_partitions: Family::default(),
        };
        // Every label value exists from the start, so rates work from the first scrape.
        for kind in fleetmon::samples::SampleKind::ALL {
            let _ = metrics.rows_inserted.get_or_create(&TableLabel {
                table: kind.table(),
            });
        }
        let r = registry.sub_registry_with_prefix("fleetmon_writer");
        r.register(
            "rows_inserted",
            "Rows newly stored",
            metrics.rows_inserted.clone(),
        );
        r.register(
            "duplicates_skipped",
            "Rows already stored, skipped",
            metrics.duplicates_skipped.clone(),
        );
        r.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            metrics.dead_letters.clone(),
        );
        r.register(
            "flush_failures",
            "Batches that failed and were retried",
            metrics.flush_failures.clone(),
        );
        r.register(
            "records_quarantined",
            "Records PostgreSQL refused on data or dated outside the kept window, dead-lettered",
            metrics.records_quarantined.clone(),
        );
        r.register(
            "alert_evaluations_skipped",
            "Alert evaluations (a batch's check rules, a timed rule's round) skipped for failing on their data",
            metrics.alert_evaluations_skipped.clone(),
        );
        r.register(
            "alert_rounds",
            "Rounds of the timed alert rules this writer evaluated to the end",
            metrics.alert_rounds.clone(),
        );
        r.register(
            "batch_rows",
            "Rows per committed batch",
            metrics.batch_rows.clone(),
        );
        r.register(
            "flush_seconds",
            "Time to store one batch",
            metrics.flush_seconds.clone(),
        );
        r.register(
            "consumer_lag",
            "Messages behind the partition end",
            metrics.consumer_lag.clone(),
        );
        r.register(
            "assigned_partitions",
            "1 for each partition this writer is assigned in its consumer group",
            metrics.assigned_partitions.clone(),
        );
        metrics
    }
}
