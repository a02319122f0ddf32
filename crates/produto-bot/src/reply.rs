//! The bot's words: every reply text, in Portuguese, and the mapping from service errors
//! to what the chat is told. A reply never contains an empty line, because the stdin
//! transport separates replies with one.

use tonic::{Code, Status};

use super::command::ParseError;

pub const HELP: &str = "\
Comandos:
/login <usuario> <senha> — entrar
/nivel — o seu nível de acesso
/nivel <usuario> — o nível de outro usuário (administradores)
/senha <senha_atual> <senha_nova> — trocar a sua senha
/adicionar <usuario> <senha> <nivel> — criar um usuário (administradores)
/definirsenha <usuario> <senha_nova> — definir a senha de um usuário (administradores)
/alterarnivel <usuario> <nivel> — mudar o nível de um usuário (administradores)
/remover <usuario> — remover um usuário (administradores)
/usuarios [prefixo] — listar os usuários (administradores)
/auditoria [usuario] — as últimas mudanças e tentativas recusadas (administradores)
/status — a saúde do serviço e do pool de conexões
/logout — sair
/ajuda — esta lista
Usuário e senha não podem conter espaços.";

/// The first thing a person at the terminal reads (standard input only).
pub const GREETING: &str =
    "produto-bot: escreva um comando por linha; /ajuda mostra a lista (Ctrl-D sai).";
pub const UNAVAILABLE: &str = "Serviço indisponível, tente de novo em instantes.";
pub const LOGIN_FAILED: &str = "Usuário ou senha incorretos.";
pub const NOT_LOGGED_IN: &str = "Você não está logado. Use /login <usuario> <senha>.";
pub const SESSION_EXPIRED: &str =
    "Sua sessão expirou ou foi encerrada. Use /login <usuario> <senha> de novo.";
/// The service opened a session but bound it to no caller: the bot did not name itself.
pub const NO_CALLER_IDENTITY: &str = "Senha correta, mas não consigo manter você logado: este bot não se identifica ao serviço (configure PRODUTO_TOKEN ou um certificado de cliente).";
pub const CALLER_TOKEN_REFUSED: &str =
    "O serviço recusou o token deste bot (PRODUTO_TOKEN): confira o token com o operador.";
pub const CALLER_MISSING: &str = "O serviço exige que o bot se identifique: configure PRODUTO_TOKEN ou um certificado de cliente.";
pub const NO_AUDIT: &str = "Nenhum registro de auditoria.";
pub const NOT_FOUND: &str = "Usuário não encontrado.";
pub const TOO_LONG: &str = "Mensagem longa demais.";
pub const PASSWORD_IN_GROUP: &str = "Não use /login, /adicionar, /senha nem /definirsenha num grupo: a senha fica visível para todos. Fale comigo numa conversa privada.";
pub const PASSWORD_DELETED: &str = "(Apaguei a sua mensagem com a senha desta conversa.)";
pub const PASSWORD_NOT_DELETED: &str =
    "(Não consegui apagar a sua mensagem com a senha: apague-a você mesmo.)";
pub const RATE_LIMITED: &str = "Muitos comandos seguidos; espere alguns segundos e tente de novo.";
pub const PASSWORD_CHANGED: &str = "Senha alterada.";
/// A wrong current password, and a change refused by throttling: one reply, as the service
/// gives one answer.
pub const WRONG_CURRENT_PASSWORD: &str =
    "Senha atual incorreta (ou tentativas demais: espere e tente de novo).";
pub const NO_USERS: &str = "Nenhum usuário encontrado.";

/// The reply to a message that is not a command the bot can run.
pub fn parse_error(err: ParseError) -> String {
    match err {
        ParseError::NotACommand | ParseError::Unknown => {
            "Não entendi. Use /ajuda para ver os comandos.".into()
        }
        ParseError::Usage(usage) => format!("Uso: {usage}"),
        ParseError::BadNivel(usage) => {
            format!("O nível deve ser um número inteiro. Uso: {usage}")
        }
    }
}

pub fn logged_in(usuario: &str, nivel: i32, admin: bool) -> String {
    format!(
        "Olá, {usuario}! Você entrou com nível {nivel}{}.",
        admin_tag(admin)
    )
}

pub fn own_nivel(nivel: i32, admin: bool) -> String {
    format!("Seu nível é {nivel}{}.", admin_tag(admin))
}

pub fn nivel_of(usuario: &str, nivel: i32) -> String {
    format!("O nível de {usuario} é {nivel}.")
}

