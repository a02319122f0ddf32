"""produto_client: the old bot's service functions, served by produto.

The module-level functions use one client built from the environment on first use
(PRODUTO_ADDR, PRODUTO_TLS_CA, PRODUTO_TOKEN, PRODUTO_ADMIN_TOKEN, PRODUTO_TIMEOUT: see
Client), so that the old bot changes one import:

    from produto_client import verificar_login, obter_nivel, adicionar_usuario

Every function takes ``end_user=``, the person behind the call (sent as ``produto-end-user``;
logins are throttled per end user for a trusted caller).

Failures raise the exceptions of produto_client.errors (UnavailableError when the service
is down, InvalidArgumentError for a bad field, UnauthenticatedError for a missing token...).
"""

import threading
from typing import Iterator, Optional

from .client import DEFAULT_PAGE_SIZE, Client, Sessao, Usuario, service_config
from .errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ProdutoError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "Client", "Sessao", "Usuario", "configure", "default_client", "service_config",
    "verificar_login", "obter_nivel", "adicionar_usuario", "login", "alterar_senha",
    "definir_senha", "alterar_nivel", "remover_usuario", "listar_usuarios",
    "ProdutoError", "UnavailableError", "DeadlineExceededError", "ResourceExhaustedError",
    "InvalidArgumentError", "UnauthenticatedError", "PermissionDeniedError", "NotFoundError",
    "AlreadyExistsError", "InternalError",
]

_lock = threading.Lock()
_default: Optional[Client] = None


def configure(**kwargs) -> Client:
    """Replaces the client of the module-level functions with ``Client(**kwargs)``."""
    global _default
    client = Client(**kwargs)
    with _lock:
        old, _default = _default, client
    if old is not None:
        old.close()
    return client


def default_client() -> Client:
    """The client of the module-level functions, built from the environment on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Client()
        return _default


def verificar_login(usuario: str, senha: str, *, end_user: Optional[str] = None) -> bool:
    return default_client().verificar_login(usuario, senha, end_user=end_user)


def obter_nivel(usuario: str, *, end_user: Optional[str] = None) -> Optional[int]:
    return default_client().obter_nivel(usuario, end_user=end_user)


def adicionar_usuario(usuario: str, senha: str, nivel: int, *, end_user: Optional[str] = None) -> bool:
    return default_client().adicionar_usuario(usuario, senha, nivel, end_user=end_user)


def login(usuario: str, senha: str, *, end_user: Optional[str] = None) -> Optional[int]:
    return default_client().login(usuario, senha, end_user=end_user)


def alterar_senha(usuario: str, senha_atual: str, senha_nova: str, *, end_user: Optional[str] = None) -> bool:
    return default_client().alterar_senha(usuario, senha_atual, senha_nova, end_user=end_user)


def definir_senha(usuario: str, senha_nova: str, *, end_user: Optional[str] = None) -> bool:
    return default_client().definir_senha(usuario, senha_nova, end_user=end_user)


def alterar_nivel(usuario: str, nivel: int, *, end_user: Optional[str] = None) -> bool:
    return default_client().alterar_nivel(usuario, nivel, end_user=end_user)


def remover_usuario(usuario: str, *, end_user: Optional[str] = None) -> bool:
    return default_client().remover_usuario(usuario, end_user=end_user)


def listar_usuarios(
    prefixo: str = "", page_size: int = DEFAULT_PAGE_SIZE, *, end_user: Optional[str] = None
) -> Iterator[Usuario]:
    return default_client().listar_usuarios(prefixo, page_size, end_user=end_user)


# Each function's doc is its Client method's.
for _name in ["verificar_login", "obter_nivel", "adicionar_usuario", "login", "alterar_senha",
              "definir_senha", "alterar_nivel", "remover_usuario", "listar_usuarios"]:
    globals()[_name].__doc__ = getattr(Client, _name).__doc__
del _name
