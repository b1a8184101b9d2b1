//! Signals and process states of the services a test started, and the workspace
//! binaries run as processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(super) fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: plain kill(2) on a process this test started.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// Every thread of `pid` is in state `T` (stopped), per /proc.
pub(super) fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // `pid (comm) S …`: the state follows the last `)`.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            })
            .is_some_and(|state| state == 'T' || state == 't')
    })
}

/// The path of workspace binary `name`: in the target directory of the test running
/// (a test executable sits in `deps/` beside it), so build the binaries first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let mut dir = exe.parent().expect("a directory").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} missing: build the workspace binaries first (cargo build --workspace --bins; scripts/test does)",
        path.display()
    );
    path
}

/// `fleetmon ARGS --writer WRITER --certs CERTS` run to its end: whether it
/// succeeded, its stdout and its stderr.
pub fn fleetmon_against(args: &[&str], writer: &str, certs: &Path) -> (bool, String, String) {
    let out = Command::new(binary("fleetmon"))
        .args(args)
        .args(["--writer", writer, "--certs"])
        .arg(certs)
        .output()
        .expect("fleetmon runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Child processes by name, killed (and reaped) when the test ends, however it ends.
/// Each writes stdout and stderr to `NAME.log` in the log directory, appending, so a
/// restarted process keeps its earlier lines.
#[derive(Default)]
pub struct Processes(Vec<(String, Child, PathBuf)>);

impl Processes {
    /// Starts `command` as `name`, its output appended to `NAME.log` in `logs`; its pid.
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

    /// Waits (60 s at most) until `name` listens on `port`; panics with its log if it
    /// exited first.
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

    /// The process id of `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.0
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, child, _)| child.id())
            .unwrap_or_else(|| panic!("{name} is not running"))
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
