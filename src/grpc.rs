//! Services every fleetmon gRPC server carries besides its own: health and
//! reflection (v1 and v1alpha), so grpcurl works without .proto files.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
pub use tonic_health::server::HealthReporter;
use tonic_reflection::server::{v1, v1alpha};

/// Reflection in both protocol versions grpcurl may ask for, advertising exactly the
/// given fleetmon services (e.g. `fleetmon.v1.Ingest`) plus health and reflection.
pub fn reflection_services(
    services: &[&str],
) -> (
    v1::ServerReflectionServer<impl v1::ServerReflection>,
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
) {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        let standard = [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        for name in services.iter().chain(standard.iter()) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let v1 = builder()
        .build_v1()
        .expect("embedded fleetmon descriptor set is valid");
    let v1alpha = builder()
        .build_v1alpha()
        .expect("embedded fleetmon descriptor set is valid");
    (v1, v1alpha)
}

/// The standard health service, reporting the server (`""`) as serving.
pub async fn health_service() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    (reporter, service)
}

/// Why a server is not serving: what a health probe found, in words for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotServing(pub String);

impl From<String> for NotServing {
    fn from(reason: String) -> Self {
        NotServing(reason)
    }
}

/// How long one probe waits for each dependency (Kafka, then Postgres) to answer.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a server checks what it depends on (Kafka, Postgres) for its health status.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps the health of the server (`""`) and of `services` in step with `probe`, run
/// every [`HEALTH_INTERVAL`] until `shutdown`: SERVING while it returns `Ok`,
/// NOT_SERVING while it returns `Err(why)`. Each change is logged once, with the reason.
/// Spawn it (e.g. with [`crate::server::Tasks::spawn`]).
pub async fn watch_health<F, Fut>(
    reporter: HealthReporter,
    services: &'static [&'static str],
    mut probe: F,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), NotServing>> + Send,
{
    let mut serving = true;
    loop {
        let result = tokio::select! {
            result = probe() => result,
            () = shutdown.cancelled() => return,
        };
        let status = match &result {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        match (&result, serving) {
            (Err(why), true) => tracing::warn!(%why, "health: NOT_SERVING"),
            (Ok(()), false) => tracing::info!("health: SERVING again"),
            _ => {}
        }
        serving = result.is_ok();
        for name in std::iter::once(&"").chain(services.iter()) {
            reporter.set_service_status(*name, status).await;
        }
        tokio::select! {
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// An error that states the gRPC code its caller sees, beside its message (the shape
/// of quickwit's `ServiceError::error_code`): each module's error decides its own
/// codes, and [`status`] is the one way any of them becomes a [`tonic::Status`].
pub trait GrpcError: std::error::Error {
    /// The code a caller sees for this error.
    fn code(&self) -> tonic::Code;
}

/// The status a caller sees for `error`: its own code and its message.
pub fn status(error: &dyn GrpcError) -> tonic::Status {
    tonic::Status::new(error.code(), error.to_string())
}

/// `impl From<E> for tonic::Status` through [`status`] for each [`GrpcError`] named,
/// so a handler returns its own error with `?`.
#[macro_export]
macro_rules! status_from {
    ($($error:ty),+ $(,)?) => {$(
        impl From<$error> for ::tonic::Status {
            fn from(error: $error) -> ::tonic::Status {
                $crate::grpc::status(&error)
            }
        }
    )+};
}
