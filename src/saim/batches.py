"""The selector's loop state: scores stamped with model versions, the current batch, and its completion.

Batch n+1 opens when the model trained on batch n (iteration n) is published; batch 1 opens on the pre-trained
model (iteration 0). State is kept in object storage (state/selector.json) so a restarted selector carries on.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from saim.errors import FailedPrecondition
from saim.live_model import ServedModel
from saim.pool import SELECTOR_STATE, PoolStore, provenance_key
from saim.selection import SelectionStrategy, top_n

log = logging.getLogger(__name__)


@dataclass
class Batch:
    iteration: int
    cases: list[str]
    model_version: str
    done: set[str] = field(default_factory=set)
    assigned: dict[str, str] = field(default_factory=dict)  # case -> annotator
    leases: dict[str, str] = field(default_factory=dict)  # case -> lease id

    @property
    def complete(self) -> bool:
        return set(self.cases) <= self.done

    def to_json(self) -> dict:
        return {
            "iteration": self.iteration,
            "cases": self.cases,
            "model_version": self.model_version,
            "done": sorted(self.done),
            "assigned": self.assigned,
            "leases": self.leases,
        }

    @classmethod
    def from_json(cls, d: dict) -> Batch:
        return cls(
            d["iteration"], list(d["cases"]), d["model_version"], set(d["done"]), dict(d["assigned"]), dict(d["leases"])
        )


@dataclass
class ScoreTable:
    version: str
    scores: dict[str, float]
    seconds: float


class SelectionLoop:
    def __init__(self, pool: PoolStore, strategy: SelectionStrategy, batch_size: int, max_iterations: int):
        self.pool, self.strategy = pool, strategy
        self.batch_size, self.max_iterations = batch_size, max_iterations
        self.batch: Batch | None = None
        self.scores: ScoreTable | None = None
        self.annotated: set[str] = set(pool.annotated_cases())
        self._lock = threading.RLock()
        self._restore()

    # ---- persistence -----------------------------------------------------------------------------------------
    def _restore(self) -> None:
        if self.pool.store.exists(SELECTOR_STATE):
            state = self.pool.store.get_json(SELECTOR_STATE)
            self.batch = Batch.from_json(state["batch"]) if state.get("batch") else None
            if self.batch is not None:
                self.batch.done |= self.annotated & set(self.batch.cases)

    def _save(self) -> None:
        self.pool.store.put_json(
            SELECTOR_STATE, {"batch": self.batch.to_json() if self.batch else None, "updated_at": time.time()}
        )

    # ---- queries ---------------------------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        return 0 if self.batch is None else self.batch.iteration

    def unannotated(self) -> list[str]:
        in_batch = set(self.batch.cases) if self.batch else set()
        return sorted(set(self.pool.splits.pool) - self.annotated - in_batch)

    def complete(self) -> bool:
        """No further batch will open: iteration budget reached or pool exhausted, and the last batch is done."""
        batch_done = self.batch is None or self.batch.complete
        return batch_done and (self.iteration >= self.max_iterations or not self.unannotated())

    # ---- events ----------------------------------------------------------------------------------------------
    def on_model(self, model: ServedModel, model_iteration: int) -> Batch | None:
        """Rescore the unannotated pool under the new version; open the next batch if this model closes the last.
        Returns the newly opened batch, if any. A replay of the same version changes nothing."""
        with self._lock:
            if self.scores is None or self.scores.version != model.version:
                self.scores = self._score(model)
            if model_iteration != self.iteration or (self.batch is not None and not self.batch.complete):
                return None
            if self.iteration >= self.max_iterations:
                return None
            candidates = {c: s for c, s in self.scores.scores.items() if c in set(self.unannotated())}
            if not candidates:
                return None
            self.batch = Batch(self.iteration + 1, top_n(candidates, self.batch_size), model.version)
            self._save()
            log.info("opened batch %d with %s (scores of %s)", self.batch.iteration, self.batch.cases, model.version)
            return self.batch

    def _score(self, model: ServedModel) -> ScoreTable:
        cases = sorted(set(self.pool.splits.pool) - self.annotated)
        started = time.perf_counter()
        slices = {c: self.pool.load_series(c).images for c in cases}
        scores = self.strategy.score(model.predictor, slices) if slices else {}
        table = ScoreTable(model.version, scores, time.perf_counter() - started)
        self.pool.store.put_json(
            f"scores/{model.version}.json",
            {
                "model_version": model.version,
                "strategy": self.strategy.name,
                "scores": scores,
                "seconds": table.seconds,
            },
        )
        return table

    def on_annotation(self, case: str, iteration: int) -> Batch | None:
        """Record a submitted case; returns the batch when this submission completes it (exactly once)."""
        with self._lock:
            self.annotated.add(case)
            batch = self.batch
            if batch is None or batch.iteration != iteration or case not in batch.cases or case in batch.done:
                return None
            batch.done.add(case)
            self._save()
            return batch if batch.complete else None

    def _submitted(self, case: str) -> bool:
        """Annotation stored but its event not handled yet: storage is the system of record, so never hand the
        case out again (its event will complete it)."""
        return case in self.annotated or self.pool.store.exists(provenance_key(case))

    def next_case(self, annotator: str) -> tuple[str, int, str, str]:
        """(case, iteration, lease id, model version) for this annotator: its own unfinished case first, else
        the best-scored free case of the batch."""
        with self._lock:
            batch = self.batch
            if batch is None:
                raise FailedPrecondition("no batch is open yet (waiting for a model)")
            open_cases = [c for c in batch.cases if c not in batch.done and not self._submitted(c)]
            for case in open_cases:
                if batch.assigned.get(case) == annotator:
                    return case, batch.iteration, batch.leases[case], batch.model_version
            for case in open_cases:
                if case not in batch.assigned:
                    batch.assigned[case] = annotator
                    batch.leases[case] = uuid.uuid4().hex
                    self._save()
                    return case, batch.iteration, batch.leases[case], batch.model_version
            state = "complete" if self.complete() else "waiting for the next model"
            raise FailedPrecondition(f"batch {batch.iteration} has no free case ({state})")

    def lease_holder(self, case: str, lease_id: str) -> str | None:
        with self._lock:
            b = self.batch
            if b is None or b.leases.get(case) != lease_id:
                return None
            return b.assigned.get(case)
