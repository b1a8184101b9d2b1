//! fleetmon collector: the fleet's front door.
//!
//! Agents stream samples over mutual TLS ([`ingest_service`]); each is validated
//! ([`validation`]), published to Kafka ([`kafka_publisher`]) and acknowledged only
//! once Kafka confirmed it ([`stream_acks`]). Operators read the live fleet through
//! [`fleet_service`] from [`fleet_state`]. Central checks live in [`check_catalog`]
//! (the compacted checks topic); operators change them through [`checks_service`] and
//! each agent receives its set, worked out by [`assignment`], over [`control_service`].
//! Each error type states its own gRPC code (`fleetmon::grpc::GrpcError`) and reaches
//! its caller through `fleetmon::grpc::status`. [`server`] wires it all.

pub mod assignment;
pub mod audit_log;
pub mod check_catalog;
pub mod checks_service;
pub mod compacted_log;
pub mod config;
pub mod control_service;
pub mod credentials;
pub mod enrollment_service;
pub mod fleet_service;
pub mod fleet_state;
pub mod heartbeat;
pub mod ingest_service;
pub mod kafka_publisher;
pub mod metrics;
pub mod rate_limit;
pub mod server;
pub mod status_codes;
pub mod stream_acks;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod validation;
pub mod vote_gate;

pub use config::CollectorConfig;
pub use server::{RunningCollector, run, start};
