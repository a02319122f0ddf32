//! Dependencies point one way: between the workspace's crates, between each crate's
//! top-level modules, and between any two of its files.
//!
//! Crates: the bot depends on the client crate only, the client crate on no other member, and
//! neither has sqlx or argon2 anywhere in its dependency tree (`cargo tree`).
//!
//! Modules and files: reads `src/**/*.rs` of the server (the root package) and of the client
//! crate with comments, doc comments and string and char literals blanked out (a doc link or
//! a SQL string is no dependency), and resolves every path that names a module of the crate:
//! `use` trees (groups, `self`, renames), and `crate::`, `$crate::`, `super::` and `self::`
//! paths in code, each to the file that defines the item (through `pub use` re-exports, so
//! that `crate::db::Access` is `db/replicas.rs`, not `db/mod.rs`). A module's table of
//! contents (its `mod` declarations and `pub use` re-exports) is no dependency of its own.
//! It fails on an import circle between any two files, on one between top-level modules, and
//! on a top-level module reaching up past its layer in [`LAYERS`] (the client crate's:
//! [`CLIENT_LAYERS`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
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
    // The storage engine, hashing, caller authentication, the balancing client (over the
    // generated code and the service config only).
    &["db", "password", "auth", "client"],
    // The features: each owns its SQL (run through `db`), its counters and its policy.
    &["users", "login", "sessions", "audit", "import"],
    // Settings: the flags, and the small settings each component takes.
    &["config"],
    // Serving: the gRPC services and their middleware, operations (metrics, admin port).
    &["rpc", "ops"],
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
        "cli",
        "admin",
    ],
    &["client"],
];

fn layer_of(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|layer| layer.contains(&module))
}

/// A member crate's directory.
fn member(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A crate's library sources, by path under `src/` (`db/query.rs`); binaries left out.
fn library_sources(crate_dir: &Path) -> BTreeMap<String, String> {
    let src = crate_dir.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let relative = file.strip_prefix(&src).ok()?.to_str()?.replace('\\', "/");
            let binary = relative == "main.rs" || relative.starts_with("bin/");
            (!binary).then(|| (relative, fs::read_to_string(&file).unwrap()))
        })
        .collect()
}

/// The module path of a source file: `lib.rs` is `[]`, `db/mod.rs` `[db]`, `db/query.rs`
/// `[db, query]`.
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source with comments (doc comments included), string literals (raw and byte ones
/// too) and char literals blanked out, line breaks kept.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#, as many # at the end as at the start.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(&ch) => {
                        out.push(blank(ch));
                        j += 1;
                    }
                }
            }
            out.push(' ');
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    out.push(blank(ch));
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'); otherwise a lifetime or a label.
            let end = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push(' ');
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The code as tokens: identifiers (with `$crate` as one), `::`, and single punctuation.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' || (c == '$' && chars.get(i + 1) == Some(&'c')) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
}

/// One path a file names: where it starts and its segments.
#[derive(Debug, Clone)]
struct Named {
    /// The module the path is relative to (the file's, or an inline module's inside it).
    module: Vec<String>,
    segments: Vec<String>,
    /// Named by a `pub use` (a re-export) or a `mod` declaration: the module's table of
    /// contents, not a dependency of the file.
    contents: bool,
    /// The name it is re-exported under, for a `pub use`.
    alias: Option<String>,
}

/// Flattens a `use` tree starting at `tokens[*at]` into full paths (with their aliases).
fn use_tree(
    tokens: &[String],
    at: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix.to_vec();
    while let Some(token) = tokens.get(*at) {
        match token.as_str() {
            "{" => {
                *at += 1;
                loop {
                    use_tree(tokens, at, &path, out);
                    match tokens.get(*at).map(String::as_str) {
                        Some(",") => *at += 1,
                        Some("}") => {
                            *at += 1;
                            return;
                        }
                        _ => return,
                    }
                    if tokens.get(*at).map(String::as_str) == Some("}") {
                        *at += 1;
                        return;
                    }
                }
            }
            "::" => *at += 1,
            "*" => {
                *at += 1;
                out.push((path, Some("*".into())));
                return;
            }
            "as" => {
                let alias = tokens.get(*at + 1).cloned();
                *at += 2;
                out.push((path, alias));
                return;
            }
            "self" if path.len() > prefix.len() || !prefix.is_empty() => {
                *at += 1;
                let alias = prefix.last().cloned();
                if tokens.get(*at).map(String::as_str) == Some("as") {
                    continue;
                }
                out.push((path, alias));
                return;
            }
            t if is_ident(t) => {
                path.push(t.to_owned());
                *at += 1;
            }
            _ => {
                let alias = path.last().cloned();
                if path.len() > prefix.len() {
                    out.push((path, alias));
                }
                return;
            }
        }
    }
}

