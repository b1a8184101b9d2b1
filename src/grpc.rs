//! Services every fleetmon gRPC server carries besides its own: health and
//! reflection (v1 and v1alpha), so grpcurl works without .proto files.

use tonic_health::server::HealthReporter;
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
