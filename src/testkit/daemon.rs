//! A server binary from Debian (Alertmanager, Prometheus) run by a test on a free port
//! of 127.0.0.1, in a directory of its own, stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running daemon.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Runs `binary` (or the one `env` names) with `args(dir, port)`, its output in
    /// `dir/log`, and waits until `GET /-/ready` answers 200 (panics after 60 s).
    pub(crate) async fn start(
        name: &str,
        binary: &str,
        env: &str,
        args: impl FnOnce(&Path, u16) -> Vec<String>,
    ) -> Daemon {
        let binary = std::env::var(env).unwrap_or_else(|_| binary.to_owned());
        assert!(
            Path::new(&binary).is_file(),
            "{binary} is missing: scripts/test installs Debian's {name} (or set {env})"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = super::late_port();
        let child = Command::new(&binary)
            .args(args(dir.path(), port))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("log")).expect("the log file"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let daemon = Daemon { port, child, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while get(port, "/-/ready")
            .await
            .is_none_or(|(status, _)| status != 200)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not ready on port {port} within 60 s: {}",
                std::fs::read_to_string(daemon.dir.path().join("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        daemon
    }

    /// `GET path` on it: (status, body).
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        get(self.port, path).await.expect("the daemon answers")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Killing a child that exited already fails harmlessly; either way it is gone.
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
