//! Host checks, run on a blocking thread: processes from `/proc`, a systemd unit with
//! `systemctl show` (no shell, the unit name checked by `fleetmon::checks::host`), a
//! file's metadata, a filesystem's `statvfs`. Each outcome is a `SiteCheck`: the matched
//! text says what was found, the error what was wrong and what was expected.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use fleetmon::checks::Site;
use fleetmon::checks::host::HostProbe;
use fleetmon::pb::{CheckFailure, SiteCheck};

use crate::check_result::{millis, settle, skeleton};

type Outcome = Result<String, (CheckFailure, String)>;

/// Runs `probe` for `site`, within its timeout.
pub(crate) async fn check(site: &Site, probe: &HostProbe) -> SiteCheck {
    let started = Instant::now();
    let mut check = skeleton(site);
    let outcome = match probe {
        HostProbe::Systemd { unit } => systemd(unit, site.timeout).await,
        other => {
            let probe = other.clone();
            match tokio::task::spawn_blocking(move || blocking(&probe)).await {
                Ok(outcome) => outcome,
                Err(error) => Err((
                    CheckFailure::Other,
                    format!("the check's thread failed: {error}"),
                )),
            }
        }
    };
    check.response_time_ms = millis(started.elapsed());
    let failure = match outcome {
        Ok(found) => {
            check.matched_text = found;
            None
        }
        Err(failure) => Some(failure),
    };
    settle(&mut check, failure);
    check
}

fn blocking(probe: &HostProbe) -> Outcome {
    match probe {
        HostProbe::Process {
            name,
            command,
            user,
            min,
            max,
        } => processes(
            name.as_deref(),
            command.as_ref(),
            user.as_deref(),
            *min,
            *max,
        ),
        HostProbe::File {
            path,
            max_age,
            min_size,
            max_size,
        } => file(path, *max_age, *min_size, *max_size),
        HostProbe::Disk {
            mount_point,
            max_used_percent,
            max_inodes_used_percent,
        } => disk(mount_point, *max_used_percent, *max_inodes_used_percent),
        HostProbe::Systemd { .. } => unreachable!("systemd runs async"),
    }
}

/// The uid `user` names: a number, or a name in `/etc/passwd`.
fn uid_of(user: &str) -> Result<u32, (CheckFailure, String)> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                (fields.next() == Some(user))
                    .then(|| fields.nth(1)?.parse().ok())
                    .flatten()
            })
        })
        .ok_or_else(|| {
            (
                CheckFailure::Other,
                format!("no user `{user}` on this host"),
            )
        })
}

fn processes(
    name: Option<&str>,
    command: Option<&fleetmon::checks::pattern::Pattern>,
    user: Option<&str>,
    min: u32,
    max: Option<u32>,
) -> Outcome {
    let uid = user.map(uid_of).transpose()?;
    let entries = std::fs::read_dir("/proc")
        .map_err(|e| (CheckFailure::Other, format!("cannot read /proc: {e}")))?;
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let dir = entry.path();
        // A process may end while it is read: what cannot be read does not count.
        let matches_name = match name {
            Some(name) => std::fs::read_to_string(dir.join("comm"))
                .is_ok_and(|comm| comm.trim_end_matches('\n') == name),
            None => true,
        };
        let matches_command = match command {
            Some(pattern) => std::fs::read(dir.join("cmdline")).is_ok_and(|raw| {
                let line = String::from_utf8_lossy(&raw)
                    .trim_end_matches('\0')
                    .replace('\0', " ");
                !line.is_empty() && pattern.find(&line).is_some()
            }),
            None => true,
        };
        let matches_user = match uid {
            Some(uid) => std::fs::read_to_string(dir.join("status")).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().next())
                    .and_then(|real| real.parse::<u32>().ok())
                    == Some(uid)
            }),
            None => true,
        };
        if matches_name && matches_command && matches_user {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    let count = u32::try_from(pids.len()).unwrap_or(u32::MAX);
    let what = match (name, command) {
        (Some(name), _) => format!("named {name}"),
        (None, Some(pattern)) => format!("whose command line matches `{}`", pattern.as_str()),
        (None, None) => "at all".to_owned(),
    };
    let of_user = user.map(|u| format!(" of user {u}")).unwrap_or_default();
    let shown: Vec<String> = pids.iter().take(10).map(u32::to_string).collect();
    let found = format!(
        "{count} process{} {what}{of_user}{}",
        if count == 1 { "" } else { "es" },
        if shown.is_empty() {
            String::new()
        } else {
            format!(
                " (pid {}{})",
                shown.join(", "),
                if pids.len() > 10 { ", …" } else { "" }
            )
        }
    );
    if count < min {
        return Err((
            CheckFailure::Other,
            format!("{found} run: at least {min} must"),
        ));
    }
    if let Some(max) = max.filter(|max| count > *max) {
        return Err((
            CheckFailure::Other,
            format!("{found} run: at most {max} may"),
        ));
    }
    Ok(found)
}

