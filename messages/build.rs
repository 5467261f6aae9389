//! Compiles the protobuf schemas without a system `protoc` (protox), then
//! generates prost types and their protobuf-JSON serde impls (pbjson).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos: Vec<PathBuf> = std::fs::read_dir("proto/voiyd/v1")?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let mut protos: Vec<PathBuf> = protos
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    protos.sort();
    // The directory too: a new schema file must rebuild.
    println!("cargo:rerun-if-changed=proto/voiyd/v1");
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let fds = protox::compile(&protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("voiyd_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    let mut config = prost_build::Config::new();
    config.compile_well_known_types();
    config.extern_path(".google.protobuf", "::pbjson_types");
    config.btree_map(["."]);
    config.compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .btree_map(["."])
        .build(&[".voiyd"])?;
    Ok(())
}
