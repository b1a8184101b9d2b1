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

/// A free TCP port on 127.0.0.1 for a process that binds it long after this returns
/// (the quickstart binds its site and servers only after Kafka started, 20 s on). It is
/// below the kernel's ephemeral range, so no `bind(0)` elsewhere (another test's
/// server) can be handed it meanwhile, as happens to a [`free_port`]. Each test process
/// draws from a block of ports of its own, chosen by its process id. Where the
/// ephemeral range starts too low for that, it is a [`free_port`].
pub fn late_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const BLOCK: u32 = 11;
    const BLOCKS: u32 = 2_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    if ephemeral_from < FIRST + BLOCK * BLOCKS {
        return free_port();
    }
    let base = (std::process::id() % BLOCKS) * BLOCK;
    for _ in 0..BLOCK * BLOCKS {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (base + n) % (BLOCK * BLOCKS);
        let port = u16::try_from(port).expect("below 32 000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port on 127.0.0.1 from {FIRST} to {}",
        FIRST + BLOCK * BLOCKS
    )
}

/// From now on, every connection `listener` accepts is forwarded to `real`, byte for
/// byte: a server that "comes up" behind a port that until then only hung up (a
/// writer or collector started before its PostgreSQL or Kafka).
pub fn forward_to(listener: tokio::net::TcpListener, real: String) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let real = real.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&real).await {
                    // Either side closing ends the copy; how it ended is no concern
                    // of the test, which checks what the server does.
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_ports_are_free_distinct_and_below_the_ephemeral_range() {
        let (a, b) = (late_port(), late_port());
        assert_ne!(a, b);
        for port in [a, b] {
            assert!((10_000..32_000).contains(&port), "{port}");
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
