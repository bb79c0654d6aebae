"""Access control: bearer tokens, roles, and the per-method policy every gRPC server enforces.

Tokens are random (256 bits); only their SHA-256 is stored, in object storage (`auth/tokens.json`), issued and
revoked by the admin CLI (`saim admin tokens ...`). Two shared secrets from the environment or a secrets file
complete the picture: the admin token (bootstrap: an admin exists before any token was issued) and the service
token (the annotator asks the selector about leases). Servers re-read the token table every few seconds, so a
revocation takes effect within `refresh_s`; when storage is unreachable they keep the last table they read.

A call carries `authorization: Bearer <token>` metadata. Health checking and reflection are open (probes);
every saim.v1 method has an entry in POLICY, and a method missing from it is refused (deny by default).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from saim.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

ANNOTATOR, ADMIN, SERVICE = "annotator", "admin", "service"
ROLES = (ANNOTATOR, ADMIN)  # roles a token can be issued for; SERVICE only comes from the shared secret
TOKENS_KEY = "auth/tokens.json"
TOKEN_PREFIX = "saim_"

_ALL = frozenset({ANNOTATOR, ADMIN, SERVICE})
POLICY: dict[str, frozenset[str]] = {
    "/saim.v1.AnnotatorService/OpenSession": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/AddClick": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/Undo": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.AnnotatorService/Submit": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.SelectorService/GetStatus": _ALL,
    "/saim.v1.SelectorService/NextCase": frozenset({ANNOTATOR, ADMIN}),
    "/saim.v1.SelectorService/GetScores": _ALL,
    "/saim.v1.SelectorService/CheckLease": frozenset({SERVICE, ADMIN}),
    "/saim.v1.TrainerService/GetStatus": _ALL,
    "/saim.v1.TrainerService/ListModels": _ALL,
    "/saim.v1.TrainerService/TriggerTraining": frozenset({ADMIN}),
    "/saim.v1.TrainerService/Rollback": frozenset({ADMIN}),
}
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("saim_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled in this thread; None when the server runs without auth."""
    return _current.get()


def require_actor(annotator_id: str) -> None:
    """An annotator may act only as itself (admins and the service principal may act for anyone)."""
    p = current_principal()
    if p is not None and p.role == ANNOTATOR and p.name != annotator_id:
        raise PermissionDenied(f"token of annotator {p.name!r} cannot act as {annotator_id!r}")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    return None


class TokenRegistry:
    """The token table in object storage. Used by the admin CLI (issue/revoke/list) and by servers (verify)."""

    def __init__(self, store, refresh_s: float = 5.0, clock=time.monotonic):
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._lock = threading.Lock()
        self._by_hash: dict[str, Principal] = {}
        self._loaded_at: float | None = None  # last refresh attempt that counts (success, or a failure's backoff)
        self._read_at: float | None = None  # when the table in use was read
        self.miss_refresh_s = min(1.0, refresh_s)
        self._miss_at: float | None = None  # last re-read caused by an unknown token

    # ---- admin side --------------------------------------------------------------------------------------------
    def _read(self) -> dict:
        try:
            return self.store.get_json(TOKENS_KEY)
        except NotFound:
            return {"tokens": []}

    def issue(self, name: str, role: str = ANNOTATOR) -> tuple[str, str]:
        """A new token for `name`; returns (token id, token). The token itself is never stored."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise InvalidInput(f"principal name must be letters, digits, '-', '_' or '.', got {name!r}")
        table = self._read()
        token = new_token()
        token_id = secrets.token_hex(6)
        table["tokens"].append(
            {
                "id": token_id,
                "name": name,
                "role": role,
                "sha256": token_hash(token),
                "issued": datetime.now(UTC).isoformat(),
                "revoked": None,
            }
        )
        self.store.put_json(TOKENS_KEY, table)
        self._loaded_at = None
        return token_id, token

    def revoke(self, what: str) -> list[str]:
        """Revoke a token by id, or every live token of a principal by name; returns the revoked ids."""
        table = self._read()
        now = datetime.now(UTC).isoformat()
        hit = [t for t in table["tokens"] if t["revoked"] is None and what in (t["id"], t["name"])]
        if not hit:
            raise NotFound(f"no live token with id or name {what!r}")
        for t in hit:
            t["revoked"] = now
        self.store.put_json(TOKENS_KEY, table)
        self._loaded_at = None
        return [t["id"] for t in hit]

    def list(self) -> list[dict]:
        """Token records without their hashes."""
        return [{k: v for k, v in t.items() if k != "sha256"} for t in self._read()["tokens"]]

    # ---- server side -------------------------------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> None:
        now = self.clock()
        if not force and self._loaded_at is not None and now - self._loaded_at < self.refresh_s:
            return
        try:
            table = self._read()
        except Exception as exc:  # storage outage: keep serving with the last table read
            if self._read_at is None:
                raise
            log.warning(
                "token table not refreshed (%s); using the one read %.0f s ago", type(exc).__name__, now - self._read_at
            )
            self._loaded_at = now - self.refresh_s / 2  # retry soon, not on every call
            return
        self._by_hash = {
            t["sha256"]: Principal(t["name"], t["role"]) for t in table["tokens"] if t.get("revoked") is None
        }
        self._loaded_at = self._read_at = now

    def verify(self, token: str) -> Principal | None:
        """The token's principal, or None. An unknown token re-reads the table at once (at most every
        `miss_refresh_s`), so a token issued a moment ago works on its first call, not after `refresh_s`."""
        h = token_hash(token)
        with self._lock:
            self._refresh()
            found = self._by_hash.get(h)
            now = self.clock()
            if found is None and (self._miss_at is None or now - self._miss_at >= self.miss_refresh_s):
                self._miss_at = now
                self._refresh(force=True)
                found = self._by_hash.get(h)
            return found


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
        if handler is None or handler.unary_unary is None or method.startswith(OPEN_PREFIXES):
            return handler
        inner = handler.unary_unary

        def wrapper(request, context):
            principal = self.check(method, context.invocation_metadata())
            reset = _current.set(principal)
            try:
                return inner(request, context)
            finally:
                _current.reset(reset)

        return grpc.unary_unary_rpc_method_handler(
            wrapper, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    def check(self, method: str, metadata) -> Principal:
        token = bearer(metadata)
        if token is None:
            raise Unauthenticated(f"{method} needs a bearer token (authorization metadata)")
        principal = self.authenticator.principal(token)
        allowed = POLICY.get(method)
        if allowed is None or principal.role not in allowed:
            raise PermissionDenied(f"role {principal.role!r} may not call {method}")
        return principal


class _Metadata(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str):
        self._pair = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = list(client_call_details.metadata or []) + [self._pair]
        return continuation(client_call_details._replace(metadata=metadata), request)


def channel(
    target: str, token: str | None = None, tls_ca: bytes | None = None, server_name: str | None = None, options=()
) -> grpc.Channel:
    """A client channel: TLS when a CA certificate is given (else plaintext), the bearer token on every call."""
    opts = list(options)
    if tls_ca is not None:
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_ca), options=opts)
    else:
        ch = grpc.insecure_channel(target, options=opts)
    return grpc.intercept_channel(ch, _Metadata(token)) if token else ch
