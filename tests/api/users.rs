//! The administration of users: AlterarSenha (by its user, throttled like a login; by an
//! admin), AlterarNivel, RemoverUsuario, ListarUsuarios. Every answer is checked by code and
//! by its google.rpc details, on both backends.

use std::time::Duration;

use produto::pb::{AlterarNivelRequest, ListarUsuariosRequest, RemoverUsuarioRequest};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use produto_testkit::{
    Backend, TestApp, TestDb, senha_request, spawn_app, spawn_with, test_config,
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

/// The field and rule of the one `BadRequest` violation of an INVALID_ARGUMENT.
fn violation(status: &Status) -> (String, String) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest")
        .field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    (violations[0].field.clone(), violations[0].reason.clone())
}

on_both_backends!(
    a_user_changes_its_own_password_with_the_current_one,
    a_wrong_current_password_an_unknown_user_and_a_throttled_attempt_answer_alike,
    a_new_password_follows_the_rules_for_new_users,
    an_admin_sets_a_password_without_the_current_one,
    alterar_nivel_changes_the_level_an_admin_asks_for,
    a_removed_user_is_answered_as_an_unknown_one,
    removal_forgets_the_login_attempts_of_the_name,
    users_are_listed_in_pages_in_code_point_order,
    listing_filters_by_prefix_and_refuses_foreign_tokens,
    the_admin_operations_need_the_admin_token,
    the_admin_operations_are_refused_without_a_configured_token,
);

async fn a_user_changes_its_own_password_with_the_current_one(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    app.change_own_password("maria", "senha-forte-1", "senha-nova-22")
        .await
        .unwrap();
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
    assert_eq!(
        app.login("maria", "senha-nova-22").await.unwrap(),
        (true, 3)
    );
    // And again, from the new one.
    app.change_own_password("maria", "senha-nova-22", "terceira-senha")
        .await
        .unwrap();
    assert_eq!(
        app.login("maria", "terceira-senha").await.unwrap(),
        (true, 3)
    );
}

async fn a_wrong_current_password_an_unknown_user_and_a_throttled_attempt_answer_alike(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    let wrong = app
        .change_own_password("maria", "senha-errada", "senha-nova-22")
        .await
        .unwrap_err();
    let unknown = app
        .change_own_password("ninguem", "senha-errada", "senha-nova-22")
        .await
        .unwrap_err();
    let expected = (Code::Unauthenticated, "INVALID_CREDENTIALS".to_owned());
    assert_eq!(code_and_reason(&wrong), expected);
    assert_eq!(code_and_reason(&unknown), expected);
    assert_eq!(wrong.message(), unknown.message());
    assert!(wrong.get_error_details().retry_info().is_none());

    // A change counts as a login attempt: with the wrong one above, the test limit (5) is
    // reached by 4 more wrong logins, and then even the right current password is refused,
    // with the same answer, and changes nothing.
    for _ in 0..4 {
        assert_eq!(
            app.login("maria", "senha-errada").await.unwrap(),
            (false, 0)
        );
    }
    let refused = app
        .change_own_password("maria", "senha-forte-1", "senha-nova-22")
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&refused), expected);
    assert_eq!(refused.message(), wrong.message());
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
    assert_eq!(
        app.login("maria", "senha-nova-22").await.unwrap(),
        (false, 0)
    );
    // An admin can still set it (no throttle there): the user's way back in.
    app.set_password("maria", "senha-nova-22").await.unwrap();
    // The count stays with the name until the window passes: the login is still refused.
    assert_eq!(
        app.login("maria", "senha-nova-22").await.unwrap(),
        (false, 0)
    );
}

