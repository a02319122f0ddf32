//! The one-shot commands of `produto-server`: `migrate`, `adicionar-usuario` and
//! `import-users`, each over its own pool, closed before it returns.

use super::POOL_CLOSE_TIMEOUT;
use crate::{
    Error,
    config::Settings,
    db::{Db, Diagnosis, diagnose::describe_migrate},
    password::Hasher,
    users::Users,
};

/// `produto-server migrate`: applies the migrations once and returns (an init container or
/// a Job retries on failure).
pub async fn migrate(config: Settings) -> Result<(), Error> {
    let db = Db::new(&config.db)?;
    let result = migrate_or_explain(&db).await;
    db.close(POOL_CLOSE_TIMEOUT).await;
    result
}

/// Applies the migrations; a failure says in one line what stands in the way (the database
/// missing, a wrong password, nothing listening at its address...).
async fn migrate_or_explain(db: &Db) -> Result<(), Error> {
    let Err(e) = db.migrate().await else {
        return Ok(());
    };
    Err(Error::Startup(match db.diagnose().await {
        Diagnosis::Permanent(line) | Diagnosis::Unreachable(line) => line,
        Diagnosis::Reachable => format!("migrations failed: {}", describe_migrate(&e)),
    }))
}

/// `produto-server adicionar-usuario <usuario> <nivel>`: applies the migrations and creates
/// one user with the same rules as AdicionarUsuario, straight in the database (no token: the
/// operator who runs it already holds the database's credentials). Returns the new id.
pub async fn add_user(
    config: Settings,
    usuario: String,
    senha: String,
    nivel: i32,
) -> Result<i64, Error> {
    use crate::domain::{Nivel, Senha, Usuario};
    let usuario = Usuario::parse(usuario)?;
    let senha = Senha::parse_new(senha)?;
    let nivel = Nivel::parse(nivel)?;
    config
        .password_policy
        .check(&senha, &usuario, "senha")
        .await?;
    let db = Db::new(&config.db)?;
    let result = async {
        migrate_or_explain(&db).await?;
        let hash = Hasher::new(&config.hashing)?.hash(senha).await?;
        Users::new(db.clone())
            .insert_user(&usuario, &hash, nivel)
            .await
    }
    .await;
    db.close(POOL_CLOSE_TIMEOUT).await;
    result
}

/// `produto-server import-users`: the old bot's users into this server's database (see
/// [`crate::import`]). Applies the migrations first, unless dry: a dry run writes nothing, and
/// on a target not migrated yet it counts every valid row as one it would import.
pub async fn import_users(
    config: Settings,
    import: crate::import::ImportSettings,
) -> Result<crate::import::Report, Error> {
    let db = Db::new(&config.db)?;
    let result = async {
        let migrated = if import.dry_run {
            db.check_migrated().await.is_ok()
        } else {
            migrate_or_explain(&db).await?;
            true
        };
        let hasher = Hasher::new(&config.hashing)?;
        crate::import::import_users(&db, &hasher, &import, migrated).await
    }
    .await;
    db.close(POOL_CLOSE_TIMEOUT).await;
    result
}
