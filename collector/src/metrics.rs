//! The collector's Prometheus metrics (`fleetmon_collector_*`), served on `/metrics`.

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

/// Label: why a sample was rejected.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of [`fleetmon::samples::Reason`], by name.
    pub reason: &'static str,
}

/// Every metric the collector exports.
#[derive(Debug)]
pub struct CollectorMetrics {
    /// Samples received from agents, valid or not.
    pub samples_received: Family<KindLabel, Counter>,
    /// Samples refused by validation.
    pub samples_rejected: Family<ReasonLabel, Counter>,
    /// Records Kafka confirmed.
    pub records_delivered: Counter,
    /// Records Kafka refused or lost (the agent resends them).
    pub records_failed: Counter,
    /// Time from queuing a record to its delivery report.
    pub delivery_latency_seconds: Histogram,
    /// Agents with an open ingest stream.
    pub connected_agents: Gauge,
    /// Site results left out of the live view: their agent already had
    /// `limits.max_latest_sites_per_agent` sites there.
    pub latest_sites_dropped: Counter,
    /// Agents forgotten by the live view after `limits.forget_agents_after_seconds`
    /// without a connection (their rows stay in PostgreSQL).
    pub agents_forgotten: Counter,
    /// Live-view events a `WatchLatest` client missed: it read slower than they came
    /// and fell more than the watch buffer behind.
    pub watch_events_skipped: Counter,
    /// Heartbeat pings with a known token, counted before they reach Kafka (each is
    /// then delivered, or answered with an error for the job to ping again).
    pub heartbeats_received: Counter,
}

impl CollectorMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = CollectorMetrics {
            samples_received: Family::default(),
            samples_rejected: Family::default(),
            records_delivered: Counter::default(),
            records_failed: Counter::default(),
            delivery_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            connected_agents: Gauge::default(),
            latest_sites_dropped: Counter::default(),
            agents_forgotten: Counter::default(),
            watch_events_skipped: Counter::default(),
            heartbeats_received: Counter::default(),
        };
        // Every label value exists from the start, so rates work from the first scrape.
        for kind in fleetmon::samples::SampleKind::ALL {
            let _ = metrics
                .samples_received
                .get_or_create(&KindLabel { kind: kind.label() });
        }
        for reason in fleetmon::samples::Reason::ALL {
            let _ = metrics.samples_rejected.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        let prefixed = registry.sub_registry_with_prefix("fleetmon_collector");
        prefixed.register(
            "samples_received",
            "Samples received from agents",
            metrics.samples_received.clone(),
        );
        prefixed.register(
            "samples_rejected",
            "Samples refused by validation",
            metrics.samples_rejected.clone(),
        );
        prefixed.register(
            "records_delivered",
            "Records confirmed by Kafka",
            metrics.records_delivered.clone(),
        );
        prefixed.register(
            "records_failed",
            "Records Kafka did not confirm",
            metrics.records_failed.clone(),
        );
        prefixed.register(
            "delivery_latency_seconds",
            "Time from queuing a record to its Kafka delivery report",
            metrics.delivery_latency_seconds.clone(),
        );
        prefixed.register(
            "connected_agents",
            "Agents with an open ingest stream",
            metrics.connected_agents.clone(),
        );
        prefixed.register(
            "latest_sites_dropped",
            "Site results left out of the live view (the agent's site limit was reached)",
            metrics.latest_sites_dropped.clone(),
        );
        prefixed.register(
            "agents_forgotten",
            "Agents the live view forgot after a long time without a connection",
            metrics.agents_forgotten.clone(),
        );
        prefixed.register(
            "watch_events_skipped",
            "Live-view events a WatchLatest client missed by reading slower than they came",
            metrics.watch_events_skipped.clone(),
        );
        prefixed.register(
            "heartbeats_received",
            "Heartbeat pings with a known token, before they reach Kafka",
            metrics.heartbeats_received.clone(),
        );
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_reason_is_exported_from_the_start() {
        let mut registry = Registry::default();
        let _metrics = CollectorMetrics::new(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for reason in fleetmon::samples::Reason::ALL {
            let line = format!(
                "fleetmon_collector_samples_rejected_total{{reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