pub fn admins_only(what: &str, admin_nivel: i32) -> String {
    format!("Só administradores (nível {admin_nivel} ou mais) podem {what}.")
}

pub fn added(usuario: &str, nivel: i32, id: i64) -> String {
    format!("Usuário {usuario} criado com nível {nivel} (id {id}).")
}

pub fn password_set(usuario: &str) -> String {
    format!("Senha de {usuario} definida.")
}

pub fn nivel_changed(usuario: &str, nivel: i32) -> String {
    format!("O nível de {usuario} agora é {nivel}.")
}

pub fn removed(usuario: &str) -> String {
    format!("Usuário {usuario} removido.")
}

/// The `/usuarios` reply: one line per user; `more` when the service has more than shown.
pub fn users(users: &[produto_client::pb::UsuarioResumo], more: bool) -> String {
    if users.is_empty() {
        return NO_USERS.into();
    }
    let mut lines = vec!["Usuários:".to_owned()];
    lines.extend(
        users
            .iter()
            .map(|u| format!("- {} (nível {})", u.usuario, u.nivel)),
    );
    if more {
        lines.push(format!(
            "(os primeiros {}; use /usuarios <prefixo> para ver outros)",
            users.len()
        ));
    }
    lines.join("\n")
}

/// The `/auditoria` reply: one line per entry, newest first (times in UTC).
pub fn audit(entries: &[produto_client::pb::EventoAuditoria]) -> String {
    if entries.is_empty() {
        return NO_AUDIT.into();
    }
    let mut lines = vec!["Auditoria (mais recentes primeiro):".to_owned()];
    lines.extend(entries.iter().map(|e| {
        let mut line = format!("- {} {} por {}", utc(e.em_unix_ms), e.acao, e.ator);
        if !e.alvo.is_empty() {
            line.push_str(&format!(" em {}", e.alvo));
        }
        if !e.detalhe.is_empty() {
            line.push_str(&format!(" ({})", e.detalhe));
        }
        if e.resultado != "ok" {
            line.push_str(&format!(": {}", e.resultado));
        }
        if !e.usuario_final.is_empty() {
            line.push_str(&format!(" [{}]", e.usuario_final));
        }
        one_line(&line)
    }));
    lines.join("\n")
}

/// A Unix time in milliseconds as RFC 3339 UTC, to the second.
fn utc(unix_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

pub fn logged_out(usuario: Option<&str>) -> String {
    match usuario {
        Some(u) => format!("Até logo, {u}!"),
        None => "Você não estava logado.".into(),
    }
}

fn admin_tag(admin: bool) -> &'static str {
    if admin { " (administrador)" } else { "" }
}

/// The `ErrorInfo.reason` of a login the service refused for too many failed attempts
/// (told to authenticated callers such as this bot; see the service's `error::Reason`).
const LOGIN_THROTTLED: &str = "LOGIN_THROTTLED";

/// The reply to a login the service throttled: RESOURCE_EXHAUSTED with reason
/// `LOGIN_THROTTLED`, and when to retry from its `RetryInfo` (whole seconds, rounded up).
pub fn login_throttled(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    let details = status.get_error_details();
    if details.error_info()?.reason != LOGIN_THROTTLED {
        return None;
    }
    let wait = details.retry_info().and_then(|r| r.retry_delay);
    Some(match wait {
        Some(d) => format!(
            "Muitas tentativas de login; tente de novo em {} s.",
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        ),
        None => "Muitas tentativas de login; tente de novo mais tarde.".into(),
    })
}

/// What the chat is told when a call to the service fails. Only messages written for
/// callers (INVALID_ARGUMENT's, which name the field) are passed on; a throttled login says
/// how long to wait.
pub fn service_error(status: &Status) -> String {
    if let Some(reply) = login_throttled(status) {
        return reply;
    }
    match status.code() {
        // CANCELLED is what the client reports for its own expired deadline.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            UNAVAILABLE.into()
        }
        Code::NotFound => NOT_FOUND.into(),
        Code::AlreadyExists => "Esse usuário já existe.".into(),
        Code::InvalidArgument => format!("Dados inválidos: {}", one_line(status.message())),
        Code::Unauthenticated => match reason(status).as_deref() {
            Some("SESSION_MISSING") => NOT_LOGGED_IN.into(),
            Some("SESSION_EXPIRED") => SESSION_EXPIRED.into(),
            Some("CALLER_TOKEN_INVALID") => CALLER_TOKEN_REFUSED.into(),
            Some("CALLER_MISSING") => CALLER_MISSING.into(),
            _ => "O serviço recusou a identificação deste bot.".into(),
        },
        Code::PermissionDenied => match reason(status).as_deref() {
            Some("NOT_ADMIN") => "Só administradores podem fazer isso.".into(),
            _ => "O serviço recusou a operação.".into(),
        },
        _ => "Algo deu errado no serviço. Tente de novo mais tarde.".into(),
    }
}

