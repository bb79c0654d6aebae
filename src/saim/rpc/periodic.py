"""A background task run every N seconds (reconciliation with object storage); failures are logged, not fatal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval_s: float, fn: Callable[[], None]):
        self.name, self.interval_s, self.fn = name, interval_s, fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.fn()
            except Exception as exc:  # e.g. storage unreachable: the next round tries again
                log.warning("%s failed: %s", self.name, exc)
