//! The grpcurl examples of README.md and docs/*.md, run as written against the real server, so
//! that every grpcurl command the documentation shows is one this test runs.
//!
//! The convention, for whoever writes an example:
//! - A fenced block opened with ` ```sh ` holds examples. In it, a line starting with `grpcurl`
//!   (continued by lines ending in `\`) is one command, run with `sh -c` from the repository
//!   root, with `localhost:50051` replaced by the test server's address and
//!   `PRODUTO_ADMIN_TOKEN` set to the server's admin token (write `$PRODUTO_ADMIN_TOKEN`).
//!   The block's other lines (`cargo run`, `export`, ...) are not run here. No `$ ` prompt:
//!   a fenced line that calls grpcurl but does not start with it fails this test.
//! - The `#` comment lines right after a command are its expected output; a blank line or any
//!   other line ends them, so a comment meant as prose goes after a blank line. Each expected
//!   line must appear in grpcurl's output, whitespace ignored (so `# {"nivel": 2}` matches
//!   grpcurl's indented JSON). An expected JSON object with `...` among its fields is matched
//!   as a subset instead: the first JSON object printed must have each field shown, with that
//!   value. A line `# ERROR:` means grpcurl must fail; otherwise it must exit 0.
//! - Every document gets a fresh server (SQLite, the `cargo run` default, with an admin token)
//!   and its commands run in document order, so a document's examples build on each other.
//! - A block that cannot be run here (it needs TLS, caller tokens, another server) is fenced
//!   ` ```sh not-run ` and the line before the fence says why; a `grpcurl` line in any other
//!   fenced block fails this test (prose is not read).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use tokio::process::Command;

use produto_testkit::{ADMIN_TOKEN, Backend, spawn_app};

use crate::clients::grpcurl_is_installed;

/// One grpcurl example: where it is, the command, and the expected output's lines.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The documents whose examples are run: README.md, then docs/*.md by name.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|dir| {
            dir.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

/// The examples of one document, in order; `Err` names a grpcurl line outside the convention.
fn examples(text: &str) -> Result<Vec<Example>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut fence: Option<&str> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(info) = line.strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim()),
                Some(_) => None,
            };
            if fence.is_some_and(|f| f.split_whitespace().any(|w| w == "not-run")) {
                let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
                if !before.is_some_and(|l| l.to_lowercase().contains("not run")) {
                    return Err(format!(
                        "line {}: a not-run block must follow a line saying why it is not run",
                        i + 1
                    ));
                }
            }
            i += 1;
            continue;
        }
        if !line.starts_with("grpcurl") {
            // A prompt (`$ grpcurl`) or a variable before it would hide the command from
            // this test: say how to write it instead.
            if fence.is_some() && !line.starts_with('#') && line.contains("grpcurl ") {
                return Err(format!(
                    "line {}: start the line with `grpcurl` (no prompt, no variables before \
                     it) and give the output as `# ` lines: {line}",
                    i + 1
                ));
            }
            i += 1;
            continue;
        }
        match fence {
            Some("sh") => {}
            // Prose, or a block that says it is not run.
            None => {
                i += 1;
                continue;
            }
            Some(f) if f.split_whitespace().any(|w| w == "not-run") => {
                i += 1;
                continue;
            }
            Some(_) => {
                return Err(format!(
                    "line {}: a grpcurl command outside a ```sh block: {line}",
                    i + 1
                ));
            }
        }
        let start = i;
        let mut command = String::new();
        while i < lines.len() {
            let part = lines[i].trim_end();
            i += 1;
            match part.strip_suffix('\\') {
                Some(continued) => command.push_str(continued),
                None => {
                    command.push_str(part);
                    break;
                }
            }
        }
        let mut expected = Vec::new();
        while let Some(comment) = lines.get(i).and_then(|l| l.trim_start().strip_prefix('#')) {
            expected.push(comment.trim().to_owned());
            i += 1;
        }
        found.push(Example {
            line: start + 1,
            command,
            expected,
        });
    }
    Ok(found)
}

/// Whether `actual` holds every field of `expected` with the same value (arrays element-wise).
fn holds(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|got| holds(got, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() >= e.len() && e.iter().zip(a).all(|(v, got)| holds(got, v))
        }
        _ => actual == expected,
    }
}

