//! Host checks: central checks each selected agent runs about its own host, a process
//! running, a systemd unit active, a file fresh, a filesystem with room. Their results
//! are site-check rows like any other (thresholds, alerts, silences, maintenance), with
//! the agent as the location. Nothing central config names is executed but
//! `systemctl show` with a unit name checked here.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::error::DefinitionError;
use super::pattern::{Pattern, Patterns};
use crate::pb::{DiskCheck, FileCheck, ProcessCheck, SystemdCheck, check_definition};

/// Longest process name `/proc/PID/comm` holds.
pub const MAX_COMM_LEN: usize = 15;

/// What a host check looks at, checked and ready to run.
#[derive(Debug, Clone)]
pub enum HostProbe {
    /// Processes by name or command line, optionally of one user.
    Process {
        /// Their `comm` (what `ps -e` shows).
        name: Option<String>,
        /// A pattern their command line (arguments joined by spaces) matches.
        command: Option<Pattern>,
        /// Their user: a name, or a numeric uid.
        user: Option<String>,
        /// The fewest that pass.
        min: u32,
        /// The most that pass (`None`: no bound).
        max: Option<u32>,
    },
    /// A systemd unit is active.
    Systemd {
        /// Its name (`nginx.service`).
        unit: String,
    },
    /// A file exists, fresh enough, of a size in range.
    File {
        /// An absolute path.
        path: PathBuf,
        /// The oldest its modification may be.
        max_age: Option<Duration>,
        /// The smallest it may be.
        min_size: u64,
        /// The largest it may be (`None`: no bound).
        max_size: Option<u64>,
    },
    /// The filesystem holding a mount point has room.
    Disk {
        /// An absolute path.
        mount_point: PathBuf,
        /// The most space in use, percent.
        max_used_percent: Option<f64>,
        /// The most inodes in use, percent.
        max_inodes_used_percent: Option<f64>,
    },
}

/// The host check a definition's kind names, if it names one: its kind, target (as
/// results show it) and method.
pub fn kind_of(kind: &check_definition::Kind) -> Option<(&'static str, String, &'static str)> {
    Some(match kind {
        check_definition::Kind::Process(p) => {
            let target = if p.name.is_empty() {
                format!("process:~{}", p.command_regex)
            } else {
                format!("process:{}", p.name)
            };
            ("process", target, "PROCESS")
        }
        check_definition::Kind::Systemd(s) => ("systemd", format!("systemd:{}", s.unit), "SYSTEMD"),
        check_definition::Kind::File(f) => ("file", format!("file://{}", f.path), "FILE"),
        check_definition::Kind::Disk(d) => ("disk", format!("disk://{}", d.mount_point), "DISK"),
        _ => return None,
    })
}

/// The probe of a host check kind, or the field that is wrong and how to fix it.
pub fn probe(
    kind: &check_definition::Kind,
    patterns: &mut Patterns,
) -> Option<Result<HostProbe, DefinitionError>> {
    Some(match kind {
        check_definition::Kind::Process(p) => process(p, patterns),
        check_definition::Kind::Systemd(s) => systemd(s),
        check_definition::Kind::File(f) => file(f),
        check_definition::Kind::Disk(d) => disk(d),
        _ => return None,
    })
}

fn cut(text: &str) -> String {
    text.chars().take(80).collect()
}

fn process(check: &ProcessCheck, patterns: &mut Patterns) -> Result<HostProbe, DefinitionError> {
    let error = |field: &str, message: String| {
        Err(DefinitionError::new(
            &format!("check.process.{field}"),
            message,
        ))
    };
    let name = check.name.trim();
    let regex = check.command_regex.trim();
    if name.is_empty() == regex.is_empty() {
        return error(
            "name",
            "and command_regex: give one, the process name (as `ps -e` shows it) or a pattern of its command line".to_owned(),
        );
    }
    if name.len() > MAX_COMM_LEN || name.contains('/') || name.contains('\0') {
        return error(
            "name",
            format!(
                "`{}` cannot be a process name: the kernel keeps at most {MAX_COMM_LEN} characters and no `/` (use command_regex for longer ones)",
                cut(name)
            ),
        );
    }
    let command = if regex.is_empty() {
        None
    } else {
        Some(patterns.get(regex).map_err(|e| {
            DefinitionError::new(
                "check.process.command_regex",
                format!("is not a valid pattern: {e}"),
            )
        })?)
    };
    let user = check.user.trim();
    let user_ok = user.len() <= 32
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !user_ok {
        return error("user", format!("`{}` is not a user name or uid", cut(user)));
    }
    let min = check.min_instances.max(1);
    let max = (check.max_instances > 0).then_some(check.max_instances);
    if max.is_some_and(|max| max < min) {
        return error(
            "max_instances",
            format!(
                "is {}, below min_instances ({min}): no number of processes could pass",
                check.max_instances
            ),
        );
    }
    Ok(HostProbe::Process {
        name: (!name.is_empty()).then(|| name.to_owned()),
        command,
        user: (!user.is_empty()).then(|| user.to_owned()),
        min,
        max,
    })
}

/// The unit types `systemctl` knows.
const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "timer",
    "mount",
    "automount",
    "target",
    "path",
    "device",
    "swap",
    "scope",
    "slice",
];

fn systemd(check: &SystemdCheck) -> Result<HostProbe, DefinitionError> {
    let unit = check.unit.trim();
    let chars_ok = unit
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ":_.\\@-".contains(c));
    let typed = unit
        .rsplit_once('.')
        .is_some_and(|(stem, kind)| !stem.is_empty() && UNIT_TYPES.contains(&kind));
    if unit.len() > 256 || !chars_ok || !typed || unit.starts_with('-') {
        return Err(DefinitionError::new(
            "check.systemd.unit",
            format!(
                "`{}` is not a unit name: write NAME.TYPE, e.g. nginx.service or backup.timer (letters, digits, `:_.\\@-`)",
                cut(unit)
            ),
        ));
    }
    Ok(HostProbe::Systemd {
        unit: unit.to_owned(),
    })
}

