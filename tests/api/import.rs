//! `import-users` as a team moving from the old bot runs it: the bot's PostgreSQL table with
//! every password format it may hold and some broken rows, imported into a fresh produto
//! database (PostgreSQL and SQLite); then each user logs in through the real server with
//! its own password, and its legacy hash is argon2id after that login.

use std::time::{Duration, Instant};

use argon2::{
    Argon2, PasswordHasher,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use produto::{
    domain::Usuario,
    import::{Columns, ImportSettings, Report, Source},
    password::legacy::Format,
    users::Users,
};
use sha2::{Digest, Sha256};
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{Backend, TestDb, http::http_get, spawn_with, test_config};

/// A user of the old bot: name, stored password, the password itself, level.
struct OldUser {
    usuario: &'static str,
    senha: String,
    password: &'static str,
    nivel: i32,
    format: Format,
}

fn pbkdf2_sha256(password: &str, salt: &str, iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut out);
    out
}

/// One user per format the import recognises (bcrypt in its three prefixes), each hash made
/// here with the same crates the formats' reference implementations agree with (see
/// `password::legacy`'s known-answer test).
fn good_users() -> Vec<OldUser> {
    let argon2 = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(1024, 1, 1, None).unwrap(),
    )
    .hash_password(b"senha da ana", &SaltString::generate(&mut OsRng))
    .unwrap()
    .to_string();
    let bcrypt = |password: &str, prefix: &str| {
        bcrypt::hash(password, 4)
            .unwrap()
            .replacen("$2b$", prefix, 1)
    };
    vec![
        OldUser {
            usuario: "ana",
            senha: argon2,
            password: "senha da ana",
            nivel: 1,
            format: Format::Argon2,
        },
        OldUser {
            usuario: "bruno",
            senha: bcrypt("senha do bruno", "$2b$"),
            password: "senha do bruno",
            nivel: 2,
            format: Format::Bcrypt,
        },
        OldUser {
            usuario: "carla",
            senha: bcrypt("senha da carla", "$2y$"),
            password: "senha da carla",
            nivel: 0,
            format: Format::Bcrypt,
        },
        OldUser {
            usuario: "caio",
            senha: bcrypt("senha do caio", "$2a$"),
            password: "senha do caio",
            nivel: 0,
            format: Format::Bcrypt,
        },
        OldUser {
            usuario: "diego",
            senha: format!(
                "pbkdf2:sha256:1000$Xy7salt9${}",
                hex::encode(pbkdf2_sha256("senha do diego", "Xy7salt9", 1000))
            ),
            password: "senha do diego",
            nivel: 3,
            format: Format::WerkzeugPbkdf2,
        },
        OldUser {
            usuario: "elisa",
            senha: format!(
                "pbkdf2_sha256$1000$s4ltDj4ngo${}",
                STANDARD.encode(pbkdf2_sha256("senha da elisa", "s4ltDj4ngo", 1000))
            ),
            password: "senha da elisa",
            nivel: 1,
            format: Format::DjangoPbkdf2,
        },
        OldUser {
            usuario: "fábio",
            senha: hex::encode(Sha256::digest("senha do fábio")),
            password: "senha do fábio",
            nivel: 5,
            format: Format::Sha256,
        },
    ]
}

/// A row that must be rejected: `(usuario, senha, nivel, a word of the reason)`, every field
/// as the old table may hold it (NULLs included).
type BrokenRow = (
    Option<&'static str>,
    Option<String>,
    Option<i32>,
    &'static str,
);

fn broken_rows() -> Vec<BrokenRow> {
    let sha = hex::encode(Sha256::digest("x"));
    vec![
        (
            Some("gil"),
            Some("senha em claro".into()),
            Some(1),
            "see --plaintext-passwords",
        ),
        (
            Some(""),
            Some(sha.clone()),
            Some(1),
            "usuario: must not be empty",
        ),
        (
            Some("hugo"),
            Some(bcrypt::hash("x", 4).unwrap().replacen("$04$", "$20$", 1)),
            Some(1),
            "cost 20",
        ),
        (
            Some("iris"),
            Some("pbkdf2:sha256:5000000$salt$00".into()),
            Some(1),
            "5000000 iterations",
        ),
        (Some("joana"), Some(sha.clone()), None, "nivel is NULL"),
        (
            Some("kaue"),
            Some(sha.clone()),
            Some(-1),
            "nivel: must be 0 or greater",
        ),
        (Some("lia"), None, Some(1), "senha is NULL"),
        (
            Some("mauro"),
            Some("scrypt:32768:8:1$salt$00".into()),
            Some(1),
            "werkzeug_scrypt: the hash is not 128 hex digits",
        ),
        (Some("ana"), Some(sha), Some(4), "appears again"),
    ]
}

