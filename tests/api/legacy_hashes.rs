//! Every password hash an old Python bot may hold, made by the real libraries (Werkzeug,
//! Django, passlib, bcrypt, argon2-cffi: `tests/python/legacy_hashes.py`, at each library's
//! defaults but PBKDF2's iterations; those defaults are imported dry), imported with
//! `import-users` and logged in through the real server: the right password logs in and
//! leaves argon2id behind, a wrong one answers what an unknown user gets.
//! Hashes over produto's caps, made by the same libraries, are refused at import with the
//! format and the cap named. Without those libraries the test says SKIPPED, except under
//! `CI=true`, where it fails (`.ci/run` installs tests/python/requirements.txt).

use std::{collections::BTreeMap, process::Stdio};

use produto::{
    domain::Usuario,
    import::{Columns, ImportSettings, Source},
    password::legacy::LEGACY_LABELS,
};
use serde_json::Value;
use tokio::{process::Command, sync::OnceCell};
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{Backend, TestDb, spawn_with, test_config};

use crate::import::{import, wait_for_gauge};

const LIBRARIES: &str = "import werkzeug, django, passlib, bcrypt, argon2";

/// What the script made: a user per good hash, and the over-cap hashes.
struct Made {
    /// `(format label, what made it, hash, password)`.
    ok: Vec<(String, String, String, String)>,
    /// `(format label, what made it, hash)`: PBKDF2 at the libraries' default counts.
    defaults: Vec<(String, String, String)>,
    /// `(what made it, hash, words the refusal must hold)`.
    over_cap: Vec<(String, String, String)>,
}

/// The script's hashes, made once for both backends (making them takes seconds: the
/// libraries' default costs); `None` when the libraries are missing outside CI.
async fn made_by_the_libraries() -> Option<&'static Made> {
    static MADE: OnceCell<Option<Made>> = OnceCell::const_new();
    MADE.get_or_init(run_the_script).await.as_ref()
}

async fn run_the_script() -> Option<Made> {
    let available = Command::new("python3")
        .args(["-c", LIBRARIES])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !available {
        let missing = "python3 with Werkzeug, Django, passlib, bcrypt and argon2-cffi is not \
                       available (pip install -r tests/python/requirements.txt)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {missing}"
        );
        eprintln!("SKIPPED: {missing}");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/legacy_hashes.py");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        Command::new("python3").arg(script).output(),
    )
    .await
    .expect("the script makes its hashes within 5 minutes")
    .expect("run tests/python/legacy_hashes.py");
    assert!(
        output.status.success(),
        "legacy_hashes.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    println!("made by {}", json["versions"]);
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    let rows = |key: &str| json[key].as_array().expect("a list").clone();
    let ok = rows("ok")
        .iter()
        .map(|r| (text(&r[0]), text(&r[1]), text(&r[2]), text(&r[3])))
        .collect();
    let triples = |key: &str| {
        rows(key)
            .iter()
            .map(|r| (text(&r[0]), text(&r[1]), text(&r[2])))
            .collect()
    };
    Some(Made {
        ok,
        defaults: triples("defaults"),
        over_cap: triples("over_cap"),
    })
}

/// The old bot's table `usuarios`: a user per good hash (`u01`, `u02`... in the script's
/// order, level its number), then a user per over-cap hash; and a table `padroes` of the
/// hashes at the libraries' default PBKDF2 counts.
async fn old_bot_database(made: &Made) -> TestDb {
    use sqlx::Connection;
    let source = TestDb::create(Backend::Postgres).await;
    let mut conn = sqlx::PgConnection::connect(&source.url).await.unwrap();
    let hashes = made.ok.iter().map(|(_, _, hash, _)| hash);
    let over = made.over_cap.iter().map(|(_, hash, _)| hash);
    let defaults = made.defaults.iter().map(|(_, _, hash)| hash);
    let tables: [(&str, Vec<&String>); 2] = [
        ("usuarios", hashes.chain(over).collect()),
        ("padroes", defaults.collect()),
    ];
    for (table, hashes) in tables {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (id serial PRIMARY KEY, usuario text, senha text, nivel int)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        for (n, hash) in hashes.into_iter().enumerate() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (usuario, senha, nivel) VALUES ($1, $2, $3)"
            )))
            .bind(format!("u{:02}", n + 1))
            .bind(hash)
            .bind(n as i32 + 1)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    source
}

