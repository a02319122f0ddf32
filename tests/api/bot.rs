//! The chat bot against the real server: its handler called directly, and the `produto-bot`
//! binary driven through stdin and stdout. Effects are read back through the gRPC client.

use std::{
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use produto_bot::{Bot, BotConfig, ChatId, Incoming, ServiceHealth};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout},
    task::JoinHandle,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use produto_testkit::{
    ADMIN_TOKEN, BOT_TOKEN, Backend, TestApp, TestDb, proxy::Proxy, spawn_app, spawn_on,
    spawn_with, test_config,
};

const CHAT: ChatId = ChatId(42);
const UNAVAILABLE: &str = "Serviço indisponível, tente de novo";

fn config_for(addr: SocketAddr) -> BotConfig {
    let mut config = BotConfig::for_server(format!("http://{addr}"));
    config.token = Some(BOT_TOKEN.into());
    config.connect_timeout = Duration::from_secs(1);
    config.timeout = Duration::from_secs(2);
    config
}

fn bot_for(app: &TestApp) -> Bot {
    Bot::build(&config_for(app.addr)).expect("build the bot")
}

/// A server with an admin (level 2) and a plain user (level 1).
async fn app_with_users() -> TestApp {
    let app = spawn_app(Backend::Postgres).await;
    app.add_user("admin", "senha-do-admin", 2).await.unwrap();
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_the_right_password_shows_the_level_and_keeps_the_chat_logged_in() {
    let app = app_with_users().await;
    let bot = bot_for(&app);

    let reply = bot.handle(CHAT, "/login maria senha-da-maria").await;
    assert_eq!(reply, "Olá, maria! Você entrou com nível 1.");
    assert_eq!(bot.handle(CHAT, "/nivel").await, "Seu nível é 1.");

    let reply = bot.handle(CHAT, "/login admin senha-do-admin").await;
    assert!(reply.contains("nível 2 (administrador)"), "{reply}");
    assert_eq!(
        bot.handle(CHAT, "/nivel").await,
        "Seu nível é 2 (administrador)."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_get_the_same_reply_and_no_session() {
    let app = app_with_users().await;
    let bot = bot_for(&app);

    let wrong = bot.handle(CHAT, "/login maria senha-errada").await;
    let unknown = bot.handle(CHAT, "/login ninguem senha-errada").await;
    assert_eq!(wrong, "Usuário ou senha incorretos.");
    assert_eq!(wrong, unknown);
    assert!(!wrong.contains("senha-errada"));
    assert!(bot.handle(CHAT, "/nivel").await.contains("não está logado"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_user_who_can_then_log_in() {
    let app = app_with_users().await;
    let bot = bot_for(&app);
    bot.handle(CHAT, "/login admin senha-do-admin").await;

    let reply = bot.handle(CHAT, "/adicionar bob senha-do-bob 1").await;
    assert!(
        reply.starts_with("Usuário bob criado com nível 1 (id "),
        "{reply}"
    );
    assert!(!reply.contains("senha-do-bob"));
    assert_eq!(app.login("bob", "senha-do-bob").await.unwrap(), (true, 1));
    assert_eq!(app.nivel("bob").await.unwrap(), 1);

    // Refusals from the service become replies, and change nothing.
    let reply = bot.handle(CHAT, "/adicionar bob outra-senha-1 5").await;
    assert_eq!(reply, "Esse usuário já existe.");
    assert_eq!(app.nivel("bob").await.unwrap(), 1);

    let reply = bot.handle(CHAT, "/adicionar carla curta 1").await;
    assert!(reply.starts_with("Dados inválidos: senha"), "{reply}");
    assert!(!reply.contains("curta"), "{reply}");
    let reply = bot.handle(CHAT, "/adicionar carla senha-da-carla -1").await;
    assert!(reply.starts_with("Dados inválidos: nivel"), "{reply}");
    assert_eq!(app.nivel("carla").await.unwrap_err().code(), Code::NotFound);

    // The new user's level through the bot, as another chat.
    let other = ChatId(7);
    bot.handle(other, "/login bob senha-do-bob").await;
    assert_eq!(bot.handle(other, "/nivel").await, "Seu nível é 1.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adicionar_is_refused_unless_the_chat_user_is_an_admin_now() {
    let app = app_with_users().await;
    let bot = bot_for(&app);

    // Not logged in.
    let reply = bot.handle(CHAT, "/adicionar intruso senha-forte-1 9").await;
    assert!(reply.contains("não está logado"), "{reply}");

    // Logged in, but level 1 < 2: the service refuses the chat user's session.
    bot.handle(CHAT, "/login maria senha-da-maria").await;
    let reply = bot.handle(CHAT, "/adicionar intruso senha-forte-1 9").await;
    assert_eq!(
        reply,
        "Só administradores (nível 2 ou mais) podem adicionar usuários."
    );
    assert_eq!(
        app.nivel("intruso").await.unwrap_err().code(),
        Code::NotFound
    );

    // After /logout the admin's rights go with the session.
    bot.handle(CHAT, "/login admin senha-do-admin").await;
    bot.handle(CHAT, "/logout").await;
    let reply = bot.handle(CHAT, "/adicionar intruso senha-forte-1 9").await;
    assert!(reply.contains("não está logado"), "{reply}");
    assert_eq!(
        app.nivel("intruso").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_needs_no_admin_token_and_names_a_refused_caller_token() {
    // A server that requires callers to name themselves, as deploy/kubernetes runs it.
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.caller_auth = true;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("admin", "senha-do-admin", 2)
        .await
        .unwrap_err();
    let mut admin = produto_testkit::admin(produto::pb::AdicionarUsuarioRequest {
        usuario: "admin".into(),
        senha: "senha-do-admin".into(),
        nivel: 2,
    });
    let md = admin.metadata_mut();
    md.remove("authorization");
    md.insert("produto-admin-token", ADMIN_TOKEN.parse().unwrap());
    md.insert(
        "authorization",
        format!("Bearer {}", produto_testkit::OTHER_CALLER_TOKEN)
            .parse()
            .unwrap(),
    );
    app.produto.clone().adicionar_usuario(admin).await.unwrap();

    // The bot with its caller token and no admin token does admin work for an admin chat.
    let bot = bot_for(&app);
    assert_eq!(
        bot.handle(CHAT, "/login admin senha-do-admin").await,
        "Olá, admin! Você entrou com nível 2 (administrador)."
    );
    let reply = bot.handle(CHAT, "/adicionar bob senha-do-bob 1").await;
    assert!(reply.starts_with("Usuário bob criado"), "{reply}");
    assert_eq!(bot.handle(CHAT, "/nivel bob").await, "O nível de bob é 1.");

    // A wrong caller token: the reply names the bot's token, not the admin token.
    let mut config = config_for(app.addr);
    config.token = Some("not-the-bot-token-0123456789".into());
    let wrong = Bot::build(&config).unwrap();
    for command in ["/login admin senha-do-admin", "/nivel", "/remover bob"] {
        let reply = wrong.handle(CHAT, command).await;
        assert!(
            reply.contains("recusou o token deste bot (PRODUTO_TOKEN)"),
            "{command}: {reply}"
        );
    }
    // No token at all: the reply says the service wants the bot to name itself.
    config.token = None;
    let anonymous = Bot::build(&config).unwrap();
    let reply = anonymous.handle(CHAT, "/nivel").await;
    assert!(reply.contains("exige que o bot se identifique"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_user_changes_its_password_and_its_other_chats_log_in_again() {
    let app = app_with_users().await;
    let bot = bot_for(&app);
    let other = ChatId(7);
    assert!(
        bot.handle(CHAT, "/senha senha-da-maria nova-da-maria")
            .await
            .contains("não está logado")
    );
    bot.handle(CHAT, "/login maria senha-da-maria").await;
    bot.handle(other, "/login maria senha-da-maria").await;

    let handled = bot
        .handle_incoming(Incoming {
            session: CHAT,
            end_user: None,
            shared_chat: false,
            text: "/senha senha-errada nova-da-maria",
        })
        .await;
    assert!(
        handled.held_password,
        "the message is deleted where it can be"
    );
    assert_eq!(
        handled.reply,
        "Senha atual incorreta (ou tentativas demais: espere e tente de novo)."
    );
    let reply = bot.handle(CHAT, "/senha senha-da-maria curta").await;
    assert!(reply.starts_with("Dados inválidos: senha_nova"), "{reply}");
    assert!(!reply.contains("curta"), "{reply}");
    assert_eq!(
        bot.handle(CHAT, "/senha senha-da-maria nova-da-maria")
            .await,
        "Senha alterada."
    );
    assert_eq!(
        app.login("maria", "nova-da-maria").await.unwrap(),
        (true, 1)
    );
    assert_eq!(
        app.login("maria", "senha-da-maria").await.unwrap(),
        (false, 0)
    );
    // This chat stays logged in; the other one logged in with the old password.
    assert_eq!(bot.handle(CHAT, "/nivel").await, "Seu nível é 1.");
    assert!(
        bot.handle(other, "/nivel")
            .await
            .contains("não está logado")
    );
    // In a group it is refused before any call.
    let handled = bot
        .handle_incoming(Incoming {
            session: CHAT,
            end_user: None,
            shared_chat: true,
            text: "/senha nova-da-maria outra-da-maria",
        })
        .await;
    assert!(
        handled.reply.contains("conversa privada"),
        "{}",
        handled.reply
    );
    assert_eq!(
        app.login("maria", "nova-da-maria").await.unwrap(),
        (true, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_users_and_the_chats_of_those_users_follow() {
    let app = app_with_users().await;
    app.add_user("bruno", "senha-do-bruno", 1).await.unwrap();
    let bot = bot_for(&app);
    let maria = ChatId(7);
    let bruno = ChatId(8);
    bot.handle(CHAT, "/login admin senha-do-admin").await;
    bot.handle(maria, "/login maria senha-da-maria").await;
    bot.handle(bruno, "/login bruno senha-do-bruno").await;

    assert_eq!(
        bot.handle(CHAT, "/usuarios").await,
        "Usuários:\n- admin (nível 2)\n- bruno (nível 1)\n- maria (nível 1)"
    );
    assert_eq!(
        bot.handle(CHAT, "/usuarios ma").await,
        "Usuários:\n- maria (nível 1)"
    );
    assert_eq!(
        bot.handle(CHAT, "/usuarios zz").await,
        "Nenhum usuário encontrado."
    );

    // A promotion takes effect in maria's chat at once: she may now list users.
    assert_eq!(
        bot.handle(CHAT, "/alterarnivel maria 2").await,
        "O nível de maria agora é 2."
    );
    assert_eq!(app.nivel("maria").await.unwrap(), 2);
    assert!(
        bot.handle(maria, "/usuarios")
            .await
            .starts_with("Usuários:")
    );
    assert_eq!(
        bot.handle(CHAT, "/alterarnivel fantasma 2").await,
        "Usuário não encontrado."
    );
    assert!(
        bot.handle(CHAT, "/alterarnivel maria -1")
            .await
            .starts_with("Dados inválidos: nivel")
    );

    // A password set by an admin logs the user's chats out.
    let handled = bot
        .handle_incoming(Incoming {
            session: CHAT,
            end_user: None,
            shared_chat: false,
            text: "/definirsenha bruno nova-do-bruno",
        })
        .await;
    assert!(handled.held_password);
    assert_eq!(handled.reply, "Senha de bruno definida.");
    assert_eq!(
        app.login("bruno", "nova-do-bruno").await.unwrap(),
        (true, 1)
    );
    assert!(
        bot.handle(bruno, "/nivel")
            .await
            .contains("não está logado")
    );
    assert_eq!(
        bot.handle(CHAT, "/definirsenha fantasma nova-do-fantasma")
            .await,
        "Usuário não encontrado."
    );

    // A removal too: the removed user's chat is logged out, and its login fails.
    assert_eq!(
        bot.handle(CHAT, "/remover maria").await,
        "Usuário maria removido."
    );
    assert!(
        bot.handle(maria, "/usuarios")
            .await
            .contains("não está logado")
    );
    assert_eq!(
        bot.handle(maria, "/login maria senha-da-maria").await,
        "Usuário ou senha incorretos."
    );
    assert_eq!(
        bot.handle(CHAT, "/remover maria").await,
        "Usuário não encontrado."
    );
    assert_eq!(app.nivel("maria").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_commands_are_refused_unless_the_chat_user_is_an_admin_now() {
    let app = app_with_users().await;
    let bot = bot_for(&app);
    let commands = [
        "/definirsenha admin senha-tomada-1",
        "/alterarnivel maria 9",
        "/remover admin",
        "/usuarios",
        "/auditoria",
    ];
    for command in commands {
        let reply = bot.handle(CHAT, command).await;
        assert!(reply.contains("não está logado"), "{command}: {reply}");
    }
    bot.handle(CHAT, "/login maria senha-da-maria").await;
    for command in commands {
        let reply = bot.handle(CHAT, command).await;
        assert!(
            reply.starts_with("Só administradores (nível 2 ou mais) podem"),
            "{command}: {reply}"
        );
    }
    assert_eq!(
        app.login("admin", "senha-do-admin").await.unwrap(),
        (true, 2)
    );
    assert_eq!(app.nivel("maria").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_level_is_for_admins_only() {
    let app = app_with_users().await;
    let bot = bot_for(&app);

    assert!(
        bot.handle(CHAT, "/nivel admin")
            .await
            .contains("não está logado")
    );
    bot.handle(CHAT, "/login maria senha-da-maria").await;
    assert_eq!(
        bot.handle(CHAT, "/nivel admin").await,
        "Só administradores (nível 2 ou mais) podem ver o nível de outros usuários."
    );
    // One's own name is always allowed.
    assert_eq!(bot.handle(CHAT, "/nivel maria").await, "Seu nível é 1.");

    bot.handle(CHAT, "/login admin senha-do-admin").await;
    assert_eq!(
        bot.handle(CHAT, "/nivel maria").await,
        "O nível de maria é 1."
    );
    assert_eq!(
        bot.handle(CHAT, "/nivel fantasma").await,
        "Usuário não encontrado."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_per_chat_and_end_with_logout() {
    let app = app_with_users().await;
    let bot = bot_for(&app);
    let (a, b) = (ChatId(1), ChatId(2));

    bot.handle(a, "/login admin senha-do-admin").await;
    bot.handle(b, "/login maria senha-da-maria").await;
    assert_eq!(
        bot.handle(a, "/nivel").await,
        "Seu nível é 2 (administrador)."
    );
    assert_eq!(bot.handle(b, "/nivel").await, "Seu nível é 1.");
    assert!(
        bot.handle(ChatId(3), "/nivel")
            .await
            .contains("não está logado")
    );

    assert_eq!(bot.handle(a, "/logout").await, "Até logo, admin!");
    assert!(bot.handle(a, "/nivel").await.contains("não está logado"));
    assert_eq!(bot.handle(a, "/logout").await, "Você não estava logado.");
    assert_eq!(bot.handle(b, "/nivel").await, "Seu nível é 1.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_say_what_the_command_expects() {
    let app = app_with_users().await;
    let bot = bot_for(&app);
    let cases = [
        ("/login maria", "Uso: /login <usuario> <senha>"),
        (
            "/login maria senha com espaço",
            "Uso: /login <usuario> <senha>",
        ),
        ("/nivel a b", "Uso: /nivel ou /nivel <usuario>"),
        (
            "/adicionar bob",
            "Uso: /adicionar <usuario> <senha> <nivel>",
        ),
        (
            "/adicionar bob senha-do-bob um",
            "O nível deve ser um número inteiro",
        ),
        ("/logout já", "Uso: /logout"),
        ("/senha só-uma", "Uso: /senha <senha_atual> <senha_nova>"),
        (
            "/definirsenha bob",
            "Uso: /definirsenha <usuario> <senha_nova>",
        ),
        (
            "/alterarnivel bob alto",
            "O nível deve ser um número inteiro. Uso: /alterarnivel <usuario> <nivel>",
        ),
        ("/remover", "Uso: /remover <usuario>"),
        ("/usuarios a b", "Uso: /usuarios ou /usuarios <prefixo>"),
        ("olá, bot", "Use /ajuda"),
        ("/comprar pão", "Use /ajuda"),
    ];
    for (message, expected) in cases {
        let reply = bot.handle(CHAT, message).await;
        assert!(reply.contains(expected), "{message:?}: {reply}");
        assert!(!reply.contains("senha-do-bob"), "{reply}");
    }
    assert!(
        bot.handle(CHAT, "/ajuda")
            .await
            .contains("/adicionar <usuario> <senha> <nivel>")
    );
    assert_eq!(
        bot.handle(CHAT, "/start").await,
        bot.handle(CHAT, "/help").await
    );
    // None of them logged in nor created anything.
    assert!(bot.handle(CHAT, "/nivel").await.contains("não está logado"));
    assert_eq!(app.nivel("bob").await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_readiness_and_the_pool() {
    let app = app_with_users().await;
    let bot = bot_for(&app);
    assert!(matches!(bot.check_service().await, ServiceHealth::Ready));
    let reply = bot.handle(CHAT, "/status").await;
    let pool = app.pool_status().await;
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines[0], "Serviço: pronto.", "{reply}");
    assert_eq!(lines[1], "Pool: active, saudável.", "{reply}");
    assert!(
        lines[2].starts_with(&format!("Conexões — abertas: {},", pool.pool_size)),
        "{reply} / {pool:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_says_unavailable_while_the_service_is_down_and_recovers_when_it_returns() {
    let app = app_with_users().await;
    let bot = bot_for(&app);
    bot.handle(CHAT, "/login admin senha-do-admin").await;

    let (addr, database) = app.stop_keeping_database().await;
    assert!(matches!(
        bot.check_service().await,
        ServiceHealth::Unreachable(_)
    ));
    for message in [
        "/nivel",
        "/status",
        "/login maria senha-da-maria",
        "/adicionar bob senha-do-bob 1",
    ] {
        let started = Instant::now();
        let reply = bot.handle(CHAT, message).await;
        assert!(reply.starts_with(UNAVAILABLE), "{message}: {reply}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{message}: slow"
        );
    }
    // Commands that need no service still work.
    assert!(bot.handle(CHAT, "/ajuda").await.contains("/login"));

    // A new server on the same port and database: the bot reconnects, the session is kept.
    let app = spawn_on(addr, database).await;
    assert!(matches!(bot.check_service().await, ServiceHealth::Ready));
    assert_eq!(
        bot.handle(CHAT, "/nivel").await,
        "Seu nível é 2 (administrador)."
    );
    let reply = bot.handle(CHAT, "/adicionar bob senha-do-bob 1").await;
    assert!(reply.starts_with("Usuário bob criado"), "{reply}");
    assert_eq!(app.login("bob", "senha-do-bob").await.unwrap(), (true, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_is_retried_until_the_service_answers_again() {
    let app = app_with_users().await;
    // A front that accepts connections but cuts them, as an instance going through a
    // restart behind its address does: the bot's calls meet UNAVAILABLE.
    let front = Proxy::start(app.addr).await;
    let mut config = config_for(front.addr);
    config.timeout = Duration::from_secs(10);
    let bot = Bot::build(&config).unwrap();
    let reply = bot.handle(CHAT, "/login admin senha-do-admin").await;
    assert!(reply.starts_with("Olá, admin!"), "{reply}");
    assert_eq!(bot.retries(), 0);

    front.down();
    let back_up = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while bot.retries() == 0 {
            assert!(Instant::now() < deadline, "the call was never retried");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        front.up();
    };
    let (reply, ()) = tokio::join!(bot.handle(CHAT, "/nivel"), back_up);
    assert_eq!(reply, "Seu nível é 2 (administrador).");
    assert!(bot.retries() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_database_is_down_is_reported_as_not_ready() {
    let database = TestDb::create(Backend::Postgres).await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = database
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let app = spawn_with(test_config(&url), database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let bot = bot_for(&app);
    bot.handle(CHAT, "/login maria senha-da-maria").await;

    proxy.down();
    app.wait_for_readiness(ServingStatus::NotServing).await;
    let reply = bot.handle(CHAT, "/status").await;
    assert!(
        reply.starts_with("Serviço: no ar, mas não está pronto"),
        "{reply}"
    );
    assert!(reply.contains("com problemas"), "{reply}");
    assert!(bot.handle(CHAT, "/nivel").await.starts_with(UNAVAILABLE));

    proxy.up();
    app.wait_for_readiness(ServingStatus::Serving).await;
    // The first query may still meet a connection cut while the database was away
    // (the server answers UNAVAILABLE once and replaces it): the bot says try again.
    assert_eq!(
        eventually(&bot, "/nivel", "Seu nível é 1.").await,
        "Seu nível é 1."
    );
}

/// Sends `message` until the reply is `want`, for up to 5 s; any other reply must be the
/// retryable one. Returns the last reply.
async fn eventually(bot: &Bot, message: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = bot.handle(CHAT, message).await;
        if reply == want || Instant::now() > deadline {
            return reply;
        }
        assert!(reply.starts_with(UNAVAILABLE), "{message}: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_answers_gets_a_reply_within_the_deadline() {
    // Accepts connections and holds them open without a word, as a hung server does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = config_for(addr);
    config.connect_timeout = Duration::from_millis(300);
    config.timeout = Duration::from_millis(300);
    let bot = Bot::build(&config).unwrap();

    for message in ["/login maria senha-da-maria", "/status"] {
        let started = Instant::now();
        let reply = bot.handle(CHAT, message).await;
        assert!(reply.starts_with(UNAVAILABLE), "{message}: {reply}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{message}: {:?}",
            started.elapsed()
        );
    }
    silent.abort();
}

// The binary, through its stdin and stdout.

/// A running `produto-bot`. Replies are read up to the empty line that ends each one.
struct BotProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Everything the bot wrote to stderr so far, for checks and failure messages.
    stderr: Arc<Mutex<String>>,
    stderr_task: JoinHandle<()>,
}

impl BotProcess {
    fn start(server: SocketAddr) -> BotProcess {
        let mut child = tokio::process::Command::new(produto_testkit::process::bot_binary())
            .env("PRODUTO_SERVER", format!("http://{server}"))
            .env("PRODUTO_TOKEN", BOT_TOKEN)
            .env_remove("PRODUTO_ADMIN_TOKEN")
            .env("PRODUTO_BOT_CONNECT_TIMEOUT", "1s")
            .env("PRODUTO_BOT_TIMEOUT", "2s")
            // Standard input, and no admin port, so that bots side by side do not collide.
            .env_remove("PRODUTO_BOT_TELEGRAM_TOKEN")
            .env("PRODUTO_BOT_ADMIN_ADDR", "")
            // Everything the bot and its libraries log, to check that no secret is among it.
            .env("RUST_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start produto-bot");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_task = {
            let stderr = stderr.clone();
            let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        };
        BotProcess {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            stderr,
            stderr_task,
        }
    }

    async fn say(&mut self, message: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        let line = format!("{message}\n");
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            panic!("writing to the bot: {e}; its stderr:\n{}", self.stderr());
        }
        self.reply().await
    }

    async fn reply(&mut self) -> String {
        let read = async {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                let n = self.stdout.read_line(&mut line).await.unwrap();
                assert!(
                    n > 0,
                    "{} ended its output mid-reply: {lines:?}; its stderr:\n{}",
                    produto_testkit::process::bot_binary().display(),
                    self.stderr()
                );
                if line == "\n" {
                    return lines.join("\n");
                }
                lines.push(line.trim_end_matches('\n').to_owned());
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a reply within 10 s")
    }

    /// Closes stdin and waits for the exit; returns the exit status, what was left on
    /// stdout, and everything written to stderr.
    async fn finish(mut self) -> (ExitStatus, String, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the bot exits at the end of input")
            .unwrap();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).await.unwrap();
        (&mut self.stderr_task).await.unwrap();
        let stderr = self.stderr();
        (status, rest, stderr)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_each_line_on_stdout_and_exits_0_at_end_of_input() {
    let app = app_with_users().await;
    let mut bot = BotProcess::start(app.addr);
    let mut transcript = String::new();
    let mut say = async |bot: &mut BotProcess, message: &str| {
        let reply = bot.say(message).await;
        transcript.push_str(&reply);
        reply
    };

    assert!(say(&mut bot, "/ajuda").await.starts_with("Comandos:"));
    assert_eq!(
        say(&mut bot, "/login maria senha-errada").await,
        "Usuário ou senha incorretos."
    );
    assert_eq!(
        say(&mut bot, "/login admin senha-do-admin").await,
        "Olá, admin! Você entrou com nível 2 (administrador)."
    );
    let reply = say(&mut bot, "/adicionar bob senha-do-bob 1").await;
    assert!(
        reply.starts_with("Usuário bob criado com nível 1"),
        "{reply}"
    );
    assert_eq!(say(&mut bot, "/nivel bob").await, "O nível de bob é 1.");
    let reply = say(&mut bot, "/status").await;
    assert_eq!(reply.lines().count(), 3, "{reply}");
    assert!(reply.starts_with("Serviço: pronto."), "{reply}");
    assert_eq!(say(&mut bot, "/logout").await, "Até logo, admin!");

    let (status, rest, stderr) = bot.finish().await;
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(rest, "");
    for secret in [
        "senha-errada",
        "senha-do-admin",
        "senha-do-bob",
        ADMIN_TOKEN,
        BOT_TOKEN,
        "ps_",
    ] {
        assert!(!transcript.contains(secret), "{secret} on stdout");
        assert!(!stderr.contains(secret), "{secret} in the logs:\n{stderr}");
    }
    assert_eq!(app.login("bob", "senha-do-bob").await.unwrap(), (true, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_started_while_the_service_is_down_works_once_it_is_back() {
    let app = app_with_users().await;
    let (addr, database) = app.stop_keeping_database().await;

    let mut bot = BotProcess::start(addr);
    let reply = bot.say("/login admin senha-do-admin").await;
    assert!(reply.starts_with(UNAVAILABLE), "{reply}");
    assert!(bot.say("/status").await.starts_with(UNAVAILABLE));

    let app = spawn_on(addr, database).await;
    assert_eq!(
        bot.say("/login admin senha-do-admin").await,
        "Olá, admin! Você entrou com nível 2 (administrador)."
    );
    let reply = bot.say("/adicionar bob senha-do-bob 3").await;
    assert!(reply.starts_with("Usuário bob criado"), "{reply}");
    assert_eq!(app.nivel("bob").await.unwrap(), 3);

    let (status, _, stderr) = bot.finish().await;
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("service unreachable"), "{stderr}");
}

// The chat's login lives in the service: demotions and removals bite at once, restarts and
// replicas keep it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_or_removed_admin_can_do_nothing_admin_from_the_next_command_on() {
    let app = app_with_users().await;
    app.add_user("ana", "senha-da-ana", 2).await.unwrap();
    app.add_user("caio", "senha-do-caio", 1).await.unwrap();
    let bot = bot_for(&app);
    let ana = ChatId(11);
    bot.handle(ana, "/login ana senha-da-ana").await;
    assert!(
        bot.handle(ana, "/adicionar ok1 senha-do-ok1 0")
            .await
            .starts_with("Usuário ok1 criado")
    );

    // An admin demotes her (with the admin token, as another client would).
    let demote = produto_testkit::admin(produto::pb::AlterarNivelRequest {
        usuario: "ana".into(),
        nivel: 0,
    });
    app.produto.clone().alterar_nivel(demote).await.unwrap();
    let reply = bot
        .handle(ana, "/adicionar intruso1 senha-do-intruso 2")
        .await;
    assert_eq!(
        reply,
        "Só administradores (nível 2 ou mais) podem adicionar usuários."
    );
    assert_eq!(
        app.nivel("intruso1").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(bot.handle(ana, "/nivel").await, "Seu nível é 0.");

    // Promoted again, then removed: the removed admin's chat cannot promote anyone.
    let promote = produto_testkit::admin(produto::pb::AlterarNivelRequest {
        usuario: "ana".into(),
        nivel: 2,
    });
    app.produto.clone().alterar_nivel(promote).await.unwrap();
    assert_eq!(
        bot.handle(ana, "/nivel").await,
        "Seu nível é 2 (administrador)."
    );
    let remove = produto_testkit::admin(produto::pb::RemoverUsuarioRequest {
        usuario: "ana".into(),
    });
    app.produto.clone().remover_usuario(remove).await.unwrap();
    let reply = bot.handle(ana, "/alterarnivel caio 2").await;
    assert!(reply.contains("não está logado"), "{reply}");
    assert_eq!(app.nivel("caio").await.unwrap(), 1);

    // The audit trail shows what she did, what she was refused, and who acted on her.
    bot.handle(CHAT, "/login admin senha-do-admin").await;
    let audit = bot.handle(CHAT, "/auditoria ana").await;
    assert!(
        audit.contains("usuario_removido por token-admin em ana"),
        "{audit}"
    );
    assert!(
        audit.contains("nivel_alterado por token-admin em ana (nivel=0)"),
        "{audit}"
    );
    let all = bot.handle(CHAT, "/auditoria").await;
    assert!(
        all.contains("admin_recusado por usuario:ana em intruso1 (tentou=usuario_criado): NOT_ADMIN [chat:11]"),
        "{all}"
    );
    assert!(
        all.contains("usuario_criado por usuario:ana em ok1 (nivel=0) [chat:11]"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bot_and_a_second_instance_keep_the_chat_logged_in() {
    let app = app_with_users().await;
    let first = bot_for(&app);
    assert!(
        first
            .handle(CHAT, "/login admin senha-do-admin")
            .await
            .starts_with("Olá, admin!")
    );
    // A second replica (the webhook's other pod) sees the same login.
    let second = bot_for(&app);
    assert_eq!(
        second.handle(CHAT, "/nivel").await,
        "Seu nível é 2 (administrador)."
    );
    assert!(
        second
            .handle(CHAT, "/adicionar bob senha-do-bob 1")
            .await
            .starts_with("Usuário bob criado")
    );
    // A restart: the first instance is gone, a new one answers.
    drop(first);
    let restarted = bot_for(&app);
    assert_eq!(
        restarted.handle(CHAT, "/nivel").await,
        "Seu nível é 2 (administrador)."
    );
    // Logging out on one instance logs out on all.
    assert_eq!(restarted.handle(CHAT, "/logout").await, "Até logo, admin!");
    assert!(
        second
            .handle(CHAT, "/nivel")
            .await
            .contains("não está logado")
    );

    // The binary too: a login made by one process holds in the next.
    let mut process = BotProcess::start(app.addr);
    assert!(
        process
            .say("/login maria senha-da-maria")
            .await
            .starts_with("Olá, maria!")
    );
    let (status, _, stderr) = process.finish().await;
    assert!(status.success(), "{status:?}\n{stderr}");
    let mut process = BotProcess::start(app.addr);
    assert_eq!(process.say("/nivel").await, "Seu nível é 1.");
    process.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_chat_session_expires_and_the_chat_is_told_so() {
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.sessions.idle_timeout = Duration::from_millis(1500);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let bot = bot_for(&app);
    bot.handle(CHAT, "/login maria senha-da-maria").await;
    assert_eq!(bot.handle(CHAT, "/nivel").await, "Seu nível é 1.");
    // Unused past the idle timeout: the next command hears that the session expired.
    let deadline = Instant::now() + Duration::from_secs(30);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = loop {
        let reply = bot.handle(CHAT, "/nivel").await;
        if reply != "Seu nível é 1." || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
    };
    assert!(reply.contains("sessão expirou"), "{reply}");
    assert!(bot.handle(CHAT, "/nivel").await.contains("não está logado"));
}
