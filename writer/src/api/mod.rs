//! What operators ask the writer over gRPC: [`history`] (stored samples),
//! [`alerts`] (alerts and silences, [`maintenance`] windows, both matching by
//! [`matcher`], and [`incidents`]), [`audit`] (operators' changes) and
//! [`dead_letters`] (what could not be stored);
//! [`error`] is the one map from the writer's errors to gRPC statuses; [`limit`] and
//! [`range`] check the size and the period every request may carry.

pub mod alerts;
pub mod audit;
pub mod dead_letters;
pub mod error;
pub mod fleet_metrics;
pub mod history;
pub mod incidents;
pub mod maintenance;
pub mod matcher;
pub mod reports;

use std::time::SystemTime;

use fleetmon::pb::TimeRange;

use error::ServiceError;

/// A list's size: `requested`, or `default` when 0; more than `max` is refused.
pub(crate) fn limit(requested: u32, default: u32, max: u32) -> Result<u32, ServiceError> {
    match requested {
        0 => Ok(default),
        n if n > max => Err(ServiceError::invalid(format!("limit {n} is above {max}"))),
        n => Ok(n),
    }
}

/// Validated `[start, end)` of a request.
pub(crate) fn range(range: Option<TimeRange>) -> Result<(SystemTime, SystemTime), ServiceError> {
    let range =
        range.ok_or_else(|| ServiceError::invalid("range is required (range.start at least)"))?;
    let start = range
        .start
        .ok_or_else(|| ServiceError::invalid("range.start is required"))
        .and_then(|t| {
            SystemTime::try_from(t)
                .map_err(|_| ServiceError::invalid("range.start is out of range"))
        })?;
    let end = match range.end {
        Some(t) => SystemTime::try_from(t)
            .map_err(|_| ServiceError::invalid("range.end is out of range"))?,
        None => SystemTime::now(),
    };
    if end <= start {
        return Err(ServiceError::invalid("range.end must be after range.start"));
    }
    Ok((start, end))
}
