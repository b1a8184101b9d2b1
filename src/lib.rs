//! fleetmon: the shared library of the agent, collector and writer.
//!
//! It holds what more than one binary needs: the wire protocol ([`pb`]), the check
//! model ([`checks`]), mutual TLS
//! ([`tls`]) and peer identity ([`identity`]), the dev PKI ([`pki`]), the shutdown
//! signal, tracing setup, the Prometheus endpoint, the standard gRPC services and how
//! a server runs its tasks ([`server`]) and its `main` ([`daemon`]).
//! With the `testkit` feature it also carries the test harness every crate's tests use.

pub mod access;
pub mod alert_kind;
pub mod audit;
pub mod backoff;
pub mod check_failure;
pub mod check_secrets;
pub mod checks;
pub mod config;
pub mod daemon;
pub mod grpc;
pub mod grpc_codec;
pub mod identity;
#[cfg(feature = "kafka")]
pub mod kafka_topics;
pub mod labels;
pub mod metrics_endpoint;
pub mod pb;
pub mod pki;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redact;
pub mod samples;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

#[cfg(feature = "testkit")]
pub mod testkit;
