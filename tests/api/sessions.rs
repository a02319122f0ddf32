//! Sessions kept by the service, admin rights from a session's current level, the audit
//! trail and the password policy, through the real gRPC client against the real server.

use std::time::{Duration, Instant};

use produto::pb::{
    AbrirSessaoRequest, AdicionarUsuarioRequest, AlterarNivelRequest, AlterarSenhaRequest,
    EncerrarSessaoRequest, EncerrarSessoesRequest, EventoAuditoria, ListarAuditoriaRequest,
    ListarSessoesRequest, ListarUsuariosRequest, ObterSessaoRequest, RemoverUsuarioRequest, Sessao,
};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use produto_testkit::{
    BOT_TOKEN, Backend, OTHER_CALLER_TOKEN, TestApp, TestDb, admin, as_caller, spawn_app,
    spawn_with, test_config, with_session,
};

/// The code and `ErrorInfo.reason` of a failed call.
fn code_and_reason(status: &Status) -> (Code, String) {
    let reason = status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (status.code(), reason)
}

fn unauthenticated(reason: &str) -> (Code, String) {
    (Code::Unauthenticated, reason.to_owned())
}

async fn start(backend: Backend, adjust: impl FnOnce(&mut produto::Settings)) -> TestApp {
    let database = TestDb::create(backend).await;
    let mut config = test_config(&database.url);
    adjust(&mut config);
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    app
}

/// The session calls these tests make, on the test server's client.
trait SessionCalls {
    async fn open(&self, request: Request<AbrirSessaoRequest>) -> (String, Sessao);
    async fn open_session(&self, usuario: &str, senha: &str) -> String;
    async fn session(&self, request: Request<ObterSessaoRequest>) -> Result<Sessao, Status>;
    async fn session_of(&self, token: &str) -> Result<Sessao, Status>;
    async fn add_with(&self, token: &str, usuario: &str, nivel: i32) -> Result<i64, Status>;
    async fn set_level(&self, usuario: &str, nivel: i32);
    async fn audit(&self, request: ListarAuditoriaRequest) -> Vec<EventoAuditoria>;
}

impl SessionCalls for TestApp {
    /// Opens a session (with `request`'s metadata); panics unless the password matched.
    async fn open(&self, request: Request<AbrirSessaoRequest>) -> (String, Sessao) {
        let r = self
            .produto
            .clone()
            .abrir_sessao(request)
            .await
            .unwrap()
            .into_inner();
        assert!(r.valido);
        assert!(r.token.starts_with("ps_"), "{}", r.token);
        (r.token, r.sessao.unwrap())
    }

    async fn open_session(&self, usuario: &str, senha: &str) -> String {
        self.open(Request::new(login(usuario, senha))).await.0
    }

    async fn session(&self, request: Request<ObterSessaoRequest>) -> Result<Sessao, Status> {
        Ok(self
            .produto
            .clone()
            .obter_sessao(request)
            .await?
            .into_inner()
            .sessao
            .unwrap())
    }

    async fn session_of(&self, token: &str) -> Result<Sessao, Status> {
        self.session(with_session(ObterSessaoRequest {}, token))
            .await
    }

    /// AdicionarUsuario with a session.
    async fn add_with(&self, token: &str, usuario: &str, nivel: i32) -> Result<i64, Status> {
        let request = with_session(
            AdicionarUsuarioRequest {
                usuario: usuario.into(),
                senha: format!("senha-de-{usuario}"),
                nivel,
            },
            token,
        );
        Ok(self
            .produto
            .clone()
            .adicionar_usuario(request)
            .await?
            .into_inner()
            .id)
    }

    async fn set_level(&self, usuario: &str, nivel: i32) {
        let request = admin(AlterarNivelRequest {
            usuario: usuario.into(),
            nivel,
        });
        self.produto.clone().alterar_nivel(request).await.unwrap();
    }

    async fn audit(&self, request: ListarAuditoriaRequest) -> Vec<EventoAuditoria> {
        self.produto
            .clone()
            .listar_auditoria(admin(request))
            .await
            .unwrap()
            .into_inner()
            .eventos
    }
}

fn login(usuario: &str, senha: &str) -> AbrirSessaoRequest {
    AbrirSessaoRequest {
        usuario: usuario.into(),
        senha: senha.into(),
    }
}

