//! The collector's one map from what a call ran into to the gRPC status its caller
//! sees. Each service keeps its own error type, named by what it does; the codes
//! they get are decided here and nowhere else.

use tonic::{Code, Status};

use fleetmon::identity::PeerIdentity;
use fleetmon::pki::PkiError;

use crate::check_catalog::CatalogError;
use crate::checks_service::ChecksError;
use crate::compacted_log::LogError;
use crate::enrollment_service::EnrollError;
use crate::ingest_service::IngestError;

/// Why a call on any of the collector's services failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An ingest push or stream ended with an error.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A change to the central checks was refused or failed.
    #[error(transparent)]
    Checks(#[from] ChecksError),
    /// Enrollment, renewal or a credential change was refused or failed.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// The agent's certificate was revoked while it was connected.
    #[error(transparent)]
    Revoked(#[from] RevokedPeer),
    /// A control stream sent no report in time.
    #[error("send an AgentReport first on the control stream")]
    NoFirstReport,
    /// A control stream whose agent reported nothing for `limits.idle_control_seconds`.
    #[error(
        "no report for {0} s (limits.idle_control_seconds): control stream closed; agents report every 60 s"
    )]
    IdleControl(u64),
    /// A control stream ended before its first report.
    #[error("control stream closed before its first report")]
    ClosedBeforeFirstReport,
    /// The fleet view has no such agent.
    #[error("agent `{0}` has not connected since the collector started")]
    UnknownAgent(String),
}

/// What a revoked agent is told when its stream or call is refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} (certificate {}) was revoked: enroll again under another name", .0.uri(), .0.serial)]
pub struct RevokedPeer(pub PeerIdentity);

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        use ServiceError as E;
        let code = match &error {
            E::Ingest(error) => match error {
                IngestError::BatchTooLarge { .. } => Code::ResourceExhausted,
                IngestError::BatchUndelivered(_)
                | IngestError::StreamUndelivered(_)
                | IngestError::ShuttingDown => Code::Unavailable,
                IngestError::Idle(_) => Code::DeadlineExceeded,
                IngestError::Revoked(_) => Code::PermissionDenied,
                // A message above the size limit is a resource limit, whatever code
                // the decoder chose (tonic says OUT_OF_RANGE only for that).
                IngestError::Inbound(status) if status.code() == Code::OutOfRange => {
                    Code::ResourceExhausted
                }
                IngestError::Inbound(status) => status.code(),
            },
            E::Checks(error) => match error {
                ChecksError::Missing | ChecksError::Invalid(_) => Code::InvalidArgument,
                ChecksError::Catalog(CatalogError::NotFound { .. }) => Code::NotFound,
                ChecksError::Catalog(CatalogError::AlreadyExists { .. }) => Code::AlreadyExists,
                ChecksError::Catalog(CatalogError::Stale { .. }) => Code::FailedPrecondition,
                ChecksError::Catalog(CatalogError::Kafka { .. } | CatalogError::CreateTopic(_)) => {
                    Code::Unavailable
                }
            },
            E::Enroll(error) => match error {
                EnrollError::Malformed(_)
                | EnrollError::BadName(_)
                | EnrollError::Sign(PkiError::BadRequest(_)) => Code::InvalidArgument,
                EnrollError::UnknownToken => Code::Unauthenticated,
                EnrollError::TokenRevoked(_)
                | EnrollError::TokenExpired { .. }
                | EnrollError::TokenUsedUp { .. }
                | EnrollError::AgentRevoked(_) => Code::PermissionDenied,
                EnrollError::NameTaken(_) => Code::AlreadyExists,
                EnrollError::NoSuchToken(_) => Code::NotFound,
                EnrollError::NotEnabled => Code::Unimplemented,
                EnrollError::Sign(_) | EnrollError::NotAnAgent(_) => Code::Internal,
                EnrollError::Store(LogError::NotFound { .. }) => Code::NotFound,
                EnrollError::Store(_) => Code::Unavailable,
            },
            E::Revoked(_) => Code::PermissionDenied,
            E::NoFirstReport | E::IdleControl(_) => Code::DeadlineExceeded,
            E::ClosedBeforeFirstReport => Code::Cancelled,
            E::UnknownAgent(_) => Code::NotFound,
        };
        Status::new(code, error.to_string())
    }
}

/// Lets a handler return its own error with `?`: it goes through the one map above.
macro_rules! status_through_the_map {
    ($($error:ty),+) => {$(
        impl From<$error> for Status {
            fn from(error: $error) -> Status {
                ServiceError::from(error).into()
            }
        }
    )+};
}

status_through_the_map!(IngestError, ChecksError, EnrollError, RevokedPeer);
