"""The exceptions of produto_client: one per kind of failure a caller can act on.

Every exception is a ProdutoError with the gRPC ``code``, the server's ``message``, and the
google.rpc details the server sent: ``reason`` (ErrorInfo.reason, e.g. "WEAK_PASSWORD"; the
stable thing to branch on), ``metadata``, ``retry_delay`` (seconds, from RetryInfo) and
``field_violations`` (from BadRequest: ``(field, rule, description)``).

    ProdutoError
    ├── UnavailableError         the service is down or unreachable, or overloaded: retry later
    │   └── DeadlineExceededError  no answer within the deadline (PRODUTO_TIMEOUT)
    ├── ResourceExhaustedError   too many calls or login attempts, or a request too large
    ├── InvalidArgumentError     a field breaks its rule (also a ValueError): .field, .rule
    ├── UnauthenticatedError     a token is missing or wrong (PRODUTO_TOKEN, PRODUTO_ADMIN_TOKEN)
    ├── PermissionDeniedError    the operation is off on the server (no admin token there)
    ├── NotFoundError            no such user (the functions answer None/False instead)
    ├── AlreadyExistsError       the name is taken (adicionar_usuario answers False instead)
    └── InternalError            a bug or an unexpected failure, on either side
"""

from typing import Dict, List, Optional, Tuple

import grpc

from ._pb import details_pb2

_DETAILS_KEY = "grpc-status-details-bin"
_TYPE_PREFIX = "type.googleapis.com/google.rpc."


class ProdutoError(Exception):
    """A call to produto failed; see the module's doc for the subclasses."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Optional[Dict[str, str]] = None,
        retry_delay: Optional[float] = None,
        field_violations: Optional[List[Tuple[str, str, str]]] = None,
    ):
        super().__init__(f"{code.name}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_delay = retry_delay
        self.field_violations = list(field_violations or [])


class UnavailableError(ProdutoError):
    """The service cannot be reached, its database is down, or it sheds load; retry after
    ``retry_delay`` seconds when the server gave one (the channel already retried the calls
    that are safe to retry)."""


class DeadlineExceededError(UnavailableError):
    """No answer within the call's deadline: the server may be down or very slow."""


class ResourceExhaustedError(ProdutoError):
    """Too many calls in progress, too many login attempts (``reason`` "LOGIN_THROTTLED",
    for trusted callers), or a request over the size limit (no ``retry_delay``: resending
    it cannot help)."""


class InvalidArgumentError(ProdutoError, ValueError):
    """A field breaks its rule: ``field`` names it (as in the proto), ``rule`` says which
    ("EMPTY", "TOO_SHORT", "TOO_COMMON", ...)."""

    @property
    def field(self) -> str:
        return self.field_violations[0][0] if self.field_violations else ""

    @property
    def rule(self) -> str:
        return self.field_violations[0][1] if self.field_violations else ""


class UnauthenticatedError(ProdutoError):
    """A token is missing or wrong: ``reason`` says which ("ADMIN_TOKEN_MISSING",
    "ADMIN_TOKEN_INVALID", "CALLER_MISSING", "CALLER_TOKEN_INVALID")."""


class PermissionDeniedError(ProdutoError):
    """The server refuses the operation whoever asks ("ADMIN_DISABLED": it was started
    without PRODUTO_ADMIN_TOKEN)."""


class NotFoundError(ProdutoError):
    """No user by that name."""


class AlreadyExistsError(ProdutoError):
    """The name is taken."""


class InternalError(ProdutoError):
    """Anything else: a bug, or an answer this client does not know."""


_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
}


def from_rpc_error(err: grpc.RpcError) -> ProdutoError:
    """The ProdutoError for a failed call, with the details the server attached."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else None) or ""
    reason, metadata, retry_delay, violations = "", {}, None, []
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != _DETAILS_KEY:
            continue
        status = details_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed trailer: keep the code and the message
            break
        for any_ in status.details:
            kind = any_.type_url[len(_TYPE_PREFIX):] if any_.type_url.startswith(_TYPE_PREFIX) else ""
            if kind == "ErrorInfo":
                info = details_pb2.ErrorInfo.FromString(any_.value)
                reason, metadata = info.reason, dict(info.metadata)
            elif kind == "RetryInfo":
                retry = details_pb2.RetryInfo.FromString(any_.value)
                retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
            elif kind == "BadRequest":
                bad = details_pb2.BadRequest.FromString(any_.value)
                violations = [(v.field, v.reason, v.description) for v in bad.field_violations]
    cls = _BY_CODE.get(code, InternalError)
    return cls(code, message, reason, metadata, retry_delay, violations)
