//! The migration files themselves: each backend's versions are unique and well formed, and
//! SQLite's are a subset of PostgreSQL's.
//!
//! Two branches that each add a migration can pick the same version; sqlx then refuses to
//! migrate at start and the server never becomes ready (it happened once: two
//! `20261203100000_*` files). This test names the clash at build time instead.

use std::{collections::BTreeMap, fs, path::Path};

/// The versions of one backend's migrations, each with its file names.
fn versions(backend: &str) -> BTreeMap<u64, Vec<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut found: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (version, rest) = name
            .split_once('_')
            .unwrap_or_else(|| panic!("{backend}/{name}: not <version>_<description>.sql"));
        assert!(
            version.len() == 14 && version.bytes().all(|b| b.is_ascii_digit()),
            "{backend}/{name}: the version must be a timestamp, YYYYMMDDhhmmss"
        );
        assert!(
            rest.ends_with(".sql") && !rest.ends_with(".down.sql"),
            "{backend}/{name}: migrations are up-only .sql files"
        );
        found
            .entry(version.parse().unwrap())
            .or_default()
            .push(name);
    }
    found
}

#[test]
fn every_migration_version_is_unique_per_backend() {
    for backend in ["postgres", "sqlite"] {
        let versions = versions(backend);
        assert!(!versions.is_empty(), "{backend}: no migrations found");
        for (version, files) in &versions {
            assert_eq!(
                files.len(),
                1,
                "{backend}: version {version} is taken by {files:?}; give the newer one a later version"
            );
        }
    }
}

#[test]
fn sqlite_migrations_have_postgres_counterparts_of_the_same_name() {
    // PostgreSQL may have more (an index only its collation needs); SQLite none of its own.
    let postgres = versions("postgres");
    for (version, files) in versions("sqlite") {
        assert_eq!(
            postgres.get(&version),
            Some(&files),
            "sqlite's {files:?} has no postgres migration of the same version and name"
        );
    }
}
