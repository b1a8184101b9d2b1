//! fleetmon writer: Kafka to PostgreSQL with exactly-once rows.
//!
//! [`kafka_source`] consumes in a group; [`row_batch`] decodes records into rows;
//! [`pipeline`] batches them and stores each batch with [`postgres_sink`] in one
//! transaction before storing the offsets, isolating with [`quarantine`] the records
//! PostgreSQL refuses; [`history_service`] answers operators'
//! queries; [`check_mirror`] keeps the `checks` table equal to the checks topic.
//! Alerts: [`alert_rules`] decides, [`alert_store`] moves the state inside each
//! batch's transaction, [`timed_rules`] decides what time alone can tell,
//! [`notifier`] delivers the outbox and [`alerts_service`] answers operators;
//! [`dead_letter_service`] lists and replays what could not be stored.
//! [`server`] wires it all.

pub mod alert_rules;
pub mod alert_store;
pub mod alerts_service;
pub mod check_mirror;
pub mod config;
pub mod dead_letter_service;
pub mod history_service;
pub mod kafka_source;
pub mod metrics;
pub mod notifier;
pub mod pipeline;
pub mod postgres_sink;
pub mod postgres_tls;
pub mod quarantine;
pub mod row_batch;
pub mod server;
pub mod service_error;
pub mod timed_rules;

pub use config::WriterConfig;
pub use server::{RunningWriter, run, start};
