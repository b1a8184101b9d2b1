//! Debian's Prometheus Alertmanager (`prometheus-alertmanager`, installed by
//! `scripts/test`) on a free port, for the tests of the `alertmanager` channel.

use super::daemon::Daemon;

/// `FLEETMON_ALERTMANAGER`: the Alertmanager binary (default Debian's).
pub const ALERTMANAGER_ENV: &str = "FLEETMON_ALERTMANAGER";

/// A running Alertmanager on 127.0.0.1 that routes every alert to a receiver that
/// sends nothing; stopped when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    daemon: Daemon,
}

impl Alertmanager {
    /// Starts one and waits until it is ready (panics after 60 s).
    pub async fn start() -> Self {
        let daemon = Daemon::start(
            "prometheus-alertmanager",
            "/usr/bin/prometheus-alertmanager",
            ALERTMANAGER_ENV,
            |dir, port| {
                let config = dir.join("alertmanager.yml");
                std::fs::write(
                    &config,
                    "route:\n  receiver: none\nreceivers:\n  - name: none\n",
                )
                .expect("write the Alertmanager config");
                vec![
                    format!("--config.file={}", config.display()),
                    format!("--storage.path={}", dir.join("data").display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    "--cluster.listen-address=".to_owned(),
                ]
            },
        )
        .await;
        Alertmanager { daemon }
    }

    /// Its base address, the channel's `url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port)
    }

    /// What `GET /api/v2/alerts` answers: its active alerts.
    pub async fn alerts(&self) -> serde_json::Value {
        let (status, body) = self.daemon.get("/api/v2/alerts").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("a JSON list")
    }
}
