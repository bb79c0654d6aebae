"""Sharded scoring with real parts: the tansu broker's consumer group, moto S3 and two scorer worker processes; one is
killed -9 in the middle of its share."""

from __future__ import annotations

import threading

from saim.data import phantom
from saim.events import MODEL_PUBLISHED, SCORING_PARTS, EventPublisher, new_meta
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.registry.live import ServedModel
from saim.registry.versions import ModelRegistry
from saim.selection.scoring import ShardedScoring, part_key, scores_key, split_parts
from saim.selection.strategies import EntropyStrategy
from saim.stack.local import LocalStack
from saim.storage.pool import PoolStore
from saim.v1 import events_pb2, selector_pb2, selector_pb2_grpc
from tests.waiting import poll

SIZE = 128  # 4 x the work of the demo's 64 px per slice: a worker's share takes seconds, so the kill lands inside it


def scorer_status(stack: LocalStack, name: str):
    stub = selector_pb2_grpc.ScorerServiceStub(stack.channel(name))
    return stub.GetStatus(selector_pb2.GetScorerStatusRequest(), timeout=10)


def test_a_killed_scorers_parts_are_taken_over_and_the_table_is_whole_and_of_one_version(tmp_path):
    data = phantom.generate(tmp_path / "dataset", num_series=36, depth=16, size=96, seed=3)
    stack = LocalStack(
        tmp_path / "stack",
        settings={
            "SAIM_MODEL__IMAGE_SIZE": str(SIZE),
            "SAIM_DECODE_WORKERS": "1",
            "SAIM_SCORING": "sharded",
            "SAIM_SELECTION": "entropy",  # the parts scored below are the selector's own: stored parts count
        },
    )
    publisher = None
    try:
        stack.start_broker()
        stack.start_s3()
        stack.import_dataset(data, seed=0)
        store = stack.store()
        config = ModelConfig(classes=phantom.CLASSES, image_size=SIZE)
        version = ModelRegistry(store).publish(InteractivePredictor(config), iteration=0).version
        cases = list(PoolStore(store, SIZE).splits.pool)
        plan = split_parts(cases, SCORING_PARTS)
        for i in range(2):
            stack.start_scorer(i)
        stack.wait_serving(stack.scorers(), timeout_s=120)

        def both_hold_partitions():
            held = [set(scorer_status(stack, name).partitions) for name in stack.scorers()]
            return all(held) and set.union(*held) == set(range(SCORING_PARTS)) and not set.intersection(*held)

        poll(both_hold_partitions, 60, "the two scorers to share the scoring topic's partitions")
        victim_parts = set(scorer_status(stack, "scorer-0").partitions)

        publisher = EventPublisher(stack.kafka_bootstrap, "test-selector")
        sharded = ShardedScoring(store, publisher, EntropyStrategy(), SCORING_PARTS, resend_after_s=120)
        result = {}
        scoring = threading.Thread(
            target=lambda: result.update(table=sharded.score(ServedModel(version, None, {}), cases))
        )
        scoring.start()

        def written_by(scorer: str) -> set[int]:
            return {
                k
                for k in range(SCORING_PARTS)
                if store.exists(part_key(version, k)) and store.get_json(part_key(version, k))["scorer"] == scorer
            }

        poll(lambda: written_by("local-scorer-0"), 120, "scorer-0's first part")
        stack.kill("scorer-0")  # kill -9 with parts of its share not yet scored
        done_by_victim = written_by("local-scorer-0")
        assert done_by_victim < victim_parts, "the victim finished its share before the kill: make the parts larger"

        scoring.join(timeout=300)
        assert not scoring.is_alive(), "the merge never completed"
        table = result["table"]
        assert table.version == version and set(table.scores) == set(cases)  # whole
        for k, part in enumerate(plan):  # every stored part is of this version and the planned cases
            doc = store.get_json(part_key(version, k))
            assert doc["model_version"] == version and doc["cases"] == sorted(part) and doc["parts"] == SCORING_PARTS
        assert victim_parts - done_by_victim <= written_by("local-scorer-1")  # taken over by the survivor
        assert set(scorer_status(stack, "scorer-1").partitions) == set(range(SCORING_PARTS))
        assert not store.exists(scores_key(version))  # the selector's loop stores the merged table, not this call

        # The selector itself in sharded mode: at start it merges the stored parts of the current version (none is
        # scored again); a new version's event makes it send the parts, which the surviving worker scores.
        scored_before = scorer_status(stack, "scorer-1").parts_scored
        stack.start_service("selector")
        stack.wait_serving(["selector"], timeout_s=120)
        selector = selector_pb2_grpc.SelectorServiceStub(stack.channel("selector"))
        status = selector.GetStatus(selector_pb2.GetStatusRequest(), timeout=10)
        assert status.scores_version == version and status.iteration == 1 and len(status.batch) > 0
        assert scorer_status(stack, "scorer-1").parts_scored == scored_before  # opened on the stored parts
        newer = ModelRegistry(store).publish(InteractivePredictor(config), iteration=1).version
        publisher.publish(
            MODEL_PUBLISHED,
            events_pb2.ModelPublished(meta=new_meta("test"), version=newer, iteration=1, promoted=True),
        )
        poll(
            lambda: selector.GetStatus(selector_pb2.GetStatusRequest(), timeout=10).scores_version == newer,
            300,
            "the selector's sharded rescoring under the new version",
        )
        scores = selector.GetScores(selector_pb2.GetScoresRequest(), timeout=10).scores
        assert {s.model_version for s in scores} == {newer}
        assert {s.case_id for s in scores} == set(cases)  # nothing annotated yet: the whole pool
        assert scorer_status(stack, "scorer-1").parts_scored > scored_before
        assert store.get_json(scores_key(newer))["model_version"] == newer
    finally:
        if publisher is not None:
            publisher.close()
        stack.stop()
