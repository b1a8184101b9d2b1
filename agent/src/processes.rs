//! The host's busiest processes, as `top` shows them: one read of `/proc/PID/stat`
//! per process and sample (threads are never walked), and for the few processes
//! reported their command line and owner.
//!
//! CPU usage is the difference of a process's CPU time between two readings, so
//! [`ProcessTable::new`] takes the first reading and the first [`ProcessTable::top`]
//! reports usage since then. A process that started between two readings spent all
//! its CPU time within the interval.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant, SystemTime};

use fleetmon::pb::ProcessUsage;

/// The command line is cut to this many bytes (the proto's promise).
pub const COMMAND_LINE_BYTES: usize = 256;

/// The most processes an agent may report per list (`processes` in its config).
pub const MAX_TOP: usize = 100;

/// What `/proc/PID/stat` says of one process.
#[derive(Debug, Clone, PartialEq)]
struct Stat {
    name: String,
    /// User plus system time, in clock ticks.
    cpu_ticks: u64,
    threads: u32,
    /// Clock ticks after boot when the process started: with the pid, names it.
    start_ticks: u64,
    resident_pages: u64,
}

/// Parses one `/proc/PID/stat` line (proc(5)). The name is between the first `(` and
/// the last `)`, since a name may hold spaces and parentheses.
fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_owned();
    // Fields from the 3rd (state) on; proc(5) numbers them from 1.
    let fields: Vec<&str> = line.get(close + 1..)?.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        name,
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        threads: u32::try_from(field(20)?).unwrap_or(u32::MAX),
        start_ticks: field(22)?,
        // The 24th field is signed in the kernel's format; never negative in practice.
        resident_pages: fields.get(24 - 3)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// One process's reading: its stat and the CPU usage since the previous reading.
struct Reading {
    pid: u32,
    stat: Stat,
    cpu_percent: f64,
}

/// Reads the process table and remembers each process's CPU time for the next
/// reading.
#[derive(Debug)]
pub struct ProcessTable {
    /// How many processes each list holds.
    top: usize,
    /// pid → (start ticks, CPU ticks) at the previous reading.
    previous: HashMap<u32, (u64, u64)>,
    last_reading: Instant,
    ticks_per_second: f64,
    page_bytes: u64,
    /// When the host booted (from `/proc/stat`'s `btime`).
    boot_time: SystemTime,
    /// uid → user name, from `/etc/passwd`; read again when a uid is missing (one
    /// without a name is then named by its number).
    users: HashMap<u32, String>,
}

impl ProcessTable {
    /// Takes the first reading; `top` processes per list (at most [`MAX_TOP`]).
    pub fn new(top: usize) -> Self {
        // SAFETY: sysconf reads a constant of the system and has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut table = ProcessTable {
            top: top.min(MAX_TOP),
            previous: HashMap::new(),
            last_reading: Instant::now(),
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_bytes: if page > 0 { page as u64 } else { 4096 },
            boot_time: boot_time().unwrap_or(SystemTime::UNIX_EPOCH),
            users: HashMap::new(),
        };
        table.read();
        table
    }

    /// How many processes each list holds.
    pub fn per_list(&self) -> usize {
        self.top
    }

    /// Every process now, with its CPU usage since the previous reading.
    fn read(&mut self) -> Vec<Reading> {
        let elapsed = self.last_reading.elapsed().as_secs_f64().max(1e-3);
        self.last_reading = Instant::now();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut readings = Vec::new();
        let mut current = HashMap::with_capacity(self.previous.len());
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process that ended since the directory was listed is skipped.
            let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|line| parse_stat(&line))
            else {
                continue;
            };
            let since = match self.previous.get(&pid) {
                Some(&(start, ticks)) if start == stat.start_ticks => {
                    stat.cpu_ticks.saturating_sub(ticks)
                }
                // New since the previous reading (or the pid was reused): all its
                // CPU time falls within the interval.
                _ => stat.cpu_ticks,
            };
            current.insert(pid, (stat.start_ticks, stat.cpu_ticks));
            let cpu_percent = since as f64 / self.ticks_per_second / elapsed * 100.0;
            readings.push(Reading {
                pid,
                stat,
                cpu_percent,
            });
        }
        self.previous = current;
        readings
    }

    /// How many processes run now (as `ps -e` counts them: this reading lists each
    /// numbered entry of `/proc` it could read), and the top by CPU and by resident
    /// memory, each once, busiest by CPU first.
    pub fn top(&mut self) -> (u32, Vec<ProcessUsage>) {
        let readings = self.read();
        let count = u32::try_from(readings.len()).unwrap_or(u32::MAX);
        let ranked = rank(&readings, self.top);
        let listed = ranked
            .into_iter()
            .map(|(index, cpu_rank, memory_rank)| {
                let reading = &readings[index];
                ProcessUsage {
                    pid: reading.pid,
                    name: reading.stat.name.clone(),
                    user: self.owner(reading.pid),
                    command_line: command_line(reading.pid),
                    cpu_usage_percent: reading.cpu_percent,
                    resident_bytes: reading.stat.resident_pages.saturating_mul(self.page_bytes),
                    threads: reading.stat.threads,
                    started_at: Some(prost_types::Timestamp::from(
                        self.boot_time
                            + Duration::from_secs_f64(
                                reading.stat.start_ticks as f64 / self.ticks_per_second,
                            ),
                    )),
                    cpu_rank,
                    memory_rank,
                }
            })
            .collect();
        (count, listed)
    }

    /// The name of the user owning `/proc/PID` (the process's effective uid), or the
    /// uid as text.
    fn owner(&mut self, pid: u32) -> String {
        let Ok(uid) = std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid()) else {
            return String::new();
        };
        if !self.users.contains_key(&uid) {
            self.users = users();
        }
        // A uid the host has no name for is named by its number, and remembered so,
        // so that /etc/passwd is not read again for it at every sample.
        self.users
            .entry(uid)
            .or_insert_with(|| uid.to_string())
            .clone()
    }
}

