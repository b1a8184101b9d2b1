//! What operators ask the writer over gRPC: [`history`] (stored samples),
//! [`alerts`] (alerts and silences, [`maintenance`] windows, both matching by
//! [`matcher`], and [`incidents`]), [`audit`] (operators' changes) and
//! [`dead_letters`] (what could not be stored);
//! [`error`] is the one map from the writer's errors to gRPC statuses.

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

/// A list's size: `requested`, or `default` when 0; more than `max` is refused.
pub(crate) fn limit(requested: u32, default: u32, max: u32) -> Result<u32, error::ServiceError> {
    match requested {
        0 => Ok(default),
        n if n > max => Err(error::ServiceError::invalid(format!(
            "limit {n} is above {max}"
        ))),
        n => Ok(n),
    }
}
