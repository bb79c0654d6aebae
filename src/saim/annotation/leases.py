"""The annotator's side of a case lease: a click never waits for the selector.

The selector owns work distribution (who holds which case, until when). The annotator learns a lease's expiry when
the session opens and from every renewal, and trusts it: a click, an edit or an undo is answered as long as the
known expiry has not passed and the selector has not refused the lease. Renewals, which activity asks for at most
every `renew_every_s`, run on a background thread, so a slow or restarting selector delays nothing a person does.
Only OpenSession and Submit need the selector's answer; Submit retries an unreachable selector up to a deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from saim.annotation.session import AnnotationSession
from saim.errors import FailedPrecondition, SaimError, Unavailable

log = logging.getLogger(__name__)


class LeaseChecks(Protocol):
    """Asks the selector about a lease (saim.rpc.peers.LeaseChecker): renews it, or raises its refusal."""

    def check(self, case: str, lease_id: str, annotator: str) -> Any: ...  # .expires_at: unix time, 0: none known


class LeaseKeeper:
    def __init__(
        self,
        checks: LeaseChecks,
        renew_every_s: float = 30.0,
        submit_wait_s: float = 20.0,
        clock: Callable[[], float] = time.time,
        on_renewed: Callable[[AnnotationSession, float], None] | None = None,
    ):
        self.checks, self.renew_every_s, self.submit_wait_s, self.clock = checks, renew_every_s, submit_wait_s, clock
        self.on_renewed = on_renewed  # (session, new expiry): the annotator keeps its session record current
        self._lock = threading.Lock()
        self._state: dict[str, _Held] = {}  # session id -> what this replica knows of its lease

    def opened(self, session: AnnotationSession, expires_at: float) -> None:
        """The lease as OpenSession's check found it (expires_at 0: no selector, no expiry)."""
        with self._lock:
            self._state[session.session_id] = _Held(expires_at)

    def adopted(self, session: AnnotationSession, expires_at: float) -> None:
        """A session rebuilt by this replica (another one opened it): the expiry its record carries, renewed at the
        first activity."""
        self.opened(session, expires_at)
        session.lease_renewed = time.monotonic() - self.renew_every_s

    def activity(self, session: AnnotationSession) -> None:
        """Before a click, an edit, an undo or a slice: refuse a lost or expired lease; renew in the background."""
        held = self._held(session)
        if held.refused is not None:
            raise held.refused
        if held.expires_at and self.clock() > held.expires_at:
            raise FailedPrecondition(
                f"the lease on case {session.case} expired at {held.expires_at:.0f} and could not be renewed"
            )
        with self._lock:
            due = not held.renewing and time.monotonic() - session.lease_renewed >= self.renew_every_s
            held.renewing = held.renewing or due
        if due:  # one renewal per session at a time, on a daemon thread (never holds up the process's exit)
            threading.Thread(target=self._renew, args=(session, held), name="lease-renewal", daemon=True).start()

    def confirm(self, session: AnnotationSession) -> None:
        """Submit's check: the selector's answer, waited for up to `submit_wait_s` while it cannot be reached."""
        deadline = time.monotonic() + self.submit_wait_s
        pause = 0.25
        while True:
            try:
                self._record(
                    session, self._held(session), self.checks.check(session.case, session.lease_id, session.annotator)
                )
                return
            except Unavailable:
                if time.monotonic() + pause > deadline:
                    raise
                log.info("selector unreachable while %s submits %s: trying again", session.annotator, session.case)
                time.sleep(pause)
                pause = min(2 * pause, 2.0)

    def closed(self, session: AnnotationSession) -> None:
        with self._lock:
            self._state.pop(session.session_id, None)

    def _held(self, session: AnnotationSession) -> _Held:
        with self._lock:
            return self._state.setdefault(session.session_id, _Held(0.0))

    def _renew(self, session: AnnotationSession, held: _Held) -> None:
        try:
            self._record(session, held, self.checks.check(session.case, session.lease_id, session.annotator))
        except Unavailable as exc:  # the known expiry still holds; the next activity asks again
            log.warning("lease of %s not renewed (%s): the session goes on until it expires", session.case, exc)
        except SaimError as exc:  # refused: the lease went to someone else, or the case is done
            held.refused = exc
        finally:
            held.renewing = False

    def _record(self, session: AnnotationSession, held: _Held, lease: Any) -> None:
        held.expires_at = float(lease.expires_at)
        session.lease_renewed = time.monotonic()
        if self.on_renewed is not None:
            try:
                self.on_renewed(session, held.expires_at)
            except SaimError as exc:  # the record's older expiry still lets another replica rebuild the session
                log.warning("record of session %s not updated (%s)", session.session_id, exc)


class _Held:
    def __init__(self, expires_at: float):
        self.expires_at = expires_at
        self.refused: SaimError | None = None
        self.renewing = False
