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
