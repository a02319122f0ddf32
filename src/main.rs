//! produto-server: reads the configuration, sets up logging, serves until SIGTERM or Ctrl-C
//! (or, as `produto-server migrate`, `adicionar-usuario` or `import-users`, does that and
//! exits).

use std::process::ExitCode;

use produto::{Application, Config, Error, config::Command, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // A bad value names the environment variable it came from, when it did.
    let config: Config = produto_client::cli::parse();
    // Kept to the end: dropping it flushes the last spans.
    let _traces = match telemetry::init(config.log_format, "produto-server") {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("produto-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = config.command.clone();
    let settings = config
        .into_settings()
        .map_err(|e| Error::Startup(e.to_string()));
    match command {
        Some(Command::Migrate) => {
            let result = match settings {
                Ok(settings) => produto::app::migrate(settings).await,
                Err(e) => Err(e),
            };
            return match result {
                Ok(()) => {
                    tracing::info!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "migrate failed");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::AdicionarUsuario { usuario, nivel }) => {
            return add_user(settings, usuario, nivel).await;
        }
        Some(Command::ImportUsers(args)) => return import_users(settings, args.settings()).await,
        None => {}
    }
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("produto-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("produto-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %app.local_addr(),
        admin_addr = app.admin_addr().map(|a| a.to_string()),
        backend = app.db().backend_name(),
        callers = ?app.callers(),
        version = env!("CARGO_PKG_VERSION"),
        git_commit = env!("PRODUTO_GIT_COMMIT"),
        "listening"
    );
    match app.run_until_stopped(produto::signal::shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        // One line, as for a bad setting: a database that can never be used as configured
        // (see produto::db::Diagnosis), or a server that failed.
        Err(e) => {
            eprintln!("produto-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `produto-server adicionar-usuario`: the password comes from PRODUTO_SENHA, or else is
/// asked for on a terminal (no echo, typed twice), or else is the first line of standard
/// input; never from the command line (where `ps` would show it).
async fn add_user(
    settings: Result<produto::Settings, Error>,
    usuario: String,
    nivel: i32,
) -> ExitCode {
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("produto-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let senha = match std::env::var("PRODUTO_SENHA") {
        Ok(senha) => Ok(senha),
        // Off the runtime: it waits for a person.
        Err(_) => {
            let usuario = usuario.clone();
            tokio::task::spawn_blocking(move || read_password(&usuario))
                .await
                .unwrap_or_else(|e| Err(format!("reading the password failed: {e}")))
        }
    };
    let senha = match senha {
        Ok(senha) if senha.is_empty() => {
            eprintln!(
                "produto-server: no password given for {usuario}: type one, set PRODUTO_SENHA, \
                 or give it as the first line of standard input"
            );
            return ExitCode::FAILURE;
        }
        Ok(senha) => senha,
        Err(e) => {
            eprintln!("produto-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match produto::app::add_user(settings, usuario.clone(), senha, nivel).await {
        Ok(id) => {
            println!("created user {usuario} with level {nivel} (id {id})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("produto-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `produto-server import-users`: prints the report (each rejected row, then the counts).
/// Exits 0 when no row was rejected, 3 when some were (the rest imported), 1 on failure (2
/// is clap's, for bad flags).
async fn import_users(
    settings: Result<produto::Settings, Error>,
    import: produto::import::ImportSettings,
) -> ExitCode {
    let result = match settings {
        Ok(settings) => produto::app::import_users(settings, import).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            if report.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("produto-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The new user's password: on a terminal asked twice without echo, else the first line of
/// standard input (a script's pipe).
fn read_password(usuario: &str) -> Result<String, String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let ask = |prompt: String| {
            rpassword::prompt_password(prompt)
                .map_err(|e| format!("cannot read the password from the terminal: {e}"))
        };
        let senha = ask(format!("Password for {usuario}: "))?;
        if senha.is_empty() {
            return Ok(senha);
        }
        if ask(format!("Password for {usuario} again: "))? != senha {
            return Err("the two passwords typed differ; nothing was created".into());
        }
        return Ok(senha);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