on_both_backends!(
    a_session_answers_with_the_current_level_and_a_demotion_ends_admin_rights_at_once,
    a_removed_user_has_no_session_left,
    a_password_change_ends_the_users_other_sessions,
    the_sessions_of_a_user_are_bounded_and_the_oldest_go,
    the_audit_trail_holds_each_change_with_its_actor_and_no_secret,
);

async fn a_session_answers_with_the_current_level_and_a_demotion_ends_admin_rights_at_once(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.add_user("ana", "senha-da-ana", 2).await.unwrap();
    // A wrong password opens nothing, as VerificarLogin answers it.
    let wrong = app
        .produto
        .clone()
        .abrir_sessao(login("ana", "senha-errada"))
        .await
        .unwrap()
        .into_inner();
    assert!(!wrong.valido && wrong.token.is_empty() && wrong.sessao.is_none());

    let (token, opened) = app.open(Request::new(login("ana", "senha-da-ana"))).await;
    assert_eq!(
        (opened.usuario.as_str(), opened.nivel, opened.nivel_admin),
        ("ana", 2, 2)
    );
    assert!(opened.expira_em_unix_ms > opened.criada_em_unix_ms);
    let now = app.session_of(&token).await.unwrap();
    assert_eq!((now.id, now.nivel), (opened.id, 2));
    app.add_with(&token, "bob", 1).await.unwrap();

    // Demoted: the very next call reads level 0 and is refused.
    app.set_level("ana", 0).await;
    assert_eq!(app.session_of(&token).await.unwrap().nivel, 0);
    let refused = app.add_with(&token, "intruso", 2).await.unwrap_err();
    assert_eq!(
        code_and_reason(&refused),
        (Code::PermissionDenied, "NOT_ADMIN".into())
    );
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata.get("admin_nivel").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        app.nivel("intruso").await.unwrap_err().code(),
        Code::NotFound
    );
    let list = with_session(ListarUsuariosRequest::default(), &token);
    let refused = app.produto.clone().listar_usuarios(list).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Promoted again: at once too.
    app.set_level("ana", 3).await;
    app.add_with(&token, "carla", 1).await.unwrap();

    // A malformed or unknown token, and none at all.
    for bad in ["ps_nonsense", &format!("ps_{}", "A".repeat(43))] {
        let err = app.session_of(bad).await.unwrap_err();
        assert_eq!(code_and_reason(&err), unauthenticated("SESSION_EXPIRED"));
    }
    let err = app
        .session(Request::new(ObterSessaoRequest {}))
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&err), unauthenticated("SESSION_MISSING"));

    // Ended: gone, and ending it again is fine.
    for _ in 0..2 {
        let end = with_session(EncerrarSessaoRequest {}, &token);
        app.produto.clone().encerrar_sessao(end).await.unwrap();
    }
    let err = app.session_of(&token).await.unwrap_err();
    assert_eq!(code_and_reason(&err), unauthenticated("SESSION_EXPIRED"));
    assert!(app.add_with(&token, "dora", 1).await.is_err());
}

async fn a_removed_user_has_no_session_left(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("ana", "senha-da-ana", 2).await.unwrap();
    app.add_user("caio", "senha-do-caio", 1).await.unwrap();
    let token = app.open_session("ana", "senha-da-ana").await;
    let remove = admin(RemoverUsuarioRequest {
        usuario: "ana".into(),
    });
    app.produto.clone().remover_usuario(remove).await.unwrap();
    let err = app.session_of(&token).await.unwrap_err();
    assert_eq!(code_and_reason(&err), unauthenticated("SESSION_EXPIRED"));
    let promote = with_session(
        AlterarNivelRequest {
            usuario: "caio".into(),
            nivel: 2,
        },
        &token,
    );
    assert!(app.produto.clone().alterar_nivel(promote).await.is_err());
    assert_eq!(app.nivel("caio").await.unwrap(), 1);
    // The row went with the user (ON DELETE CASCADE), on both backends.
    assert_eq!(
        produto::sessions::Sessions::new(app.db.clone(), Default::default())
            .count()
            .await
            .unwrap(),
        0
    );
}

async fn a_password_change_ends_the_users_other_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let kept = app.open_session("maria", "senha-da-maria").await;
    let other = app.open_session("maria", "senha-da-maria").await;
    let change = with_session(
        AlterarSenhaRequest {
            usuario: "maria".into(),
            senha_atual: "senha-da-maria".into(),
            senha_nova: "nova-da-maria".into(),
        },
        &kept,
    );
    app.produto.clone().alterar_senha(change).await.unwrap();
    assert_eq!(app.session_of(&kept).await.unwrap().usuario, "maria");
    let err = app.session_of(&other).await.unwrap_err();
    assert_eq!(code_and_reason(&err), unauthenticated("SESSION_EXPIRED"));

    // An admin's change ends them all.
    let set = admin(AlterarSenhaRequest {
        usuario: "maria".into(),
        senha_atual: String::new(),
        senha_nova: "outra-da-maria".into(),
    });
    app.produto.clone().alterar_senha(set).await.unwrap();
    assert!(app.session_of(&kept).await.is_err());
}

