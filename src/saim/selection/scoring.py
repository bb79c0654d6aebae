"""Scoring the unannotated pool under one model version: in the selector's own process, or sharded over scorer
workers through Kafka.

Either way the result is one `ScoreTable` stamped with the model version that produced every score in it, stored as
`scores/{version}.json` (a restarted selector reads it back instead of rescoring).

Sharded (`SAIM_SCORING=sharded`): the pool is split into P parts (P = the scoring topic's partitions); the selector
sends part k to partition k of `saim.scoring.requested`. Scorer workers (`python -m services.scorer`) form
one consumer group, so each holds some partitions; a worker scores its part and writes
`scores/{version}/part-{k}.json`, then commits. The selector merges when every part of the plan is present with
exactly the planned cases, version and strategy, and sends the missing parts again when none arrived for a while.
A killed worker never committed the part in hand: the group's rebalance gives its partitions to the others, which
score it again. A part already stored with the same cases is not scored twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from saim.errors import NotFound, SaimError
from saim.registry.live import ServedModel
from saim.selection.strategies import SelectionStrategy, score_all
from saim.storage.pool import DECODE_WORKERS, PoolStore

log = logging.getLogger(__name__)


def scores_key(version: str) -> str:
    """Where the selection scores a model version gave the pool are stored."""
    return f"scores/{version}.json"


def part_key(version: str, part: int) -> str:
    """Where a scorer worker stores its part of a version's scores."""
    return f"scores/{version}/part-{part:03d}.json"


@dataclass
class ScoreTable:
    version: str
    scores: dict[str, float]
    seconds: float
    slices: int
    failed: dict[str, str] = field(default_factory=dict)  # case -> why it could not be decoded (never selected)
    # case -> one score per foreground class, for a strategy that picks per class (SelectionStrategy.per_class)
    class_scores: dict[str, list[float]] = field(default_factory=dict)

    def merged(self, more: ScoreTable) -> ScoreTable:
        """This table with `more`'s scores added (series added to the pool), under `more`'s version."""
        return ScoreTable(
            more.version,
            {**self.scores, **more.scores},
            self.seconds + more.seconds,
            self.slices + more.slices,
            {**self.failed, **more.failed},
            {**self.class_scores, **more.class_scores},
        )

    def pick(self, strategy: SelectionStrategy, cases: set[str], n: int, round: int) -> list[str]:
        """The strategy's choice of n among `cases` from this table (the top n for most strategies)."""
        candidates = {c: s for c, s in self.scores.items() if c in cases}
        per_class = {c: v for c, v in self.class_scores.items() if c in candidates}
        return strategy.pick(candidates, n, per_class, round)

    def covers(self, cases: list[str]) -> bool:
        return set(cases) <= set(self.scores) | set(self.failed)


FailureReport = Callable[[str, SaimError], None]  # (case, error) of a series that failed to decode


SCORING_GROUP = 96  # slices scored together: 3 forward batches of 32, so a short series does not make a short batch


def score_pool(
    pool: PoolStore,
    strategy: SelectionStrategy,
    model: ServedModel,
    cases: list[str],
    workers: int = DECODE_WORKERS,
    group_slices: int = SCORING_GROUP,
    report: FailureReport | None = None,
) -> ScoreTable:
    """Score `cases` under `model`, streaming: series are decoded by `workers` threads ahead of the model and scored
    in groups of at least `group_slices` slices (mostly full batches however short the series); none is held beyond
    the pool's cache budget and the group in hand. A series that fails to decode is left out, listed in the table's
    `failed` and handed to `report`: one broken series never stops the pool's scoring."""
    started = time.perf_counter()
    scores: dict[str, float] = {}
    class_scores: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    slices = 0
    group: dict = {}
    held = 0

    def skip(case: str, exc: SaimError) -> None:
        log.warning("series %s not scored: %s", case, exc)
        failed[case] = str(exc)
        if report is not None:
            report(case, exc)

    for series in pool.iter_series(cases, workers, skip):
        group[series.case] = series.images
        held += series.num_slices
        if held >= group_slices:
            _score_group(strategy, model, group, scores, class_scores)
            slices, group, held = slices + held, {}, 0
    if group:
        _score_group(strategy, model, group, scores, class_scores)
        slices += held
    return ScoreTable(model.version, scores, time.perf_counter() - started, slices, failed, class_scores)


def _score_group(
    strategy: SelectionStrategy, model: ServedModel, group: dict, scores: dict, class_scores: dict
) -> None:
    """One group's scores into `scores` (and, for a strategy that picks per class, its per-class ones)."""
    more, per_class = score_all(strategy, model.predictor, group)
    scores.update(more)
    class_scores.update(per_class)


def split_parts(cases: list[str], parts: int) -> list[list[str]]:
    """The plan: sorted cases dealt round-robin into `parts` parts (equal within one series; the same pool gives the
    same plan in every process)."""
    ordered = sorted(cases)
    return [ordered[k::parts] for k in range(parts)]


