use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A PROTOC already set wins; otherwise use the vendored binary so a fresh
    // machine needs no extra install.
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/lifeboat/v1/snapshot.proto",
        "proto/lifeboat/v1/recovery.proto",
        "proto/lifeboat/v1/image.proto",
        "proto/lifeboat/v1/store.proto",
        "proto/lifeboat/v1/drift.proto",
        "proto/lifeboat/v1/audit.proto",
        "proto/lifeboat/v1/drill.proto",
    ];
    tonic_prost_build::configure().file_descriptor_set_path(out.join("lifeboat_descriptor.bin")).compile_with_config(
        config,
        &protos,
        &["proto"],
    )?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