/// The old bot's database: its `usuarios` table (its shape: a serial id, the three columns,
/// a timestamp) with the good users and the broken rows, in that order.
async fn old_bot_database() -> (TestDb, Vec<OldUser>) {
    use sqlx::Connection;
    let source = TestDb::create(Backend::Postgres).await;
    let mut conn = sqlx::PgConnection::connect(&source.url).await.unwrap();
    sqlx::query(
        "CREATE TABLE usuarios (
             id serial PRIMARY KEY,
             usuario varchar(100),
             senha varchar(255),
             nivel integer,
             criado timestamp DEFAULT now())",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let users = good_users();
    let insert = "INSERT INTO usuarios (usuario, senha, nivel) VALUES ($1, $2, $3)";
    for user in &users {
        sqlx::query(insert)
            .bind(user.usuario)
            .bind(&user.senha)
            .bind(user.nivel)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    for (usuario, senha, nivel, _) in broken_rows() {
        sqlx::query(insert)
            .bind(usuario)
            .bind(senha)
            .bind(nivel)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    (source, users)
}

fn import_settings(source: &TestDb) -> ImportSettings {
    ImportSettings {
        from: source.url.clone().into(),
        // The old bot's rows in their insertion order, so that row numbers are known.
        source: Source::Query("SELECT usuario, senha, nivel FROM usuarios ORDER BY id".into()),
        columns: Columns::default(),
        dry_run: false,
        plaintext_passwords: false,
    }
}

pub(crate) async fn import(target: &TestDb, settings: &ImportSettings) -> Report {
    produto::app::import_users(test_config(&target.url), settings.clone())
        .await
        .expect("the import runs")
}

/// The `/metrics` line of the legacy-hash gauge of `format`, waited for (up to 10 s).
pub(crate) async fn wait_for_gauge(admin: std::net::SocketAddr, format: &str, want: i64) {
    let line = format!("produto_users_legacy_hash{{format=\"{format}\"}} {want}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(admin, "/metrics").await;
        if body.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {line}:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn the_old_bots_users_log_in_with_their_passwords_after_the_import(backend: Backend) {
    let (source, users) = old_bot_database().await;
    let target = TestDb::create(backend).await;
    let settings = import_settings(&source);

    // A dry run reports what would happen and writes nothing.
    let dry = import(
        &target,
        &ImportSettings {
            dry_run: true,
            ..settings.clone()
        },
    )
    .await;
    assert_eq!(dry.imported_total(), users.len() as u64, "{dry}");
    assert!(
        dry.to_string().contains("dry run: nothing written"),
        "{dry}"
    );

    let report = import(&target, &settings).await;
    let text = report.to_string();
    println!("{text}");
    assert_eq!(report.imported_total(), users.len() as u64, "{text}");
    // Counted by format: every format is there (bcrypt in its three prefixes).
    let mut by_format = std::collections::BTreeMap::new();
    for user in &users {
        *by_format.entry(user.format.label()).or_insert(0u64) += 1;
    }
    assert_eq!(report.imported, by_format, "{text}");
    assert_eq!(by_format.len(), 5);
    assert_eq!(report.already_there, 0);
    // Every broken row is reported, in order, with its reason, and a bad row stopped nothing.
    let broken = broken_rows();
    assert_eq!(report.rejected.len(), broken.len(), "{text}");
    for (n, (rejected, (usuario, _, _, reason))) in report.rejected.iter().zip(&broken).enumerate()
    {
        assert_eq!(rejected.row, (users.len() + n + 1) as u64, "{text}");
        assert_eq!(rejected.usuario.as_deref(), *usuario, "{text}");
        assert!(rejected.reason.contains(reason), "{reason}: {text}");
    }
    // The report never holds a password or a hash.
    for user in &users {
        assert!(
            !text.contains(&user.senha) && !text.contains(user.password),
            "{text}"
        );
    }
    for (_, senha, ..) in &broken {
        if let Some(senha) = senha.as_deref().filter(|s| s.len() > 8) {
            assert!(!text.contains(senha), "{text}");
        }
    }

    // A second run changes nothing, and says so.
    let again = import(&target, &settings).await;
    assert_eq!(again.imported_total(), 0, "{again}");
    assert_eq!(again.already_there, users.len() as u64, "{again}");
    assert!(again.to_string().contains("nothing changed"), "{again}");

    // The server over the imported users: the gauge counts them by format...
    let mut config = test_config(&target.url);
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config, target).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    let admin = app.admin_addr.unwrap();
    for (format, n) in by_format.iter().filter(|(f, _)| **f != "argon2") {
        wait_for_gauge(admin, format, *n as i64).await;
    }
    // ...each logs in with its own password (and not another's); after that login its stored
    // hash is argon2id with produto's parameters, and it still logs in.
    for user in &users {
        assert_eq!(
            app.login(user.usuario, "senha errada").await.unwrap(),
            (false, 0),
            "{}",
            user.usuario
        );
        assert_eq!(
            app.login(user.usuario, user.password).await.unwrap(),
            (true, user.nivel),
            "{}",
            user.usuario
        );
        let stored = Users::new(app.db.clone())
            .credentials(&Usuario::parse(user.usuario.into()).unwrap())
            .await
            .unwrap()
            .unwrap()
            .senha_hash;
        assert!(
            stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{}: {stored}",
            user.usuario
        );
        assert_eq!(
            app.login(user.usuario, user.password).await.unwrap(),
            (true, user.nivel)
        );
    }
    // ...and no user is left on a legacy hash.
    for format in produto::password::legacy::LEGACY {
        wait_for_gauge(admin, format.label(), 0).await;
    }
}

/// With `--plaintext-passwords` a value of no hash shape is a password, stored only as
/// argon2id; a damaged hash is still rejected, never taken for a password.
pub async fn plaintext_passwords_are_hashed_during_the_import(backend: Backend) {
    use sqlx::Connection;
    let source = TestDb::create(Backend::Postgres).await;
    let mut conn = sqlx::PgConnection::connect(&source.url).await.unwrap();
    // Another shape: renamed columns, the level as text, in a schema of its own.
    sqlx::raw_sql(
        "CREATE SCHEMA bot;
         CREATE TABLE bot.\"Contas\" (login text, pass text, level text);
         INSERT INTO bot.\"Contas\" VALUES
           ('gil', 'senha em claro', '2'),
           ('hugo', '$2b$10$damaged', '1'),
           ('ivo', 'outra senha', 'admin');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let target = TestDb::create(backend).await;
    let settings = ImportSettings {
        from: source.url.clone().into(),
        source: Source::Table("bot.Contas".into()),
        columns: Columns {
            usuario: "login".into(),
            senha: "pass".into(),
            nivel: "level".into(),
        },
        dry_run: false,
        plaintext_passwords: true,
    };
    let report = import(&target, &settings).await;
    let text = report.to_string();
    assert_eq!(report.imported_total(), 1, "{text}");
    assert_eq!(report.rejected.len(), 2, "{text}");
    assert!(
        text.contains("(\"hugo\"): rejected: senha: bcrypt"),
        "{text}"
    );
    assert!(
        text.contains("(\"ivo\"): rejected: nivel: not an integer"),
        "{text}"
    );
    assert!(!text.contains("senha em claro"), "{text}");

    let app = spawn_with(test_config(&target.url), target).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    let stored = Users::new(app.db.clone())
        .credentials(&Usuario::parse("gil".into()).unwrap())
        .await
        .unwrap()
        .unwrap()
        .senha_hash;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_eq!(app.login("gil", "senha em claro").await.unwrap(), (true, 2));
    // A rehash replaces the hash only if the row still holds the one it verified.
    let usuario = Usuario::parse("gil".into()).unwrap();
    let id = Users::new(app.db.clone())
        .credentials(&usuario)
        .await
        .unwrap()
        .unwrap()
        .id;
    assert!(
        !Users::new(app.db.clone())
            .update_hash(id, "another hash", "$argon2id$x")
            .await
            .unwrap()
    );
    assert!(
        Users::new(app.db.clone())
            .update_hash(id, &stored, &stored)
            .await
            .unwrap()
    );
    assert_eq!(app.login("gil", "senha em claro").await.unwrap(), (true, 2));
}

on_both_backends!(
    the_old_bots_users_log_in_with_their_passwords_after_the_import,
    plaintext_passwords_are_hashed_during_the_import,
);