async fn the_sessions_of_a_user_are_bounded_and_the_oldest_go(backend: Backend) {
    let app = start(backend, |c| c.sessions.max_per_user = 3).await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(app.open_session("maria", "senha-da-maria").await);
    }
    for old in &tokens[..2] {
        assert!(app.session_of(old).await.is_err());
    }
    for kept in &tokens[2..] {
        assert_eq!(app.session_of(kept).await.unwrap().usuario, "maria");
    }
    // Listed by the user itself (newest first), never with a token.
    let list = with_session(ListarSessoesRequest::default(), &tokens[4]);
    let listed = app
        .produto
        .clone()
        .listar_sessoes(list)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessoes.len(), 3);
    assert!(listed.sessoes[0].id > listed.sessoes[2].id);
    assert!(!format!("{listed:?}").contains("ps_"));

    // The user ends its others, keeping this one; an admin ends the rest.
    let end = with_session(
        EncerrarSessoesRequest {
            usuario: String::new(),
            manter_atual: true,
        },
        &tokens[4],
    );
    let ended = app
        .produto
        .clone()
        .encerrar_sessoes(end)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.encerradas, 2);
    assert!(app.session_of(&tokens[4]).await.is_ok());
    let end = admin(EncerrarSessoesRequest {
        usuario: "maria".into(),
        manter_atual: false,
    });
    assert_eq!(
        app.produto
            .clone()
            .encerrar_sessoes(end)
            .await
            .unwrap()
            .into_inner()
            .encerradas,
        1
    );
    assert!(app.session_of(&tokens[4]).await.is_err());
}

