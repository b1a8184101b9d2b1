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
