//! Records the git commit for the build-info metric. (The gRPC code is generated in
//! crates/produto-client, which the server uses.)
use std::{env, process::Command};

fn main() {
    println!("cargo:rustc-env=PRODUTO_GIT_COMMIT={}", git_commit());
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
