//! What operators ask the writer over gRPC: [`history`] (stored samples),
//! [`alerts`] (alerts and silences) and [`dead_letters`] (what could not be stored);
//! [`error`] is the one map from the writer's errors to gRPC statuses.

pub mod alerts;
pub mod dead_letters;
pub mod error;
pub mod history;
