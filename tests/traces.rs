//! Traces exported over OTLP to a real receiver in process (the OpenTelemetry project's
//! protos): a chat message's trace from the bot through the service to the database, which
//! incoming trace contexts are continued, and that no span holds a password or a hash.
//!
//! Each test has its own tracer provider and subscriber, installed for its own thread (the
//! tests run on a current-thread runtime, so the server and the bot they start run there too):
//! tests running in parallel never share a provider, and no global one is set. A binary of
//! their own: tracing caches each callsite's interest for the whole process, and a test
//! running without a subscriber beside them could leave a span disabled for theirs.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use opentelemetry_sdk::trace::Sampler;
use produto::pb::ObterNivelRequest;
use produto_bot::{Bot, ChatId};
use produto_client::{
    otel::Traces,
    telemetry::{self, LogFormat},
};
use tonic::Request;
use tonic_health::pb::health_check_response::ServingStatus;
use tracing::dispatcher::DefaultGuard;
use tracing_subscriber::EnvFilter;

use produto_testkit::{Backend, TestDb, otlp::Receiver, spawn_app, spawn_with, test_config};

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A receiver, a provider exporting to it, and a subscriber (JSON logs and the OpenTelemetry
/// layer) installed for this thread until the test ends.
struct Traced {
    receiver: Receiver,
    traces: Option<Arc<Traces>>,
    logs: Logs,
    _guard: DefaultGuard,
}

impl Traced {
    async fn start() -> Traced {
        Traced::sampling(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))).await
    }

    /// [`Traced::start`] deciding with `sampler` at each trace's root.
    async fn sampling(sampler: Sampler) -> Traced {
        Traced::with(sampler, LogFormat::Json).await
    }

    /// [`Traced::sampling`] with logs written as `format`.
    async fn with(sampler: Sampler, format: LogFormat) -> Traced {
        let receiver = Receiver::start(true).await;
        let traces = Traces::with_sampler(&receiver.endpoint(), "produto-test", sampler);
        let traces = Arc::new(traces.unwrap());
        let logs = Logs::default();
        let writer = logs.clone();
        let dispatch =
            telemetry::traced_dispatch(format, &traces, EnvFilter::new("info"), move || {
                writer.clone()
            });
        let guard = tracing::dispatcher::set_default(&dispatch);
        // Callsites first seen before this subscriber existed are asked again.
        tracing::callsite::rebuild_interest_cache();
        Traced {
            receiver,
            traces: Some(traces),
            logs,
            _guard: guard,
        }
    }

    /// Exports what has ended until `done` holds for the spans received (10 s at most).
    async fn spans_until(&self, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Flushing blocks until the collector answers: off this thread, which serves it.
            let traces = self.traces.clone().unwrap();
            tokio::task::spawn_blocking(move || traces.flush())
                .await
                .unwrap()
                .expect("flush to the receiver");
            let spans = self.receiver.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the spans never arrived: {:#?}",
                spans
                    .iter()
                    .map(|s| format!(
                        "{} kind {} trace {} span {} parent {}",
                        s.name,
                        s.kind,
                        hex(&s.trace_id),
                        hex(&s.span_id),
                        hex(&s.parent_span_id)
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // Shutting the provider down waits for the receiver, which this thread serves: on
        // another thread.
        if let Some(traces) = self.traces.take() {
            std::thread::spawn(move || drop(traces));
        }
    }
}

fn text(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(&kv.value))
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Whether `span` is `ancestor` or under it.
fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut current = span;
    for _ in 0..64 {
        if current.span_id == ancestor.span_id {
            return true;
        }
        match spans
            .iter()
            .find(|s| s.span_id == current.parent_span_id && s.trace_id == current.trace_id)
        {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// Every attribute value of every span, its events and its links.
fn every_value(spans: &[Span]) -> Vec<String> {
    let values = |kvs: &[KeyValue]| -> Vec<String> {
        kvs.iter()
            .flat_map(|kv| [Some(kv.key.clone()), text(&kv.value)])
            .flatten()
            .collect()
    };
    spans
        .iter()
        .flat_map(|s| {
            let mut all = values(&s.attributes);
            all.push(s.name.clone());
            for event in &s.events {
                all.push(event.name.clone());
                all.extend(values(&event.attributes));
            }
            for link in &s.links {
                all.extend(values(&link.attributes));
            }
            all
        })
        .collect()
}

/// The bot, with its caller token, after chat 7 logged in as maria (her password,
/// `senha-da-maria`, level 1).
async fn logged_in_bot(server: &std::net::SocketAddr) -> Bot {
    let mut config = produto_bot::BotConfig::for_server(format!("http://{server}"));
    config.token = Some(produto_testkit::BOT_TOKEN.into());
    config.timeout = Duration::from_secs(5);
    let bot = Bot::build(&config).expect("build the bot");
    let reply = bot.handle(ChatId(7), "/login maria senha-da-maria").await;
    assert_eq!(reply, "Olá, maria! Você entrou com nível 1.");
    bot
}

/// The RPC a chat's `/login` makes: the password checked and a session opened.
const LOGIN_RPC: &str = "produto.v1.ProdutoService/AbrirSessao";
const OBTER: &str = "produto.v1.ProdutoService/ObterNivel";

#[tokio::test]
async fn one_chat_message_is_one_trace_from_the_bot_through_the_service_to_the_database() {
    let traced = Traced::start().await;
    let database = TestDb::create(Backend::Postgres).await;
    let config = test_config(&database.url);
    // The bot names itself with its caller token: an authenticated caller, whose traces the
    // server continues without trusting everyone's.
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.database.url)
        .await
        .unwrap();
    let hash: String = sqlx::query_scalar("SELECT senha_hash FROM usuarios WHERE usuario = $1")
        .bind("maria")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    logged_in_bot(&app.addr).await;

    let spans = traced
        .spans_until(|spans| {
            let Some(message) = named(spans, "chat message").pop() else {
                return false;
            };
            spans.iter().any(|s| {
                s.trace_id == message.trace_id
                    && s.name == LOGIN_RPC
                    && s.kind == SpanKind::Server as i32
            }) && spans
                .iter()
                .any(|s| s.trace_id == message.trace_id && attr(s, "db.system.name").is_some())
        })
        .await;
    let message = named(&spans, "chat message").pop().unwrap();
    assert!(
        message.parent_span_id.is_empty(),
        "a message starts its trace"
    );
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == message.trace_id)
        .collect();

    // The bot's attempt (a client span) under the message, the server's span under it.
    let attempt = trace
        .iter()
        .find(|s| s.name == LOGIN_RPC && s.kind == SpanKind::Client as i32)
        .expect("the bot's attempt span");
    assert_eq!(attempt.parent_span_id, message.span_id);
    assert_eq!(attr(attempt, "produto.attempt").as_deref(), Some("1"));
    let server = trace
        .iter()
        .find(|s| s.name == LOGIN_RPC && s.kind == SpanKind::Server as i32)
        .expect("the server's RPC span");
    assert_eq!(
        server.parent_span_id, attempt.span_id,
        "continued from the bot"
    );
    assert_eq!(attr(server, "rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(attr(server, "rpc.method").as_deref(), Some(LOGIN_RPC));
    assert_eq!(
        attr(server, "rpc.response.status_code").as_deref(),
        Some("OK")
    );

    // The credentials lookup: a client span under the RPC, in the conventions' names.
    let lookup = trace
        .iter()
        .find(|s| attr(s, "produto.db.statement").as_deref() == Some("credentials"))
        .expect("the credentials statement's span");
    assert!(descends(&spans, lookup, server), "under the RPC span");
    assert_eq!(lookup.kind, SpanKind::Client as i32);
    assert_eq!(lookup.name, "SELECT usuarios");
    assert_eq!(
        attr(lookup, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(attr(lookup, "db.operation.name").as_deref(), Some("SELECT"));
    assert_eq!(
        attr(lookup, "db.collection.name").as_deref(),
        Some("usuarios")
    );
    assert_eq!(
        attr(lookup, "db.query.summary").as_deref(),
        Some("SELECT usuarios")
    );
    assert!(attr(lookup, "server.address").is_some());
    assert_eq!(
        attr(lookup, "produto.db.server.role").as_deref(),
        Some("primary")
    );
    // Every feature names its statements' shape: the session's, written by sessions/.
    let open = trace
        .iter()
        .find(|s| attr(s, "produto.db.statement").as_deref() == Some("open_session"))
        .expect("the session's statement span");
    assert_eq!(open.name, "INSERT sessoes");
    assert_eq!(attr(open, "db.collection.name").as_deref(), Some("sessoes"));

    // The throttle's claim and the pool wait are in the same tree.
    for name in ["throttle claim", "pool wait", "hashing queue"] {
        let span = trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name:?} span"));
        assert!(descends(&spans, span, server), "{name} under the RPC span");
    }

    // No attribute anywhere holds the password or its hash.
    for value in every_value(&spans) {
        assert!(!value.contains("senha-da-maria"), "a password in {value:?}");
        assert!(!value.contains(&hash), "the hash in {value:?}");
        assert!(!value.contains("$argon2"), "a hash in {value:?}");
    }

    // The server's log line of the call carries the trace's ids.
    let trace_id = hex(&message.trace_id);
    let logs = traced.logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("\"trace_id\":\"{trace_id}\"")) && l.contains("\"rpc\""))
        .unwrap_or_else(|| panic!("no log line of the call carries its trace id:\n{logs}"));
    assert!(line.contains("\"span_id\":\""), "{line}");
    assert!(!logs.contains("senha-da-maria"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `traceparent` naming a sampled span of a new random trace: (header, trace id, span id).
fn traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

const BILLING_TOKEN: &str = "billing-caller-token-0123456789";

fn nivel_request(traceparent: &str, token: Option<&str>) -> Request<ObterNivelRequest> {
    let mut request = Request::new(ObterNivelRequest {
        usuario: "maria".into(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// The server's span of the ObterNivel call that `pick` finds.
async fn server_span(traced: &Traced, pick: impl Fn(&Span) -> bool) -> Span {
    let found = |spans: &[Span]| {
        spans
            .iter()
            .find(|s| s.name == OBTER && s.kind == SpanKind::Server as i32 && pick(s))
            .cloned()
    };
    let spans = traced.spans_until(|spans| found(spans).is_some()).await;
    found(&spans).unwrap()
}

#[tokio::test]
async fn a_trusted_callers_trace_is_continued_and_an_anonymous_one_only_linked() {
    let traced = Traced::start().await;
    let database = TestDb::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("caller-tokens");
    std::fs::write(&tokens, format!("billing {BILLING_TOKEN}\n")).unwrap();
    let mut config = test_config(&database.url);
    // Identities are optional: anonymous calls are served, their traces not trusted.
    config.caller_tokens_file = Some(tokens);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let mut client = app.produto.clone();

    let (header, trusted_trace, trusted_parent) = traceparent();
    let nivel = client
        .obter_nivel(nivel_request(&header, Some(BILLING_TOKEN)))
        .await
        .unwrap();
    assert_eq!(nivel.into_inner().nivel, 1);
    let (header, anonymous_trace, anonymous_parent) = traceparent();
    client
        .obter_nivel(nivel_request(&header, None))
        .await
        .unwrap();

    let trusted = server_span(&traced, |s| hex(&s.trace_id) == trusted_trace).await;
    assert_eq!(hex(&trusted.parent_span_id), trusted_parent);
    assert_eq!(
        attr(&trusted, "produto.caller.name").as_deref(),
        Some("billing")
    );
    assert_eq!(
        attr(&trusted, "produto.caller.via").as_deref(),
        Some("token")
    );

    let anonymous = server_span(&traced, |s| {
        s.links.iter().any(|l| hex(&l.trace_id) == anonymous_trace)
    })
    .await;
    assert_ne!(hex(&anonymous.trace_id), anonymous_trace, "a new trace");
    assert!(anonymous.parent_span_id.is_empty(), "a root");
    let link = &anonymous.links[0];
    assert_eq!(hex(&link.span_id), anonymous_parent);
    assert_eq!(attr(&anonymous, "produto.caller.name"), None);
}

#[tokio::test]
async fn with_trust_all_an_anonymous_callers_trace_is_continued() {
    let traced = Traced::start().await;
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.trace_trust_all = true;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();

    let (header, trace, parent) = traceparent();
    let mut client = app.produto.clone();
    client
        .obter_nivel(nivel_request(&header, None))
        .await
        .unwrap();
    let span = server_span(&traced, |s| hex(&s.trace_id) == trace).await;
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(
        attr(&span, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
}

#[tokio::test]
async fn a_missing_user_is_the_callers_answer_not_an_error_span() {
    let traced = Traced::start().await;
    let app = spawn_app(Backend::Postgres).await;
    let (header, trace, _) = traceparent();
    let mut client = app.produto.clone();
    let missing = client
        .obter_nivel(nivel_request(&header, None))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let span = server_span(&traced, |s| {
        s.links.iter().any(|l| hex(&l.trace_id) == trace)
    })
    .await;
    assert_eq!(
        attr(&span, "rpc.response.status_code").as_deref(),
        Some("NOT_FOUND")
    );
    // NOT_FOUND is the caller's answer, not the server's failure: the status stays unset.
    assert_eq!(span.status.as_ref().map_or(0, |s| s.code), 0);
}

/// The Python client (clients/python) in a caller that has OpenTelemetry: its calls carry the
/// caller's current trace, which a server that knows the caller's token continues.
const PYTHON_CALLER: &str = r#"
import sys
from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from produto_client import Client

trace_id, span_id, addr, token = sys.argv[1:]
parent = SpanContext(int(trace_id, 16), int(span_id, 16), False, TraceFlags(TraceFlags.SAMPLED))
context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
with Client(addr, token=token) as client:
    print(client.obter_nivel("maria"))
"#;

#[tokio::test]
async fn the_python_client_carries_its_callers_trace() {
    let ready = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import grpc, google.protobuf, opentelemetry.propagate",
        ])
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs python3 with tests/python/requirements.txt installed"
        );
        eprintln!(
            "SKIPPED: python3 with grpcio, protobuf and opentelemetry-api is not available \
             (pip install -r tests/python/requirements.txt)"
        );
        return;
    }
    let traced = Traced::start().await;
    let database = TestDb::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("caller-tokens");
    std::fs::write(&tokens, format!("billing {BILLING_TOKEN}\n")).unwrap();
    let mut config = test_config(&database.url);
    config.caller_tokens_file = Some(tokens);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();

    let (_, trace_id, span_id) = traceparent();
    let output = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_CALLER, &trace_id, &span_id])
        .arg(app.addr.to_string())
        .arg(BILLING_TOKEN)
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/src"),
        )
        .output()
        .await
        .expect("run python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");
    let span = server_span(&traced, |s| hex(&s.trace_id) == trace_id).await;
    assert_eq!(hex(&span.parent_span_id), span_id);
}

#[tokio::test]
async fn the_bot_binary_exports_its_trace_at_exit_and_the_server_continues_it() {
    // Built first, if needed: the build blocks this thread, which serves everything below.
    let bot = produto_testkit::process::bot_binary().to_owned();
    let traced = Traced::start().await;
    let database = TestDb::create(Backend::Postgres).await;
    let config = test_config(&database.url);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();

    let mut child = tokio::process::Command::new(bot)
        .env("PRODUTO_SERVER", format!("http://{}", app.addr))
        .env("PRODUTO_TOKEN", produto_testkit::BOT_TOKEN)
        .env("PRODUTO_BOT_TIMEOUT", "5s")
        .env_remove("PRODUTO_BOT_TELEGRAM_TOKEN")
        .env("PRODUTO_BOT_ADMIN_ADDR", "")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", traced.receiver.endpoint())
        .env("OTEL_SERVICE_NAME", "produto-bot")
        .env_remove("OTEL_TRACES_SAMPLER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start produto-bot");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"/login maria senha-da-maria\n")
            .await
            .unwrap();
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the bot exits at the end of its input")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("Olá, maria!"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The bot sent its spans before exiting; the server's come with the next flush.
    let spans = traced
        .spans_until(|spans| {
            named(spans, "chat message").iter().any(|message| {
                spans.iter().any(|s| {
                    s.trace_id == message.trace_id
                        && s.name == LOGIN_RPC
                        && s.kind == SpanKind::Server as i32
                })
            })
        })
        .await;
    let message = named(&spans, "chat message").pop().unwrap();
    let attempt = spans
        .iter()
        .find(|s| s.parent_span_id == message.span_id && s.kind == SpanKind::Client as i32)
        .expect("the bot's attempt span");
    let server = spans
        .iter()
        .find(|s| s.trace_id == message.trace_id && s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(server.parent_span_id, attempt.span_id);
    for value in every_value(&spans) {
        assert!(!value.contains("senha-da-maria"), "a password in {value:?}");
    }
}

#[tokio::test]
async fn an_unsampled_trace_exports_nothing_and_a_sampled_caller_is_still_followed() {
    // Parent-based, no new trace sampled: what a 1 % ratio does to 99 calls in 100.
    let never = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.0)));
    let traced = Traced::sampling(never).await;
    let database = TestDb::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("caller-tokens");
    std::fs::write(
        &tokens,
        format!(
            "billing {BILLING_TOKEN}\nbot {}\n",
            produto_testkit::BOT_TOKEN
        ),
    )
    .unwrap();
    let mut config = test_config(&database.url);
    config.caller_tokens_file = Some(tokens);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();

    // Unsampled: a chat message (a login: the throttle, the hashing queue, statements), an
    // anonymous caller's trace (only ever linked), calls with no trace at all.
    let bot = logged_in_bot(&app.addr).await;
    let reply = bot.handle(ChatId(7), "/nivel").await;
    assert!(reply.contains('1'), "{reply}");
    let mut client = app.produto.clone();
    let (anonymous, _, _) = traceparent();
    client
        .obter_nivel(nivel_request(&anonymous, None))
        .await
        .unwrap();
    for _ in 0..5 {
        client
            .obter_nivel(ObterNivelRequest {
                usuario: "maria".into(),
            })
            .await
            .unwrap();
    }

    // A trusted caller's sampled trace is continued whatever the ratio says of new ones.
    let (header, trace_id, parent) = traceparent();
    client
        .obter_nivel(nivel_request(&header, Some(BILLING_TOKEN)))
        .await
        .unwrap();
    let server = server_span(&traced, |s| hex(&s.trace_id) == trace_id).await;
    assert_eq!(hex(&server.parent_span_id), parent);
    let spans = traced
        .spans_until(|spans| {
            spans
                .iter()
                .any(|s| hex(&s.trace_id) == trace_id && attr(s, "db.system.name").is_some())
        })
        .await;
    let strays: Vec<String> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) != trace_id)
        .map(|s| format!("{} in trace {}", s.name, hex(&s.trace_id)))
        .collect();
    assert!(strays.is_empty(), "spans of unsampled calls: {strays:?}");

    // The unsampled calls' log lines are written, without trace ids.
    let logs = traced.logs.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"message\":\"rpc\""))
        .collect();
    assert!(lines.len() >= 9, "{logs}");
    let with_ids = lines.iter().filter(|l| l.contains("\"trace_id\"")).count();
    assert_eq!(with_ids, 1, "only the sampled call's line has ids:\n{logs}");
}

#[tokio::test]
async fn a_text_log_line_carries_its_calls_trace_and_span_ids() {
    let always = Sampler::ParentBased(Box::new(Sampler::AlwaysOn));
    let traced = Traced::with(always, LogFormat::Text).await;
    let app = spawn_app(Backend::Postgres).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let mut client = app.produto.clone();
    client
        .obter_nivel(ObterNivelRequest {
            usuario: "maria".into(),
        })
        .await
        .unwrap();
    let server = server_span(&traced, |_| true).await;
    let (trace_id, span_id) = (hex(&server.trace_id), hex(&server.span_id));
    let logs = traced.logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("ObterNivel") && l.contains("latency_ms"))
        .unwrap_or_else(|| panic!("no log line of the call:\n{logs}"));
    assert!(
        line.ends_with(&format!(" trace_id={trace_id} span_id={span_id}")),
        "{line}"
    );
}