fn file(path: &Path, max_age: Option<Duration>, min_size: u64, max_size: Option<u64>) -> Outcome {
    let metadata = std::fs::metadata(path).map_err(|e| {
        (
            CheckFailure::Other,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let age = metadata
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    let size = metadata.len();
    let found = format!("{size} bytes, modified {} s ago", age.as_secs());
    if let Some(max_age) = max_age.filter(|max| age > *max) {
        return Err((
            CheckFailure::Other,
            format!(
                "{} was modified {} s ago: at most {} s may have passed",
                path.display(),
                age.as_secs(),
                max_age.as_secs()
            ),
        ));
    }
    if size < min_size || max_size.is_some_and(|max| size > max) {
        let range = match max_size {
            Some(max) => format!("from {min_size} to {max} bytes"),
            None => format!("at least {min_size} bytes"),
        };
        return Err((
            CheckFailure::Other,
            format!("{} is {size} bytes: it must be {range}", path.display()),
        ));
    }
    Ok(found)
}

fn disk(
    mount_point: &Path,
    max_used_percent: Option<f64>,
    max_inodes_used_percent: Option<f64>,
) -> Outcome {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(mount_point.as_os_str().as_bytes())
        .map_err(|_| (CheckFailure::Other, "the path holds a NUL byte".to_owned()))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed statvfs for the call to fill.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err((
            CheckFailure::Other,
            format!(
                "cannot read the filesystem of {}: {}",
                mount_point.display(),
                std::io::Error::last_os_error()
            ),
        ));
    }
    // As df: used = total - free; percent of what users may have (used + available).
    let used = stat.f_blocks.saturating_sub(stat.f_bfree) as f64;
    let room = used + stat.f_bavail as f64;
    let used_percent = if room > 0.0 { used / room * 100.0 } else { 0.0 };
    let inodes_used = stat.f_files.saturating_sub(stat.f_ffree) as f64;
    let inodes_percent = if stat.f_files > 0 {
        inodes_used / stat.f_files as f64 * 100.0
    } else {
        0.0
    };
    let found = format!("{used_percent:.1} % used, {inodes_percent:.1} % of inodes");
    if let Some(max) = max_used_percent.filter(|max| used_percent > *max) {
        return Err((
            CheckFailure::Other,
            format!(
                "{} is {used_percent:.1} % full: at most {max} % may be used",
                mount_point.display()
            ),
        ));
    }
    if let Some(max) = max_inodes_used_percent.filter(|max| inodes_percent > *max) {
        return Err((
            CheckFailure::Other,
            format!(
                "{} has {inodes_percent:.1} % of its inodes in use: at most {max} % may be",
                mount_point.display()
            ),
        ));
    }
    Ok(found)
}

/// Where systemd keeps its runtime state: present only while systemd runs the host.
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

async fn systemd(unit: &str, timeout: Duration) -> Outcome {
    if !Path::new(SYSTEMD_RUNNING).is_dir() {
        return Err((
            CheckFailure::Other,
            format!("systemd is not running on this host (no {SYSTEMD_RUNNING})"),
        ));
    }
    let run = tokio::process::Command::new("systemctl")
        .args(["show", "--property=LoadState,ActiveState,SubState", "--"])
        .arg(unit)
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err((
                CheckFailure::Timeout,
                format!("systemctl show {unit} did not answer within {timeout:?}"),
            ));
        }
        Ok(Err(error)) => {
            return Err((
                CheckFailure::Other,
                format!("cannot run systemctl: {error}"),
            ));
        }
        Ok(Ok(output)) => output,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let property = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    let (load, active, sub) = (
        property("LoadState"),
        property("ActiveState"),
        property("SubState"),
    );
    if load == "not-found" {
        return Err((CheckFailure::Other, format!("no unit {unit} on this host")));
    }
    let found = format!("{active} ({sub})");
    if active == "active" {
        Ok(found)
    } else {
        Err((
            CheckFailure::Other,
            format!("{unit} is {found}: it must be active"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_found_by_name_command_and_user_and_counted_against_its_bounds() {
        let mut child = std::process::Command::new("sleep")
            .arg("86398.5")
            .spawn()
            .expect("sleep");
        // Until the child has exec'd, /proc shows the test binary's command line.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"sleep\0")) {
            assert!(std::time::Instant::now() < deadline, "sleep never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let pattern = fleetmon::checks::pattern::Pattern::new(r"^sleep 86398\.5$").unwrap();
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
            .unwrap();
        let found = processes(None, Some(&pattern), Some(&uid), 1, Some(1)).unwrap();
        assert_eq!(
            found,
            format!(
                "1 process whose command line matches `^sleep 86398\\.5$` of user {uid} (pid {})",
                child.id()
            )
        );
        assert_eq!(
            processes(None, Some(&pattern), None, 2, None)
                .unwrap_err()
                .1,
            format!(
                "1 process whose command line matches `^sleep 86398\\.5$` (pid {}) run: at least 2 must",
                child.id()
            )
        );
        assert!(processes(Some("sleep"), None, None, 1, None).is_ok());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            processes(None, Some(&pattern), None, 1, None)
                .unwrap_err()
                .1,
            "0 processes whose command line matches `^sleep 86398\\.5$` run: at least 1 must"
        );
        assert_eq!(
            processes(Some("sleep"), None, Some("no-such-user-here"), 1, None)
                .unwrap_err()
                .1,
            "no user `no-such-user-here` on this host"
        );
    }
}
