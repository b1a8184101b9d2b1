//! Tracing setup shared by the binaries: human-readable text or JSON lines on stderr,
//! filtered by `RUST_LOG` (default `info`).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global tracing subscriber. Call once, at the top of `main`.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(error) = result {
        eprintln!("tracing already initialised: {error}");
    }
}

/// Events of one kind that are logged at most once every interval, each line with all
/// of them since the last (a flood of warnings becomes one a minute).
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    /// When they were last logged.
    logged_at: Option<Instant>,
    /// Counted since.
    unlogged: u64,
}

impl LogEvery {
    /// Logged at most once every `every`.
    pub const fn new(every: Duration) -> Self {
        LogEvery {
            every,
            logged_at: None,
            unlogged: 0,
        }
    }

    /// Counts `events` at `now`; returns all those not logged yet when it is time to
    /// log them (the first time, or `every` after the last line).
    pub fn count(&mut self, events: u64, now: Instant) -> Option<u64> {
        self.unlogged += events;
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < self.every)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_logged_at_most_once_an_interval_with_all_counted_since() {
        let start = Instant::now();
        let mut log = LogEvery::new(Duration::from_secs(60));
        assert_eq!(log.count(5, start), Some(5), "the first is logged");
        assert_eq!(log.count(7, start + Duration::from_secs(1)), None);
        assert_eq!(log.count(3, start + Duration::from_secs(59)), None);
        assert_eq!(
            log.count(1, start + Duration::from_secs(60)),
            Some(11),
            "an interval on, the events counted since the last line"
        );
        assert_eq!(log.count(2, start + Duration::from_secs(61)), None);
    }
}
