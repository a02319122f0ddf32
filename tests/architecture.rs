//! Dependencies point one way: between the workspace's crates, and between each crate's
//! top-level modules.
//!
//! Crates: the bot depends on the client crate only, the client crate on no other member, and
//! neither has sqlx or argon2 anywhere in its dependency tree (`cargo tree`).
//!
//! Modules: reads `src/**/*.rs` of the server (the root package) and of the client crate,
//! collects every `crate::<module>` reference (including the names inside `use crate::{...}`
//! groups, and the crate-root re-exports `crate::Error`, `crate::Config`, `crate::Settings`,
//! `crate::Application`) per top-level module, and fails on an import circle or on a module
//! reaching up past its layer in [`LAYERS`] (the client crate's: [`CLIENT_LAYERS`]). Comments
//! are skipped: a doc link is no dependency.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// The layers, bottom first. A module may use its own layer and those below it, never above.
/// A module missing from this table fails the test, so a new one gets a place on purpose.
const LAYERS: &[&[&str]] = &[
    // Generated code, errors, validated domain types, the readiness flag, the clients'
    // service config, log setup, the shutdown signal (`pb`, `telemetry`, `service_config`,
    // `signal` and `client` are the client crate's, re-exported).
    &[
        "pb",
        "error",
        "domain",
        "telemetry",
        "ready",
        "service_config",
        "signal",
    ],
    // Storage, hashing, the throttle's arithmetic, caller authentication, the balancing
    // client (over the generated code and the service config only), the import of the old
    // bot's users (over storage and hashing).
    &["db", "password", "throttle", "auth", "client", "import"],
    // Settings: the flags, and the small settings each component takes.
    &["config"],
    // The gRPC services, the request middleware, operations (metrics, admin port).
    &["service", "middleware", "ops"],
    // The wiring.
    &["app"],
];

/// The client crate's layers: the balancing client over the rest.
const CLIENT_LAYERS: &[&[&str]] = &[
    &[
        "pb",
        "service_config",
        "signal",
        "telemetry",
        "otel",
        "admin",
    ],
    &["client"],
];

/// Crate-root re-exports (`pub use` in lib.rs) and the module they name.
const REEXPORTS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Config", "config"),
    ("Settings", "config"),
    ("Application", "app"),
];

fn layer_of(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|layer| layer.contains(&module))
}

/// A member crate's directory.
fn member(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The top-level module a source file belongs to; `None` for the crate root and binaries.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `//` comments (doc comments included).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of each item in a `{...}` group starting at `text[0] == '{'`.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    let mut at_head = true;
    for c in text.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    at_head = false;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                heads.push(std::mem::take(&mut current));
                at_head = true;
            }
            c if depth == 1 && at_head => {
                if c.is_alphanumeric() || c == '_' {
                    current.push(c);
                } else if !current.is_empty() {
                    at_head = false;
                }
            }
            _ => {}
        }
    }
    heads.push(current);
    heads.retain(|h| !h.is_empty() && h != "self");
    heads
}

/// Every module a file's code names through `crate::`.
fn references(text: &str) -> BTreeSet<String> {
    let text = without_comments(text);
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let heads = if rest.starts_with('{') {
            group_heads(rest)
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            vec![name]
        };
        for head in heads {
            let module = REEXPORTS
                .iter()
                .find(|(name, _)| *name == head)
                .map_or(head.clone(), |(_, module)| module.to_string());
            found.insert(module);
        }
    }
    found
}

/// `module -> modules it uses`, over the whole of a crate's src/.
fn dependency_graph(crate_dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = crate_dir.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = fs::read_to_string(&file).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for used in references(&text) {
            if used != module {
                uses.insert(used);
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one (depth-first search).
fn circle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in graph.get(path.last().unwrap()).into_iter().flatten() {
        if next == start {
            let mut circle = path.clone();
            circle.push(start.to_owned());
            return Some(circle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(circle) = circle_from(graph, start, path) {
                return Some(circle);
            }
            path.pop();
        }
    }
    None
}

/// The crates whose modules are layered, with their layers.
fn layered_crates() -> [(std::path::PathBuf, &'static [&'static [&'static str]]); 2] {
    [
        (member("."), LAYERS),
        (member("crates/produto-client"), CLIENT_LAYERS),
    ]
}

#[test]
fn the_module_graph_has_no_circles() {
    for (dir, _) in layered_crates() {
        let graph = dependency_graph(&dir);
        let circles: Vec<String> = graph
            .keys()
            .filter_map(|m| circle_from(&graph, m, &mut vec![m.clone()]))
            .map(|c| c.join(" -> "))
            .collect();
        assert!(
            circles.is_empty(),
            "{}: import circles: {circles:#?}",
            dir.display()
        );
    }
}

#[test]
fn no_module_reaches_up_past_its_layer() {
    let mut violations = Vec::new();
    for (dir, layers) in layered_crates() {
        let graph = dependency_graph(&dir);
        // The server re-exports the client crate's modules: in its table, with no files.
        for (module, uses) in &graph {
            let Some(own) = layer_of(layers, module) else {
                violations.push(format!(
                    "{}: {module} is missing from its layers",
                    dir.display()
                ));
                continue;
            };
            for used in uses {
                match layer_of(layers, used) {
                    Some(layer) if layer <= own => {}
                    Some(_) => violations.push(format!("{module} uses {used}, a higher layer")),
                    None => {
                        violations.push(format!("{module} uses {used}, missing from the layers"))
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_reference_collector_sees_groups_and_reexports() {
    let text = "use crate::{\n    db::{Db, X},\n    Error,\n};\n// crate::app is a comment\nfn f() { crate::ops::g(); }";
    let found: Vec<String> = references(text).into_iter().collect();
    assert_eq!(found, ["db", "error", "ops"]);
}

/// The `[dependencies]` table of a member's Cargo.toml, as the names it lists.
fn manifest_dependencies(crate_dir: &Path) -> Vec<String> {
    let manifest = fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
        } else if in_dependencies
            && let Some((name, _)) = line.split_once(['=', '.'])
            && !line.starts_with('#')
        {
            names.push(name.trim().to_owned());
        }
    }
    names
}

#[test]
fn the_bot_depends_on_the_client_crate_and_not_on_the_server() {
    let bot = manifest_dependencies(&member("crates/produto-bot"));
    assert!(bot.contains(&"produto-client".to_owned()), "{bot:?}");
    assert!(!bot.contains(&"produto".to_owned()), "{bot:?}");
    let client = manifest_dependencies(&member("crates/produto-client"));
    assert!(
        !client.iter().any(|d| d.starts_with("produto")),
        "the client crate depends on no other member: {client:?}"
    );
}

/// The crates the thin side must never pull in, at any depth.
const SERVER_ONLY: &[&str] = &["sqlx", "argon2", "password-hash", "produto"];

#[test]
fn the_bot_and_client_dependency_trees_hold_no_server_crate() {
    for package in ["produto-bot", "produto-client"] {
        let output = std::process::Command::new(env!("CARGO"))
            .args([
                "tree",
                "--quiet",
                "--offline",
                "-e",
                "normal",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .args(["-p", package])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo tree");
        assert!(
            output.status.success(),
            "cargo tree -p {package}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let tree = String::from_utf8(output.stdout).unwrap();
        let found: BTreeSet<&str> = tree
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| SERVER_ONLY.contains(name))
            .collect();
        assert!(found.is_empty(), "{package} pulls in {found:?}:\n{tree}");
        assert!(
            tree.lines().count() > 10,
            "cargo tree printed too little:\n{tree}"
        );
    }
}
