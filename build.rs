//! Compiles `proto/fleetmon/v1/*.proto` into Rust (prost + tonic) with a vendored
//! `protoc`, and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/fleetmon/v1/samples.proto",
        "proto/fleetmon/v1/ingest.proto",
        "proto/fleetmon/v1/fleet.proto",
        "proto/fleetmon/v1/history.proto",
        "proto/fleetmon/v1/checks.proto",
        "proto/fleetmon/v1/alerts.proto",
        "proto/fleetmon/v1/enrollment.proto",
        "proto/fleetmon/v1/dead_letters.proto",
        "proto/fleetmon/v1/audit.proto",
    ];
    tonic_prost_build::configure()
        // Undecodable input is INVALID_ARGUMENT (src/grpc_codec.rs).
        .codec_path("crate::grpc_codec::FleetmonCodec")
        .file_descriptor_set_path(out_dir.join("fleetmon_descriptor.bin"))
        .compile_protos(
            &protos,
            &["proto", well_known.to_str().ok_or("non-utf8 path")?],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
