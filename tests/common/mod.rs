//! Helpers for the tests that run the real binaries as processes.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetmon::testkit::PgSchema;

/// The workspace binaries sit beside `fleetmon` (nextest builds every package's).
pub fn binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_fleetmon"))
        .parent()
        .unwrap()
        .to_owned();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} missing: build the workspace binaries first (cargo build --workspace --bins; scripts/test does)",
        path.display()
    );
    path
}

/// Child processes by name, killed (and reaped) when the test ends, however it ends.
/// Each writes stdout and stderr to `NAME.log` in the log directory, appending, so a
/// restarted process keeps its earlier lines.
#[derive(Default)]
pub struct Processes(Vec<(String, Child, PathBuf)>);

impl Processes {
    pub fn spawn(&mut self, name: &str, logs: &Path, command: &mut Command) -> u32 {
        assert!(
            self.0.iter().all(|(n, ..)| n != name),
            "{name} is already running"
        );
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id();
        self.0.push((name.to_owned(), child, log));
        pid
    }

    pub fn wait_port(&mut self, name: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let (_, child, log) = self.0.iter_mut().find(|(n, ..)| n == name).unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} not listening on {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, name: &str, signal: libc::c_int) {
        let (_, child, _) = self
            .0
            .iter()
            .find(|(n, ..)| n == name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill {name} with {signal}");
    }

    /// Stops the process with SIGTERM and waits for it (a graceful stop).
    pub fn stop(&mut self, name: &str) {
        self.end(name, libc::SIGTERM);
    }

    /// Kills the process with SIGKILL and reaps it (a crash).
    pub fn kill(&mut self, name: &str) {
        self.end(name, libc::SIGKILL);
    }

    fn end(&mut self, name: &str, signal: libc::c_int) {
        if let Some(at) = self.0.iter().position(|(n, ..)| n == name) {
            let (_, mut child, _) = self.0.remove(at);
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    /// The log file of `name` (also after it ended).
    pub fn log(logs: &Path, name: &str) -> PathBuf {
        logs.join(format!("{name}.log"))
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `sql` until `ok` holds of its value (90 s at most).
pub async fn eventually(schema: &PgSchema, sql: &str, what: &str, ok: impl Fn(i64) -> bool) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let value = schema.scalar(sql).await;
        if ok(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `{sql}` is still {value} after 90 s (schema {})",
            schema.name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
