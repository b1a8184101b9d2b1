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
//! (grpcurl, health), `metrics`, `webhook`, `alertmanager`, `smtp`, `bench`, `process` (signals, the workspace binaries as child processes) and `rig` (a collector and a writer as processes); `env` holds the variables it reads, [`unique_name`] and [`free_port`].

mod alertmanager;
mod bench;
mod daemon;
mod env;
mod grpc;
mod kafka;
mod metrics;
mod pki;
mod postgres;
mod process;
mod prometheus;
mod rig;
mod smtp;
mod tls;
mod webhook;

pub use alertmanager::{ALERTMANAGER_ENV, Alertmanager};
pub use bench::{Runs, bench_repeats};
pub use env::{KAFKA_ENV, PG_ENV, TANSU_ENV, forward_to, free_port, late_port, unique_name};
pub use grpc::{
    ServingStatus, grpcurl_as, grpcurl_binary, grpcurl_operator, wait_for_health, wait_serving,
};
pub use kafka::{
    KafkaCluster, TansuBroker, create_topic, kafka_bootstrap, read_all, read_topic, tansu_binary,
};
pub use metrics::{metric_value, metrics_text, wait_for_metric};
pub use pki::TestPki;
pub use postgres::{PgCluster, PgSchema, eventually, pg_checkpoint, pg_url, texts};
pub use process::{Processes, binary, fleetmon_against};
pub use prometheus::{PROMETHEUS_ENV, Prometheus};
pub use rig::{CentralRig, RigOptions, switchable_site, writer_command};
pub use smtp::SmtpServer;
pub use tls::{handshake_refusal, server_certificate, tls_alert, tls_connector};
pub use webhook::{WebhookReceiver, WebhookRequest};