/// The import's counts by format label.
fn counts<'a>(labels: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, u64> {
    let mut by_format = BTreeMap::new();
    for label in labels {
        *by_format.entry(label).or_insert(0) += 1;
    }
    by_format
}

pub async fn every_hash_an_old_python_bot_holds_logs_in_and_becomes_argon2id(backend: Backend) {
    let Some(made) = made_by_the_libraries().await else {
        return;
    };
    let source = old_bot_database(made).await;
    let target = TestDb::create(backend).await;
    let settings = |table: &str, dry_run| ImportSettings {
        from: source.url.clone().into(),
        source: Source::Query(format!(
            "SELECT usuario, senha, nivel FROM {table} ORDER BY id"
        )),
        columns: Columns::default(),
        dry_run,
        plaintext_passwords: false,
    };
    // PBKDF2 at each library's default count is within the cap (a dry run: no login).
    let dry = import(&target, &settings("padroes", true)).await;
    let labels = made.defaults.iter().map(|(label, ..)| label.as_str());
    assert_eq!(dry.imported, counts(labels), "{dry}");
    assert!(dry.rejected.is_empty(), "{dry}");

    let report = import(&target, &settings("usuarios", false)).await;
    let text = report.to_string();
    println!("{text}");
    // Every good hash is imported, counted under its format's label...
    let by_format = counts(made.ok.iter().map(|(label, ..)| label.as_str()));
    assert_eq!(report.imported, by_format, "{text}");
    // ...every legacy format among them (all but SHA-256 hex, which no library makes).
    for label in &LEGACY_LABELS[..LEGACY_LABELS.len() - 1] {
        assert!(
            by_format.contains_key(label),
            "no {label} hash made: {text}"
        );
    }
    // Every over-cap hash is refused, naming its format and the cap, never quoting it.
    assert_eq!(report.rejected.len(), made.over_cap.len(), "{text}");
    for (rejected, (name, hash, reason)) in report.rejected.iter().zip(&made.over_cap) {
        assert!(
            rejected.reason.starts_with("senha: ") && rejected.reason.contains(reason.as_str()),
            "{name}: {}",
            rejected.reason
        );
        assert!(
            rejected.reason.contains("cap"),
            "{name}: {}",
            rejected.reason
        );
        assert!(!text.contains(hash.as_str()), "{text}");
    }
    for (_, _, hash, password) in &made.ok {
        assert!(!text.contains(hash.as_str()) && !text.contains(password.as_str()));
    }

    let mut config = test_config(&target.url);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config, target).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    let admin = app.admin_addr.unwrap();
    // The gauge's SQL tells every format apart as the import did.
    for (label, n) in by_format.iter().filter(|(l, _)| **l != "argon2") {
        wait_for_gauge(admin, label, *n as i64).await;
    }

    let unknown = app.login("ninguem", "senha errada").await.unwrap();
    assert_eq!(unknown, (false, 0));
    for (n, (label, by, _, password)) in made.ok.iter().enumerate() {
        let usuario = format!("u{:02}", n + 1);
        let who = format!("{usuario}: {label} made by {by}");
        // A wrong password gets exactly the unknown user's answer.
        assert_eq!(
            app.login(&usuario, "senha errada").await.unwrap(),
            unknown,
            "{who}"
        );
        assert_eq!(
            app.login(&usuario, password).await.unwrap(),
            (true, n as i32 + 1),
            "{who}"
        );
        let stored = produto::users::Users::new(app.db.clone())
            .credentials(&Usuario::parse(usuario.clone()).unwrap())
            .await
            .unwrap()
            .unwrap()
            .senha_hash;
        assert!(
            stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{who}: not re-hashed"
        );
        assert_eq!(
            app.login(&usuario, password).await.unwrap(),
            (true, n as i32 + 1),
            "{who}: after the re-hash"
        );
        assert_eq!(
            app.login(&usuario, "senha errada").await.unwrap(),
            unknown,
            "{who}: after the re-hash"
        );
    }
    // Nobody is left on a legacy hash.
    for label in LEGACY_LABELS {
        wait_for_gauge(admin, label, 0).await;
    }
}

on_both_backends!(every_hash_an_old_python_bot_holds_logs_in_and_becomes_argon2id);