/// `path` is absolute, with no `..`, and at most 4096 bytes: what it names is plain.
fn absolute(field: &str, path: &str, example: &str) -> Result<PathBuf, DefinitionError> {
    let plain = Path::new(path).is_absolute()
        && path.len() <= 4096
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| !matches!(c, Component::ParentDir));
    if !plain {
        return Err(DefinitionError::new(
            field,
            format!(
                "`{}` is not an absolute path without `..` (e.g. {example})",
                cut(path)
            ),
        ));
    }
    Ok(PathBuf::from(path))
}

fn file(check: &FileCheck) -> Result<HostProbe, DefinitionError> {
    let path = absolute("check.file.path", &check.path, "/var/backups/db.dump")?;
    let max_size = (check.max_size_bytes > 0).then_some(check.max_size_bytes);
    if max_size.is_some_and(|max| max < check.min_size_bytes) {
        return Err(DefinitionError::new(
            "check.file.max_size_bytes",
            format!(
                "is {}, below min_size_bytes ({}): no file could pass",
                check.max_size_bytes, check.min_size_bytes
            ),
        ));
    }
    Ok(HostProbe::File {
        path,
        max_age: (check.max_age_seconds > 0).then(|| Duration::from_secs(check.max_age_seconds)),
        min_size: check.min_size_bytes,
        max_size,
    })
}

fn disk(check: &DiskCheck) -> Result<HostProbe, DefinitionError> {
    let mount_point = absolute("check.disk.mount_point", &check.mount_point, "/var")?;
    let percent = |field: &str, value: f64| -> Result<Option<f64>, DefinitionError> {
        if value == 0.0 {
            return Ok(None);
        }
        if !(value > 0.0 && value <= 100.0) {
            return Err(DefinitionError::new(
                &format!("check.disk.{field}"),
                format!("is {value}: use a percentage above 0 and at most 100"),
            ));
        }
        Ok(Some(value))
    };
    let max_used_percent = percent("max_used_percent", check.max_used_percent)?;
    let max_inodes_used_percent =
        percent("max_inodes_used_percent", check.max_inodes_used_percent)?;
    if max_used_percent.is_none() && max_inodes_used_percent.is_none() {
        return Err(DefinitionError::new(
            "check.disk.max_used_percent",
            "and max_inodes_used_percent are both unset: give at least one (e.g. max_used_percent = 90)",
        ));
    }
    Ok(HostProbe::Disk {
        mount_point,
        max_used_percent,
        max_inodes_used_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: check_definition::Kind) -> String {
        probe(&kind, &mut Patterns::default())
            .unwrap()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_host_checks_name_the_field_and_the_fix() {
        use check_definition::Kind;
        assert_eq!(
            error(Kind::Process(ProcessCheck::default())),
            "`check.process.name` and command_regex: give one, the process name (as `ps -e` shows it) or a pattern of its command line"
        );
        assert_eq!(
            error(Kind::Process(ProcessCheck {
                name: "a-very-long-daemon-name".into(),
                ..Default::default()
            })),
            "`check.process.name` `a-very-long-daemon-name` cannot be a process name: the kernel keeps at most 15 characters and no `/` (use command_regex for longer ones)"
        );
        assert_eq!(
            error(Kind::Process(ProcessCheck {
                name: "nginx".into(),
                min_instances: 3,
                max_instances: 2,
                ..Default::default()
            })),
            "`check.process.max_instances` is 2, below min_instances (3): no number of processes could pass"
        );
        assert_eq!(
            error(Kind::Systemd(SystemdCheck {
                unit: "nginx; reboot".into()
            })),
            "`check.systemd.unit` `nginx; reboot` is not a unit name: write NAME.TYPE, e.g. nginx.service or backup.timer (letters, digits, `:_.\\@-`)"
        );
        assert_eq!(
            error(Kind::File(FileCheck {
                path: "/var/../etc/shadow".into(),
                ..Default::default()
            })),
            "`check.file.path` `/var/../etc/shadow` is not an absolute path without `..` (e.g. /var/backups/db.dump)"
        );
        assert_eq!(
            error(Kind::Disk(DiskCheck {
                mount_point: "/".into(),
                ..Default::default()
            })),
            "`check.disk.max_used_percent` and max_inodes_used_percent are both unset: give at least one (e.g. max_used_percent = 90)"
        );
        assert_eq!(
            error(Kind::Disk(DiskCheck {
                mount_point: "/".into(),
                max_used_percent: 120.0,
                ..Default::default()
            })),
            "`check.disk.max_used_percent` is 120: use a percentage above 0 and at most 100"
        );
    }

    #[test]
    fn targets_say_what_is_checked() {
        use check_definition::Kind;
        let target = |kind: Kind| kind_of(&kind).unwrap().1;
        assert_eq!(
            target(Kind::Process(ProcessCheck {
                name: "nginx".into(),
                ..Default::default()
            })),
            "process:nginx"
        );
        assert_eq!(
            target(Kind::Systemd(SystemdCheck {
                unit: "nginx.service".into()
            })),
            "systemd:nginx.service"
        );
        assert_eq!(
            target(Kind::File(FileCheck {
                path: "/var/backups/db.dump".into(),
                ..Default::default()
            })),
            "file:///var/backups/db.dump"
        );
        assert_eq!(
            target(Kind::Disk(DiskCheck {
                mount_point: "/".into(),
                ..Default::default()
            })),
            "disk:///"
        );
    }
}
