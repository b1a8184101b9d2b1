//! Generated protobuf messages and gRPC stubs of package `fleetmon.v1`; nothing else
//! lives here. Conversions to domain types sit beside the code that uses them.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("fleetmon.v1");

/// The encoded `FileDescriptorSet` of every fleetmon proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fleetmon_descriptor");

/// Value of the Kafka `content-type` header for a record holding a [`HostSample`].
pub const HOST_SAMPLE_CONTENT_TYPE: &str = "application/x-protobuf; message=fleetmon.v1.HostSample";
/// Value of the Kafka `content-type` header for a record holding a [`SiteCheck`].
pub const SITE_CHECK_CONTENT_TYPE: &str = "application/x-protobuf; message=fleetmon.v1.SiteCheck";
/// Value of the Kafka `content-type` header for a record holding a [`CheckDefinition`].
pub const CHECK_DEFINITION_CONTENT_TYPE: &str =
    "application/x-protobuf; message=fleetmon.v1.CheckDefinition";
/// Value of the Kafka `content-type` header for a record holding a [`CredentialRecord`].
pub const CREDENTIAL_RECORD_CONTENT_TYPE: &str =
    "application/x-protobuf; message=fleetmon.v1.CredentialRecord";
