"""A Python client of produto, generated from proto/ at test time (tests/api/clients.rs).

Calls every RPC against a running server, checks the answers and the error details
(google.rpc.ErrorInfo / BadRequest), then shows a call riding over a restart of the server
with the retry policy of proto/produto/v1/service_config.json.

Usage: client.py <addr> <generated-stubs-dir> <service_config.json> <admin-token>
Talks to the test on stdin/stdout: prints STOP_SERVER, waits for STOPPED, prints
CALLING once a retrying call is under way, and prints PASS at the end.
"""

import sys
import threading

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

addr, stubs_dir, config_path, admin_token = sys.argv[1:5]
sys.path.insert(0, stubs_dir)
from produto.v1 import produto_pb2 as pb  # noqa: E402
from produto.v1 import produto_pb2_grpc as pb_grpc  # noqa: E402

with open(config_path, encoding="utf-8") as f:
    SERVICE_CONFIG = f.read()
ADMIN = [("authorization", f"Bearer {admin_token}")]
TIMEOUT = 30  # seconds: generous, the machine may be busy


def say(line):
    print(line, flush=True)


def channel(retries=True):
    options = [
        ("grpc.enable_retries", 1 if retries else 0),
        # Test-only: reconnect quickly once the restarted server listens again.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]
    if retries:
        options.append(("grpc.service_config", SERVICE_CONFIG))
    return grpc.insecure_channel(addr, options=options)


def details(err):
    """The ErrorInfo, BadRequest and RetryInfo of a failed call (None when absent)."""
    status = rpc_status.from_call(err)
    assert status is not None, f"no grpc-status-details-bin on {err.code()}: {err.details()}"
    assert status.message == err.details(), (status.message, err.details())
    found = {}
    for any_ in status.details:
        for name, cls in [
            ("info", error_details_pb2.ErrorInfo),
            ("bad_request", error_details_pb2.BadRequest),
            ("retry", error_details_pb2.RetryInfo),
        ]:
            if any_.Is(cls.DESCRIPTOR):
                message = cls()
                any_.Unpack(message)
                found[name] = message
    return found.get("info"), found.get("bad_request"), found.get("retry")


def expect_error(call, code, reason, field=None, rule=None, message=None):
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() == code, (err.code(), code, err.details())
        if message is not None:
            assert err.details() == message, err.details()
        info, bad_request, retry = details(err)
        assert info is not None, "every error carries an ErrorInfo"
        assert info.domain == "produto", info.domain
        assert info.reason == reason, (info.reason, reason)
        if field is not None:
            violations = bad_request.field_violations
            assert [(v.field, v.reason) for v in violations] == [(field, rule)], violations
            assert violations[0].description, "a violation says what is wrong"
        else:
            assert bad_request is None, bad_request
        return info, retry
    raise AssertionError(f"expected {code}, the call succeeded")


def main():
    ch = channel()
    produto = pb_grpc.ProdutoServiceStub(ch)
    pool = pb_grpc.PoolServiceStub(ch)
    health = health_pb2_grpc.HealthStub(ch)

    # Every RPC, answered.
    new = pb.AdicionarUsuarioRequest(usuario="ana", senha="correct horse battery", nivel=3)
    created = produto.AdicionarUsuario(new, metadata=ADMIN, timeout=TIMEOUT)
    assert created.id > 0, created
    ok = produto.VerificarLogin(
        pb.VerificarLoginRequest(usuario="ana", senha="correct horse battery"), timeout=TIMEOUT
    )
    assert (ok.valido, ok.nivel) == (True, 3), ok
    wrong = produto.VerificarLogin(
        pb.VerificarLoginRequest(usuario="ana", senha="wrong password"), timeout=TIMEOUT
    )
    assert (wrong.valido, wrong.nivel) == (False, 0), wrong
    assert produto.ObterNivel(pb.ObterNivelRequest(usuario="ana"), timeout=TIMEOUT).nivel == 3
    status = pool.PoolStatus(pb.PoolStatusRequest(), timeout=TIMEOUT)
    assert (status.status, status.healthy, status.backend) == ("active", True, "postgres"), status
    assert status.max_connections >= 1, status
    served = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert served.status == health_pb2.HealthCheckResponse.SERVING, served

    # Each error kind a client can provoke, with its details.
    code = grpc.StatusCode
    expect_error(
        lambda: produto.ObterNivel(pb.ObterNivelRequest(usuario=""), timeout=TIMEOUT),
        code.INVALID_ARGUMENT, "INVALID_FIELD", "usuario", "EMPTY",
        message="usuario: must not be empty",
    )
    expect_error(
        lambda: produto.AdicionarUsuario(
            pb.AdicionarUsuarioRequest(usuario="bia", senha="password", nivel=1),
            metadata=ADMIN, timeout=TIMEOUT,
        ),
        code.INVALID_ARGUMENT, "WEAK_PASSWORD", "senha", "TOO_COMMON",
    )
    expect_error(
        lambda: produto.AdicionarUsuario(
            pb.AdicionarUsuarioRequest(usuario="bia", senha="short", nivel=1),
            metadata=ADMIN, timeout=TIMEOUT,
        ),
        code.INVALID_ARGUMENT, "WEAK_PASSWORD", "senha", "TOO_SHORT",
        message="senha: must be at least 8 bytes",
    )
    expect_error(
        lambda: produto.AdicionarUsuario(
            pb.AdicionarUsuarioRequest(usuario="bia", senha="correct horse battery", nivel=-1),
            metadata=ADMIN, timeout=TIMEOUT,
        ),
        code.INVALID_ARGUMENT, "INVALID_FIELD", "nivel", "NEGATIVE",
    )
    expect_error(
        lambda: produto.ObterNivel(pb.ObterNivelRequest(usuario="nobody"), timeout=TIMEOUT),
        code.NOT_FOUND, "USER_NOT_FOUND", message="usuario 'nobody' not found",
    )
    expect_error(
        lambda: produto.AdicionarUsuario(new, metadata=ADMIN, timeout=TIMEOUT),
        code.ALREADY_EXISTS, "USER_EXISTS",
    )
    expect_error(
        lambda: produto.AdicionarUsuario(new, timeout=TIMEOUT),
        code.UNAUTHENTICATED, "ADMIN_TOKEN_MISSING",
    )
    expect_error(
        lambda: produto.AdicionarUsuario(
            new, metadata=[("authorization", "Bearer not-the-token")], timeout=TIMEOUT
        ),
        code.UNAUTHENTICATED, "ADMIN_TOKEN_INVALID",
    )
    info, retry = expect_error(
        lambda: produto.ObterNivel(pb.ObterNivelRequest(usuario="x" * 20000), timeout=TIMEOUT),
        code.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE",
    )
    assert info.metadata["limit_bytes"] == "8192", info.metadata
    assert retry is None, "the same request would fail again: no RetryInfo"
    ch.close()

    # A retry riding over a restart: the test stops the server...
    say("STOP_SERVER")
    assert sys.stdin.readline().strip() == "STOPPED"
    # ...without a retry policy the call fails at once...
    plain = channel(retries=False)
    try:
        pb_grpc.ProdutoServiceStub(plain).ObterNivel(pb.ObterNivelRequest(usuario="ana"), timeout=TIMEOUT)
        raise AssertionError("the server is stopped: the call must fail")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    plain.close()
    # ...with the service config it is retried until the restarted server answers. The test
    # restarts the server only once this channel has failed to connect (an attempt failed).
    retrying = channel()
    failed = threading.Event()

    def watch(state):
        if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            failed.set()

    retrying.subscribe(watch)
    future = pb_grpc.ProdutoServiceStub(retrying).ObterNivel.future(pb.ObterNivelRequest(usuario="ana"))
    assert failed.wait(TIMEOUT), "the channel never failed to connect to the stopped server"
    say("CALLING")
    assert future.result().nivel == 3
    retrying.unsubscribe(watch)
    retrying.close()
    say("PASS")


if __name__ == "__main__":
    main()
