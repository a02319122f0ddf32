//! The bot on Telegram, against a stand-in of the Bot API ([`crate::standin`]) and the real
//! server and database: long polling and webhook, passwords in chats, the service going away,
//! 429s and 5xx from the Bot API, refused webhook calls, the health page, and the end-user
//! metadata.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use produto_bot::{
    BotConfig,
    run::{self, Listeners},
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use produto_testkit::{Backend, TestApp, http::http_get, spawn_app, spawn_on};

use crate::standin::{self, Fault, StandIn};

/// Ana's Telegram user id; her private chat has the same id.
const ANA: u64 = 5001;
const ANA_CHAT: i64 = ANA as i64;
const GROUP: i64 = -4242;
const SECRET: &str = "webhook-secret_1";
const UNAVAILABLE: &str = "Serviço indisponível, tente de novo";

/// A bot running in-process against the stand-in, with its admin port on a free port.
struct TelegramBot {
    admin: SocketAddr,
    webhook: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

fn config(server: SocketAddr, standin: &StandIn) -> BotConfig {
    let mut config = BotConfig::for_server(format!("http://{server}"));
    config.token = Some(produto_testkit::BOT_TOKEN.into());
    config.connect_timeout = Duration::from_millis(500);
    config.timeout = Duration::from_secs(2);
    config.telegram.telegram_token = Some(standin::TOKEN.into());
    config.telegram.telegram_api_url = standin.url();
    config.telegram.poll_timeout = Duration::from_secs(1);
    config.telegram.retry_delay = Duration::from_millis(50);
    config
}

impl TelegramBot {
    async fn polling(server: SocketAddr, standin: &StandIn) -> TelegramBot {
        TelegramBot::start(config(server, standin), None).await
    }

    async fn webhook(server: SocketAddr, standin: &StandIn) -> TelegramBot {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = config(server, standin);
        let addr = listener.local_addr().unwrap();
        config.telegram.webhook_url = Some(format!("http://{addr}/telegram/hook"));
        config.telegram.webhook_secret = Some(SECRET.into());
        TelegramBot::start(config, Some(listener)).await
    }