/// The `ErrorInfo.reason` of a failed call, if the service sent one.
pub fn reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
}

/// The admin level a NOT_ADMIN refusal names (its `ErrorInfo.metadata`).
pub fn admin_nivel(status: &Status) -> Option<i32> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .filter(|i| i.reason == "NOT_ADMIN")
        .and_then(|i| i.metadata.get("admin_nivel"))
        .and_then(|n| n.parse().ok())
}

/// A service message on one line, so that it cannot break the reply framing.
fn one_line(message: &str) -> String {
    message.lines().collect::<Vec<_>>().join(" ")
}

/// The `/status` reply. `ready`: the readiness check's answer, `None` when it failed.
pub fn status(
    ready: Option<bool>,
    pool: Option<&produto_client::pb::PoolStatusResponse>,
) -> String {
    let mut lines = Vec::with_capacity(3);
    lines.push(match ready {
        Some(true) => "Serviço: pronto.".to_string(),
        Some(false) => "Serviço: no ar, mas não está pronto (banco de dados fora do ar?).".into(),
        None => "Serviço: não respondeu à verificação de saúde.".into(),
    });
    match pool {
        Some(p) => {
            let saude = if p.healthy {
                "saudável"
            } else {
                "com problemas"
            };
            lines.push(format!("Pool: {}, {saude}.", p.status));
            lines.push(format!(
                "Conexões — abertas: {}, em uso: {}, livres: {}.",
                p.pool_size, p.used_connections, p.idle_connections
            ));
        }
        None => lines.push("Pool: sem resposta.".into()),
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_say_try_again() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::ResourceExhausted,
        ] {
            assert_eq!(service_error(&Status::new(code, "x")), UNAVAILABLE);
        }
    }

    #[test]
    fn audit_times_are_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_614_245_000), "2026-12-07T03:30:45Z");
    }

    #[test]
    fn a_throttled_login_says_how_long_to_wait() {
        use tonic_types::{ErrorDetails, StatusExt};
        let mut details = ErrorDetails::with_error_info(
            LOGIN_THROTTLED,
            "produto",
            std::collections::HashMap::new(),
        );
        details.set_retry_info(Some(std::time::Duration::from_millis(41_200)));
        let status = Status::with_error_details(
            Code::ResourceExhausted,
            "too many login attempts; retry in 42 s",
            details,
        );
        assert_eq!(
            service_error(&status),
            "Muitas tentativas de login; tente de novo em 42 s."
        );
        // Another RESOURCE_EXHAUSTED (the server busy) is still "try again in a moment".
        let busy = Status::with_error_details(
            Code::ResourceExhausted,
            "server busy",
            ErrorDetails::with_error_info(
                "SERVER_BUSY",
                "produto",
                std::collections::HashMap::new(),
            ),
        );
        assert_eq!(service_error(&busy), UNAVAILABLE);
    }

    #[test]
    fn caller_errors_get_their_own_reply() {
        assert_eq!(
            service_error(&Status::not_found("usuario 'x' not found")),
            NOT_FOUND
        );
        assert!(service_error(&Status::already_exists("x")).contains("já existe"));
        assert_eq!(
            service_error(&Status::invalid_argument("senha: must be at least 8 bytes")),
            "Dados inválidos: senha: must be at least 8 bytes"
        );
    }

    #[test]
    fn internal_details_are_not_passed_on() {
        let reply = service_error(&Status::internal("relation usuarios does not exist"));
        assert!(!reply.contains("usuarios"), "{reply}");
    }

    #[test]
    fn no_reply_contains_an_empty_line() {
        let pool = produto_client::pb::PoolStatusResponse::default();
        for reply in [
            HELP.to_string(),
            status(Some(true), Some(&pool)),
            status(None, None),
            users(&[produto_client::pb::UsuarioResumo::default()], true),
            service_error(&Status::invalid_argument("a\n\nb")),
        ] {
            assert!(!reply.contains("\n\n"), "{reply:?}");
            assert!(!reply.is_empty());
        }
    }
}
