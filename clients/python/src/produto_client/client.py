"""The client: one gRPC channel configured from the environment (or arguments), with the
retry policy of proto/produto/v1/service_config.json and a deadline on every call."""

import os
from dataclasses import dataclass
from importlib import resources
from typing import Iterator, List, Optional, Sequence, Tuple

import grpc

from . import errors
from ._pb import produto_pb2 as pb
from ._pb import produto_pb2_grpc as pb_grpc

DEFAULT_ADDR = "127.0.0.1:50051"
#: Seconds a call may take, retries included, unless PRODUTO_TIMEOUT says otherwise.
DEFAULT_TIMEOUT = 10.0
#: ListarUsuarios' default page; the server takes at most 1000.
DEFAULT_PAGE_SIZE = 100

_ADMIN_TOKEN_KEY = "produto-admin-token"
_SESSION_KEY = "produto-session"
_END_USER_KEY = "produto-end-user"

try:
    # Optional: with OpenTelemetry installed in the caller, each call carries the caller's
    # current trace context (W3C traceparent/tracestate, or whatever propagator the caller
    # configured), so that produto's spans join the caller's trace.
    from opentelemetry import propagate as _otel_propagate
except ImportError:  # pragma: no cover - OpenTelemetry is not a dependency
    _otel_propagate = None


def _trace_context() -> List[Tuple[str, str]]:
    """The current trace context as gRPC metadata; empty without OpenTelemetry."""
    if _otel_propagate is None:
        return []
    carrier: dict = {}
    _otel_propagate.inject(carrier)
    return [(key.lower(), value) for key, value in carrier.items()]


def service_config() -> str:
    """The retry policy (a gRPC service config, JSON) shipped with the package: a copy of
    proto/produto/v1/service_config.json."""
    return resources.files("produto_client._pb").joinpath("service_config.json").read_text("utf-8")


