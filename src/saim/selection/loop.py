"""The selector's loop state: scores stamped with model versions, the current batch, and its completion.

Batch n+1 opens when the model trained on batch n (iteration n) is published; batch 1 opens on the pre-trained
model (iteration 0). State is kept in object storage (state/selector.json) so a restarted selector carries on.

With `overlap` k > 1 (inter-rater studies) a case is done once k different annotators submitted it; one lease at a
time per case, and a case is never handed to an annotator who already annotated it.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from saim.errors import Conflict, FailedPrecondition, NotFound, PermissionDenied, SaimError
from saim.registry.live import ServedModel
from saim.selection.scoring import LocalScoring, ScoreTable, Scoring, scores_key
from saim.selection.strategies import SelectionStrategy
from saim.storage.pool import DECODE_WORKERS, PoolStore, provenance_key

log = logging.getLogger(__name__)

SELECTOR_STATE = "state/selector.json"  # this module's format; other services read it through stored_batches()
NEXT_BATCH = ("after_model", "immediate")
SESSION_RECORD_KEEP_S = 86400.0  # an abandoned session's record outlives its lease by this long
DRAFT_SWEEP_S = 600.0  # how often collect_drafts lists every draft (annotated cases' drafts go at once, unlisted)


@dataclass
class Batch:
    iteration: int
    cases: list[str]
    model_version: str
    done: set[str] = field(default_factory=set)
    assigned: dict[str, str] = field(default_factory=dict)  # case -> annotator
    leases: dict[str, str] = field(default_factory=dict)  # case -> lease id
    expires: dict[str, float] = field(default_factory=dict)  # case -> lease expiry (unix time)
    raters: dict[str, list[str]] = field(default_factory=dict)  # case -> annotators who submitted it

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
            "expires": self.expires,
            "raters": self.raters,
        }

    @classmethod
    def from_json(cls, d: dict) -> Batch:
        return cls(
            d["iteration"],
            list(d["cases"]),
            d["model_version"],
            set(d["done"]),
            dict(d["assigned"]),
            dict(d["leases"]),
            dict(d.get("expires", {})),
            {c: list(r) for c, r in d.get("raters", {}).items()},
        )


def stored_batches(store) -> tuple[Batch | None, Batch | None]:
    """The selector's stored (open batch, previous batch), each None when absent (the trainer asks this after lost
    events). `previous` is the completed batch before the open one, when that was opened without waiting for the
    previous one's model (SAIM_NEXT_BATCH=immediate)."""
    batch, previous, _ = _stored_state(store)
    return batch, previous


def _stored_state(store) -> tuple[Batch | None, Batch | None, str | None]:
    """(open batch, previous batch, the state's ETag); (None, None, None) when no state is stored."""
    try:
        blob, etag = store.get_tagged(SELECTOR_STATE)
    except NotFound:
        return None, None, None
    state = json.loads(blob)
    batch, previous = (Batch.from_json(state[k]) if state.get(k) else None for k in ("batch", "previous"))
    return batch, previous, etag