    async fn start(config: BotConfig, webhook: Option<TcpListener>) -> TelegramBot {
        // The bot's logs in the test's output, for a failure's diagnosis.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("produto_bot=debug")
            .try_init();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let webhook_addr = webhook.as_ref().map(|l| l.local_addr().unwrap());
        let stop = CancellationToken::new();
        let listeners = Listeners {
            admin: Some(admin),
            webhook,
        };
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { run::run(&config, listeners, stop).await }
        });
        let bot = TelegramBot {
            admin: admin_addr,
            webhook: webhook_addr,
            stop,
            task,
        };
        bot.wait_until_ready().await;
        bot
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(self.admin, "/readyz").await.0 != 200 {
            assert!(
                !self.task.is_finished(),
                "the bot ended before it was ready"
            );
            assert!(Instant::now() < deadline, "the bot never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts an update to the webhook with `secret` (`None`: no header); the HTTP status.
    async fn post(&self, update: &Value, secret: Option<&str>) -> u16 {
        let addr = self.webhook.expect("a webhook bot");
        let body = update.to_string();
        let header = secret
            .map(|s| format!("X-Telegram-Bot-Api-Secret-Token: {s}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST /telegram/hook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// Stops the bot as SIGTERM does and waits for it to end cleanly.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the bot stops in time")
            .expect("no panic")
            .expect("a clean stop");
    }
}

/// A server with an admin (level 2) and a plain user (level 1).
async fn app_with_users() -> TestApp {
    let app = spawn_app(Backend::Postgres).await;
    app.add_user("admin", "senha-do-admin", 2).await.unwrap();
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    app
}

/// Says `text` in a chat: queued for polling, or posted to the webhook with the right secret.
async fn say(bot: &TelegramBot, standin: &StandIn, chat: i64, user: u64, text: &str) {
    if bot.webhook.is_some() {
        let update = standin.webhook_update(chat, user, text);
        assert_eq!(bot.post(&update, Some(SECRET)).await, 200);
    } else {
        standin.message(chat, user, text);
    }
}

/// The whole flow through one transport: login, level, adding a user, with the password
/// messages deleted in a private chat and refused in a group.
async fn admin_flow(bot: &TelegramBot, standin: &StandIn, app: &TestApp) {
    say(bot, standin, ANA_CHAT, ANA, "/login admin senha-do-admin").await;
    let replies = standin.wait_for_replies(ANA_CHAT, 1).await;
    assert!(
        replies[0].starts_with("Olá, admin! Você entrou com nível 2 (administrador)."),
        "{replies:?}"
    );
    assert!(replies[0].contains("Apaguei a sua mensagem"), "{replies:?}");
    assert!(!replies[0].contains("senha-do-admin"));
    let deleted = standin.calls("deleteMessage");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].body["chat_id"], ANA_CHAT);

    say(bot, standin, ANA_CHAT, ANA, "/nivel").await;
    let replies = standin.wait_for_replies(ANA_CHAT, 2).await;
    assert_eq!(replies[1], "Seu nível é 2 (administrador).");

    say(bot, standin, ANA_CHAT, ANA, "/adicionar bob senha-do-bob 1").await;
    let replies = standin.wait_for_replies(ANA_CHAT, 3).await;
    assert!(
        replies[2].starts_with("Usuário bob criado com nível 1 (id "),
        "{replies:?}"
    );
    assert!(!replies[2].contains("senha-do-bob"));
    assert_eq!(standin.calls("deleteMessage").len(), 2);
    // In the database, through the service.
    assert_eq!(app.login("bob", "senha-do-bob").await.unwrap(), (true, 1));
    assert_eq!(app.nivel("bob").await.unwrap(), 1);

    // In a group: refused before any call, and the user is sent to a private chat. The
    // session is Ana's, not the chat's: /nivel in the group knows her.
    say(
        bot,
        standin,
        GROUP,
        ANA,
        "/adicionar carla senha-da-carla 1",
    )
    .await;
    let replies = standin.wait_for_replies(GROUP, 1).await;
    assert!(replies[0].contains("conversa privada"), "{replies:?}");
    assert!(!replies[0].contains("senha-da-carla"));
    assert_eq!(
        app.nivel("carla").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    say(bot, standin, GROUP, ANA, "/nivel").await;
    let replies = standin.wait_for_replies(GROUP, 2).await;
    assert_eq!(replies[1], "Seu nível é 2 (administrador).");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_logs_in_adds_a_user_and_keeps_passwords_out_of_chats() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let bot = TelegramBot::polling(app.addr, &standin).await;
    assert_eq!(standin.calls("deleteWebhook").len(), 1);
    let menu = standin.calls("setMyCommands");
    assert_eq!(menu.len(), 1);
    let commands: Vec<&str> = menu[0].body["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        [
            "login",
            "nivel",
            "senha",
            "adicionar",
            "definirsenha",
            "alterarnivel",
            "remover",
            "usuarios",
            "status",
            "logout",
            "ajuda"
        ]
    );

    admin_flow(&bot, &standin, &app).await;

    // Every handled update is confirmed once the bot stops.
    bot.stop().await;
    assert_eq!(standin.unconfirmed(), 0);
}

/// `/definirsenha` and `/senha` carry passwords too: deleted like `/login`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_change_commands_are_deleted_from_the_chat() {
    let app = app_with_users().await;
    app.add_user("bob", "senha-do-bob", 1).await.unwrap();
    let standin = StandIn::start().await;
    let bot = TelegramBot::polling(app.addr, &standin).await;
    say(&bot, &standin, ANA_CHAT, ANA, "/login admin senha-do-admin").await;
    standin.wait_for_replies(ANA_CHAT, 1).await;
    for (n, text, reply) in [
        (2, "/definirsenha bob nova-do-bob", "Senha de bob definida."),
        (3, "/senha senha-do-admin nova-do-admin", "Senha alterada."),
    ] {
        say(&bot, &standin, ANA_CHAT, ANA, text).await;
        let replies = standin.wait_for_replies(ANA_CHAT, n).await;
        assert!(replies[n - 1].starts_with(reply), "{replies:?}");
        assert!(
            replies[n - 1].contains("Apaguei a sua mensagem"),
            "{replies:?}"
        );
        assert_eq!(standin.calls("deleteMessage").len(), n);
    }
    assert_eq!(app.login("bob", "nova-do-bob").await.unwrap(), (true, 1));
    assert_eq!(
        app.login("admin", "nova-do-admin").await.unwrap(),
        (true, 2)
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_logs_in_adds_a_user_and_keeps_passwords_out_of_chats() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let bot = TelegramBot::webhook(app.addr, &standin).await;
    let set = standin.calls("setWebhook");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].body["secret_token"], SECRET);
    assert!(
        set[0].body["url"]
            .as_str()
            .unwrap()
            .ends_with("/telegram/hook")
    );

    admin_flow(&bot, &standin, &app).await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_calls_without_the_right_secret_are_refused_and_not_handled() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let bot = TelegramBot::webhook(app.addr, &standin).await;

    let update = standin.webhook_update(ANA_CHAT, ANA, "/login maria senha-da-maria");
    assert_eq!(bot.post(&update, None).await, 401);
    assert_eq!(bot.post(&update, Some("webhook-secret_2")).await, 403);
    assert_eq!(bot.post(&update, Some("")).await, 403);
    // Nothing was handled: no reply, no deletion, no session.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(standin.calls("sendMessage").is_empty());
    assert!(standin.calls("deleteMessage").is_empty());
    say(&bot, &standin, ANA_CHAT, ANA, "/nivel").await;
    let replies = standin.wait_for_replies(ANA_CHAT, 1).await;
    assert!(replies[0].contains("não está logado"), "{replies:?}");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_says_unavailable_within_a_second_while_the_service_is_down_then_recovers() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let bot = TelegramBot::polling(app.addr, &standin).await;
    standin.message(ANA_CHAT, ANA, "/login admin senha-do-admin");
    standin.wait_for_replies(ANA_CHAT, 1).await;

    let (addr, database) = app.stop_keeping_database().await;
    let (status, body) = http_get(bot.admin, "/health").await;
    assert_eq!(status, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert!(
        health["reason"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );
    // Still ready for Kubernetes: it answers its users.
    assert_eq!(http_get(bot.admin, "/readyz").await.0, 200);

    let asked = Instant::now();
    standin.message(ANA_CHAT, ANA, "/nivel");
    let replies = standin.wait_for_replies(ANA_CHAT, 2).await;
    let took = asked.elapsed();
    assert!(replies[1].starts_with(UNAVAILABLE), "{replies:?}");
    assert!(took < Duration::from_secs(2), "the reply took {took:?}");

    let app = spawn_on(addr, database).await;
    standin.message(ANA_CHAT, ANA, "/nivel");
    let replies = standin.wait_for_replies(ANA_CHAT, 3).await;
    assert_eq!(replies[2], "Seu nível é 2 (administrador).");
    drop(app);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_and_server_errors_from_telegram_lose_no_reply() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let bot = TelegramBot::polling(app.addr, &standin).await;

    // The next polls fail with a 500, then a 429; the messages are queued while the first
    // fails, so they come through the failures. The first reply gets a 429, the second a 500.
    standin.fail("getUpdates", &[Fault::ServerError, Fault::RetryAfter(1)]);
    standin.fail("sendMessage", &[Fault::RetryAfter(1), Fault::ServerError]);
    standin
        .wait_for(|s| {
            let polls = s.calls("getUpdates");
            polls.iter().any(|c| c.status == 500).then_some(())
        })
        .await;
    standin.message(ANA_CHAT, ANA, "/ajuda");
    standin.message(ANA_CHAT, ANA, "/logout");
    let replies = standin.wait_for_replies(ANA_CHAT, 2).await;
    assert!(replies[0].contains("/login"), "{replies:?}");
    assert_eq!(replies[1], "Você não estava logado.");

    // The resend after the 429 waited its retry_after.
    let sends = standin.calls("sendMessage");
    let limited = sends.iter().position(|c| c.status == 429).unwrap();
    let waited = sends[limited + 1].at - sends[limited].at;
    assert!(
        waited >= Duration::from_millis(950),
        "resent after {waited:?}"
    );
    // Each message was handled once: two replies, no duplicate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(standin.sent_to(ANA_CHAT).len(), 2);
    assert_eq!(http_get(bot.admin, "/readyz").await.0, 200);
    bot.stop().await;
    assert_eq!(standin.unconfirmed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_page_shows_the_service_pool_and_transport() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let bot = TelegramBot::polling(app.addr, &standin).await;

    let (status, body) = http_get(bot.admin, "/health").await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["database"]["healthy"], true);
    let pool = &health["database"]["pool"];
    assert_eq!(pool["status"], "active");
    for field in [
        "min_connections",
        "max_connections",
        "pool_size",
        "used_connections",
    ] {
        assert!(pool[field].is_u64(), "{field} in {body}");
    }
    assert!(pool["max_connections"].as_u64().unwrap() >= 1);
    assert_eq!(health["bot"]["ready"], true);
    assert_eq!(health["bot"]["transport"], "polling");
    assert_eq!(http_get(bot.admin, "/livez").await.0, 200);

    // Metrics count what happened.
    standin.message(ANA_CHAT, ANA, "/login maria senha-errada");
    standin.wait_for_replies(ANA_CHAT, 1).await;
    let (status, metrics) = http_get(bot.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("produto_bot_updates_received_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"produto_bot_commands_total{command="login",outcome="refused"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"produto_bot_service_call_duration_seconds_count{method="AbrirSessao"} 1"#),
        "{metrics}"
    );
    bot.stop().await;
}

/// A gRPC stand-in for the service that records the `produto-end-user` of each health check,
/// so the test sees what reaches a server.
async fn recording_health_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let interceptor = {
        let seen = seen.clone();
        move |request: tonic::Request<()>| {
            if let Some(who) = request.metadata().get("produto-end-user") {
                seen.lock()
                    .unwrap()
                    .push(who.to_str().unwrap_or("?").to_owned());
            }
            Ok(request)
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                service,
                interceptor,
            ))
            .serve_with_incoming(incoming)
            .await
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_names_the_telegram_user_it_is_made_for() {
    let (server, seen) = recording_health_server().await;
    let standin = StandIn::start().await;
    let bot = TelegramBot::polling(server, &standin).await;
    // The bot's own checks name nobody.
    let before = seen.lock().unwrap().len();
    assert_eq!(before, 0, "{:?}", seen.lock().unwrap());

    standin.message(GROUP, ANA, "/status");
    standin.wait_for_replies(GROUP, 1).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [format!("telegram:{ANA}")],
        "one health check, made for Ana"
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sending_too_fast_is_told_once_and_then_ignored() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let mut config = config(app.addr, &standin);
    config.telegram.user_rate_per_minute = 1;
    config.telegram.user_burst = 2;
    let bot = TelegramBot::start(config, None).await;
    for _ in 0..5 {
        standin.message(ANA_CHAT, ANA, "/logout");
    }
    // Another user is not affected.
    standin.message(7, 7, "/logout");
    standin.wait_for_replies(7, 1).await;
    let replies = standin.wait_for_replies(ANA_CHAT, 3).await;
    assert_eq!(replies[0], "Você não estava logado.");
    assert_eq!(replies[1], "Você não estava logado.");
    assert!(replies[2].starts_with("Muitos comandos"), "{replies:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(standin.sent_to(ANA_CHAT).len(), 3);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_on_sigterm_finishes_confirms_and_exits_0_without_logging_the_token() {
    let app = app_with_users().await;
    let standin = StandIn::start().await;
    let mut child = tokio::process::Command::new(produto_testkit::process::bot_binary())
        .env("PRODUTO_SERVER", format!("http://{}", app.addr))
        .env("PRODUTO_BOT_TELEGRAM_TOKEN", standin::TOKEN)
        .env("PRODUTO_TOKEN", produto_testkit::BOT_TOKEN)
        .env("PRODUTO_BOT_TELEGRAM_API_URL", standin.url())
        .env("PRODUTO_BOT_POLL_TIMEOUT", "1s")
        .env("PRODUTO_BOT_ADMIN_ADDR", "")
        // Everything the bot and its libraries log, to check that the token is not among it.
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start produto-bot");
    standin.message(ANA_CHAT, ANA, "/login maria senha-da-maria");
    let replies = standin.wait_for_replies(ANA_CHAT, 1).await;
    assert!(replies[0].starts_with("Olá, maria!"), "{replies:?}");

    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the bot exits in time after SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("polling stopped"), "{stderr}");
    assert_eq!(standin.unconfirmed(), 0, "the handled update was confirmed");
    for secret in [standin::TOKEN, "senha-da-maria"] {
        assert!(!stderr.contains(secret), "{secret} in the logs:\n{stderr}");
    }
}
