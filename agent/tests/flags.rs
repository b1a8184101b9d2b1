//! Flags apply before the one validation: a flag fixes a bad value in the file, and
//! a bad value left in place is refused naming its field.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_flag_fixes_a_bad_file_value_and_an_unfixed_one_names_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "host_interval_seconds = 0\n").unwrap();
    let agent = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetmon-agent"));
        command
            .arg("--config")
            .arg(&path)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("FLEETMON_AGENT_INTERVAL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let refused = agent().output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("invalid config: `host_interval_seconds` must be at least 1"),
        "{stderr}"
    );

    // With --interval the file's 0 never reaches validation: the agent gets past it
    // (it then runs, or stops at what comes next: no certificate in this directory).
    let mut fixed = agent().args(["--interval", "5"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fixed.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = fixed.kill();
    let output = fixed.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("host_interval_seconds"), "{stderr}");
}
