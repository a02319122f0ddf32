//! Outside load generators, so that figures do not rest on this bench's own client: h2load
//! (Debian `nghttp2-client`) sending one gRPC request over and over, and pgbench running the
//! same SELECT as ObterNivel straight against PostgreSQL. Both are skipped, with a message,
//! where the tool is missing.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::Command;

/// Whether `tool` runs here.
pub fn available(tool: &str, version_flag: &str) -> bool {
    std::process::Command::new(tool)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A protobuf message as one gRPC length-prefixed frame: uncompressed flag 0, 4-byte
/// big-endian length, the bytes.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// What one h2load run reported.
#[derive(Debug, Clone, Default)]
pub struct H2load {
    /// Requests answered (HTTP/2 streams that completed).
    pub done: u64,
    /// Of those, HTTP 2xx.
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// The measured duration h2load reports.
    pub secs: f64,
}

/// h2load with `connections` × `streams` concurrent POSTs of `data` (a gRPC frame) to
/// `path` for `duration`: closed loop, like the bench's own callers.
pub async fn h2load(
    addr: std::net::SocketAddr,
    path: &str,
    data: &Path,
    connections: usize,
    streams: usize,
    duration: Duration,
) -> Result<H2load, String> {
    let output = Command::new("h2load")
        .args(["-c", &connections.to_string()])
        .args(["-m", &streams.to_string()])
        .args(["-t", "1"])
        .args(["-D", &format!("{}ms", duration.as_millis().max(1))])
        .args(["-H", "content-type: application/grpc"])
        .args(["-H", "te: trailers"])
        .arg("-d")
        .arg(data)
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("h2load: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_h2load(&text).ok_or_else(|| {
        format!(
            "h2load output not understood (exit {}): {}{}",
            output.status,
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// Reads `finished in 5.00s, ...` and `requests: N total, N started, N done, N succeeded,
/// N failed, N errored, N timeout`.
fn parse_h2load(text: &str) -> Option<H2load> {
    let finished = text.lines().find_map(|l| l.strip_prefix("finished in "))?;
    let took = finished.split(',').next()?.trim();
    let secs = if let Some(ms) = took.strip_suffix("ms") {
        ms.parse::<f64>().ok()? / 1000.0
    } else if let Some(us) = took.strip_suffix("us") {
        us.parse::<f64>().ok()? / 1e6
    } else {
        took.strip_suffix('s')?.parse::<f64>().ok()?
    };
    let requests = text.lines().find_map(|l| l.strip_prefix("requests: "))?;
    let count = |name: &str| {
        requests.split(',').find_map(|part| {
            let (n, what) = part.trim().split_once(' ')?;
            (what == name).then(|| n.parse::<u64>().ok()).flatten()
        })
    };
    Some(H2load {
        done: count("done")?,
        succeeded: count("succeeded")?,
        failed: count("failed")?,
        errored: count("errored")?,
        timeout: count("timeout").unwrap_or(0),
        secs,
    })
}

/// pgbench's tps for `script` at `clients` (2 threads) for `duration` (whole seconds, at
/// least 1), on `url` (a libpq connection URI: the same database, the same `sslmode`
/// default, `prefer`, as sqlx).
pub async fn pgbench(
    url: &str,
    script: &Path,
    clients: usize,
    duration: Duration,
) -> Result<(f64, u64), String> {
    let secs = duration.as_secs_f64().round().max(1.0) as u64;
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared"])
        .arg("-f")
        .arg(script)
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-T", &secs.to_string()])
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let tps = text.lines().find_map(|l| {
        l.strip_prefix("tps = ")?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    });
    let processed = text.lines().find_map(|l| {
        l.strip_prefix("number of transactions actually processed: ")?
            .split(['/', ' '])
            .next()?
            .parse::<u64>()
            .ok()
    });
    match (output.status.success(), tps) {
        (true, Some(tps)) => Ok((tps, processed.unwrap_or(0))),
        _ => Err(format!(
            "pgbench failed ({}): {}{}",
            output.status,
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}