def _env_secret(name: str) -> Optional[str]:
    """NAME, or the contents of the file NAME_FILE names (a mounted secret)."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Sessao:
    """A session: its user and the user's level when asked (never cached by the server),
    the admin level, and its times (Unix ms). ``token`` only from abrir_sessao."""

    id: int
    usuario: str
    nivel: int
    nivel_admin: int
    criada_em_unix_ms: int
    expira_em_unix_ms: int
    usada_em_unix_ms: int
    chamador: str
    usuario_final: str
    token: str = ""

    @property
    def admin(self) -> bool:
        return self.nivel >= self.nivel_admin

    @classmethod
    def from_pb(cls, s, token: str = "") -> "Sessao":
        return cls(
            s.id,
            s.usuario,
            s.nivel,
            s.nivel_admin,
            s.criada_em_unix_ms,
            s.expira_em_unix_ms,
            s.usada_em_unix_ms,
            s.chamador,
            s.usuario_final,
            token,
        )

    def __repr__(self) -> str:
        # The token is a credential: never in a repr (logs, tracebacks).
        return f"Sessao(id={self.id}, usuario={self.usuario!r}, nivel={self.nivel})"


@dataclass(frozen=True)
class Usuario:
    """A user as ListarUsuarios gives it (never a password hash)."""

    id: int
    usuario: str
    nivel: int


class Client:
    """A client of produto over one channel. Each argument left out is read from the
    environment:

    - ``addr``: PRODUTO_ADDR, ``host:port`` (default 127.0.0.1:50051); an ``https://``
      prefix turns TLS on, ``http://`` is dropped.
    - ``tls_ca``: PRODUTO_TLS_CA, a PEM file of the CA that signed the server's certificate
      (TLS on); ``tls``: PRODUTO_TLS=1 for TLS with the system's roots;
      ``tls_server_name``: PRODUTO_TLS_SERVER_NAME, the name to check the certificate for.
    - ``token``: PRODUTO_TOKEN (or PRODUTO_TOKEN_FILE), the caller token of a server with
      caller authentication, sent as ``authorization: Bearer``.
    - ``admin_token``: PRODUTO_ADMIN_TOKEN (or PRODUTO_ADMIN_TOKEN_FILE), sent with the
      admin operations only.
    - ``timeout``: PRODUTO_TIMEOUT, seconds per call, retries included (default 10).
    - ``end_user``: PRODUTO_END_USER, the end user every call is made for, sent as
      ``produto-end-user`` (e.g. ``web:42``): with a caller token it also names the session
      opened for that end user (docs/sessions.md). Each call may name another (``end_user=``).

    Thread-safe; reuse one client (a channel is costly to open). Not fork-safe: open clients
    after forking.
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        *,
        tls_ca: Optional[str] = None,
        tls: Optional[bool] = None,
        tls_server_name: Optional[str] = None,
        token: Optional[str] = None,
        admin_token: Optional[str] = None,
        timeout: Optional[float] = None,
        end_user: Optional[str] = None,
        options: Sequence[Tuple[str, object]] = (),
    ):
        addr = addr or os.environ.get("PRODUTO_ADDR") or DEFAULT_ADDR
        tls_ca = tls_ca or os.environ.get("PRODUTO_TLS_CA") or None
        tls = _env_flag("PRODUTO_TLS") if tls is None else tls
        if addr.startswith("https://"):
            addr, tls = addr[len("https://"):], True
        elif addr.startswith("http://"):
            addr = addr[len("http://"):]
        addr = addr.rstrip("/")
        tls_server_name = tls_server_name or os.environ.get("PRODUTO_TLS_SERVER_NAME") or None
        self.token = token or _env_secret("PRODUTO_TOKEN")
        self.admin_token = admin_token or _env_secret("PRODUTO_ADMIN_TOKEN")
        self.end_user = end_user or os.environ.get("PRODUTO_END_USER") or None
        if timeout is None:
            timeout = float(os.environ.get("PRODUTO_TIMEOUT") or DEFAULT_TIMEOUT)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive (got {timeout})")
        self.timeout = timeout
        self.addr = addr

        channel_options = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", service_config()),
        ]
        if tls_server_name:
            channel_options.append(("grpc.ssl_target_name_override", tls_server_name))
        channel_options.extend(options)
        if tls_ca or tls:
            root = None
            if tls_ca:
                with open(tls_ca, "rb") as f:
                    root = f.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(addr, credentials, options=channel_options)
        else:
            self._channel = grpc.insecure_channel(addr, options=channel_options)
        self._stub = pb_grpc.ProdutoServiceStub(self._channel)

    # -- plumbing --------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _metadata(
        self, admin: bool, session: Optional[str] = None, end_user: Optional[str] = None
    ) -> List[Tuple[str, str]]:
        metadata = _trace_context()
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        end_user = end_user or self.end_user
        if end_user:
            metadata.append((_END_USER_KEY, end_user))
        if session:
            # A session acts for its user: the admin token is not sent beside it.
            metadata.append((_SESSION_KEY, session))
            return metadata
        if admin and self.admin_token:
            # Beside a caller token the admin token travels in its own key.
            if self.token:
                metadata.append((_ADMIN_TOKEN_KEY, self.admin_token))
            else:
                metadata.append(("authorization", f"Bearer {self.admin_token}"))
        return metadata

    def _call(
        self,
        method: str,
        request,
        admin: bool = False,
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ):
        try:
            return getattr(self._stub, method)(
                request,
                timeout=self.timeout,
                metadata=self._metadata(admin, session, end_user),
            )
        except grpc.RpcError as err:
            raise errors.from_rpc_error(err) from None

    # -- the old bot's functions -------------------------------------------------------------

    def verificar_login(self, usuario: str, senha: str, *, end_user: Optional[str] = None) -> bool:
        """Whether the password is the user's. False too for an unknown user (the server
        answers both alike) and for a login refused by throttling."""
        return self.login(usuario, senha, end_user=end_user) is not None

    def obter_nivel(self, usuario: str, *, end_user: Optional[str] = None) -> Optional[int]:
        """The user's access level, or None when there is no such user."""
        try:
            request = pb.ObterNivelRequest(usuario=usuario)
            return self._call("ObterNivel", request, end_user=end_user).nivel
        except errors.NotFoundError:
            return None

    def adicionar_usuario(
        self,
        usuario: str,
        senha: str,
        nivel: int,
        *,
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ) -> bool:
        """Creates a user (admin token): True, or False when the name is taken. A weak
        password or a bad field raises InvalidArgumentError (a ValueError)."""
        request = pb.AdicionarUsuarioRequest(usuario=usuario, senha=senha, nivel=nivel)
        try:
            self._call("AdicionarUsuario", request, admin=True, session=session, end_user=end_user)
            return True
        except errors.AlreadyExistsError:
            return False

    # -- the rest ------------------------------------------------------------------------------

    def login(self, usuario: str, senha: str, *, end_user: Optional[str] = None) -> Optional[int]:
        """The user's level when the password is right, else None (one round trip where
        verificar_login and obter_nivel take two)."""
        request = pb.VerificarLoginRequest(usuario=usuario, senha=senha)
        answer = self._call("VerificarLogin", request, end_user=end_user)
        return answer.nivel if answer.valido else None

    def alterar_senha(
        self, usuario: str, senha_atual: str, senha_nova: str, *, end_user: Optional[str] = None
    ) -> bool:
        """The user changes its own password: True, or False when ``senha_atual`` is wrong,
        the user unknown, or the attempt refused by throttling (it counts as a login). Never
        retried: a retry of a change that went through would fail on ``senha_atual``."""
        if not senha_atual:
            raise ValueError("senha_atual is empty: an admin sets a password with definir_senha")
        request = pb.AlterarSenhaRequest(
            usuario=usuario, senha_atual=senha_atual, senha_nova=senha_nova
        )
        try:
            self._call("AlterarSenha", request, end_user=end_user)
            return True
        except errors.UnauthenticatedError as err:
            if err.reason == "INVALID_CREDENTIALS":
                return False
            raise

    def definir_senha(
        self,
        usuario: str,
        senha_nova: str,
        *,
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ) -> bool:
        """An admin sets a user's password (admin token): True, or False for an unknown
        user."""
        request = pb.AlterarSenhaRequest(usuario=usuario, senha_nova=senha_nova)
        try:
            self._call("AlterarSenha", request, admin=True, session=session, end_user=end_user)
            return True
        except errors.NotFoundError:
            return False

    def alterar_nivel(
        self,
        usuario: str,
        nivel: int,
        *,
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ) -> bool:
        """Sets a user's level (admin token): True, or False for an unknown user."""
        try:
            request = pb.AlterarNivelRequest(usuario=usuario, nivel=nivel)
            self._call("AlterarNivel", request, admin=True, session=session, end_user=end_user)
            return True
        except errors.NotFoundError:
            return False

    def remover_usuario(
        self, usuario: str, *, session: Optional[str] = None, end_user: Optional[str] = None
    ) -> bool:
        """Removes a user (admin token): True, or False for an unknown user. The call is
        retried when the service is unavailable, so False can also mean that a first attempt
        removed the user: either way the user is gone."""
        try:
            request = pb.RemoverUsuarioRequest(usuario=usuario)
            self._call("RemoverUsuario", request, admin=True, session=session, end_user=end_user)
            return True
        except errors.NotFoundError:
            return False

    def listar_pagina(
        self,
        prefixo: str = "",
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        *,
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ) -> Tuple[List[Usuario], str]:
        """One page of users (admin token) in order of name, and the token of the next page
        ("" after the last)."""
        request = pb.ListarUsuariosRequest(page_size=page_size, page_token=page_token, prefixo=prefixo)
        page = self._call("ListarUsuarios", request, admin=True, session=session, end_user=end_user)
        users = [Usuario(u.id, u.usuario, u.nivel) for u in page.usuarios]
        return users, page.next_page_token

    def listar_usuarios(
        self,
        prefixo: str = "",
        page_size: int = DEFAULT_PAGE_SIZE,
        *,
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ) -> Iterator[Usuario]:
        """Every user (admin token) whose name starts with ``prefixo``, in order of name,
        fetched a page at a time as the iteration goes."""
        token = ""
        while True:
            users, token = self.listar_pagina(
                prefixo, page_size, token, session=session, end_user=end_user
            )
            yield from users
            if not token:
                return

    # -- sessions (docs/sessions.md) -------------------------------------------------------------
    # ``session`` is a token from abrir_sessao; without one, a client with a caller token and
    # an end user names the session opened for that end user. The admin calls above act with
    # a session too when given ``session=`` (an admin's, at the server's admin level now).

    def abrir_sessao(self, usuario: str, senha: str, *, end_user: Optional[str] = None) -> Optional[Sessao]:
        """Checks the password (as login does) and opens a session: the Sessao with its
        token (shown this once), or None for a wrong password or an unknown user. Never
        retried: a retry would open a second session."""
        request = pb.AbrirSessaoRequest(usuario=usuario, senha=senha)
        answer = self._call("AbrirSessao", request, end_user=end_user)
        if not answer.valido:
            return None
        return Sessao.from_pb(answer.sessao, token=answer.token)

    def obter_sessao(self, session: Optional[str] = None, *, end_user: Optional[str] = None) -> Optional[Sessao]:
        """The session's user and that user's level now, or None when the session is missing,
        ended or expired."""
        try:
            answer = self._call("ObterSessao", pb.ObterSessaoRequest(), session=session, end_user=end_user)
        except errors.UnauthenticatedError as err:
            if err.reason in ("SESSION_MISSING", "SESSION_EXPIRED"):
                return None
            raise
        return Sessao.from_pb(answer.sessao)

    def encerrar_sessao(self, session: Optional[str] = None, *, end_user: Optional[str] = None) -> None:
        """Ends the session (done if it is gone already)."""
        self._call("EncerrarSessao", pb.EncerrarSessaoRequest(), session=session, end_user=end_user)

    def listar_sessoes(
        self, usuario: str = "", *, session: Optional[str] = None, end_user: Optional[str] = None
    ) -> List[Sessao]:
        """The open sessions of ``usuario`` (empty: the session's own user; another user:
        an admin's session or the admin token), newest first, never with a token."""
        request = pb.ListarSessoesRequest(usuario=usuario)
        answer = self._call(
            "ListarSessoes", request, admin=session is None, session=session, end_user=end_user
        )
        return [Sessao.from_pb(s) for s in answer.sessoes]

    def encerrar_sessoes(
        self,
        usuario: str = "",
        *,
        manter_atual: bool = False,
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ) -> int:
        """Ends the sessions of ``usuario`` (as listar_sessoes), keeping the calling one when
        ``manter_atual``; how many ended."""
        request = pb.EncerrarSessoesRequest(usuario=usuario, manter_atual=manter_atual)
        answer = self._call(
            "EncerrarSessoes", request, admin=session is None, session=session, end_user=end_user
        )
        return answer.encerradas

    def listar_auditoria(
        self,
        *,
        usuario: str = "",
        ator: str = "",
        desde_unix_ms: int = 0,
        ate_unix_ms: int = 0,
        page_size: int = 0,
        page_token: str = "",
        session: Optional[str] = None,
        end_user: Optional[str] = None,
    ) -> Tuple[list, str]:
        """One page of the audit trail (admins), newest first, and the next page's token
        ("" after the last). Entries are the generated ``EventoAuditoria`` messages."""
        request = pb.ListarAuditoriaRequest(
            usuario=usuario,
            ator=ator,
            desde_unix_ms=desde_unix_ms,
            ate_unix_ms=ate_unix_ms,
            page_size=page_size,
            page_token=page_token,
        )
        page = self._call(
            "ListarAuditoria", request, admin=session is None, session=session, end_user=end_user
        )
        return list(page.eventos), page.next_page_token

