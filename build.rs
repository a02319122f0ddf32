//! Generates the gRPC code and the descriptor set that reflection serves, and records the
//! git commit for the build-info metric.
use std::{env, path::PathBuf, process::Command};

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
    println!("cargo:rustc-env=PRODUTO_GIT_COMMIT={}", git_commit());
    Ok(())
}

/// `PRODUTO_GIT_COMMIT` if set (a container build has no `.git`), else the checkout's HEAD,
/// else `unknown`.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=PRODUTO_GIT_COMMIT");
    if let Ok(commit) = env::var("PRODUTO_GIT_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    // Rebuild when HEAD moves: HEAD itself, and the branch it points to (worktrees included).
    for name in ["HEAD", "refs/heads"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={path}");
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}