async fn a_new_password_follows_the_rules_for_new_users(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    for (nova, rule, reason) in [
        ("curta", "TOO_SHORT", "WEAK_PASSWORD"),
        ("password", "TOO_COMMON", "WEAK_PASSWORD"),
        (&"x".repeat(1025) as &str, "TOO_LONG", "INVALID_FIELD"),
    ] {
        for err in [
            app.change_own_password("maria", "senha-forte-1", nova)
                .await
                .unwrap_err(),
            app.set_password("maria", nova).await.unwrap_err(),
        ] {
            assert_eq!(violation(&err), ("senha_nova".to_owned(), rule.to_owned()));
            assert_eq!(code_and_reason(&err).1, reason);
            assert!(
                err.message().starts_with("senha_nova:"),
                "{}",
                err.message()
            );
        }
    }
    let err = app
        .change_own_password("maria", &"x".repeat(1025), "senha-nova-22")
        .await
        .unwrap_err();
    assert_eq!(
        violation(&err),
        ("senha_atual".to_owned(), "TOO_LONG".to_owned())
    );
    let err = app
        .change_own_password(" maria", "senha-forte-1", "senha-nova-22")
        .await
        .unwrap_err();
    assert_eq!(
        violation(&err),
        ("usuario".to_owned(), "SURROUNDING_WHITESPACE".to_owned())
    );
    // A refused field is not an attempt, and nothing changed: the password still works.
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 3)
    );
}

async fn an_admin_sets_a_password_without_the_current_one(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    app.set_password("maria", "senha-nova-22").await.unwrap();
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
    assert_eq!(
        app.login("maria", "senha-nova-22").await.unwrap(),
        (true, 3)
    );

    let err = app
        .set_password("ninguem", "senha-nova-22")
        .await
        .unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (Code::NotFound, "USER_NOT_FOUND".to_owned())
    );
    assert!(err.message().contains("ninguem"), "{}", err.message());

    // Without the admin token an empty senha_atual is no way around the current password.
    let err = app
        .change_own_password("maria", "", "senha-terceira")
        .await
        .unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (Code::Unauthenticated, "ADMIN_TOKEN_MISSING".to_owned())
    );
    assert_eq!(
        app.login("maria", "senha-nova-22").await.unwrap(),
        (true, 3)
    );
}

async fn alterar_nivel_changes_the_level_an_admin_asks_for(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    app.set_nivel("maria", 7).await.unwrap();
    assert_eq!(app.nivel("maria").await.unwrap(), 7);
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 7)
    );
    // Setting the same level again is no error (the call is retried by clients).
    app.set_nivel("maria", 7).await.unwrap();
    app.set_nivel("maria", 0).await.unwrap();
    assert_eq!(app.nivel("maria").await.unwrap(), 0);

    let err = app.set_nivel("maria", -1).await.unwrap_err();
    assert_eq!(violation(&err), ("nivel".to_owned(), "NEGATIVE".to_owned()));
    assert_eq!(code_and_reason(&err).1, "INVALID_FIELD");
    let err = app.set_nivel("ninguem", 1).await.unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (Code::NotFound, "USER_NOT_FOUND".to_owned())
    );
    assert_eq!(app.nivel("maria").await.unwrap(), 0);
}

async fn a_removed_user_is_answered_as_an_unknown_one(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    app.add_user("joana", "senha-forte-2", 1).await.unwrap();
    assert_eq!(app.nivel("maria").await.unwrap(), 3);
    app.remove("maria").await.unwrap();

    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
    let err = app.nivel("maria").await.unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (Code::NotFound, "USER_NOT_FOUND".to_owned())
    );
    let err = app
        .change_own_password("maria", "senha-forte-1", "senha-nova-22")
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&err).1, "INVALID_CREDENTIALS");
    for err in [
        app.remove("maria").await.unwrap_err(),
        app.set_nivel("maria", 1).await.unwrap_err(),
        app.set_password("maria", "senha-nova-22")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            code_and_reason(&err),
            (Code::NotFound, "USER_NOT_FOUND".to_owned())
        );
    }
    let listed = app.list_all(10, "").await.concat();
    assert_eq!(listed, ["joana"]);
    // The others are untouched; the name can be taken again, by a new user.
    assert_eq!(
        app.login("joana", "senha-forte-2").await.unwrap(),
        (true, 1)
    );
    app.add_user("maria", "outra-senha-9", 5).await.unwrap();
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
    assert_eq!(
        app.login("maria", "outra-senha-9").await.unwrap(),
        (true, 5)
    );
}

