//! The one map from what a History, Alerts or DeadLetters call ran into to its gRPC
//! status.

use tonic::Status;

use crate::store::describe;

/// Why a History or Alerts call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed; the message names the field and the fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A query failed.
    #[error("database query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// No connection from the pool.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Kafka did not answer (reading or writing the dead-letter topic).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl ServiceError {
    /// A malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        ServiceError::InvalidArgument(message.into())
    }

    /// Something the request names is missing.
    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError::NotFound(message.into())
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let message = error.to_string();
        match error {
            ServiceError::InvalidArgument(_) => Status::invalid_argument(message),
            ServiceError::NotFound(_) => Status::not_found(message),
            // The database is down or restarting: the client may retry.
            ServiceError::Query(_) | ServiceError::Pool(_) | ServiceError::Kafka(_) => {
                tracing::warn!(error = %message, "query failed");
                Status::unavailable(message)
            }
        }
    }
}