def part_document(table: ScoreTable, strategy: str, part: int, parts: int, cases: list[str], scorer: str) -> dict:
    return {
        "model_version": table.version,
        "strategy": strategy,
        "part": part,
        "parts": parts,
        "cases": sorted(cases),
        "scores": table.scores,
        "class_scores": table.class_scores,
        "failed": table.failed,
        "seconds": table.seconds,
        "slices": table.slices,
        "scorer": scorer,
    }


def stored_part(store, version: str, strategy: str, part: int, parts: int, cases: list[str]) -> dict | None:
    """The stored part when it is exactly this request's (version, strategy, plan and cases), else None."""
    try:
        doc = store.get_json(part_key(version, part))
    except NotFound:
        return None
    same = (
        doc.get("model_version") == version
        and doc.get("strategy") == strategy
        and doc.get("parts") == parts
        and doc.get("cases") == sorted(cases)
        and set(doc.get("scores", {})) | set(doc.get("failed", {})) == set(cases)
    )
    return doc if same else None


class Scoring(Protocol):
    def score(self, model: ServedModel, cases: list[str]) -> ScoreTable: ...


class LocalScoring:
    """Scores in the calling process (the selector's scoring thread)."""

    def __init__(
        self,
        pool: PoolStore,
        strategy: SelectionStrategy,
        workers: int = DECODE_WORKERS,
        report: FailureReport | None = None,
    ):
        self.pool, self.strategy, self.workers, self.report = pool, strategy, workers, report

    def score(self, model: ServedModel, cases: list[str]) -> ScoreTable:
        return score_pool(self.pool, self.strategy, model, cases, self.workers, report=self.report)


class ShardedScoring:
    """Sends the parts of a rescoring to the scorer workers and waits for all of them (module docstring).

    `publisher`: saim.events.EventPublisher; `store`: the object store the workers write to."""

    def __init__(
        self,
        store,
        publisher,
        strategy: SelectionStrategy,
        parts: int,
        resend_after_s: float = 300.0,
        poll_s: float = 0.5,
        clock=time.monotonic,
        sleep=time.sleep,
    ):
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts}")
        self.store, self.publisher, self.strategy, self.parts = store, publisher, strategy, parts
        self.resend_after_s, self.poll_s, self.clock, self.sleep = resend_after_s, poll_s, clock, sleep

    def _request(self, version: str, part: int, cases: list[str]) -> None:
        from saim.events import SCORING_REQUESTED, new_meta
        from saim.v1 import events_pb2

        event = events_pb2.ScoringRequested(
            meta=new_meta("selector"),
            model_version=version,
            strategy=self.strategy.name,
            part=part,
            parts=self.parts,
            case_ids=cases,
        )
        self.publisher.publish(SCORING_REQUESTED, event, key=f"{version}/{part}", partition=part)

    def score(self, model: ServedModel, cases: list[str]) -> ScoreTable:
        started = time.perf_counter()
        version, name = model.version, self.strategy.name
        plan = {k: p for k, p in enumerate(split_parts(cases, self.parts)) if p}
        found: dict[int, dict] = {}
        for k, p in plan.items():  # a restarted selector: parts written before it stopped count
            if (doc := stored_part(self.store, version, name, k, self.parts, p)) is not None:
                found[k] = doc
        for k in sorted(set(plan) - set(found)):
            self._request(version, k, plan[k])
        log.info(
            "scoring %d series under %s in %d parts (%d stored already)", len(cases), version, len(plan), len(found)
        )
        last_progress = self.clock()
        while len(found) < len(plan):
            self.sleep(self.poll_s)
            present = set(self.store.list(f"scores/{version}/"))
            for k in sorted(set(plan) - set(found)):
                if part_key(version, k) not in present:
                    continue
                doc = stored_part(self.store, version, name, k, self.parts, plan[k])
                if doc is not None:
                    found[k] = doc
                    last_progress = self.clock()
            if len(found) < len(plan) and self.clock() - last_progress > self.resend_after_s:
                missing = sorted(set(plan) - set(found))
                log.warning("no part of %s for %.0f s: sending parts %s again", version, self.resend_after_s, missing)
                for k in missing:
                    self._request(version, k, plan[k])
                last_progress = self.clock()
        scores = {c: float(s) for doc in found.values() for c, s in doc["scores"].items()}
        failed = {c: str(why) for doc in found.values() for c, why in doc.get("failed", {}).items()}
        slices = sum(int(doc.get("slices", 0)) for doc in found.values())
        per_class = {c: [float(x) for x in v] for doc in found.values() for c, v in doc.get("class_scores", {}).items()}
        return ScoreTable(version, scores, time.perf_counter() - started, slices, failed, per_class)
