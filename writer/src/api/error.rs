//! What a History, Alerts or DeadLetters call ran into, with the gRPC code its caller
//! sees.

use fleetmon::grpc::GrpcError;
use tonic::{Code, Status};

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
    /// What the request would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// What the request would change is in a state that refuses it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A query ran past `postgres.query_timeout_seconds` (PostgreSQL cancelled it).
    #[error(
        "the query ran longer than postgres.query_timeout_seconds and was cancelled: \
         ask for less (a shorter range, a smaller limit) or raise the limit"
    )]
    TimedOut,
    /// A query failed.
    #[error("database query failed: {}", describe(.0))]
    Query(tokio_postgres::Error),
    /// No connection from the pool.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Kafka did not answer (reading or writing the dead-letter topic).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl From<tokio_postgres::Error> for ServiceError {
    fn from(error: tokio_postgres::Error) -> Self {
        if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
            ServiceError::TimedOut
        } else if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            // Two requests raced to create the same name; the loser hears it exists.
            ServiceError::AlreadyExists(format!("exists already: {}", describe(&error)))
        } else {
            ServiceError::Query(error)
        }
    }
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

    /// What the request would change refuses it in its state.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        ServiceError::FailedPrecondition(message.into())
    }

    /// Something the request would create exists.
    pub fn already_exists(message: impl Into<String>) -> Self {
        ServiceError::AlreadyExists(message.into())
    }
}

impl GrpcError for ServiceError {
    fn code(&self) -> Code {
        match self {
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::TimedOut => Code::DeadlineExceeded,
            // The database or Kafka is down or restarting: the client may retry.
            ServiceError::Query(_) | ServiceError::Pool(_) | ServiceError::Kafka(_) => {
                Code::Unavailable
            }
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let status = fleetmon::grpc::status(&error);
        if status.code() == Code::Unavailable {
            tracing::warn!(error = %status.message(), "query failed");
        }
        status
    }
}
