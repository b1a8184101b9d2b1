//! Repeated bench measurements: median and spread.

/// Repeated measurements of one bench path (a rate per run): median and spread, so
/// benches print every run and compare medians.
#[derive(Debug, Default, Clone)]
pub struct Runs(pub Vec<f64>);

impl Runs {
    fn sorted(&self) -> Vec<f64> {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The median (the mean of the middle two for an even count); 0 with no run.
    pub fn median(&self) -> f64 {
        let sorted = self.sorted();
        let mid = sorted.len() / 2;
        match sorted.len() {
            0 => 0.0,
            len if len.is_multiple_of(2) => (sorted[mid - 1] + sorted[mid]) / 2.0,
            _ => sorted[mid],
        }
    }

    /// `min–max`, rounded.
    pub fn spread(&self) -> String {
        let sorted = self.sorted();
        match (sorted.first(), sorted.last()) {
            (Some(min), Some(max)) => format!("{min:.0}–{max:.0}"),
            _ => "-".to_owned(),
        }
    }
}

/// `FLEETMON_BENCH_REPEATS` (default 5, at least 1): how many interleaved runs a bench
/// makes of each path.
pub fn bench_repeats() -> usize {
    std::env::var("FLEETMON_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1)
}
