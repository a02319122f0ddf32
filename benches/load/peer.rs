//! The Go peer (grpc-go + pgxpool, the same proto and SQL: `--go-peer`, by default
//! `../shared/peers/go` beside the checkout) as a row of scenario 7: what a Go team would
//! ship instead. Its sources are copied into `target/peers/` and built there with their own
//! `build.sh` (Debian's Go and Go libraries, no download), since the shared directory may be
//! read-only. Where it cannot be built the bench says why and runs without the row.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Builds the peer from `source` (its directory holds `build.sh` and `main.go`; the proto is
/// in `../proto`) under `target/peers/`, and returns the binary. A copy that is already built
/// from the same `main.go` is reused.
pub fn build(source: &Path) -> Result<PathBuf, String> {
    let proto = source.join("../proto");
    if !source.join("build.sh").is_file() || !proto.join("produto.proto").is_file() {
        return Err(format!(
            "no Go peer at {} (build.sh, ../proto/produto.proto)",
            source.display()
        ));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers");
    let dir = root.join("go");
    let bin = dir.join("bin/produto-peer-go");
    let same_source =
        std::fs::read(dir.join("main.go")).ok() == std::fs::read(source.join("main.go")).ok();
    if same_source && bin.is_file() {
        return Ok(bin);
    }
    for (from, to) in [
        (source.to_path_buf(), dir.clone()),
        (proto, root.join("proto")),
    ] {
        copy_dir(&from, &to).map_err(|e| format!("copying {}: {e}", from.display()))?;
    }
    eprintln!("produto-bench: building the Go peer in {}", dir.display());
    let output = Command::new("bash")
        .arg(dir.join("build.sh"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("build.sh: {e}"))?;
    if !output.status.success() || !bin.is_file() {
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(5)..].join(" | ")
        };
        return Err(format!(
            "build.sh failed ({}): {} {}",
            output.status,
            tail(&output.stdout),
            tail(&output.stderr)
        ));
    }
    Ok(bin)
}

/// Copies the regular files of `from` into `to` (created), writable whatever `from`'s mode:
/// build.sh writes its generated code and `bin/` beside the sources.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        let _ = std::fs::remove_file(&target);
        std::fs::copy(entry.path(), &target)?;
        let mode = std::fs::metadata(&target)?.permissions().mode() | 0o600;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
