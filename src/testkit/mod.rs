//! Test harness shared by the tests of every fleetmon crate (feature `testkit`).
//!
//! - Kafka: [`kafka_bootstrap`] returns `FLEETMON_TEST_KAFKA` when set (what
//!   `scripts/test` exports after starting one Apache Kafka broker for the whole run, or
//!   any other Kafka broker); otherwise it starts one Apache Kafka node for this test
//!   process. Tests that kill, freeze or restart brokers start a [`KafkaCluster`] of
//!   their own; [`TansuBroker`] runs the quickstart's light broker.
//! - Postgres: [`PgSchema`] is a fresh schema in the database of `FLEETMON_TEST_PG_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards.
//! - Certificates: [`TestPki`] is a fresh CA with server and client certificates in a
//!   temporary directory.
//! - Names: [`unique_name`] for topics and consumer groups, so tests run in parallel.
//!
//! One file per role: `kafka`, `postgres`, `pki`, `tls` (handshake probes), `grpc`
//! (grpcurl, health), `metrics`, `webhook`, `bench` and `process` (signals).

use std::net::TcpListener;

use rand::RngCore;

mod bench;
mod grpc;
mod kafka;
mod metrics;
mod pki;
mod postgres;
mod process;
mod tls;
mod webhook;

pub use bench::{Runs, bench_repeats};
pub use grpc::{ServingStatus, grpcurl_binary, wait_for_health};
pub use kafka::{
    KafkaCluster, TansuBroker, create_topic, kafka_bootstrap, read_all, read_topic, tansu_binary,
};
pub use metrics::{metric_value, metrics_text};
pub use pki::TestPki;
pub use postgres::{PgCluster, PgSchema, pg_checkpoint, pg_url};
pub use tls::{handshake_refusal, server_certificate, tls_alert};
pub use webhook::{WebhookReceiver, WebhookRequest};

/// Environment variable naming the Kafka bootstrap servers for the whole suite.
pub const KAFKA_ENV: &str = "FLEETMON_TEST_KAFKA";
/// Environment variable naming the Postgres URL for the whole suite.
pub const PG_ENV: &str = "FLEETMON_TEST_PG_URL";
/// Environment variable naming the tansu binary (default: `tansu` on PATH or in ~/.cargo/bin).
pub const TANSU_ENV: &str = "FLEETMON_TANSU";

/// A name unique to this test run: `PREFIX-<16 hex digits>`.
pub fn unique_name(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// A free TCP port on 127.0.0.1 (free when this returns; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}
