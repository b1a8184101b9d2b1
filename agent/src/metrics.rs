//! The agent's Prometheus metrics (`fleetmon_agent_*`), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: which kind of sample.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `host` or `site`.
    pub kind: &'static str,
}

/// Label: how a check ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or the failure kind (`timeout`, `status_mismatch`, …).
    pub outcome: &'static str,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct AgentMetrics {
    /// Samples taken.
    pub samples_taken: Family<KindLabel, Counter>,
    /// Site checks by outcome.
    pub checks: Family<OutcomeLabel, Counter>,
    /// Samples waiting for an acknowledgement.
    pub queue_depth: Gauge,
    /// Samples dropped because the outbox was full.
    pub dropped: Counter,
    /// Samples the collector acknowledged.
    pub acked: Counter,
    /// Batches sent (resent ones included): with `acked`, how well samples gather.
    pub batches_sent: Counter,
    /// Connections to the collector opened after the first.
    pub reconnects: Counter,
    /// Attempts to connect to a collector that failed (none answered, or TLS refused).
    pub connect_failures: Counter,
    /// How late checks start against their schedule.
    pub check_lateness_seconds: Histogram,
    /// End of validity of the agent's certificate (Unix seconds).
    pub certificate_not_after: Gauge,
    /// 1 while the agent's certificate has expired (it needs a new token).
    pub certificate_expired: Gauge,
    /// Certificates renewed.
    pub certificate_renewals: Counter,
}

impl AgentMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = AgentMetrics {
            samples_taken: Family::default(),
            checks: Family::default(),
            queue_depth: Gauge::default(),
            dropped: Counter::default(),
            acked: Counter::default(),
            batches_sent: Counter::default(),
            reconnects: Counter::default(),
            connect_failures: Counter::default(),
            check_lateness_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            certificate_not_after: Gauge::default(),
            certificate_expired: Gauge::default(),
            certificate_renewals: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("fleetmon_agent");
        r.register(
            "samples_taken",
            "Samples taken",
            metrics.samples_taken.clone(),
        );
        r.register("checks", "Site checks by outcome", metrics.checks.clone());
        r.register(
            "queue_depth",
            "Samples waiting for an acknowledgement",
            metrics.queue_depth.clone(),
        );
        r.register(
            "samples_dropped",
            "Samples dropped because the outbox was full",
            metrics.dropped.clone(),
        );
        r.register(
            "samples_acked",
            "Samples the collector acknowledged",
            metrics.acked.clone(),
        );
        r.register(
            "batches_sent",
            "Batches of samples sent to the collector, resent ones included",
            metrics.batches_sent.clone(),
        );
        r.register(
            "reconnects",
            "Connections to the collector opened after the first",
            metrics.reconnects.clone(),
        );
        r.register(
            "connect_failures",
            "Attempts to connect to a collector that failed",
            metrics.connect_failures.clone(),
        );
        r.register(
            "check_lateness_seconds",
            "How late site checks start against their schedule",
            metrics.check_lateness_seconds.clone(),
        );
        r.register(
            "certificate_not_after_seconds",
            "End of validity of the agent's certificate (Unix seconds)",
            metrics.certificate_not_after.clone(),
        );
        r.register(
            "certificate_expired",
            "1 while the agent's certificate has expired: enroll again with a new token",
            metrics.certificate_expired.clone(),
        );
        r.register(
            "certificate_renewals",
            "Certificates renewed",
            metrics.certificate_renewals.clone(),
        );
        metrics
    }
}
