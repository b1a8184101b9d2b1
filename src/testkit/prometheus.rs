//! Debian's Prometheus (`prometheus`, installed by `scripts/test`) on a free port,
//! scraping what a test serves, for the tests of the writer's `/metrics/fleet`.

use std::time::Duration;

use super::daemon::Daemon;

/// `FLEETMON_PROMETHEUS`: the Prometheus binary (default Debian's).
pub const PROMETHEUS_ENV: &str = "FLEETMON_PROMETHEUS";

/// A running Prometheus on 127.0.0.1 scraping one target every second; stopped when
/// dropped.
#[derive(Debug)]
pub struct Prometheus {
    daemon: Daemon,
}

impl Prometheus {
    /// Starts one scraping `http://{target}{path}` every second, and waits until it is
    /// ready (panics after 60 s).
    pub async fn scraping(target: std::net::SocketAddr, path: &str) -> Self {
        let daemon = Daemon::start("prometheus", "/usr/bin/prometheus", PROMETHEUS_ENV, |dir, port| {
            let config = dir.join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: fleetmon\n    metrics_path: {path}\n    static_configs:\n      - targets: [\"{target}\"]\n"
                ),
            )
            .expect("write the Prometheus config");
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
        .await;
        Prometheus { daemon }
    }

    /// The instant vector `expr` evaluates to now: `data.result` of `/api/v1/query`.
    pub async fn query(&self, expr: &str) -> serde_json::Value {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let (status, body) = self.daemon.get(&format!("/api/v1/query?{query}")).await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        answer["data"]["result"].clone()
    }

    /// Waits until `expr` has a result (panics after 60 s), and returns its first
    /// series' value.
    pub async fn wait_for(&self, expr: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let result = self.query(expr).await;
            if let Some(value) = result[0]["value"][1].as_str() {
                return value.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus has no {expr} after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
