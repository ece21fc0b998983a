use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A PROTOC already set wins; otherwise use the vendored binary so a fresh
    // machine needs no extra install.
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos =
        ["proto/lifeboat/v1/snapshot.proto", "proto/lifeboat/v1/recovery.proto", "proto/lifeboat/v1/image.proto"];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("lifeboat_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