/// Every path a file names that may be one of the crate's: `use` trees, `mod` declarations,
/// and `crate::` / `$crate::` / `super::` / `self::` paths in code. `module` is the file's.
fn named_paths(text: &str, module: &[String]) -> Vec<Named> {
    let tokens = tokens(&code_only(text));
    let mut named = Vec::new();
    // Inline modules (`mod tests { ... }`) open at a brace depth; paths inside are theirs.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let here = || {
            let mut m = module.to_vec();
            m.extend(inline.iter().map(|(name, _)| name.clone()));
            m
        };
        let token = tokens[i].as_str();
        let public = i > 0 && (tokens[i - 1] == "pub" || tokens[i - 1] == ")");
        match token {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 1).is_some_and(|t| is_ident(t)) => {
                let name = tokens[i + 1].clone();
                match tokens.get(i + 2).map(String::as_str) {
                    Some("{") => {
                        inline.push((name, depth));
                        depth += 1;
                        i += 3;
                        continue;
                    }
                    _ => named.push(Named {
                        module: here(),
                        segments: vec!["self".into(), name],
                        contents: true,
                        alias: None,
                    }),
                }
            }
            "use" => {
                let mut at = i + 1;
                let mut trees = Vec::new();
                use_tree(&tokens, &mut at, &[], &mut trees);
                for (segments, alias) in trees {
                    named.push(Named {
                        module: here(),
                        segments,
                        contents: public,
                        alias,
                    });
                }
                i = at;
                continue;
            }
            "crate" | "$crate" | "super" | "self"
                if tokens.get(i + 1).map(String::as_str) == Some("::")
                    && (i == 0 || tokens[i - 1] != "::") =>
            {
                let mut segments = vec![token.to_owned()];
                let mut at = i + 1;
                while tokens.get(at).map(String::as_str) == Some("::")
                    && tokens.get(at + 1).is_some_and(|t| is_ident(t))
                {
                    segments.push(tokens[at + 1].clone());
                    at += 2;
                }
                named.push(Named {
                    module: here(),
                    segments,
                    contents: false,
                    alias: None,
                });
                i = at;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    named
}

/// A crate's files and what they name, for resolving paths to files.
struct Crate {
    /// Module path -> file.
    files: BTreeMap<Vec<String>, String>,
    /// File -> what it names.
    named: BTreeMap<String, Vec<Named>>,
}

impl Crate {
    fn new(sources: &BTreeMap<String, String>) -> Self {
        let files = sources
            .keys()
            .map(|file| (module_path(file), file.clone()))
            .collect();
        let named = sources
            .iter()
            .map(|(file, text)| (file.clone(), named_paths(text, &module_path(file))))
            .collect();
        Crate { files, named }
    }

    /// A path as absolute segments from the crate root; `None` for another crate's.
    fn absolute(&self, module: &[String], segments: &[String]) -> Option<Vec<String>> {
        let mut base = module.to_vec();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate" | "$crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            // A child module of the current one (2018 paths), else another crate.
            Some(first) => {
                let mut child = module.to_vec();
                child.push(first.to_owned());
                let is_child = self.files.contains_key(&child)
                    || self.files.keys().any(|m| m.starts_with(&child));
                if !is_child {
                    return None;
                }
            }
            None => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The file that defines what the absolute `path` names: the deepest module file on the
    /// way, or, when that file re-exports the next name, the file the re-export names.
    fn resolve(&self, path: &[String], hops: usize) -> Option<String> {
        let mut module: Vec<String> = Vec::new();
        for (i, segment) in path.iter().enumerate() {
            let mut child = module.clone();
            child.push(segment.clone());
            if self.files.contains_key(&child) {
                module = child;
                continue;
            }
            let file = self.files.get(&module)?;
            if hops < 8
                && let Some(target) = self.reexport(file, segment)
            {
                let mut target = target;
                target.extend(path[i + 1..].iter().cloned());
                return self
                    .resolve(&target, hops + 1)
                    .or_else(|| Some(file.clone()));
            }
            return Some(file.clone());
        }
        self.files.get(&module).cloned()
    }

    /// Where `file`'s `pub use` of `name` points, as an absolute path.
    fn reexport(&self, file: &str, name: &str) -> Option<Vec<String>> {
        self.named[file]
            .iter()
            .filter(|n| n.contents && n.alias.as_deref() == Some(name))
            .find_map(|n| self.absolute(&n.module, &n.segments))
    }

    /// `file -> files it uses`.
    fn file_graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, named) in &self.named {
            let uses = graph.entry(file.clone()).or_default();
            for n in named.iter().filter(|n| !n.contents) {
                let Some(path) = self.absolute(&n.module, &n.segments) else {
                    continue;
                };
                if let Some(used) = self.resolve(&path, 0)
                    && used != *file
                {
                    uses.insert(used);
                }
            }
        }
        graph
    }
}

/// The top-level module of a file; `None` for the crate root.
fn top_module(file: &str) -> Option<String> {
    module_path(file).first().cloned()
}

