//! Debian's Prometheus Alertmanager (`prometheus-alertmanager`, installed by
//! `scripts/test`) on a free port, for the tests of the `alertmanager` channel.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `FLEETMON_ALERTMANAGER`: the Alertmanager binary (default Debian's).
pub const ALERTMANAGER_ENV: &str = "FLEETMON_ALERTMANAGER";

/// A running Alertmanager on 127.0.0.1 that routes every alert to a receiver that
/// sends nothing; stopped when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts one and waits until it is ready (panics after 30 s).
    pub async fn start() -> Self {
        let binary = std::env::var(ALERTMANAGER_ENV)
            .unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".to_owned());
        assert!(
            std::path::Path::new(&binary).is_file(),
            "{binary} is missing: scripts/test installs Debian's prometheus-alertmanager (or set {ALERTMANAGER_ENV})"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .expect("write the Alertmanager config");
        let port = super::free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("log")).expect("the log file"),
            ))
            .spawn()
            .expect("start Alertmanager");
        let alertmanager = Alertmanager {
            port,
            child,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while get(port, "/-/ready")
            .await
            .is_none_or(|(status, _)| status != 200)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Alertmanager not ready on port {port} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        alertmanager
    }

    /// Its base address, the channel's `url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `GET /api/v2/alerts` answers: its active alerts.
    pub async fn alerts(&self) -> serde_json::Value {
        let (status, body) = get(self.port, "/api/v2/alerts")
            .await
            .expect("Alertmanager answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("a JSON list")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET of `path` on 127.0.0.1:`port`: (status, body), or `None` when
/// nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