async fn the_audit_trail_holds_each_change_with_its_actor_and_no_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("ana", "senha-da-ana", 2).await.unwrap();
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let ana = app
        .open(as_caller(
            login("ana", "senha-da-ana"),
            BOT_TOKEN,
            "telegram:7",
        ))
        .await
        .0;
    let maria = app.open_session("maria", "senha-da-maria").await;

    // Ana, through the bot (its caller token and her end user), creates and manages bob.
    fn by_ana<T>(message: T) -> Request<T> {
        as_caller(message, BOT_TOKEN, "telegram:7")
    }
    let mut client = app.produto.clone();
    client
        .adicionar_usuario(by_ana(AdicionarUsuarioRequest {
            usuario: "bob".into(),
            senha: "senha-do-bob".into(),
            nivel: 1,
        }))
        .await
        .unwrap();
    client
        .alterar_nivel(by_ana(AlterarNivelRequest {
            usuario: "bob".into(),
            nivel: 3,
        }))
        .await
        .unwrap();
    client
        .alterar_senha(by_ana(AlterarSenhaRequest {
            usuario: "bob".into(),
            senha_atual: String::new(),
            senha_nova: "senha-nova-do-bob".into(),
        }))
        .await
        .unwrap();
    // Bob changes his own; maria (level 1) tries to remove him and is refused; a stranger
    // with a wrong admin token too; ana removes him.
    let own = Request::new(AlterarSenhaRequest {
        usuario: "bob".into(),
        senha_atual: "senha-nova-do-bob".into(),
        senha_nova: "senha-final-do-bob".into(),
    });
    app.produto.clone().alterar_senha(own).await.unwrap();
    let refused = with_session(
        RemoverUsuarioRequest {
            usuario: "bob".into(),
        },
        &maria,
    );
    assert!(app.produto.clone().remover_usuario(refused).await.is_err());
    let mut stranger = Request::new(RemoverUsuarioRequest {
        usuario: "bob".into(),
    });
    stranger.metadata_mut().insert(
        "authorization",
        "Bearer wrong-admin-token-123".parse().unwrap(),
    );
    assert!(app.produto.clone().remover_usuario(stranger).await.is_err());
    client
        .remover_usuario(by_ana(RemoverUsuarioRequest {
            usuario: "bob".into(),
        }))
        .await
        .unwrap();

    let about_bob = app
        .audit(ListarAuditoriaRequest {
            usuario: "bob".into(),
            ..Default::default()
        })
        .await;
    let seen: Vec<(&str, &str, &str, &str)> = about_bob
        .iter()
        .map(|e| {
            (
                e.acao.as_str(),
                e.ator.as_str(),
                e.resultado.as_str(),
                e.detalhe.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("usuario_removido", "usuario:ana", "ok", ""),
            (
                "admin_recusado",
                "anonimo",
                "ADMIN_TOKEN_INVALID",
                "tentou=usuario_removido"
            ),
            (
                "admin_recusado",
                "usuario:maria",
                "NOT_ADMIN",
                "tentou=usuario_removido"
            ),
            (
                "senha_alterada",
                "usuario:bob",
                "ok",
                "sessoes_encerradas=0"
            ),
            (
                "senha_definida",
                "usuario:ana",
                "ok",
                "sessoes_encerradas=0"
            ),
            ("nivel_alterado", "usuario:ana", "ok", "nivel=3"),
            ("usuario_criado", "usuario:ana", "ok", "nivel=1"),
        ]
    );
    let first = about_bob.last().unwrap();
    assert_eq!(
        (first.chamador.as_str(), first.usuario_final.as_str()),
        ("bot", "telegram:7")
    );
    // The creations with the admin token are there too, filtered by actor.
    let by_token = app
        .audit(ListarAuditoriaRequest {
            ator: "token-admin".into(),
            ..Default::default()
        })
        .await;
    let targets: Vec<&str> = by_token.iter().map(|e| e.alvo.as_str()).collect();
    assert_eq!(targets, ["maria", "ana"]);
    // Pages, newest first, and a time window.
    let page = app
        .produto
        .clone()
        .listar_auditoria(admin(ListarAuditoriaRequest {
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.eventos.len(), 2);
    let next = app
        .produto
        .clone()
        .listar_auditoria(admin(ListarAuditoriaRequest {
            page_size: 100,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.eventos.len(), 7);
    assert!(next.eventos[0].id < page.eventos[1].id);
    let later = app
        .audit(ListarAuditoriaRequest {
            desde_unix_ms: page.eventos[0].em_unix_ms + 1,
            ..Default::default()
        })
        .await;
    assert!(later.is_empty());

    // No password, hash or token anywhere in the trail.
    let everything = format!("{:?}", app.audit(ListarAuditoriaRequest::default()).await);
    for secret in [
        "senha-do-bob",
        "senha-nova-do-bob",
        "senha-final-do-bob",
        "$argon2",
        "ps_",
        &ana,
        &maria,
        BOT_TOKEN,
        "wrong-admin-token",
    ] {
        assert!(!everything.contains(secret), "{secret} in {everything}");
    }
    // Reading it is for admins only.
    let read = with_session(ListarAuditoriaRequest::default(), &maria);
    let err = app
        .produto
        .clone()
        .listar_auditoria(read)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_caller_that_opened_a_session_finds_it_by_its_end_user() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_user("ana", "senha-da-ana", 2).await.unwrap();
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let (first, sessao) = app
        .open(as_caller(
            login("ana", "senha-da-ana"),
            BOT_TOKEN,
            "telegram:42",
        ))
        .await;
    assert_eq!(
        (sessao.chamador.as_str(), sessao.usuario_final.as_str()),
        ("bot", "telegram:42")
    );
    let by_bot = app
        .session(as_caller(ObterSessaoRequest {}, BOT_TOKEN, "telegram:42"))
        .await
        .unwrap();
    assert_eq!((by_bot.id, by_bot.usuario.as_str()), (sessao.id, "ana"));

    // Another caller naming the same end user finds nothing, and cannot act as ana.
    let err = app
        .session(as_caller(
            ObterSessaoRequest {},
            OTHER_CALLER_TOKEN,
            "telegram:42",
        ))
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&err), unauthenticated("SESSION_MISSING"));
    let attempt = as_caller(
        AlterarNivelRequest {
            usuario: "maria".into(),
            nivel: 9,
        },
        OTHER_CALLER_TOKEN,
        "telegram:42",
    );
    assert!(app.produto.clone().alterar_nivel(attempt).await.is_err());
    // Nor does an anonymous caller naming it.
    let mut anonymous = Request::new(ObterSessaoRequest {});
    anonymous
        .metadata_mut()
        .insert("produto-end-user", "telegram:42".parse().unwrap());
    let err = app.session(anonymous).await.unwrap_err();
    assert_eq!(code_and_reason(&err), unauthenticated("SESSION_MISSING"));
    assert_eq!(app.nivel("maria").await.unwrap(), 1);

    // A new login for the same end user replaces the old session.
    app.open(as_caller(
        login("maria", "senha-da-maria"),
        BOT_TOKEN,
        "telegram:42",
    ))
    .await;
    assert!(app.session_of(&first).await.is_err());
    let now = app
        .session(as_caller(ObterSessaoRequest {}, BOT_TOKEN, "telegram:42"))
        .await
        .unwrap();
    assert_eq!(now.usuario, "maria");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_their_lifetime_and_when_idle_and_are_purged() {
    // Lifetime: 2 s however busy.
    let app = start(Backend::Postgres, |c| {
        c.sessions.lifetime = Duration::from_secs(2);
        c.sessions.purge_interval = Duration::from_millis(200);
    })
    .await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let opened = Instant::now();
    let token = app.open_session("maria", "senha-da-maria").await;
    let ended_at = loop {
        match app.session_of(&token).await {
            Ok(_) => {
                assert!(opened.elapsed() < Duration::from_secs(30), "never expired");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                assert_eq!(code_and_reason(&e), unauthenticated("SESSION_EXPIRED"));
                break opened.elapsed();
            }
        }
    };
    assert!(ended_at >= Duration::from_millis(1900), "{ended_at:?}");
    // Unread sessions are purged by the background task.
    for _ in 0..3 {
        app.open_session("maria", "senha-da-maria").await;
    }
    let sessions = produto::sessions::Sessions::new(app.db.clone(), Default::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sessions.count().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "expired sessions stay stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Idle timeout: a session used often outlives it; left alone, it ends.
    let app = start(Backend::Sqlite, |c| {
        c.sessions.idle_timeout = Duration::from_secs(1)
    })
    .await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let token = app.open_session("maria", "senha-da-maria").await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        app.session_of(&token)
            .await
            .expect("a session in use stays open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = app.session_of(&token).await.unwrap_err();
    assert_eq!(code_and_reason(&err), unauthenticated("SESSION_EXPIRED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_passwords_must_be_strong_and_not_the_username() {
    let app = start(Backend::Sqlite, |c| c.password_policy.min_score = 3).await;
    let add = |usuario: &str, senha: &str| {
        admin(AdicionarUsuarioRequest {
            usuario: usuario.into(),
            senha: senha.into(),
            nivel: 1,
        })
    };
    let rule = |status: &Status| {
        let details = status.get_error_details();
        let v = &details.bad_request().unwrap().field_violations[0];
        (
            status.code(),
            details.error_info().unwrap().reason.clone(),
            v.field.clone(),
            v.reason.clone(),
        )
    };
    let err = app
        .produto
        .clone()
        .adicionar_usuario(add("maria", "maria2024"))
        .await
        .unwrap_err();
    assert_eq!(
        rule(&err),
        (
            Code::InvalidArgument,
            "WEAK_PASSWORD".into(),
            "senha".into(),
            "TOO_WEAK".into()
        )
    );
    assert!(
        err.message().starts_with("senha: too weak (strength"),
        "{}",
        err.message()
    );
    let err = app
        .produto
        .clone()
        .adicionar_usuario(add("joaquim.silva", "Joaquim.Silva"))
        .await
        .unwrap_err();
    assert_eq!(rule(&err).3, "SAME_AS_USERNAME");
    app.produto
        .clone()
        .adicionar_usuario(add("maria", "correto cavalo bateria grampo"))
        .await
        .unwrap();
    // AlterarSenha too; the current password may be anything it was.
    let weak = admin(AlterarSenhaRequest {
        usuario: "maria".into(),
        senha_atual: String::new(),
        senha_nova: "maria123456".into(),
    });
    let err = app.produto.clone().alterar_senha(weak).await.unwrap_err();
    assert_eq!(rule(&err).2, "senha_nova");
    assert_eq!(
        app.login("maria", "correto cavalo bateria grampo")
            .await
            .unwrap(),
        (true, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_past_their_retention_are_purged() {
    let app = start(Backend::Sqlite, |c| {
        c.sessions.audit_retention = Duration::from_secs(3);
        c.sessions.purge_interval = Duration::from_millis(200);
    })
    .await;
    app.add_user("maria", "senha-da-maria", 1).await.unwrap();
    let all = || app.audit(ListarAuditoriaRequest::default());
    assert_eq!(all().await.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the entry outlives its retention"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
