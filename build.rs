//! Generates the gRPC code and the descriptor set that reflection serves.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh machine has no protoc: use the vendored one unless the caller chose another.
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("produto_descriptor.bin"))
        .compile_protos(&["proto/produto/v1/produto.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