/// `module -> modules it uses`, from the file graph.
fn module_graph(files: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, uses) in files {
        let Some(module) = top_module(file) else {
            continue;
        };
        let entry = graph.entry(module.clone()).or_default();
        for used in uses.iter().filter_map(|f| top_module(f)) {
            if used != module {
                entry.insert(used);
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

fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    graph
        .keys()
        .filter_map(|m| circle_from(graph, m, &mut vec![m.clone()]))
        .map(|c| c.join(" -> "))
        .collect()
}

/// The crates whose modules are layered, with their layers.
fn layered_crates() -> [(PathBuf, &'static [&'static [&'static str]]); 2] {
    [
        (member("."), LAYERS),
        (member("crates/produto-client"), CLIENT_LAYERS),
    ]
}

fn file_graph_of(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    Crate::new(&library_sources(dir)).file_graph()
}

#[test]
fn no_two_files_import_each_other_even_through_others() {
    for (dir, _) in layered_crates() {
        let circles = circles(&file_graph_of(&dir));
        assert!(
            circles.is_empty(),
            "{}: import circles between files: {circles:#?}",
            dir.display()
        );
    }
}

#[test]
fn the_module_graph_has_no_circles() {
    for (dir, _) in layered_crates() {
        let circles = circles(&module_graph(&file_graph_of(&dir)));
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
        let graph = module_graph(&file_graph_of(&dir));
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

/// A crate made of `(file, text)` pairs, as its file graph.
fn graph_of(files: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
    let sources = files
        .iter()
        .map(|(f, t)| ((*f).to_owned(), (*t).to_owned()))
        .collect();
    Crate::new(&sources).file_graph()
}

fn uses_of(graph: &BTreeMap<String, BTreeSet<String>>, file: &str) -> Vec<String> {
    graph[file].iter().cloned().collect()
}

#[test]
fn the_collector_sees_groups_reexports_super_and_code_paths_but_not_comments_or_strings() {
    let graph = graph_of(&[
        (
            "lib.rs",
            "pub mod app;\npub mod db;\npub mod error;\npub mod ops;\npub use error::Error;",
        ),
        ("error.rs", "pub enum Error {}"),
        (
            "app.rs",
            "/// crate::ops is a doc link\nfn f() { let _ = \"crate::ops::x\"; let _ = r#\"super::ops\"#; }",
        ),
        (
            "ops.rs",
            "use crate::{\n    db::{Db, X},\n    Error,\n};\nfn g() { crate::app::h(); }",
        ),
        ("db/mod.rs", "mod query;\npub use query::X;\npub struct Db;"),
        (
            "db/query.rs",
            "pub struct X;\nfn q<'a>(c: char) { let _ = '\"'; super::Db::f(); }\n#[cfg(test)]\nmod tests { use super::*; }",
        ),
    ]);
    assert_eq!(uses_of(&graph, "app.rs"), Vec::<String>::new());
    assert_eq!(
        uses_of(&graph, "ops.rs"),
        ["app.rs", "db/mod.rs", "db/query.rs", "error.rs"]
    );
    // The table of contents (`mod`, `pub use`) is no dependency; `super::*` inside the
    // file's own tests is the file itself.
    assert_eq!(uses_of(&graph, "db/mod.rs"), Vec::<String>::new());
    assert_eq!(uses_of(&graph, "db/query.rs"), ["db/mod.rs"]);
}

#[test]
fn a_circle_inside_one_module_is_caught() {
    // The shape db/ once had: the query path used the pool figures, which used the queries'
    // list of legacy formats, whose file used the query path.
    let graph = graph_of(&[
        ("lib.rs", "pub mod db;"),
        (
            "db/mod.rs",
            "mod query;\nmod stats;\npub mod users;\npub use stats::PoolStats;\npub struct Db;",
        ),
        (
            "db/query.rs",
            "use super::{Db, PoolStats, stats::GaugeGuard};\nmacro_rules! per_backend { () => { $crate::db::query::statement() } }",
        ),
        (
            "db/stats.rs",
            "pub struct PoolStats;\npub struct GaugeGuard;\nfn f() { super::users::LEGACY_FORMATS.iter(); }",
        ),
        (
            "db/users.rs",
            "use super::{Db, query::per_backend};\npub const LEGACY_FORMATS: [&str; 0] = [];",
        ),
    ]);
    let found = circles(&graph);
    assert!(
        found
            .iter()
            .any(|c| c.contains("db/query.rs -> db/stats.rs -> db/users.rs -> db/query.rs")),
        "{found:#?}"
    );
    // Between top-level modules there is no circle at all: only the file graph sees it.
    assert!(circles(&module_graph(&graph)).is_empty());
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

#[test]
fn tests_and_benches_share_helpers_through_the_testkit_crate_only() {
    // The server's [dependencies] never name the testkit: it is a dev-dependency.
    let server = manifest_dependencies(&member("."));
    assert!(
        !server.contains(&"produto-testkit".to_owned()),
        "{server:?}"
    );
    // No test or bench includes another's file through a path attribute: shared code lives
    // in crates/produto-testkit. (Spelt in two halves, so this file does not match itself.)
    let attribute = concat!("#[", "path");
    let mut files = Vec::new();
    for dir in ["tests", "benches"] {
        rust_files(&member(dir), &mut files);
    }
    let includes: Vec<String> = files
        .into_iter()
        .filter(|file| fs::read_to_string(file).unwrap().contains(attribute))
        .map(|file| file.display().to_string())
        .collect();
    assert!(includes.is_empty(), "files included by path: {includes:#?}");
}
