//! fleetmon writer: Kafka to PostgreSQL with exactly-once rows.
//!
//! Read top-down, one folder a role:
//!
//! - [`consume`]: Kafka records to batches of rows, each batch stored in one
//!   transaction before its offsets;
//! - [`store`]: PostgreSQL: the pool, migrations, COPY, partitions, rollups;
//! - [`alerts`]: the rules, the alert state moved in each batch's transaction, the
//!   rules of time alone and the notification outbox;
//! - [`api`]: what operators ask over gRPC (history, alerts, dead letters);
//! - [`config`] and [`metrics`] are leaves every role reads; [`server`] wires it all.

pub mod alerts;
pub mod api;
pub mod config;
pub mod consume;
pub mod metrics;
pub mod server;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::WriterConfig;
pub use server::{RunningWriter, run, start};
