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
        self.spread_to(0)
    }

    /// `min–max` with `decimals` decimals.
    pub fn spread_to(&self, decimals: usize) -> String {
        let sorted = self.sorted();
        match (sorted.first(), sorted.last()) {
            (Some(min), Some(max)) => format!("{min:.decimals$}–{max:.decimals$}"),
            _ => "-".to_owned(),
        }
    }

    /// Each run divided by the `baseline` run of the same round. The paths of a
    /// bench run interleaved, so the k-th run of each was taken side by side: a drift
    /// of the whole machine between rounds moves both and leaves their ratio, which
    /// is what the bench claims. The spread of these is the ratio's own.
    pub fn paired_ratios(&self, baseline: &Runs) -> Runs {
        assert_eq!(self.0.len(), baseline.0.len(), "one run of each per round");
        Runs(
            self.0
                .iter()
                .zip(&baseline.0)
                .map(|(run, base)| run / base)
                .collect(),
        )
    }

    /// Prints these runs' [`paired_ratios`](Self::paired_ratios) to `baseline` as a
    /// table row `NAME  MEDIAN  MIN–MAX`, two decimals, the form `bench/agree`
    /// compares across runs.
    pub fn print_paired_ratio(&self, baseline: &Runs, name: &str) {
        self.paired_ratios(baseline).print_row(name, 2);
    }

    /// Prints these runs as a table row `NAME  MEDIAN  MIN–MAX` with `decimals`
    /// decimals, the form `bench/agree` compares across runs.
    pub fn print_row(&self, name: &str, decimals: usize) {
        println!(
            "{name:<52} {:>8.decimals$} {:>12}",
            self.median(),
            self.spread_to(decimals)
        );
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