async fn removal_forgets_the_login_attempts_of_the_name(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    // The test limit is 5: now even the right password is refused from here.
    for _ in 0..5 {
        assert_eq!(
            app.login("maria", "senha-errada").await.unwrap(),
            (false, 0)
        );
    }
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (false, 0)
    );
    app.remove("maria").await.unwrap();
    // A user created under the name starts with no count, as an unknown name would.
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 3)
    );
}

async fn users_are_listed_in_pages_in_code_point_order(backend: Backend) {
    let app = spawn_app(backend).await;
    // Code point order: upper case before lower case, accented letters after both.
    let names = ["ána", "bruno", "Ana", "ana", "Zé", "carla", "ana maria"];
    for (i, name) in names.iter().enumerate() {
        app.add_user(name, "senha-forte-1", i as i32).await.unwrap();
    }
    let mut sorted = names.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!(sorted[..3], ["Ana", "Zé", "ana"]);

    let pages = app.list_all(3, "").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), sorted);
    // A page size of 0 is the default (100): everything in one page, no token.
    let all = app.list(0, "", "").await.unwrap();
    assert!(all.next_page_token.is_empty());
    let levels: Vec<(String, i32)> = all
        .usuarios
        .iter()
        .map(|u| (u.usuario.clone(), u.nivel))
        .collect();
    assert!(levels.contains(&("Zé".to_owned(), 4)), "{levels:?}");
    assert!(all.usuarios.iter().all(|u| u.id > 0));
    // A page that ends exactly at the last user hands out no token for an empty page.
    assert!(
        app.list(7, "", "")
            .await
            .unwrap()
            .next_page_token
            .is_empty()
    );

    // The order is stable under writes between pages: a user added before the cursor does
    // not shift the rest, one removed after it is simply not there.
    let first = app.list(3, "", "").await.unwrap();
    app.add_user("AAA", "senha-forte-1", 0).await.unwrap();
    app.remove("carla").await.unwrap();
    let second = app.list(3, &first.next_page_token, "").await.unwrap();
    let names: Vec<_> = second.usuarios.iter().map(|u| u.usuario.as_str()).collect();
    assert_eq!(names, ["ana maria", "bruno", "ána"]);
    assert!(second.next_page_token.is_empty());

    let err = app.list(-1, "", "").await.unwrap_err();
    assert_eq!(
        violation(&err),
        ("page_size".to_owned(), "NEGATIVE".to_owned())
    );
}

async fn listing_filters_by_prefix_and_refuses_foreign_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    for name in ["ana", "ana maria", "anabela", "an", "bruno", "Ana", "anb"] {
        app.add_user(name, "senha-forte-1", 1).await.unwrap();
    }
    let pages = app.list_all(2, "ana").await;
    assert_eq!(pages.concat(), ["ana", "ana maria", "anabela"]);
    assert_eq!(app.list_all(2, "z").await.concat(), Vec::<String>::new());
    assert_eq!(app.list_all(5, "Ana").await.concat(), ["Ana"]);

    let first = app.list(1, "", "ana").await.unwrap();
    assert!(!first.next_page_token.is_empty());
    // A token is bound to its prefix; garbage is refused; both name the field.
    for (token, prefixo) in [
        (first.next_page_token.as_str(), "an"),
        (first.next_page_token.as_str(), ""),
        ("not-a-token", "ana"),
        ("%%%", "ana"),
    ] {
        let err = app.list(1, token, prefixo).await.unwrap_err();
        assert_eq!(
            violation(&err),
            ("page_token".to_owned(), "INVALID_TOKEN".to_owned()),
            "{token} / {prefixo}"
        );
        assert_eq!(code_and_reason(&err).1, "INVALID_FIELD");
        assert!(
            err.message().starts_with("page_token:"),
            "{}",
            err.message()
        );
    }
    let err = app.list(1, "", "a\nb").await.unwrap_err();
    assert_eq!(
        violation(&err),
        ("prefixo".to_owned(), "CONTROL_CHARACTERS".to_owned())
    );
}

