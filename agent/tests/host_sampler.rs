//! The host sampler on this machine returns plausible values.

use fleetmon_agent::host_sampler::HostSampler;

#[test]
fn samples_of_this_machine_are_plausible() {
    let mut sampler = HostSampler::new(None).unwrap();
    std::thread::sleep(
        sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(std::time::Duration::from_millis(300)),
    );
    let sample = sampler.sample();
    assert!(sample.memory_total_bytes > 0);
    assert!(sample.memory_used_bytes <= sample.memory_total_bytes);
    assert!(sample.memory_available_bytes <= sample.memory_total_bytes);
    assert!(
        (0.0..=100.0).contains(&sample.cpu_usage_percent),
        "{}",
        sample.cpu_usage_percent
    );
    assert!(!sample.cpu_core_usage_percent.is_empty());
    assert!(
        sample
            .cpu_core_usage_percent
            .iter()
            .all(|c| (0.0..=100.0).contains(c))
    );
    assert!(!sample.disks.is_empty(), "at least one mount");
    assert!(
        sample
            .disks
            .iter()
            .all(|d| d.file_system != "tmpfs" && d.file_system != "proc")
    );
    assert!(sample.disk_total_bytes > 0 && sample.disk_used_bytes <= sample.disk_total_bytes);
    assert!(!sample.interfaces.is_empty(), "at least one interface");
    assert!(sample.process_count > 1);
    assert!(sample.uptime_seconds > 0);
    assert!(!sample.hostname.is_empty() && !sample.kernel_version.is_empty());
    // The kernel's own figure, read just after: the 1-minute load moves slowly.
    let kernel: f64 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (sample.load_average_1m - kernel).abs() < 0.5,
        "load {} against /proc/loadavg {kernel}",
        sample.load_average_1m
    );
    assert!(sample.sampled_at.is_some());
    let named = HostSampler::new(Some("web-42".into())).unwrap();
    assert_eq!(named.hostname(), "web-42");
}

/// The process count is what `ps -e` counts: 50 extra threads of this test change it
/// by nothing (a thread is not a process).
#[test]
fn the_process_count_agrees_with_ps_and_leaves_threads_out() {
    let release = std::sync::Arc::new(std::sync::Barrier::new(51));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let release = release.clone();
            std::thread::spawn(move || release.wait())
        })
        .collect();
    let mut sampler = HostSampler::new(None).unwrap();
    std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    let counted = i64::from(sampler.sample().process_count);
    let ps = std::process::Command::new("ps")
        .args(["-e", "--no-headers", "-o", "pid"])
        .output()
        .expect("ps runs");
    // ps itself is one more process; others may start or end between the readings.
    let listed = String::from_utf8_lossy(&ps.stdout).lines().count() as i64 - 1;
    release.wait();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        (counted - listed).abs() <= 10,
        "the sampler counted {counted} processes, ps -e lists {listed}"
    );
}

/// Each disk's size, used and available agree with `df -B1`: used is size − free, so
/// blocks reserved for root count as neither (a "disk above 90 %" alert must not fire
/// on an almost empty disk with a large reserve).
#[test]
fn disk_figures_agree_with_df() {
    let mut sampler = HostSampler::new(None).unwrap();
    let sample = sampler.sample();
    assert!(!sample.disks.is_empty(), "at least one mount");
    for disk in &sample.disks {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=size,used,avail"])
            .arg(&disk.mount_point)
            .output()
            .unwrap();
        assert!(out.status.success(), "df {}", disk.mount_point);
        let text = String::from_utf8(out.stdout).unwrap();
        let figures: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let [size, used, avail] = figures[..] else {
            panic!("df printed {text:?}");
        };
        // Other processes write between the two readings: allow 1 % of the size.
        let slack = size / 100;
        let near = |ours: u64, theirs: u64| ours.abs_diff(theirs) <= slack;
        let at = &disk.mount_point;
        assert_eq!(disk.total_bytes, size, "size of {at}");
        assert!(
            near(disk.used_bytes, used),
            "used of {at}: {} against df {used}",
            disk.used_bytes
        );
        assert!(
            near(disk.available_bytes, avail),
            "available of {at}: {} against df {avail}",
            disk.available_bytes
        );
    }
    // The totals count each device once (bind mounts repeat one).
    let mut devices = std::collections::HashSet::new();
    let once: Vec<_> = sample
        .disks
        .iter()
        .filter(|d| devices.insert(&d.device))
        .collect();
    assert_eq!(
        sample.disk_total_bytes,
        once.iter().map(|d| d.total_bytes).sum::<u64>()
    );
    assert_eq!(
        sample.disk_used_bytes,
        once.iter().map(|d| d.used_bytes).sum::<u64>()
    );
    assert_eq!(
        sample.disk_available_bytes,
        Some(once.iter().map(|d| d.available_bytes).sum::<u64>())
    );
}

#[test]
fn the_busiest_processes_are_bounded_in_count_and_bytes() {
    use prost::Message as _;
    let mut sampler = HostSampler::new(None).unwrap().with_processes(10);
    std::thread::sleep(
        sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(std::time::Duration::from_millis(300)),
    );
    let sample = sampler.sample();
    let listed = sample.processes.len();
    assert!((10..=20).contains(&listed), "{listed} processes");
    // Counted from the same reading of /proc.
    assert!(
        sample.process_count as usize >= listed,
        "{}",
        sample.process_count
    );
    let by_cpu = sample.processes.iter().filter(|p| p.cpu_rank > 0).count();
    let by_memory = sample
        .processes
        .iter()
        .filter(|p| p.memory_rank > 0)
        .count();
    assert_eq!((by_cpu, by_memory), (10, 10));
    let with = sample.encoded_len();
    let without = fleetmon::pb::HostSample {
        processes: Vec::new(),
        ..sample
    }
    .encoded_len();
    println!("a host sample: {without} bytes, {with} with its {listed} busiest processes");
    // 20 processes of at most 256 bytes of command line and ~100 of the rest.
    assert!(with - without <= 20 * 360, "{with} - {without}");
}
