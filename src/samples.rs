//! Figures derived from samples that more than one binary shows or stores.

use crate::pb::HostSample;

/// Disk use in percent as `df`'s Use% counts it: used of the space an unprivileged
/// process could fill (used + available), so blocks reserved for root do not make an
/// empty disk look full. Samples of older agents carry no available space; their
/// used is size − available, taken against the size. `None` without any disk.
pub fn disk_used_percent(sample: &HostSample) -> Option<f64> {
    let used = sample.disk_used_bytes;
    let of = match sample.disk_available_bytes {
        Some(available) => used + available,
        None => sample.disk_total_bytes,
    };
    (of > 0).then(|| used as f64 * 100.0 / of as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_blocks_are_neither_used_nor_available() {
        // The machine of the report: 270 GB, 19 GB used, 78 GB available.
        let sample = HostSample {
            disk_total_bytes: 270_000_000_000,
            disk_used_bytes: 19_000_000_000,
            disk_available_bytes: Some(78_000_000_000),
            ..Default::default()
        };
        assert_eq!(disk_used_percent(&sample).map(f64::round), Some(20.0));
        let older = HostSample {
            disk_available_bytes: None,
            disk_used_bytes: 27_000_000_000,
            ..sample
        };
        assert_eq!(disk_used_percent(&older), Some(10.0));
        assert_eq!(disk_used_percent(&HostSample::default()), None);
    }
}
