"""Sharded scoring, the selector's side (saim.selection.scoring.ShardedScoring): the plan, the requests, the merge, the
resend. The scorer workers and the broker are real in tests/integration/test_scoring.py."""

import numpy as np

from saim.events import SCORING_REQUESTED
from saim.registry.live import ServedModel
from saim.selection.scoring import ScoreTable, part_document, part_key, split_parts, stored_part
from saim.selection.scoring import ShardedScoring as Sharded
from saim.selection.strategies import EntropyStrategy
from tests.unit.fakes import MemoryStore

CASES = [f"case_{i:02d}" for i in range(11)]
MODEL = ServedModel("v0003", predictor=None, metadata={})


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


class Workers:
    """The scorer workers' effect, done when a request is published: part k's scores (one per case) are stored,
    except for the parts in `lost` (a worker killed before writing), which are lost the first `lost[k]` times."""

    def __init__(self, store, lost=None):
        self.store, self.lost, self.requests = store, dict(lost or {}), []

    def publish(self, topic, event, key=None, partition=None):
        assert topic is SCORING_REQUESTED and partition == event.part
        self.requests.append((event.model_version, event.part, list(event.case_ids)))
        if self.lost.get(event.part, 0) > 0:
            self.lost[event.part] -= 1
            return
        cases = list(event.case_ids)
        per_class = {c: [float(c[-2:]), 1.0] for c in cases} if event.strategy == "clasp_pe" else {}
        table = ScoreTable(event.model_version, {c: float(c[-2:]) for c in cases}, 1.0, 3 * len(cases), {}, per_class)
        doc = part_document(table, event.strategy, event.part, event.parts, cases, "worker")
        self.store.put_json(part_key(event.model_version, event.part), doc)


def test_the_plan_deals_every_case_once_in_the_same_order_everywhere():
    plan = split_parts(list(reversed(CASES)), 4)
    assert plan[0] == ["case_00", "case_04", "case_08"] and [len(p) for p in plan] == [3, 3, 3, 2]
    assert sorted(c for p in plan for c in p) == CASES
    assert split_parts(CASES[:2], 4) == [["case_00"], ["case_01"], [], []]


def test_every_part_is_requested_on_its_partition_and_merged_under_one_version():
    store, clock = MemoryStore(), Clock()
    workers = Workers(store)
    table = Sharded(store, workers, EntropyStrategy(), parts=4, clock=clock, sleep=clock.sleep).score(MODEL, CASES)
    assert sorted(p for _, p, _ in workers.requests) == [0, 1, 2, 3]
    assert {v for v, _, _ in workers.requests} == {"v0003"}
    assert table.version == "v0003" and table.scores == {c: float(c[-2:]) for c in CASES}
    assert table.slices == 3 * len(CASES)


def test_empty_parts_are_not_requested():
    store, clock = MemoryStore(), Clock()
    workers = Workers(store)
    table = Sharded(store, workers, EntropyStrategy(), parts=8, clock=clock, sleep=clock.sleep).score(MODEL, CASES[:3])
    assert [p for _, p, _ in workers.requests] == [0, 1, 2] and set(table.scores) == set(CASES[:3])


def test_stored_parts_are_reused_and_stale_ones_are_not():
    store, clock = MemoryStore(), Clock()
    plan = split_parts(CASES, 4)
    entropy = EntropyStrategy().name
    good = ScoreTable("v0003", {c: 0.5 for c in plan[0]}, 1.0, 3)
    store.put_json(part_key("v0003", 0), part_document(good, entropy, 0, 4, plan[0], "before a restart"))
    stale = ScoreTable("v0003", {c: 9.0 for c in plan[1][:-1]}, 1.0, 3)  # a plan made before the pool changed
    store.put_json(part_key("v0003", 1), part_document(stale, entropy, 1, 4, plan[1][:-1], "old"))
    other = ScoreTable("v0002", {c: 9.0 for c in plan[2]}, 1.0, 3)  # another version's scores under this key
    store.put_json(part_key("v0003", 2), part_document(other, entropy, 2, 4, plan[2], "old"))
    assert stored_part(store, "v0003", entropy, 0, 4, plan[0]) is not None
    assert stored_part(store, "v0003", entropy, 1, 4, plan[1]) is None
    assert stored_part(store, "v0003", entropy, 2, 4, plan[2]) is None
    assert stored_part(store, "v0003", "random", 0, 4, plan[0]) is None

    workers = Workers(store)
    table = Sharded(store, workers, EntropyStrategy(), parts=4, clock=clock, sleep=clock.sleep).score(MODEL, CASES)
    assert sorted(p for _, p, _ in workers.requests) == [1, 2, 3]
    assert {c: table.scores[c] for c in plan[0]} == {c: 0.5 for c in plan[0]}
    assert all(table.scores[c] == float(c[-2:]) for p in plan[1:] for c in p)  # no 9.0: nothing stale merged


def test_a_lost_part_is_requested_again_after_the_resend_delay_and_only_it():
    store, clock = MemoryStore(), Clock()
    workers = Workers(store, lost={2: 1})
    sharded = Sharded(store, workers, EntropyStrategy(), parts=4, resend_after_s=60, clock=clock, sleep=clock.sleep)
    table = sharded.score(MODEL, CASES)
    assert [p for _, p, _ in workers.requests[4:]] == [2]
    assert 60 < clock.t <= 62 and set(table.scores) == set(CASES)


def test_a_part_with_a_series_that_failed_to_decode_is_complete_and_the_failure_is_merged():
    store, clock = MemoryStore(), Clock()
    plan = split_parts(CASES, 2)
    broken = plan[1][0]
    entropy = EntropyStrategy().name
    for k, cases in enumerate(plan):
        scored = [c for c in cases if c != broken]
        table = ScoreTable("v0003", {c: 0.5 for c in scored}, 1.0, 3, {broken: "not a NIfTI"} if k == 1 else {})
        store.put_json(part_key("v0003", k), part_document(table, entropy, k, 2, cases, "worker"))
    assert stored_part(store, "v0003", entropy, 1, 2, plan[1]) is not None  # complete: nothing to resend
    workers = Workers(store)
    table = Sharded(store, workers, EntropyStrategy(), parts=2, clock=clock, sleep=clock.sleep).score(MODEL, CASES)
    assert workers.requests == [] and table.failed == {broken: "not a NIfTI"}
    assert set(table.scores) == set(CASES) - {broken} and table.covers(CASES)


def test_per_class_scores_travel_through_the_parts_and_the_pool_scoring():
    """A strategy that picks per class (ClaSP PE) gets its per-class scores back from the workers' parts, and the
    in-process scoring of a group keeps them beside the summary score."""
    from saim.selection.scoring import _score_group
    from saim.selection.strategies import make_strategy

    store, clock = MemoryStore(), Clock()
    strategy = make_strategy("clasp_pe")
    table = Sharded(store, Workers(store), strategy, parts=3, clock=clock, sleep=clock.sleep).score(MODEL, CASES)
    assert table.class_scores == {c: [float(c[-2:]), 1.0] for c in CASES}

    class PerClass:
        def class_entropy(self, slices):
            return np.stack([slices.mean(axis=(1, 2)), 2 * slices.mean(axis=(1, 2))], axis=1)

    scores, class_scores = {}, {}
    group = {"a": np.ones((2, 4, 4)), "b": np.zeros((3, 4, 4))}
    _score_group(strategy, ServedModel("v1", predictor=PerClass(), metadata={}), group, scores, class_scores)
    assert class_scores == {"a": [1.0, 2.0], "b": [0.0, 0.0]} and scores == {"a": 3.0, "b": 0.0}