fn without_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// What is wrong with grpcurl's answer to `example`, if anything.
fn mismatch(example: &Example, succeeded: bool, output: &str) -> Option<String> {
    let wants_error = example.expected.iter().any(|l| l == "ERROR:");
    if succeeded == wants_error {
        return Some(format!(
            "grpcurl {} where the document expects {}",
            if succeeded { "succeeded" } else { "failed" },
            if wants_error { "an error" } else { "success" },
        ));
    }
    let joined = example.expected.join(" ");
    if joined.contains("...") {
        let expected: Value = match serde_json::from_str(&joined.replace(", ...", "")) {
            Ok(expected) => expected,
            Err(e) => return Some(format!("an expected output with `...` is not JSON: {e}")),
        };
        let actual = serde_json::Deserializer::from_str(output)
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok);
        return match actual {
            Some(actual) if holds(&actual, &expected) => None,
            _ => Some(format!("the answer does not hold {expected}")),
        };
    }
    let flat = without_whitespace(output);
    example
        .expected
        .iter()
        .find(|l| !flat.contains(&without_whitespace(l)))
        .map(|l| format!("the answer has no {l:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpcurl_example_in_the_docs_runs_as_shown() {
    if !grpcurl_is_installed().await {
        return;
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for document in documents() {
        let name = document
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&document)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&document).expect("read the document");
        let examples = match examples(&text) {
            Ok(examples) => examples,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if examples.is_empty() {
            continue;
        }
        let app = spawn_app(Backend::Sqlite).await;
        for example in &examples {
            let command = example
                .command
                .replace("localhost:50051", &app.addr.to_string());
            let run = Command::new("sh")
                .args(["-c", &command])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("PRODUTO_ADMIN_TOKEN", ADMIN_TOKEN)
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .expect("grpcurl ends within a minute")
                .expect("run sh");
            ran += 1;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if let Some(wrong) = mismatch(example, output.status.success(), &text) {
                failures.push(format!(
                    "{name}:{}: {wrong}\n  command: {}\n  expected: {:?}\n  answer:\n{text}",
                    example.line, example.command, example.expected
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The README alone has a dozen; far fewer means the convention stopped matching.
    assert!(ran >= 10, "only {ran} grpcurl examples found");
}

#[test]
fn the_example_convention_is_read_as_documented() {
    let text = "\
```sh
grpcurl -plaintext -d '{\"usuario\": \"maria\"}' \\
  localhost:50051 produto.v1.ProdutoService/ObterNivel
# {\"nivel\": 2}

# prose, not output
grpcurl -plaintext localhost:50051 list
```
not run here: it needs caller tokens
```sh not-run
grpcurl -H 'authorization: Bearer x' localhost:50051 list
```
";
    let found = examples(text).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].line, 2);
    assert!(
        found[0]
            .command
            .ends_with("produto.v1.ProdutoService/ObterNivel")
    );
    assert_eq!(found[0].expected, ["{\"nivel\": 2}"]);
    assert!(found[1].expected.is_empty());

    assert!(examples("```text\ngrpcurl localhost:50051 list\n```\n").is_err());
    assert!(examples("\n```sh not-run\ngrpcurl x\n```\n").is_err());
    assert!(examples("```sh\n$ grpcurl -plaintext localhost:50051 list\n```\n").is_err());
    assert!(examples("grpcurl in prose is fine\n").unwrap().is_empty());

    let pretty = "{\n  \"nivel\": 2\n}\n";
    let example = |expected: &[&str]| Example {
        line: 1,
        command: String::new(),
        expected: expected.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(mismatch(&example(&["{\"nivel\": 2}"]), true, pretty), None);
    assert!(mismatch(&example(&["{\"nivel\": 3}"]), true, pretty).is_some());
    assert!(mismatch(&example(&["{}"]), true, pretty).is_some());
    assert!(mismatch(&example(&["ERROR:"]), true, pretty).is_some());
    let pool = "{\n  \"status\": \"active\",\n  \"poolSize\": 2,\n  \"pools\": [{\"role\": \"primary\"}]\n}";
    assert_eq!(
        mismatch(&example(&["{\"status\": \"active\", ...}"]), true, pool),
        None
    );
    assert!(mismatch(&example(&["{\"status\": \"closed\", ...}"]), true, pool).is_some());
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a document's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// The targets of the relative links `[text](target)` of a document.
fn links(text: &str) -> Vec<&str> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.contains("://") && !target.starts_with("mailto:"))
        .collect()
}

#[test]
fn every_link_between_the_docs_reaches_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).expect("read the document");
        for target in links(&text) {
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                document.clone()
            } else {
                document.parent().unwrap().join(path)
            };
            let ok = match std::fs::read_to_string(&file) {
                Ok(linked) => fragment.is_empty() || anchors(&linked).iter().any(|a| a == fragment),
                Err(_) => file.is_dir() && fragment.is_empty(),
            };
            if !ok {
                broken.push(format!("{}: ({target})", document.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert_eq!(
        anchor("The retry policy (service config)"),
        "the-retry-policy-service-config"
    );
}

/// The top-level folders whose files the docs name; a path into one of them must exist.
const REPOSITORY_FOLDERS: &[&str] = &[
    ".ci",
    "benches",
    "clients",
    "crates",
    "deploy",
    "docs",
    "migrations",
    "proto",
    "scripts",
    "src",
    "tests",
    "vendor",
];

/// The repository paths a document names (`src/db/`, `tests/api/docs.rs`,
/// `migrations/*/x.sql`): a word that starts with one of [`REPOSITORY_FOLDERS`] and a `/`,
/// anywhere in the text, code blocks included. It ends at the first character that cannot be
/// in a path; a trailing `.`, `,` or `:` is punctuation, not part of it.
fn named_paths(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "/._-*".contains(c);
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| is_path_char(c)) {
        let word_len = rest[start..]
            .find(|c: char| !is_path_char(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        rest = &rest[start + word_len..];
        let Some((folder, _)) = word.split_once('/') else {
            continue;
        };
        if REPOSITORY_FOLDERS.contains(&folder) {
            found.push(word.trim_end_matches(['.', ',', ':']).to_owned());
        }
    }
    found
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (head.len()..=name.len())
                    .any(|i| name.is_char_boundary(i) && wildcard(tail, &name[i..]))
        }
    }
}

/// Whether `path` (relative to `root`, `*` allowed within a component) names something there.
fn exists(root: &Path, path: &str) -> bool {
    let mut here = vec![root.to_path_buf()];
    for component in path.split('/').filter(|c| !c.is_empty()) {
        here = here
            .iter()
            .flat_map(|dir| -> Vec<PathBuf> {
                if !component.contains('*') {
                    return vec![dir.join(component)];
                }
                std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok())
                            .filter(|e| wildcard(component, &e.file_name().to_string_lossy()))
                            .map(|e| e.path())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .filter(|p| p.exists())
            .collect();
    }
    !here.is_empty()
}

/// What `.gitignore` anchors at the root (`/.ci/node`, `/target`): generated, not kept in the
/// repository, so a fresh checkout does not have it and the docs may still name it.
fn generated(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join(".gitignore"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix('/'))
        .map(|path| path.trim_end_matches('/').to_owned())
        .collect()
}

#[test]
fn every_repository_file_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = generated(root);
    let mut documents = documents();
    documents.push(root.join("vendor/README.md"));
    let mut missing = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).expect("read the document");
        for (number, line) in text.lines().enumerate() {
            for path in named_paths(line) {
                let is_generated = generated
                    .iter()
                    .any(|g| path == *g || path.starts_with(&format!("{g}/")));
                if !is_generated && !exists(root, &path) {
                    missing.push(format!(
                        "{}:{}: {path}",
                        document.strip_prefix(root).unwrap_or(document).display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name files that do not exist (rename them, or name the module or folder):\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_stays_a_newcomers_five_minutes() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines: move detail to the guide of its reader in docs/"
    );
}

#[test]
fn named_paths_are_read_as_documented() {
    assert_eq!(
        named_paths(
            "See `src/db/users.rs`, tests/api/helpers.rs. (scripts/x.sh) and \
             `migrations/*/1_a.sql`: deploy/ and ../shared/peers/go, not target/x or mysrc/a"
        ),
        [
            "src/db/users.rs",
            "tests/api/helpers.rs",
            "scripts/x.sh",
            "migrations/*/1_a.sql",
            "deploy/"
        ]
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(exists(root, "tests/api/docs.rs"));
    assert!(exists(root, "tests/"));
    assert!(exists(root, "tests/*/docs.rs"));
    assert!(exists(root, "docs/*.md"));
    assert!(!exists(root, "tests/api/no-such-file.rs"));
    assert!(!exists(root, "src/throttle.rs"));
    assert!(generated(root).iter().any(|g| g == "target"));
    assert!(wildcard("a*c*e", "abcde") && !wildcard("a*c", "abd"));
}
