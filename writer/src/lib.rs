//! fleetmon writer: Kafka to PostgreSQL with exactly-once rows.
//!
//! [`kafka_source`] consumes in a group; [`row_batch`] decodes records into rows;
//! [`pipeline`] batches them and stores each batch with [`postgres_sink`] in one
//! transaction before storing the offsets; [`history_service`] answers operators'
//! queries; [`check_mirror`] keeps the `checks` table equal to the checks topic.
//! [`server`] wires it all.

pub mod check_mirror;
pub mod config;
pub mod history_service;
pub mod kafka_source;
pub mod metrics;
pub mod pipeline;
pub mod postgres_sink;
pub mod row_batch;
pub mod server;

pub use config::WriterConfig;
pub use server::{RunningWriter, run, start};