/// Indices of the top `n` readings by CPU and the top `n` by resident memory, each
/// once, with their 1-based ranks (0: not in that list); CPU's list first, then the
/// rest of memory's. Ties go to the lower pid.
fn rank(readings: &[Reading], n: usize) -> Vec<(usize, u32, u32)> {
    let mut by_cpu: Vec<usize> = (0..readings.len()).collect();
    by_cpu.sort_by(|&a, &b| {
        readings[b]
            .cpu_percent
            .total_cmp(&readings[a].cpu_percent)
            .then(readings[a].pid.cmp(&readings[b].pid))
    });
    let mut by_memory: Vec<usize> = (0..readings.len()).collect();
    by_memory.sort_by(|&a, &b| {
        readings[b]
            .stat
            .resident_pages
            .cmp(&readings[a].stat.resident_pages)
            .then(readings[a].pid.cmp(&readings[b].pid))
    });
    let mut ranked: Vec<(usize, u32, u32)> = Vec::with_capacity(2 * n);
    for (rank, &index) in by_cpu.iter().take(n).enumerate() {
        ranked.push((index, rank as u32 + 1, 0));
    }
    for (rank, &index) in by_memory.iter().take(n).enumerate() {
        match ranked.iter_mut().find(|(i, ..)| *i == index) {
            Some(entry) => entry.2 = rank as u32 + 1,
            None => ranked.push((index, 0, rank as u32 + 1)),
        }
    }
    ranked
}

/// `/proc/PID/cmdline`: the arguments joined by spaces, cut to
/// [`COMMAND_LINE_BYTES`] on a character boundary; empty for kernel threads.
fn command_line(pid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    let joined: Vec<u8> = raw
        .strip_suffix(b"\0")
        .unwrap_or(&raw)
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    let mut text = String::from_utf8_lossy(&joined).into_owned();
    if text.len() > COMMAND_LINE_BYTES {
        let mut end = COMMAND_LINE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// When the host booted: `btime` in `/proc/stat`.
fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let seconds: u64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// uid → user name, from `/etc/passwd`.
fn users() -> HashMap<u32, String> {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return HashMap::new();
    };
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_with_a_name_holding_spaces_and_parentheses() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                name: "my (odd) name".to_owned(),
                cpu_ticks: 300,
                threads: 7,
                start_ticks: 123_456,
                resident_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
    }

    fn reading(pid: u32, cpu_percent: f64, resident_pages: u64) -> Reading {
        Reading {
            pid,
            stat: Stat {
                name: format!("p{pid}"),
                cpu_ticks: 0,
                threads: 1,
                start_ticks: 0,
                resident_pages,
            },
            cpu_percent,
        }
    }

    #[test]
    fn the_top_by_cpu_and_by_memory_are_listed_once_each_with_both_ranks() {
        let readings = [
            reading(1, 0.0, 10),
            reading(2, 90.0, 5),
            reading(3, 50.0, 900),
            reading(4, 50.0, 1),
            reading(5, 0.0, 800),
        ];
        let ranked: Vec<(u32, u32, u32)> = rank(&readings, 2)
            .into_iter()
            .map(|(i, cpu, memory)| (readings[i].pid, cpu, memory))
            .collect();
        // pid 3 is second by CPU (tied with 4, lower pid first) and first by memory.
        assert_eq!(ranked, [(2, 1, 0), (3, 2, 1), (5, 0, 2)]);
        assert!(rank(&readings, 0).is_empty());
    }

    #[test]
    fn this_process_is_read_with_its_own_figures() {
        let mut table = ProcessTable::new(MAX_TOP);
        // Burn some CPU so that this process is among the busiest.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let (count, listed) = table.top();
        assert!(
            count as usize >= listed.len() && count > 1,
            "{count} processes"
        );
        let me = listed
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("the test process is among the top 100 by CPU");
        assert!(me.cpu_usage_percent > 10.0, "{me:?}");
        assert!(me.resident_bytes > 1 << 20, "{me:?}");
        assert!(me.threads >= 1);
        assert!(!me.command_line.is_empty());
        assert!(me.command_line.len() <= COMMAND_LINE_BYTES);
        assert!(!me.user.is_empty());
        let started = SystemTime::try_from(me.started_at.unwrap()).unwrap();
        let age = SystemTime::now().duration_since(started).unwrap();
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }
}
