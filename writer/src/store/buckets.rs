//! UTC buckets of rollups: a rollup tier's length, and the bucket a time falls in.

use std::time::{Duration, SystemTime};

/// A rollup tier: its bucket length and how its table is partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// One-minute buckets, in daily partitions.
    Minute,
    /// One-hour buckets, in monthly partitions.
    Hour,
    /// One-day buckets, in yearly partitions.
    Day,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 3] = [Tier::Minute, Tier::Hour, Tier::Day];

    /// The `resolution` column's value.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Minute => "minute",
            Tier::Hour => "hour",
            Tier::Day => "day",
        }
    }

    /// The bucket length in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            Tier::Minute => 60,
            Tier::Hour => 3600,
            Tier::Day => 86_400,
        }
    }

    /// The tier's table (a partition of `host_rollups`).
    pub const fn table(self) -> &'static str {
        match self {
            Tier::Minute => "host_rollups_minute",
            Tier::Hour => "host_rollups_hour",
            Tier::Day => "host_rollups_day",
        }
    }

    /// The coarsest tier whose buckets a step of `step_seconds` is made of (the step
    /// a whole number of them); `None`: the step needs raw rows.
    pub fn for_step(step_seconds: u64) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|tier| step_seconds.is_multiple_of(tier.seconds()))
    }
}

/// The start of the `seconds`-long UTC bucket holding `ts` (before the epoch too,
/// as `date_trunc` floors).
pub(super) fn bucket_start(ts: SystemTime, seconds: u64) -> SystemTime {
    match ts.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => {
            SystemTime::UNIX_EPOCH + Duration::from_secs(after.as_secs() / seconds * seconds)
        }
        Err(before) => {
            let before = before.duration();
            let secs = before.as_secs() + u64::from(before.subsec_nanos() > 0);
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.div_ceil(seconds) * seconds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(u64::from(nanos))
        }
    }

    #[test]
    fn buckets_start_on_utc_minutes_and_hours_as_date_trunc_does() {
        assert_eq!(bucket_start(at(3_725, 5), 60), at(3_720, 0));
        assert_eq!(bucket_start(at(3_725, 5), 3600), at(3_600, 0));
        assert_eq!(bucket_start(at(3_600, 0), 3600), at(3_600, 0));
        // Before the epoch, a bucket still starts at or before the time.
        assert_eq!(bucket_start(at(-30, 0), 60), at(-60, 0));
        assert_eq!(bucket_start(at(-60, 0), 60), at(-60, 0));
        assert_eq!(bucket_start(at(-60, 1), 60), at(-60, 0));
        assert_eq!(bucket_start(at(-61, 0), 60), at(-120, 0));
    }

    #[test]
    fn a_step_is_read_from_the_coarsest_tier_it_is_made_of() {
        assert_eq!(Tier::for_step(10), None);
        assert_eq!(Tier::for_step(90), None);
        assert_eq!(Tier::for_step(60), Some(Tier::Minute));
        assert_eq!(Tier::for_step(600), Some(Tier::Minute));
        assert_eq!(Tier::for_step(3600), Some(Tier::Hour));
        assert_eq!(Tier::for_step(6 * 3600), Some(Tier::Hour));
        assert_eq!(Tier::for_step(86_400), Some(Tier::Day));
        assert_eq!(Tier::for_step(7 * 86_400), Some(Tier::Day));
    }
}
