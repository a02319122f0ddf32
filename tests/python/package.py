"""The Python package (clients/python) as the old bot uses it, against a running server
(tests/api/clients.rs installs it with pip into a temporary directory first).

Usage: package.py <site-dir> <closed-addr> <guarded-addr> <tls-addr>; PRODUTO_ADDR,
PRODUTO_ADMIN_TOKEN and PRODUTO_TIMEOUT in the environment point it at the server;
<guarded-addr> is a server with caller authentication, whose caller token is CALLER_TOKEN;
<tls-addr> one with TLS on, whose certificate (for localhost) the CA in the PEM file TLS_CA
signed. Prints PASS at the end.
"""

import os
import sys
import time

site, closed_addr, guarded_addr, tls_addr = sys.argv[1:5]

# The one import the old bot changes.
from produto_client import adicionar_usuario, obter_nivel, verificar_login  # noqa: E402

import produto_client  # noqa: E402
from produto_client import Client, errors  # noqa: E402

assert produto_client.__file__.startswith(os.path.realpath(site)) or produto_client.__file__.startswith(site), (
    f"imported from {produto_client.__file__}, not the installed package in {site}"
)


def raises(cls, call, reason=None):
    try:
        call()
    except cls as err:
        if reason is not None:
            assert err.reason == reason, (err.reason, reason, err)
        return err
    raise AssertionError(f"expected {cls.__name__}")


