//! Generates the gRPC code (messages, clients and the server stubs the server crate uses) and
//! the descriptor set that reflection serves, from the proto at the repository's top.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh machine has no protoc: use the vendored one unless the caller chose another.
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // proto/ stays at the repository's top, where buf and the other languages' clients read it.
    let proto = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("produto_descriptor.bin"))
        .compile_protos(
            &[proto.join("produto/v1/produto.proto")],
            std::slice::from_ref(&proto),
        )?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
