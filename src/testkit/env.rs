//! What the harness reads from the environment, and names and ports unique to a test.

use std::net::TcpListener;

use rand::RngCore;

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
