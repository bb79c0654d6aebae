"""The current model version of a process, hot-swapped on a model event without dropping requests.

Requests take a reference to the (version, predictor) pair and use it to the end; a reload loads the new version
fully, then swaps the reference in one assignment, so in-flight requests finish on the version they started with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from saim.errors import FailedPrecondition
from saim.model.compute import Compute, Inline
from saim.model.config import ServingConfig
from saim.model.predictor import InteractivePredictor
from saim.registry.versions import ModelRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    version: str
    predictor: InteractivePredictor
    metadata: dict


class LiveModel:
    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "cpu",
        on_change: Callable[[ServedModel], None] | None = None,
        compute: Compute | None = None,
        serving: ServingConfig | None = None,
    ):
        """`serving`: the replica's own serving settings, applied to every version it loads (None: as stored)."""
        self.registry, self.device, self.on_change, self.serving = registry, device, on_change, serving
        self.compute = compute or Inline()  # where the network is built (the process's tensor thread, if it has one)
        self._current: ServedModel | None = None
        self._load_lock = threading.Lock()

    @property
    def current(self) -> ServedModel:
        served = self._current
        if served is None:
            raise FailedPrecondition("no model version is loaded yet")
        return served

    def version(self) -> str | None:
        return None if self._current is None else self._current.version

    def load(self, version: str) -> bool:
        """Load `version` unless it is already served. Returns True when the served version changed."""
        with self._load_lock:
            if self._current is not None and self._current.version == version:
                return False
            weights, meta = self.registry.fetch(version)  # downloaded on this thread, built on the tensor thread
            predictor = self.compute.run(InteractivePredictor.from_bytes, weights, meta, self.device, background=True)
            if self.serving is not None:
                predictor = predictor.serving(self.serving)
            served = ServedModel(version, predictor, predictor.metadata)
            self._current = served
        log.info("serving model %s", version)
        if self.on_change:
            self.on_change(served)
        return True

    def load_current(self) -> bool:
        """Follow the registry's CURRENT pointer (start-up, reconciliation)."""
        version = self.registry.current_version()
        return False if version is None else self.load(version)
