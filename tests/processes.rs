//! The busiest processes with the real binaries: a process burning a core and one
//! holding 200 MB on this machine are listed in the agent's stored samples
//! (`host_processes`), with figures that agree with what /proc says of them.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fleetmon::testkit::{CentralRig, Processes, eventually};

/// `/proc/PID/stat`'s user plus system time, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .collect();
    Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?)
}

/// `VmRSS` of `/proc/PID/status`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Whether `a` is within `share` of `b`.
fn agrees(a: f64, b: f64, share: f64) -> bool {
    (a - b).abs() <= share * b.abs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_burner_and_a_memory_holder_are_listed_with_the_figures_of_proc() {
    let mut rig = CentralRig::start("").await;
    let mut load = Processes::default();
    let burner = load.spawn(
        "burner",
        rig.logs.path(),
        Command::new("python3").args(["-c", "while True: pass"]),
    );
    let holder = load.spawn(
        "holder",
        rig.logs.path(),
        Command::new("python3").args([
            "-c",
            "import sys, time\nheld = b'x' * (200 << 20)\nprint('held', flush=True)\ntime.sleep(600)",
        ]),
    );
    let log = Processes::log(rig.logs.path(), "holder");
    let start = Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|text| text.contains("held")) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the holder never held its 200 MB"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held_since = SystemTime::now();

    // The burner's CPU time as /proc counts it, every 20 ms, to compare with the
    // agent's figure over the same interval.
    let readings: Arc<Mutex<Vec<(SystemTime, u64)>>> = Arc::default();
    let recorder = {
        let readings = readings.clone();
        std::thread::spawn(move || {
            while let Some(ticks) = cpu_ticks(burner) {
                readings.lock().unwrap().push((SystemTime::now(), ticks));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    rig.agent("proc-a1", "");
    // Samples taken after the holder held its memory, with a sample before them (the
    // interval of a CPU figure starts at the previous sample).
    let held_since_micros = held_since
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    eventually(
        &rig.schema,
        &format!(
            "SELECT count(*) FROM host_processes p JOIN host_samples prev
               ON prev.agent_id = p.agent_id AND prev.stream_id = p.stream_id AND prev.seq = p.seq - 1
             WHERE p.pid = {burner} AND p.cpu_rank IS NOT NULL
               AND prev.ts > to_timestamp({held_since_micros} / 1e6)"
        ),
        "the burner is listed by CPU in two samples after the holder held its memory",
        |n| n >= 2,
    )
    .await;

    let client = rig.schema.connect().await;
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let rows = client
        .query(
            "SELECT extract(epoch FROM prev.ts)::float8 AS since, extract(epoch FROM p.ts)::float8 AS until,
                    p.cpu_usage_percent, p.cpu_rank, p.name, p.seq, p.stream_id
               FROM host_processes p JOIN host_samples prev
                 ON prev.agent_id = p.agent_id AND prev.stream_id = p.stream_id AND prev.seq = p.seq - 1
              WHERE p.pid = $1 AND p.cpu_rank IS NOT NULL AND prev.ts > to_timestamp($2::float8 / 1e6)
              ORDER BY p.seq",
            &[&i64::from(burner), &(held_since_micros as f64)],
        )
        .await
        .unwrap();
    let readings = readings.lock().unwrap().clone();
    let at = |unix: f64| -> (f64, u64) {
        let (when, ticks) = readings
            .iter()
            .min_by(|a, b| {
                let gap = |r: &(SystemTime, u64)| {
                    (r.0.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64()
                        - unix)
                        .abs()
                };
                gap(a).total_cmp(&gap(b))
            })
            .copied()
            .unwrap();
        (
            when.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64(),
            ticks,
        )
    };
    let mut compared = Vec::new();
    for row in &rows {
        let (since, until): (f64, f64) = (row.get("since"), row.get("until"));
        let stored: f64 = row.get("cpu_usage_percent");
        let name: String = row.get("name");
        assert_eq!(name, "python3");
        let ((t0, ticks0), (t1, ticks1)) = (at(since), at(until));
        let measured = (ticks1 - ticks0) as f64 / ticks_per_second / (t1 - t0) * 100.0;
        compared.push((stored, measured));
    }
    assert!(
        compared
            .iter()
            .any(|&(stored, measured)| agrees(stored, measured, 0.10)),
        "the burner's CPU as stored agrees with /proc within 10 % in no sample: (stored, /proc) {compared:?}"
    );

    // The holder: listed by memory, its resident set as /proc says within 10 %.
    let held = resident_bytes(holder);
    assert!(held >= 200 << 20, "the holder holds {held} bytes");
    let row = client
        .query_one(
            "SELECT resident_bytes, memory_rank, username, command_line, threads,
                    extract(epoch FROM started_at)::float8 AS started
               FROM host_processes
              WHERE pid = $1 AND memory_rank IS NOT NULL AND ts > to_timestamp($2::float8 / 1e6)
              ORDER BY ts DESC LIMIT 1",
            &[&i64::from(holder), &(held_since_micros as f64)],
        )
        .await
        .expect("the holder is listed by memory");
    let stored: i64 = row.get("resident_bytes");
    assert!(
        agrees(stored as f64, held as f64, 0.10),
        "stored {stored} bytes, /proc says {held}"
    );
    let user = Command::new("id").arg("-un").output().unwrap().stdout;
    let user = String::from_utf8(user).unwrap().trim().to_owned();
    assert_eq!(row.get::<_, String>("username"), user);
    assert!(
        row.get::<_, String>("command_line")
            .contains("python3 -c import sys, time\nheld = b'x' * (200 << 20)"),
        "{}",
        row.get::<_, String>("command_line")
    );
    assert_eq!(row.get::<_, i64>("threads"), 1);
    let started: f64 = row.get("started");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now).contains(&started),
        "started {started}, now {now}"
    );

    // Ranks follow the figures within each stored sample: a process ranked above
    // another uses at least as much.
    let out_of_order = rig
        .schema
        .scalar(
            "SELECT count(*) FROM host_processes a JOIN host_processes b
               ON (a.agent_id, a.stream_id, a.seq) = (b.agent_id, b.stream_id, b.seq)
              WHERE (a.cpu_rank < b.cpu_rank AND a.cpu_usage_percent < b.cpu_usage_percent)
                 OR (a.memory_rank < b.memory_rank AND a.resident_bytes < b.resident_bytes)",
        )
        .await;
    assert_eq!(out_of_order, 0);
    // Ten by CPU and ten by memory, each process once: at most twenty per sample.
    let widest = rig
        .schema
        .scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM host_processes GROUP BY stream_id, seq) s")
        .await;
    assert!(
        (10..=20).contains(&widest),
        "{widest} processes in a sample"
    );

    load.kill("burner");
    load.kill("holder");
    recorder.join().unwrap();
    rig.procs.stop("proc-a1");
}