def main():
    # The old functions, with their old meaning.
    assert adicionar_usuario("ana", "correct horse battery", 3) is True
    assert adicionar_usuario("ana", "another good one", 1) is False, "a taken name is False"
    assert verificar_login("ana", "correct horse battery") is True
    assert verificar_login("ana", "wrong password", end_user="telegram:7") is False
    assert obter_nivel("ana", end_user="telegram:7") == 3
    assert verificar_login("nobody", "wrong password") is False
    assert obter_nivel("ana") == 3
    assert obter_nivel("nobody") is None

    # Bad fields raise InvalidArgumentError, which is also a ValueError, naming the field.
    err = raises(ValueError, lambda: adicionar_usuario("bia", "password", 1), "WEAK_PASSWORD")
    assert isinstance(err, errors.InvalidArgumentError)
    assert (err.field, err.rule) == ("senha", "TOO_COMMON"), err.field_violations
    err = raises(errors.InvalidArgumentError, lambda: obter_nivel(""), "INVALID_FIELD")
    assert (err.field, err.rule, err.message) == ("usuario", "EMPTY", "usuario: must not be empty")
    assert err.code.name == "INVALID_ARGUMENT"

    # The new operations.
    assert produto_client.login("ana", "correct horse battery") == 3
    assert produto_client.login("ana", "wrong password") is None
    assert produto_client.alterar_senha("ana", "wrong password", "a brand new one") is False
    assert produto_client.alterar_senha("ana", "correct horse battery", "a brand new one") is True

    # Sessions: a token shown once, the level now, admin rights from it, its end.
    with Client(timeout=30) as c:
        s = c.abrir_sessao("ana", "a brand new one")
        assert s is not None and s.token.startswith("ps_") and s.nivel == 3 and s.admin, s
        assert "ps_" not in repr(s)
        assert c.abrir_sessao("ana", "wrong password") is None
        assert c.obter_sessao(s.token).nivel == 3
        assert c.adicionar_usuario("sessao", "correct horse battery", 0, session=s.token) is True
        assert c.alterar_nivel("ana", 0) is True
        assert c.obter_sessao(s.token).nivel == 0
        raises(errors.PermissionDeniedError, lambda: c.remover_usuario("sessao", session=s.token), "NOT_ADMIN")
        eventos, _ = c.listar_auditoria(usuario="sessao")
        assert [(e.acao, e.ator) for e in eventos] == [
            ("admin_recusado", "usuario:ana"),
            ("usuario_criado", "usuario:ana"),
        ], eventos
        assert c.alterar_nivel("ana", 3) is True
        assert [x.id for x in c.listar_sessoes("ana")] == [s.id]
        c.encerrar_sessao(s.token)
        assert c.obter_sessao(s.token) is None
        assert c.remover_usuario("sessao") is True
    assert verificar_login("ana", "a brand new one") is True
    assert verificar_login("ana", "correct horse battery") is False
    err = raises(errors.InvalidArgumentError, lambda: produto_client.alterar_senha("ana", "a brand new one", "short"))
    assert (err.field, err.rule) == ("senha_nova", "TOO_SHORT"), err.field_violations
    assert produto_client.definir_senha("ana", "set by the admin") is True
    assert produto_client.definir_senha("nobody", "set by the admin") is False
    assert verificar_login("ana", "set by the admin") is True
    assert produto_client.alterar_nivel("ana", 5) is True
    assert produto_client.alterar_nivel("nobody", 5) is False
    assert obter_nivel("ana") == 5
    raises(errors.InvalidArgumentError, lambda: produto_client.alterar_nivel("ana", -1))
    for i in range(5):
        assert adicionar_usuario(f"user{i}", "correct horse battery", i) is True
    listed = list(produto_client.listar_usuarios(page_size=2))
    assert [u.usuario for u in listed] == ["ana"] + [f"user{i}" for i in range(5)], listed
    assert listed[0] == produto_client.Usuario(listed[0].id, "ana", 5)
    assert [u.usuario for u in produto_client.listar_usuarios(prefixo="user", page_size=3)] == [
        f"user{i}" for i in range(5)
    ]
    users, token = produto_client.default_client().listar_pagina(page_size=2)
    assert len(users) == 2 and token
    raises(errors.InvalidArgumentError, lambda: produto_client.default_client().listar_pagina(prefixo="x", page_token=token))
    assert produto_client.remover_usuario("user0") is True
    assert produto_client.remover_usuario("user0") is False
    assert obter_nivel("user0") is None
    assert verificar_login("user0", "correct horse battery") is False

    # Without the admin token, the admin operations say so.
    with Client(admin_token="", timeout=30) as stranger:
        stranger.admin_token = None
        for call in [
            lambda: stranger.adicionar_usuario("eve", "correct horse battery", 9),
            lambda: stranger.alterar_nivel("ana", 9),
            lambda: stranger.remover_usuario("ana"),
            lambda: list(stranger.listar_usuarios()),
            lambda: stranger.definir_senha("ana", "correct horse battery"),
        ]:
            raises(errors.UnauthenticatedError, call, "ADMIN_TOKEN_MISSING")
        # The user functions need none.
        assert stranger.verificar_login("ana", "set by the admin") is True
    with Client(admin_token="not-the-token", timeout=30) as wrong:
        raises(errors.UnauthenticatedError, lambda: wrong.alterar_nivel("ana", 9), "ADMIN_TOKEN_INVALID")
    assert obter_nivel("ana") == 5

    # A server with caller authentication: the caller token goes in `authorization`, the
    # admin token beside it in its own key; without a caller token nothing is served.
    with Client(guarded_addr, token=os.environ["CALLER_TOKEN"], timeout=30) as caller:
        assert caller.adicionar_usuario("ana", "correct horse battery", 2) is True
        assert caller.verificar_login("ana", "correct horse battery") is True
        assert caller.obter_nivel("ana") == 2
        # The end user reaches the server: this caller is trusted, so its logins are
        # throttled per end user. Five typos of one chat user lock that chat user out of
        # "ana" (told so: LOGIN_THROTTLED), and another chat user of the same caller still
        # logs in.
        for _ in range(5):
            assert caller.verificar_login("ana", "a typo", end_user="telegram:1") is False
        err = raises(
            errors.ResourceExhaustedError,
            lambda: caller.login("ana", "correct horse battery", end_user="telegram:1"),
            "LOGIN_THROTTLED",
        )
        assert err.retry_delay is not None and err.retry_delay > 0, err.retry_delay
        assert caller.login("ana", "correct horse battery", end_user="telegram:2") == 2
        # Every method takes it, the module's functions too.
        assert caller.obter_nivel("ana", end_user="telegram:2") == 2
        assert caller.alterar_nivel("ana", 2, end_user="telegram:2") is True
        assert [u.usuario for u in caller.listar_usuarios(end_user="telegram:2")] == ["ana"]
    # host:port, http://host:port: one name for the service, both spellings taken.
    with Client("http://" + guarded_addr, token=os.environ["CALLER_TOKEN"], timeout=30) as caller:
        assert caller.obter_nivel("ana", end_user="telegram:2") == 2
    with Client(guarded_addr, timeout=30) as anonymous:
        raises(errors.UnauthenticatedError, lambda: anonymous.obter_nivel("ana"), "CALLER_MISSING")
    with Client(guarded_addr, token="not-a-caller-token", timeout=30) as stranger:
        raises(errors.UnauthenticatedError, lambda: stranger.verificar_login("ana", "x"), "CALLER_TOKEN_INVALID")

    # TLS: configured from the environment as the old bot would be (the CA's file, the name
    # on the certificate), and by arguments. A client that does not trust the CA, or speaks
    # plaintext to the TLS port, gets an exception, never an answer.
    saved = {k: os.environ.get(k) for k in ("PRODUTO_TLS_CA", "PRODUTO_TLS_SERVER_NAME")}
    os.environ["PRODUTO_TLS_CA"] = os.environ["TLS_CA"]
    os.environ["PRODUTO_TLS_SERVER_NAME"] = "localhost"
    try:
        with Client(tls_addr, timeout=30) as secure:
            assert secure.obter_nivel("ninguem") is None
            assert secure.verificar_login("ninguem", "x") is False
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with Client(tls_addr, tls_ca=os.environ["TLS_CA"], tls_server_name="localhost", timeout=30) as secure:
        assert secure.obter_nivel("ninguem") is None
    with Client("https://" + tls_addr, tls_server_name="localhost", timeout=2) as untrusting:
        raises(errors.UnavailableError, lambda: untrusting.obter_nivel("ninguem"))
    with Client(tls_addr, timeout=2) as plaintext:
        raises(errors.UnavailableError, lambda: plaintext.obter_nivel("ninguem"))

    # The service down: nothing listens at closed_addr. The calls fail within their deadline
    # (the channel retries the safe ones meanwhile) with an exception the caller can act on;
    # a login is never answered False for a service that did not answer.
    with Client(closed_addr, timeout=2) as down:
        for call in [
            lambda: down.verificar_login("ana", "set by the admin"),
            lambda: down.obter_nivel("ana"),
            lambda: down.adicionar_usuario("zoe", "correct horse battery", 1),
        ]:
            started = time.monotonic()
            err = raises(errors.UnavailableError, call)
            took = time.monotonic() - started
            assert took < 30, f"{took:.1f} s: the deadline is 2 s"
            assert err.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), err
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
