"""The model registry in object storage: immutable versions (weights, self-describing metadata, the promotion
gate's decision) and the CURRENT pointer. The version lifecycle (naming, order, status) lives here only; the
services ask it and spell no status."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from saim.errors import NotFound
from saim.model.predictor import InteractivePredictor
from saim.storage.objects import ObjectStore


class VersionStatus(StrEnum):
    """Where a model version stands in its lifecycle (status.json beside its weights; the gRPC API sends the value).

    UNDECIDED: written, the promotion gate has not decided (a run in progress, or a trainer killed mid-run).
    PROMOTED / REJECTED: the gate's decision. ABANDONED: undecided when a trainer restarted; never becomes current.
    """

    PROMOTED = "promoted"
    REJECTED = "rejected"
    UNDECIDED = "unknown"  # the stored and wire value predates the name
    ABANDONED = "abandoned"


VERSION_PREFIX = "v"


def version_name(number: int) -> str:
    return f"{VERSION_PREFIX}{number:04d}"


def version_number(version: str | None) -> int:
    """The number of a version name ("v0012" -> 12); -1 for None or a name that is not a version."""
    if not version or not version.startswith(VERSION_PREFIX) or not version[1:].isdigit():
        return -1
    return int(version[1:])


@dataclass(frozen=True)
class ModelMetadata:
    """The self-describing part of a stored version (metadata.json), typed where services read it; `raw` is the
    whole document (model config, input encoding, training statistics) for loading and for humans."""

    version: str
    iteration: int
    parent_version: str | None
    created_at: str
    metrics: dict[str, float]
    training_set: tuple[dict, ...]
    raw: dict

    @classmethod
    def from_json(cls, d: dict) -> ModelMetadata:
        return cls(
            version=d["version"],
            iteration=int(d.get("iteration", 0)),
            parent_version=d.get("parent_version") or None,
            created_at=d.get("created_at", ""),
            metrics={k: float(v) for k, v in d.get("metrics", {}).items() if isinstance(v, (int, float))},
            training_set=tuple(d.get("training_set", [])),
            raw=d,
        )


@dataclass(frozen=True)
class Decision:
    """A version the promotion gate has decided (or that is current, which counts as decided)."""

    version: str
    iteration: int
    promoted: bool


class ModelRegistry:
    """Immutable model versions: weights + self-describing metadata under their own keys, a status record of the
    promotion decision, and a small CURRENT pointer written last, so a reader following the pointer never sees a
    half-written model. The version lifecycle (naming, ordering, status, the gate's bookkeeping) lives here only."""

    PREFIX = "models/"
    POINTER = "models/CURRENT"

    def __init__(self, store: ObjectStore):
        self.store = store

    def weights_key(self, version: str) -> str:
        return f"{self.PREFIX}{version}/weights.safetensors"

    def metadata_key(self, version: str) -> str:
        return f"{self.PREFIX}{version}/metadata.json"

    def status_key(self, version: str) -> str:
        return f"{self.PREFIX}{version}/status.json"

    def versions(self) -> list[str]:
        """Stored versions, oldest first."""
        keys = self.store.list(self.PREFIX)
        names = {k[len(self.PREFIX) :].split("/")[0] for k in keys if k.endswith("/metadata.json")}
        return sorted(names, key=lambda v: (version_number(v), v))

    def next_version(self) -> str:
        return version_name(max((version_number(v) for v in self.versions()), default=-1) + 1)

    def publish(self, predictor: InteractivePredictor, make_current: bool = True, **metadata) -> ModelMetadata:
        """Write weights, then metadata (with the weights' sha256), then (optionally) the pointer."""
        version = metadata.pop("version", None) or self.next_version()
        weights = predictor.to_bytes()
        meta = predictor.describe(
            version=version,
            weights_sha256=hashlib.sha256(weights).hexdigest(),
            created_at=datetime.now(UTC).isoformat(),
            **metadata,
        )
        self.store.put_bytes(self.weights_key(version), weights)
        self.store.put_json(self.metadata_key(version), meta)
        if make_current:
            self.set_current(version)
        return ModelMetadata.from_json(meta)

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def mark(self, version: str, status: VersionStatus, reason: str) -> None:
        """Record a decision beside the immutable weights and metadata."""
        self.store.put_json(
            self.status_key(version),
            {"status": VersionStatus(status).value, "reason": reason, "decided_at": datetime.now(UTC).isoformat()},
        )

    def status(self, version: str) -> VersionStatus:
        return self._status(version, self.current_version())

    def _status(self, version: str, current: str | None) -> VersionStatus:
        """The recorded decision; without one, the current version counts as promoted (set by hand or a rollback)."""
        try:
            return VersionStatus(self.store.get_json(self.status_key(version))["status"])
        except NotFound:
            return VersionStatus.PROMOTED if version == current else VersionStatus.UNDECIDED

    def decide(self, version: str, promoted: bool, reason: str) -> VersionStatus:
        """The promotion gate's decision: recorded, and CURRENT moves to a promoted version. Returns the status."""
        status = VersionStatus.PROMOTED if promoted else VersionStatus.REJECTED
        self.mark(version, status, reason)
        if promoted:
            self.set_current(version)
        return status

    def abandon_undecided(self) -> list[str]:
        """Mark every undecided version that is not current as abandoned (a trainer stopped between writing it and
        the gate): it never becomes current, and its iteration is trained again. Returns the versions marked."""
        current = self.current_version()
        abandoned = []
        for version in self.versions():
            if version != current and self._status(version, current) is VersionStatus.UNDECIDED:
                self.mark(version, VersionStatus.ABANDONED, "the trainer stopped before the promotion decision")
                abandoned.append(version)
        return abandoned

    def decided_iterations(self) -> set[int]:
        """Iterations that have a decided version (promoted, rejected, or current)."""
        current = self.current_version()
        return {
            self.metadata(v).iteration
            for v in self.versions()
            if v == current or self._status(v, current) in (VersionStatus.PROMOTED, VersionStatus.REJECTED)
        }

    def latest_decided(self) -> Decision | None:
        """The newest version the gate has decided; the current version counts as decided (it covers a rollback)."""
        current = self.current_version()
        for version in reversed(self.versions()):
            status = self._status(version, current)
            if status in (VersionStatus.PROMOTED, VersionStatus.REJECTED) or version == current:
                return Decision(version, self.metadata(version).iteration, status is not VersionStatus.REJECTED)
        return None

    def current_iteration(self) -> int:
        """The iteration of the current version (0 before the first model)."""
        version = self.current_version()
        return 0 if version is None else self.metadata(version).iteration

    # ---- pointer and reads -----------------------------------------------------------------------------------
    def set_current(self, version: str) -> None:
        if not self.store.exists(self.metadata_key(version)):
            raise NotFound(f"model version {version!r} is not in the registry")
        self.store.put_json(self.POINTER, {"version": version, "updated_at": datetime.now(UTC).isoformat()})

    def current_version(self) -> str | None:
        try:
            return self.store.get_json(self.POINTER)["version"]
        except NotFound:
            return None

    def metadata(self, version: str) -> ModelMetadata:
        return ModelMetadata.from_json(self.store.get_json(self.metadata_key(version)))

    def fetch(self, version: str) -> tuple[bytes, dict]:
        """A version's weights (checked against their recorded sha256) and metadata, not yet a network."""
        meta = self.metadata(version).raw
        weights = self.store.get_bytes(self.weights_key(version))
        if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
            raise NotFound(f"model version {version!r}: weights do not match their recorded sha256")
        return weights, meta

    def load(self, version: str, device: str = "cpu") -> InteractivePredictor:
        return InteractivePredictor.from_bytes(*self.fetch(version), device=device)