class SelectionLoop:
    def __init__(
        self,
        pool: PoolStore,
        strategy: SelectionStrategy,
        batch_size: int,
        max_iterations: int,
        lease_ttl_s: float = 900.0,
        clock=time.time,
        overlap: int = 1,
        decode_workers: int = DECODE_WORKERS,
        scoring: Scoring | None = None,
        next_batch: str = "after_model",
    ):
        if overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {overlap}")
        if next_batch not in NEXT_BATCH:
            raise ValueError(f"next_batch must be one of {NEXT_BATCH}, got {next_batch!r}")
        self.next_batch = next_batch
        self.previous: Batch | None = None  # the completed batch before an `immediate` one, until its model
        self.overlap = overlap
        self.pool, self.strategy = pool, strategy
        self.scoring = scoring if scoring is not None else LocalScoring(pool, strategy, decode_workers)
        self.lease_ttl_s, self.clock = lease_ttl_s, clock
        self.batch_size, self.max_iterations = batch_size, max_iterations
        self.batch: Batch | None = None
        self.scores: ScoreTable | None = None
        self.annotated: set[str] = set(pool.annotated_cases())
        self._lock = threading.RLock()
        self._dirty = False
        self._uncollected: set[str] = set()  # annotated cases whose drafts collect_drafts removes
        self._swept_at: float | None = None
        self._state_etag: str | None = None  # of state/selector.json as this loop read or wrote it (fencing)
        self.on_fenced: Callable[[], None] | None = None  # told when a state write finds another selector's state
        self._restore()

    # ---- persistence -----------------------------------------------------------------------------------------
    def _restore(self) -> None:
        self.batch, self.previous, self._state_etag = _stored_state(self.pool.store)
        if self.batch is not None:
            stored = self.annotated & set(self.batch.cases)
            if self.overlap > 1:  # a primary annotation exists after the first rater: count the raters
                partial = {c for c in stored if len(self.pool.raters(c)) < self.overlap}
                stored -= partial
                self.annotated -= partial
            self.batch.done |= stored

    def _save(self) -> None:
        try:
            state = {"batch": self.batch.to_json() if self.batch else None, "updated_at": time.time()}
            if self.previous is not None:
                state["previous"] = self.previous.to_json()
            store = self.pool.store
            # fenced: written only over the state this loop read or wrote last (saim.selection.leader)
            self._state_etag = store.put_if(SELECTOR_STATE, json.dumps(state).encode(), self._state_etag)
            store.purge(SELECTOR_STATE, keep_latest=True)
        except Conflict:
            self._dirty = False  # another selector leads now: nothing of this loop's memory may be written
            if self.on_fenced is not None:
                self.on_fenced()
            raise
        except Exception:
            self._dirty = True  # memory is ahead of the bucket: flush() retries
            raise
        self._dirty = False

    def reload(self) -> None:
        """Start over from the stored state (a standby that became the leader: the old leader moved it on)."""
        with self._lock:
            self.annotated = set(self.pool.annotated_cases())
            self._uncollected = set()
            self._dirty = False
            self._restore()

    def flush(self) -> None:
        """Persist state that a failed save left only in memory (leases, renewals). Called periodically."""
        with self._lock:
            if self._dirty:
                self._save()

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
        Returns the newly opened batch, if any. A replay of the same version changes nothing.

        Scoring runs outside the loop's lock: NextCase, CheckLease and GetStatus keep answering from the last
        complete table, which the new one replaces in one assignment (a table is never a mix of versions)."""
        with self._lock:
            current = self.scores
            stale = current is None or current.version != model.version
            cases = sorted(set(self.pool.splits.pool) - self.annotated)
            added = [] if current is None or stale else [c for c in cases if not current.covers([c])]  # admin import
        table = self._score(model, cases) if stale else None
        if added:
            log.info("scoring %d series added to the pool under %s", len(added), model.version)
            table = self._score(model, added, merge_into=self.scores)
        with self._lock:
            if table is not None:
                self.scores = table
            if self.previous is not None and model_iteration >= self.previous.iteration:
                self.previous = None  # its model is decided: the trainer needs it no more
            if model_iteration != self.iteration or (self.batch is not None and not self.batch.complete):
                return None
            return self._open_next()

    def _open_next(self) -> Batch | None:
        """Open the next batch from the last complete score table (under the lock): the top-N unannotated series."""
        if self.iteration >= self.max_iterations or self.scores is None:
            return None
        unannotated = set(self.unannotated())
        if not unannotated & set(self.scores.scores):
            return None
        chosen = self.scores.pick(self.strategy, unannotated, self.batch_size, self.iteration + 1)
        self.batch = Batch(self.iteration + 1, chosen, self.scores.version)
        self._save()
        log.info("opened batch %d with %s (scores of %s)", self.batch.iteration, self.batch.cases, self.scores.version)
        return self.batch

    def _score(self, model: ServedModel, cases: list[str], merge_into: ScoreTable | None = None) -> ScoreTable:
        stored = self._stored_table(model.version, cases)
        if stored is not None:
            log.info("scores of %s for %d series found in storage: not rescored", model.version, len(cases))
            return stored if merge_into is None else merge_into.merged(stored)
        table = self.scoring.score(model, cases)
        if merge_into is not None:
            table = merge_into.merged(table)
        self.pool.store.rewrite_json(
            scores_key(model.version),
            {
                "model_version": model.version,
                "strategy": self.strategy.name,
                "scores": table.scores,
                "class_scores": table.class_scores,
                "failed": table.failed,
                "seconds": table.seconds,
            },
        )
        return table

    def _stored_table(self, version: str, cases: list[str]) -> ScoreTable | None:
        """The table this version's scoring stored already, when it covers `cases` with this strategy: a restarted
        selector does not rescore the whole pool (at AMOS size, minutes of a GPU)."""
        try:
            stored = self.pool.store.get_json(scores_key(version))
        except NotFound:
            return None
        scores, failed = stored.get("scores", {}), stored.get("failed", {})
        if stored.get("model_version") != version or stored.get("strategy") != self.strategy.name:
            return None
        if not set(cases) <= set(scores) | set(failed):
            return None
        return ScoreTable(
            version,
            {c: float(scores[c]) for c in cases if c in scores},
            0.0,
            0,
            {c: str(failed[c]) for c in cases if c in failed},
            {c: [float(x) for x in v] for c, v in stored.get("class_scores", {}).items() if c in cases},
        )

    def on_annotation(self, case: str, iteration: int, annotator: str = "") -> Batch | None:
        """Record a submitted case; returns the batch when this submission completes it (exactly once)."""
        with self._lock:
            batch = self.batch
            if batch is None or batch.iteration != iteration or case not in batch.cases or case in batch.done:
                if self.overlap == 1 or (batch is not None and case in batch.done):  # one rater is not k raters
                    self.annotated.add(case)
                return None
            # A completion is a transition: it must be stored before it counts, or a retried event would find the
            # case done, never store the completed batch, and never announce it. So: change, save, or undo.
            before, was_dirty = copy.deepcopy(batch), self._dirty
            raters = batch.raters.setdefault(case, [])
            if annotator and annotator not in raters:
                raters.append(annotator)
            completing = self.overlap == 1 or len(raters) >= self.overlap
            if not completing and batch.assigned.get(case) == annotator:  # this rater is done: free for the next
                for table in (batch.assigned, batch.leases, batch.expires):
                    table.pop(case, None)
            if completing:
                batch.done.add(case)
            try:
                self._save()
            except Exception:
                vars(batch).update(vars(before))  # in place: callers may hold this batch
                self._dirty = was_dirty
                raise
            if not completing:
                return None
            self.annotated.add(case)
            self._uncollected.add(case)
            if not batch.complete:
                return None
            if self.next_batch == "immediate":
                self._open_immediately(batch)
            return batch

    def collect_drafts(self) -> None:
        """Remove the drafts of annotated cases, with all their versions: those annotated since the last call, and
        every DRAFT_SWEEP_S those any listing of drafts/ finds (written after their case was collected, or before a
        restart), with the session records of annotated cases and of leases expired a day ago. Storage is called
        outside the loop's lock: NextCase and CheckLease never wait for it. The selector runs this after an annotation
        event and at each reconcile."""
        now = self.clock()
        with self._lock:
            cases, self._uncollected = self._uncollected, set()
            sweep = self._swept_at is None or now - self._swept_at >= DRAFT_SWEEP_S
            done = set(self.annotated) if sweep else set()
        try:
            if sweep:
                cases |= set(self.pool.drafted_cases()) & done
                self.pool.collect_sessions(done, now - SESSION_RECORD_KEEP_S)
                self._swept_at = now
        except SaimError as exc:
            log.warning("drafts not listed (%s)", exc)
        for case in sorted(cases):
            try:
                self.pool.collect_drafts(case)
            except SaimError as exc:  # housekeeping: the next call tries again
                log.warning("drafts of %s not collected (%s)", case, exc)
                with self._lock:
                    self._uncollected.add(case)

    def _open_immediately(self, completed: Batch) -> None:
        """SAIM_NEXT_BATCH=immediate: the next batch opens now, from the current scores, while `completed` trains.
        If it cannot be stored, the completed batch stays the open one and the next opens with its model."""
        self.previous = completed
        try:
            opened = self._open_next()
        except Exception as exc:
            log.warning("batch %d not opened early (%s): it opens with the model", completed.iteration + 1, exc)
            self.batch, self.previous, self._dirty = completed, None, False
            return
        if opened is None:
            self.previous = None

    def _submitted(self, case: str) -> bool:
        """Annotation stored but its event not handled yet: storage is the system of record, so never hand the
        case out again (its event will complete it)."""
        if self.overlap > 1:
            return case in self.annotated or len(self.pool.raters(case)) >= self.overlap
        return case in self.annotated or self.pool.store.exists(provenance_key(case))

    def _rated_by(self, batch: Batch, case: str, annotator: str) -> bool:
        if self.overlap == 1:
            return False
        return annotator in batch.raters.get(case, []) or annotator in self.pool.raters(case)

    def _expire_leases(self, batch: Batch) -> None:
        """An expired or abandoned lease returns its case to the queue."""
        now = self.clock()
        for case in [c for c, t in batch.expires.items() if t < now and c not in batch.done]:
            log.info("lease of %s by %s expired; case returns to the queue", case, batch.assigned.get(case))
            batch.assigned.pop(case, None)
            batch.leases.pop(case, None)
            batch.expires.pop(case, None)

    def next_case(self, annotator: str) -> tuple[str, int, str, str]:
        """(case, iteration, lease id, model version) for this annotator: its own unfinished case first (lease
        renewed), else the best-scored free case of the batch under a new lease."""
        with self._lock:
            batch = self.batch
            if batch is None:
                raise FailedPrecondition("no batch is open yet (waiting for a model)")
            self._expire_leases(batch)
            open_cases = [c for c in batch.cases if c not in batch.done and not self._submitted(c)]
            mine = [c for c in open_cases if batch.assigned.get(c) == annotator]
            free = [c for c in open_cases if c not in batch.assigned and not self._rated_by(batch, c, annotator)]
            if not mine and not free:
                state = "complete" if self.complete() else "waiting for the next model"
                raise FailedPrecondition(f"batch {batch.iteration} has no free case ({state})")
            case = (mine or free)[0]
            if not mine:
                batch.assigned[case] = annotator
                batch.leases[case] = uuid.uuid4().hex
            batch.expires[case] = self.clock() + self.lease_ttl_s
            self._save()
            return case, batch.iteration, batch.leases[case], batch.model_version

    def renew_lease(self, case: str, lease_id: str, annotator: str) -> Batch:
        """Check that `annotator` holds `lease_id` on `case` and extend it (annotator activity renews the lease).
        PermissionDenied for a lease that is someone else's; FailedPrecondition for one that has expired."""
        with self._lock:
            batch = self.batch
            if case not in self.pool.splits.pool:
                raise NotFound(f"case {case!r} is not in the annotation pool")
            if batch is None or case not in batch.cases:
                raise PermissionDenied(f"case {case!r} is not in the open batch")
            self._expire_leases(batch)
            if batch.leases.get(case) != lease_id:
                if batch.assigned.get(case) not in (None, annotator):
                    raise PermissionDenied(f"case {case!r} is leased to another annotator")
                raise FailedPrecondition(f"lease {lease_id!r} on case {case!r} has expired or is unknown")
            if batch.assigned.get(case) != annotator:
                raise PermissionDenied(f"case {case!r} is not leased to {annotator!r}")
            batch.expires[case] = self.clock() + self.lease_ttl_s
            self._save()
            return batch

    def lease_expiry(self, case: str) -> float:
        """When the case's lease runs out (unix time); 0 when the case holds no lease."""
        with self._lock:
            return self.batch.expires.get(case, 0.0) if self.batch is not None else 0.0

    def progress(self) -> dict[str, dict[str, int]]:
        """Per-annotator progress in the open batch: cases leased now and cases submitted."""
        with self._lock:
            batch = self.batch
            out: dict[str, dict[str, int]] = {}
            if batch is None:
                return out
            for case, who in batch.assigned.items():
                entry = out.setdefault(who, {"leased": 0, "submitted": 0})
                entry["submitted" if case in batch.done or self._submitted(case) else "leased"] += 1
            return out
