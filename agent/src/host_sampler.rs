//! Host metrics with sysinfo: CPU, load, memory, swap, disks, network, processes,
//! uptime and identity, as one `HostSample`. Each reading touches only what the
//! sample reports: no disk I/O counters, and per process only its `stat` file when
//! the busiest processes are reported ([`crate::processes`]).
//!
//! CPU usage and network rates are differences between two refreshes, so
//! [`HostSampler::new`] takes the first reading and [`HostSampler::sample`] must not
//! be called before [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] has passed: the first,
//! meaningless reading is never reported.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use fleetmon::pb::{DiskUsage, HostSample, NetworkInterface};

use crate::processes::ProcessTable;
use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System,
};

/// File systems that hold no user data (kernel interfaces, RAM, images, overlays).
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "fuse.lxcfs",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "nfsd",
    "iso9660",
];

/// A file system's space as `df` reports it, in bytes.
struct Space {
    total: u64,
    used: u64,
    available: u64,
}

impl Space {
    /// `statvfs` of the mount point; `None` when it cannot be read (a mount that went
    /// away, or one this user may not stat).
    fn of(mount_point: &std::path::Path) -> Option<Space> {
        let stat = rustix::fs::statvfs(mount_point).ok()?;
        let block = stat.f_frsize;
        Some(Space {
            total: stat.f_blocks.saturating_mul(block),
            used: stat
                .f_blocks
                .saturating_sub(stat.f_bfree)
                .saturating_mul(block),
            available: stat.f_bavail.saturating_mul(block),
        })
    }
}

/// Takes host samples; keeps the previous readings that rates need.
#[derive(Debug)]
pub struct HostSampler {
    system: System,
    disks: Disks,
    networks: Networks,
    /// The busiest processes' table; `None` when none are reported.
    processes: Option<ProcessTable>,
    last_refresh: Instant,
    hostname: String,
    os_name: String,
    os_version: String,
    kernel_version: String,
}

/// Why the sampler could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot read host metrics: {0}")]
pub struct SamplerError(String);

impl HostSampler {
    /// Takes the first (unreported) reading.
    pub fn new(hostname: Option<String>) -> Result<Self, SamplerError> {
        let err = |e: sysinfo::Error| SamplerError(e.to_string());
        let refresh = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::everything());
        let system = System::new_with_specifics(refresh).map_err(err)?;
        // Only the list of mounts: their space is read with statvfs (`Space::of`).
        let disks =
            Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing()).map_err(err)?;
        let networks = Networks::new_with_refreshed_list().map_err(err)?;
        Ok(HostSampler {
            system,
            disks,
            networks,
            processes: None,
            last_refresh: Instant::now(),
            hostname: hostname
                .or_else(|| System::host_name().ok())
                .unwrap_or_else(|| "unknown".to_owned()),
            os_name: System::name().unwrap_or_default(),
            os_version: System::os_version().unwrap_or_default(),
            kernel_version: System::kernel_version().unwrap_or_default(),
        })
    }

    /// Reports the `top` busiest processes by CPU and by memory with each sample (none
    /// when 0); takes the process table's first reading.
    pub fn with_processes(mut self, top: usize) -> Self {
        self.processes = (top > 0).then(|| ProcessTable::new(top));
        self
    }

    /// How many of the busiest processes each list reports (0: none).
    pub fn processes(&self) -> usize {
        self.processes.as_ref().map_or(0, ProcessTable::per_list)
    }

    /// The reported host name.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Refreshes everything and returns a sample (without stream id and seq).
    pub fn sample(&mut self) -> HostSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing());
        self.networks.refresh(true);
        let elapsed = self.last_refresh.elapsed().as_secs_f64().max(1e-3);
        self.last_refresh = Instant::now();

        let mut disks = Vec::new();
        let mut counted_devices = HashSet::new();
        let (mut disk_total, mut disk_used, mut disk_available) = (0u64, 0u64, 0u64);
        for disk in self.disks.iter() {
            let file_system = disk.file_system().to_string_lossy().into_owned();
            if PSEUDO_FILESYSTEMS.contains(&file_system.as_str()) {
                continue;
            }
            // Used is size - free, as df counts it, so blocks reserved for root are
            // neither used nor available.
            let Some(space) = Space::of(disk.mount_point()).filter(|space| space.total > 0) else {
                continue;
            };
            let device = disk.name().to_string_lossy().into_owned();
            // Bind mounts show one device several times: count its space once.
            if counted_devices.insert(device.clone()) {
                disk_total += space.total;
                disk_used += space.used;
                disk_available += space.available;
            }
            disks.push(DiskUsage {
                mount_point: disk.mount_point().to_string_lossy().into_owned(),
                device,
                file_system,
                total_bytes: space.total,
                used_bytes: space.used,
                available_bytes: space.available,
            });
        }
        disks.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));

        let mut interfaces: Vec<NetworkInterface> = self
            .networks
            .iter()
            .map(|(name, data)| NetworkInterface {
                name: name.to_string_lossy().into_owned(),
                rx_bytes: data.total_received(),
                tx_bytes: data.total_transmitted(),
                rx_bytes_per_second: data.received() as f64 / elapsed,
                tx_bytes_per_second: data.transmitted() as f64 / elapsed,
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        // Loopback traffic never leaves the host: kept per interface, not in the sums.
        let external = || interfaces.iter().filter(|i| i.name != "lo");

        let load = System::load_average().unwrap_or(sysinfo::LoadAvg {
            one: 0.0,
            five: 0.0,
            fifteen: 0.0,
        });
        let clamp = |usage: f32| f64::from(usage).clamp(0.0, 100.0);
        // With the busiest processes reported, their reading of /proc counts them too.
        let (process_count, processes) = match self.processes.as_mut() {
            Some(table) => table.top(),
            None => (process_count(), Vec::new()),
        };
        HostSample {
            sampled_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            hostname: self.hostname.clone(),
            os_name: self.os_name.clone(),
            os_version: self.os_version.clone(),
            kernel_version: self.kernel_version.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            cpu_usage_percent: clamp(self.system.global_cpu_usage()),
            cpu_core_usage_percent: self
                .system
                .cpus()
                .iter()
                .map(|c| clamp(c.usage()))
                .collect(),
            load_average_1m: load.one,
            load_average_5m: load.five,
            load_average_15m: load.fifteen,
            memory_total_bytes: self.system.total_memory(),
            memory_used_bytes: self.system.used_memory(),
            memory_available_bytes: self.system.available_memory(),
            swap_total_bytes: self.system.total_swap(),
            swap_used_bytes: self.system.used_swap(),
            disk_total_bytes: disk_total,
            disk_used_bytes: disk_used,
            disk_available_bytes: Some(disk_available),
            disks,
            network_rx_bytes: external().map(|i| i.rx_bytes).sum(),
            network_tx_bytes: external().map(|i| i.tx_bytes).sum(),
            network_rx_bytes_per_second: external().map(|i| i.rx_bytes_per_second).sum(),
            network_tx_bytes_per_second: external().map(|i| i.tx_bytes_per_second).sum(),
            interfaces,
            process_count,
            uptime_seconds: System::uptime().unwrap_or_default(),
            processes,
            ..Default::default()
        }
    }
}

/// Processes running now, as `ps -e` counts them: the numbered entries of `/proc`
/// (threads are not processes; their ids are not listed there). Reading the
/// directory is enough, no process file is opened.
fn process_count() -> u32 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let processes = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            !name.is_empty() && name.iter().all(u8::is_ascii_digit)
        })
        .count();
    u32::try_from(processes).unwrap_or(u32::MAX)
}