/// The four calls of an admin, each on a user that exists.
async fn each_admin_call(
    app: &TestApp,
    token: Option<&str>,
) -> Vec<(&'static str, Result<(), Status>)> {
    fn with<T>(message: T, token: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }
    let mut client = app.produto.clone();
    vec![
        (
            "AlterarSenha",
            client
                .alterar_senha(with(senha_request("maria", "", "senha-nova-22"), token))
                .await
                .map(|_| ()),
        ),
        (
            "AlterarNivel",
            client
                .alterar_nivel(with(
                    AlterarNivelRequest {
                        usuario: "maria".into(),
                        nivel: 9,
                    },
                    token,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "ListarUsuarios",
            client
                .listar_usuarios(with(ListarUsuariosRequest::default(), token))
                .await
                .map(|_| ()),
        ),
        (
            "RemoverUsuario",
            client
                .remover_usuario(with(
                    RemoverUsuarioRequest {
                        usuario: "maria".into(),
                    },
                    token,
                ))
                .await
                .map(|_| ()),
        ),
    ]
}

async fn the_admin_operations_need_the_admin_token(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    for (token, reason) in [
        (None, "ADMIN_TOKEN_MISSING"),
        (Some("not-the-token"), "ADMIN_TOKEN_INVALID"),
    ] {
        for (rpc, result) in each_admin_call(&app, token).await {
            let err = result.unwrap_err();
            assert_eq!(
                code_and_reason(&err),
                (Code::Unauthenticated, reason.to_owned()),
                "{rpc}"
            );
            assert!(!err.message().contains(produto_testkit::ADMIN_TOKEN));
        }
    }
    // Nothing changed.
    assert_eq!(
        app.login("maria", "senha-forte-1").await.unwrap(),
        (true, 3)
    );
    // With the token, each goes through (the removal last).
    for (rpc, result) in each_admin_call(&app, Some(produto_testkit::ADMIN_TOKEN)).await {
        assert!(result.is_ok(), "{rpc}: {result:?}");
    }
    assert_eq!(app.nivel("maria").await.unwrap_err().code(), Code::NotFound);
}

async fn the_admin_operations_are_refused_without_a_configured_token(backend: Backend) {
    let database = TestDb::create(backend).await;
    let mut config = test_config(&database.url);
    config.admin_token = None;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    for (rpc, result) in each_admin_call(&app, Some(produto_testkit::ADMIN_TOKEN)).await {
        let err = result.unwrap_err();
        assert_eq!(
            code_and_reason(&err),
            (Code::PermissionDenied, "ADMIN_DISABLED".to_owned()),
            "{rpc}"
        );
        assert!(
            err.message().contains("PRODUTO_ADMIN_TOKEN"),
            "{}",
            err.message()
        );
    }
}

/// With ObterNivel batched (PostgreSQL), a removal is seen by the very next lookups, also
/// when they queue behind a crowd of others: the batcher holds no answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_lookups_never_answer_for_a_removed_user() {
    let database = TestDb::create(Backend::Postgres).await;
    let mut config = test_config(&database.url);
    config.db.batch_nivel = true;
    let app = spawn_with(config, database).await;
    app.wait_for_readiness(ServingStatus::Serving).await;
    assert!(app.db.nivel_batch().is_some());
    app.add_user("maria", "senha-forte-1", 3).await.unwrap();
    app.add_user("joana", "senha-forte-2", 1).await.unwrap();

    let crowd = |n: usize| {
        let app = &app;
        futures_util::future::join_all((0..n).map(move |i| async move {
            let usuario = if i % 2 == 0 { "maria" } else { "joana" };
            (usuario, app.nivel(usuario).await)
        }))
    };
    for (usuario, answer) in crowd(64).await {
        assert!(answer.is_ok(), "{usuario}: {answer:?}");
    }
    app.remove("maria").await.unwrap();
    for (usuario, answer) in crowd(64).await {
        match usuario {
            "maria" => assert_eq!(answer.unwrap_err().code(), Code::NotFound),
            _ => assert_eq!(answer.unwrap(), 1),
        }
    }
    // The same for a login (no cache of credentials either).
    tokio::time::timeout(Duration::from_secs(30), async {
        assert_eq!(
            app.login("maria", "senha-forte-1").await.unwrap(),
            (false, 0)
        );
    })
    .await
    .expect("a login answers");
}
