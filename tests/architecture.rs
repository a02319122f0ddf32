//! Dependencies between the crate's top-level modules point one way.
//!
//! Reads `src/**/*.rs`, collects every `crate::<module>` reference (including the names inside
//! `use crate::{...}` groups, and the crate-root re-exports `crate::Error`, `crate::Config`, `crate::Settings`,
//! `crate::Application`) per top-level module, and fails on an import circle or on a module
//! reaching up past its layer in [`LAYERS`]. Comments are skipped: a doc link is no dependency.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// The layers, bottom first. A module may use its own layer and those below it, never above.
/// A module missing from this table fails the test, so a new one gets a place on purpose.
const LAYERS: &[&[&str]] = &[
    // Generated code, errors, validated domain types, the readiness flag, the clients'
    // service config.
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
    // The gRPC services, the request middleware, operations (metrics, admin port), the bot.
    &["service", "middleware", "ops", "bot"],
    // The wiring.
    &["app"],
];

/// Crate-root re-exports (`pub use` in lib.rs) and the module they name.
const REEXPORTS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Config", "config"),
    ("Settings", "config"),
    ("Application", "app"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
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

/// `module -> modules it uses`, over the whole of src/.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
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

#[test]
fn the_module_graph_has_no_circles() {
    let graph = dependency_graph();
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_from(&graph, m, &mut vec![m.clone()]))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn no_module_reaches_up_past_its_layer() {
    let graph = dependency_graph();
    let mut violations = Vec::new();
    for (module, uses) in &graph {
        let Some(own) = layer_of(module) else {
            violations.push(format!("{module} is missing from LAYERS"));
            continue;
        };
        for used in uses {
            match layer_of(used) {
                Some(layer) if layer <= own => {}
                Some(_) => violations.push(format!("{module} uses {used}, a higher layer")),
                None => violations.push(format!("{module} uses {used}, missing from LAYERS")),
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

/// The modules built without the `server` feature: the generated code, the balancing client,
/// the bot and what they need. lib.rs gates every other module behind `server`, so that
/// `produto-bot` builds without the server's crates (sqlx, argon2...).
const THIN: &[&str] = &[
    "pb",
    "telemetry",
    "signal",
    "service_config",
    "client",
    "bot",
];

#[test]
fn the_bot_side_uses_no_server_module() {
    let graph = dependency_graph();
    let mut reaching = Vec::new();
    for module in THIN {
        for used in graph.get(*module).into_iter().flatten() {
            if !THIN.contains(&used.as_str()) {
                reaching.push(format!(
                    "{module} uses {used}, which only the server builds"
                ));
            }
        }
    }
    assert!(reaching.is_empty(), "{reaching:#?}");
}

#[test]
fn lib_rs_gates_exactly_the_server_modules() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut wrong = Vec::new();
    let mut gated = false;
    for line in lib.lines().map(str::trim) {
        if line == r#"#[cfg(feature = "server")]"# {
            gated = true;
            continue;
        }
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|rest| rest.strip_suffix(';'))
            && gated == THIN.contains(&name)
        {
            wrong.push(format!(
                "{name}: gated {gated}, thin {}",
                THIN.contains(&name)
            ));
        }
        gated = false;
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
