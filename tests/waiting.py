"""Deadline polling for the tiers that start processes (integration, chaos)."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll(predicate, timeout_s: float, what: str, interval: float = 0.25, context: Callable[[], str] | None = None):
    """The first truthy value of predicate(), or AssertionError after timeout_s (with context(), e.g. logs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n{context()}" if context is not None else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")
