"""Interactive annotation sessions: per-slice clicks, interaction memory (previous mask) and undo.

Each click is answered by the model version current at that moment; the session records which version produced
every mask so the stored annotation carries full provenance.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from saim.data.slices import Series
from saim.errors import InvalidInput, NotFound
from saim.live_model import ServedModel
from saim.model.encoding import Click


@dataclass
class SliceState:
    auto: np.ndarray  # automatic prediction (the memory before the first click)
    clicks: list[Click] = field(default_factory=list)
    history: list[np.ndarray] = field(default_factory=list)  # masks after each click (for undo)

    @property
    def mask(self) -> np.ndarray:
        return self.history[-1] if self.history else self.auto


@dataclass
class AnnotationSession:
    session_id: str
    case: str
    annotator: str
    iteration: int
    lease_id: str
    series: Series
    slices: list[SliceState]
    opened_version: str
    started_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    versions_used: set[str] = field(default_factory=set)
    lease_renewed: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, case: str, annotator: str, iteration: int, lease_id: str, series: Series, model: ServedModel):
        auto = model.predictor.predict(series.images)
        slices = [SliceState(auto=a) for a in auto]
        return cls(
            uuid.uuid4().hex,
            case,
            annotator,
            iteration,
            lease_id,
            series,
            slices,
            model.version,
            versions_used={model.version},
        )

    def _slice(self, index: int) -> SliceState:
        if not 0 <= index < len(self.slices):
            raise InvalidInput(f"slice {index} is outside 0..{len(self.slices) - 1}")
        return self.slices[index]

    def _answer(self, model: ServedModel, index: int, clicks: list[Click], prev: np.ndarray) -> np.ndarray:
        images = self.series.images[index : index + 1]
        self.versions_used.add(model.version)
        return model.predictor.predict(images, [clicks], prev[None])[0]

    def add_click(self, model: ServedModel, index: int, click: Click) -> np.ndarray:
        with self.lock:
            state = self._slice(index)
            model.predictor.validate_click(click)
            mask = self._answer(model, index, state.clicks + [click], state.mask)
            state.clicks.append(click)
            state.history.append(mask)
            self.last_active = time.monotonic()
            return mask

    def undo(self, model: ServedModel, index: int) -> np.ndarray:
        """Drop the last click of the slice and return the mask as it was before that click."""
        with self.lock:
            state = self._slice(index)
            if not state.clicks:
                raise InvalidInput(f"slice {index} has no click to undo")
            state.clicks.pop()
            state.history.pop()
            self.last_active = time.monotonic()
            return state.mask

    def labels(self) -> np.ndarray:
        return np.stack([s.mask for s in self.slices]).astype(np.uint8)

    def provenance(self, seconds_client: float | None) -> dict:
        return {
            "case": self.case,
            "annotator": self.annotator,
            "iteration": self.iteration,
            "lease_id": self.lease_id,
            "session_id": self.session_id,
            "model_version_opened": self.opened_version,
            "model_versions_used": sorted(self.versions_used),
            "clicks": [
                [{"class": c.cls, "y": c.y, "x": c.x, "positive": c.positive} for c in s.clicks] for s in self.slices
            ],
            "num_clicks": sum(len(s.clicks) for s in self.slices),
            "slice_index": [int(z) for z in self.series.slice_index],
            "volume_shape": list(self.series.volume_shape),
            "resolution": "model slices (S, H, W) stored as a (H, W, S) NIfTI label map",
            "seconds_spent_server": round(time.time() - self.started_at, 3),
            "seconds_spent_client": seconds_client,
            "submitted_at": time.time(),
        }


class SessionStore:
    """Open sessions by id; idle ones expire."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._sessions: dict[str, AnnotationSession] = {}
        self._lock = threading.Lock()

    def add(self, session: AnnotationSession) -> None:
        with self._lock:
            self._expire()
            self._sessions[session.session_id] = session

    def get(self, session_id: str) -> AnnotationSession:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"unknown or expired session {session_id!r}")
        return session

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, sess in self._sessions.items() if now - sess.last_active > self.ttl_s]:
            del self._sessions[sid]
