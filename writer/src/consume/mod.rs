//! Kafka to batches: [`kafka_source`] consumes in a group; [`row_batch`] decodes
//! records into rows; [`pipeline`] batches them, stores each batch in one
//! transaction and then its offsets, isolating with [`quarantine`] the records
//! PostgreSQL refuses. [`check_mirror`] keeps the `checks` table equal to the
//! checks topic.

pub mod audit_mirror;
pub mod check_mirror;
pub mod kafka_source;
pub mod label_mirror;
pub mod pipeline;
pub mod progress;
pub mod quarantine;
pub mod row_batch;
pub mod topic_mirror;
