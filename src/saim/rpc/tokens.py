"""Bearer tokens and the principals they stand for, stored hashed in object storage.

Tokens are random (256 bits); only their SHA-256 is stored (`auth/tokens.json`), issued and revoked by the admin CLI
(`saim admin tokens ...`). Servers re-read the table every few seconds, so a revocation takes effect within
`refresh_s`; when storage is unreachable they keep the last table they read. The policy that uses these principals
is saim.rpc.auth.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from saim.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)

ANNOTATOR, ADMIN, SERVICE = "annotator", "admin", "service"
ROLES = (ANNOTATOR, ADMIN)  # roles a token can be issued for; SERVICE only comes from the shared secret
TOKENS_KEY = "auth/tokens.json"
TOKEN_PREFIX = "saim_"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
