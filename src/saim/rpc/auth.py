"""Access control of the gRPC servers: who the caller is (bearer token) and what each method allows.

Two shared secrets from the environment or a secrets file complete the token table (saim.rpc.tokens): the admin token
(bootstrap: an admin exists before any token was issued) and the service token (the annotator asks the selector
about leases). A call carries `authorization: Bearer <token>` metadata. Health checking and reflection are open
(probes); every saim.v1 method has an entry in POLICY, and a method missing from it is refused (deny by default).
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac

import grpc

from saim.errors import PermissionDenied, Unauthenticated
from saim.rpc.errors import around_calls
from saim.rpc.tokens import ADMIN, ANNOTATOR, SERVICE, Principal, TokenRegistry, token_hash

_ALL = frozenset({ANNOTATOR, ADMIN, SERVICE})
POLICY: dict[str, frozenset[str]] = {
    "/saim.v1.AnnotatorService/OpenSession": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/GetSession": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/GetSlice": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/GetVolume": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/AddClick": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/EditSlice": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/AddBox": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/AddScribble": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/Undo": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/Redo": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/Propagate": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/Interpolate": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/Submit": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.SelectorService/GetStatus": _ALL,
    "/saim.v1.SelectorService/NextCase": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.SelectorService/GetScores": _ALL,
    "/saim.v1.SelectorService/CheckLease": frozenset({SERVICE, ADMIN}),
    "/saim.v1.SelectorService/WhoAmI": _ALL,
    "/saim.v1.ScorerService/GetStatus": _ALL,
    "/saim.v1.TrainerService/GetStatus": _ALL,
    "/saim.v1.TrainerService/ListModels": _ALL,
    "/saim.v1.TrainerService/TriggerTraining": frozenset({ADMIN}),
    "/saim.v1.TrainerService/Rollback": frozenset({ADMIN}),
}
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("saim_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled in this thread; None when the server runs without auth."""
    return _current.get()


def require_actor(annotator_id: str) -> None:
    """An annotator may act only as itself (admins and the service principal may act for anyone)."""
    p = current_principal()
    if p is not None and p.role == ANNOTATOR and p.name != annotator_id:
        raise PermissionDenied(f"token of annotator {p.name!r} cannot act as {annotator_id!r}")


def bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    return None


class Authenticator:
    """Resolves a bearer token to a principal: the shared admin/service secrets first, then the registry."""

    def __init__(self, registry: TokenRegistry | None, admin_token: str | None, service_token: str | None):
        self.registry = registry
        self._shared = [
            (token_hash(t), Principal(name, role))
            for t, name, role in ((admin_token, "admin", ADMIN), (service_token, "service", SERVICE))
            if t
        ]

    def principal(self, token: str) -> Principal:
        h = token_hash(token)
        for known, principal in self._shared:
            if hmac.compare_digest(h, known):
                return principal
        found = self.registry.verify(token) if self.registry is not None else None
        if found is None:
            raise Unauthenticated("unknown or revoked token")
        return found


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates every saim.v1 call and checks the method's roles. Must sit inside ErrorMappingInterceptor
    (listed after it), which turns the raised Unauthenticated / PermissionDenied into gRPC statuses."""

    def __init__(self, authenticator: Authenticator):
        self.authenticator = authenticator

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        return around_calls(handler, lambda context: self._as_caller(method, context))  # checked before any reply

    @contextlib.contextmanager
    def _as_caller(self, method: str, context):
        reset = _current.set(self.check(method, context.invocation_metadata()))
        try:
            yield
        finally:
            _current.reset(reset)

    def check(self, method: str, metadata) -> Principal:
        token = bearer(metadata)
        if token is None:
            raise Unauthenticated(f"{method} needs a bearer token (authorization metadata)")
        principal = self.authenticator.principal(token)
        allowed = POLICY.get(method)
        if allowed is None or principal.role not in allowed:
            raise PermissionDenied(f"role {principal.role!r} may not call {method}")
        return principal
