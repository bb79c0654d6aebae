"""One selector leads; any other replica stands by and forwards its calls to the leader.

Leadership is a lease in object storage, `state/selector-leader.json` (holder, the address other replicas reach it
at, expiry), taken and renewed with conditional writes: a candidate creates it when absent, or replaces it when it
has expired, with If-Match on the ETag it read, so of two candidates one wins. The leader renews it every third of
its term; a standby tries to take it as often. A leader that finds the lease taken stops leading. Its state writes
are fenced as well (saim.selection.loop: `state/selector.json` is written with If-Match on the ETag the leader
read or last wrote), so a deposed leader that has not noticed yet cannot overwrite its successor's state.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from saim.errors import Conflict, NotFound

log = logging.getLogger(__name__)

LEADER_KEY = "state/selector-leader.json"


@dataclass(frozen=True)
class Leader:
    holder: str
    address: str
    expires_at: float


class LeaderLease:
    """The selector leader's lease for one candidate (`holder`, reached at `address`)."""

    def __init__(self, store, holder: str, address: str, term_s: float, clock=time.time):
        if term_s <= 0:
            raise ValueError(f"term_s must be positive, got {term_s}")
        self.store, self.holder, self.address, self.term_s, self.clock = store, holder, address, term_s, clock
        self._etag: str | None = None  # of the record as this candidate last wrote it

    def _read(self) -> tuple[Leader | None, str | None]:
        try:
            blob, etag = self.store.get_tagged(LEADER_KEY)
        except NotFound:
            return None, None
        record = json.loads(blob)
        return Leader(record["holder"], record.get("address", ""), float(record["expires_at"])), etag

    def _write(self, etag: str | None, expires_at: float) -> bool:
        record = {"holder": self.holder, "address": self.address, "expires_at": expires_at, "written_at": self.clock()}
        try:
            self._etag = self.store.put_if(LEADER_KEY, json.dumps(record).encode(), etag, "application/json")
        except Conflict:
            self._etag = None
            return False
        self.store.purge(LEADER_KEY, keep_latest=True)  # one version of the record, not one per renewal
        return True

    def leader(self) -> Leader | None:
        """The lease's holder while its term lasts, else None."""
        current, _ = self._read()
        return current if current is not None and current.expires_at > self.clock() else None

    def acquire(self) -> bool:
        """Take or keep the lease: when absent, expired, or this candidate's. True when this candidate leads."""
        current, etag = self._read()
        if current is not None and current.holder != self.holder and current.expires_at > self.clock():
            return False
        taken = self._write(etag, self.clock() + self.term_s)
        if taken and (current is None or current.holder != self.holder):
            log.info("%s leads the selectors (the lease was %s)", self.holder, "free" if current is None else "expired")
        return taken

    def renew(self) -> bool:
        """Extend this candidate's term; False when another holder has the lease (this one must stop leading)."""
        if self._etag is None:
            return False
        if self._write(self._etag, self.clock() + self.term_s):
            return True
        current, _ = self._read()
        log.warning("%s lost the selector lease to %s", self.holder, current.holder if current else "nobody")
        return False

    def release(self) -> None:
        """End this candidate's term now (a graceful stop): a standby takes over without waiting for the expiry."""
        if self._etag is not None and self._write(self._etag, 0.0):
            log.info("%s released the selector lease", self.holder)
        self._etag = None
