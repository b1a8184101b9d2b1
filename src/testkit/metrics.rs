//! Reading a Prometheus endpoint.

use std::net::{SocketAddr, TcpStream};

/// The text a Prometheus endpoint at `addr` serves on `GET /metrics`.
pub fn metrics_text(addr: SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The value of `metric` (its name, with labels if it has any) on the Prometheus
/// endpoint at `addr`; `None` when the endpoint does not show it.
pub fn metric_value(addr: SocketAddr, metric: &str) -> Option<f64> {
    metrics_text(addr).lines().find_map(|line| {
        line.strip_prefix(metric)
            .filter(|rest| rest.starts_with(' '))?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until `metric` on the endpoint at `addr` is at least `at_least` (a metric not
/// shown yet counts as 0), or panics after 60 s with its last value. Returns the value.
pub async fn wait_for_metric(addr: SocketAddr, metric: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let value = metric_value(addr, metric).unwrap_or(0.0);
        if value >= at_least {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{metric} on {addr} is {value}, expected at least {at_least} within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
