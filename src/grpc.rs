//! Services every fleetmon gRPC server carries besides its own: health and
//! reflection (v1 and v1alpha), so grpcurl works without .proto files.

use tonic_health::server::HealthReporter;
use tonic_reflection::server::{v1, v1alpha};

/// Reflection over the fleetmon and health protos, in both protocol versions grpcurl
/// may ask for.
pub fn reflection_services() -> (
    v1::ServerReflectionServer<impl v1::ServerReflection>,
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
