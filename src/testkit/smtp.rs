//! A real SMTP server for the tests of the `email` channel: `aiosmtpd` from PyPI
//! (installed by `scripts/test`), storing what it receives in a Maildir.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `aiosmtpd` on 127.0.0.1 offering (and requiring) STARTTLS with the
/// certificate it was given; stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts one with the server certificate `cert` and its `key` (PEM), and waits
    /// until it accepts connections (panics after 30 s).
    pub async fn start_tls(cert: &Path, key: &Path) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = super::late_port();
        let maildir = dir.path().join("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .arg("--tlscert")
            .arg(cert)
            .arg("--tlskey")
            .arg(key)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("log")).expect("the log file"),
            ))
            .spawn()
            .expect("start aiosmtpd (scripts/test installs it: pip install aiosmtpd)");
        let mut server = SmtpServer { port, child, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            let exited = server.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && tokio::time::Instant::now() < deadline,
                "aiosmtpd not listening on port {port} within 30 s: {}",
                std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received, whole (headers and body), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let maildir = self.dir.path().join("maildir");
        let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
            .flatten()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                Some((entry.metadata().ok()?.modified().ok()?, entry.path()))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .collect()
    }

    /// Waits until at least `count` messages arrived (panics after 60 s); returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} messages within 60 s; aiosmtpd said: {}",
                messages.len(),
                std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
