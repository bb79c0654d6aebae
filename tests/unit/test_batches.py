import threading
import time

import numpy as np
import pytest

from saim.data import phantom
from saim.data.dataset import NnUNetDataset
from saim.data.splits import Splits
from saim.errors import Conflict, FailedPrecondition, PermissionDenied, Unavailable
from saim.model.predictor import InteractivePredictor
from saim.registry.live import ServedModel
from saim.selection.loop import SELECTOR_STATE, SelectionLoop
from saim.selection.strategies import EntropyStrategy
from saim.storage.pool import PoolStore, import_dataset, series_bytes
from tests.unit.fakes import MemoryStore


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return NnUNetDataset(phantom.generate(tmp_path_factory.mktemp("ph"), num_series=8, depth=3, size=32, seed=0))


@pytest.fixture
def pool(dataset):
    store = MemoryStore()
    cases = dataset.cases
    import_dataset(store, dataset, Splits(tuple(cases[:1]), tuple(cases[1:2]), tuple(cases[2:3]), tuple(cases[3:])))
    return PoolStore(store, image_size=32, max_slices=2)


@pytest.fixture(scope="module")
def model():
    from saim.model.config import ModelConfig

    return ServedModel(
        "v0000", InteractivePredictor(ModelConfig(classes=phantom.CLASSES, image_size=32, encoder="resnet18")), {}
    )


def test_pool_labels_are_withheld(pool):
    assert all(pool.store.exists(f"dataset/labelsTr/{c}.nii.gz") for c in pool.splits.initial + pool.splits.test)
    assert not any(pool.store.exists(f"dataset/labelsTr/{c}.nii.gz") for c in pool.splits.pool)


def test_first_model_opens_batch_of_top_scored_cases(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    batch = loop.on_model(model, 0)
    assert batch.iteration == 1 and len(batch.cases) == 2 and batch.model_version == "v0000"
    ranked = sorted(loop.scores.scores, key=lambda c: (-loop.scores.scores[c], c))
    assert batch.cases == ranked[:2]
    stored = pool.store.get_json("scores/v0000.json")
    assert stored["model_version"] == "v0000" and set(stored["scores"]) == set(pool.splits.pool)
    assert loop.on_model(model, 0) is None and loop.batch is batch  # replay: nothing changes


def test_work_distribution_and_exactly_once_completion(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    loop.on_model(model, 0)
    a = loop.next_case("alice")
    b = loop.next_case("bob")
    assert a[0] != b[0] and a[1] == b[1] == 1
    assert loop.next_case("alice") == a  # its own unfinished case again
    with pytest.raises(FailedPrecondition, match="batch 1 has no free case"):
        loop.next_case("carol")
    assert loop.renew_lease(a[0], a[2], "alice").iteration == 1
    with pytest.raises(PermissionDenied, match="leased to another annotator"):
        loop.renew_lease(a[0], "forged", "bob")
    with pytest.raises(PermissionDenied, match="not leased to 'bob'"):
        loop.renew_lease(a[0], a[2], "bob")
    assert loop.progress() == {"alice": {"leased": 1, "submitted": 0}, "bob": {"leased": 1, "submitted": 0}}
    assert loop.on_annotation(a[0], 1) is None
    assert loop.on_annotation(a[0], 1) is None  # duplicate event
    completed = loop.on_annotation(b[0], 1)
    assert completed is not None and completed.complete
    assert loop.on_annotation(b[0], 1) is None  # replay after completion: no second completion


def test_next_batch_excludes_annotated_and_budget_ends_the_loop(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    first = loop.on_model(model, 0)
    for case in first.cases:
        loop.on_annotation(case, 1)
    newer = ServedModel("v0001", model.predictor, {})
    second = loop.on_model(newer, 1)
    assert second.iteration == 2 and not set(second.cases) & set(first.cases)
    assert set(loop.scores.scores) == set(pool.splits.pool) - set(first.cases)
    for case in second.cases:
        loop.on_annotation(case, 2)
    assert loop.complete()
    assert loop.on_model(ServedModel("v0002", model.predictor, {}), 2) is None


def test_immediate_next_batch_opens_on_completion_from_the_current_scores(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=3, next_batch="immediate")
    first = loop.on_model(model, 0)
    assert loop.on_annotation(first.cases[0], 1) is None
    completed = loop.on_annotation(first.cases[1], 1)
    assert completed is first and completed.complete  # announced as before: the trainer trains iteration 1
    second = loop.batch
    assert second.iteration == 2 and second.model_version == "v0000" and not set(second.cases) & set(first.cases)
    assert loop.next_case("alice")[1] == 2  # annotators work on while batch 1 trains
    state = pool.store.get_json("state/selector.json")
    assert state["previous"]["iteration"] == 1 and state["batch"]["iteration"] == 2  # the trainer finds both
    restarted = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=3, next_batch="immediate")
    assert restarted.previous.iteration == 1 and restarted.batch.iteration == 2

    newer = ServedModel("v0001", model.predictor, {})
    assert loop.on_model(newer, 1) is None  # batch 1's model: a rescoring for the next batch, no batch opened
    assert loop.scores.version == "v0001" and loop.batch is second and loop.previous is None
    for case in second.cases:
        loop.on_annotation(case, 2)
    assert loop.batch.iteration == 3 and loop.batch.model_version == "v0001"


def test_immediate_next_batch_that_cannot_be_stored_opens_with_the_model(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=3, next_batch="immediate")
    first = loop.on_model(model, 0)
    loop.on_annotation(first.cases[0], 1)
    put, saves = pool.store.put_bytes, []

    def second_save_fails(key, data, *args):  # the completion is stored, the early opening is not
        saves.append(key)
        if len(saves) == 2:
            raise Unavailable("object storage unreachable")
        put(key, data, *args)

    pool.store.put_bytes = second_save_fails
    assert loop.on_annotation(first.cases[1], 1) is first
    pool.store.put_bytes = put
    assert loop.batch is first and loop.previous is None and pool.store.get_json("state/selector.json")["batch"]["done"]
    assert loop.on_model(ServedModel("v0001", model.predictor, {}), 1).iteration == 2


def test_restarted_loop_restores_batch_from_storage(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    batch = loop.on_model(model, 0)
    case, _, lease, _ = loop.next_case("alice")
    again = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    assert again.batch.cases == batch.cases
    assert again.renew_lease(case, lease, "alice").iteration == 1


def test_submitted_case_is_not_handed_out_again_before_its_event(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    loop.on_model(model, 0)
    case, _, _, _ = loop.next_case("alice")
    pool.store.put_json(f"annotations/{case}.json", {"annotator": "alice"})  # stored, event still in flight
    other, _, _, _ = loop.next_case("alice")
    assert other != case
    assert loop.on_annotation(case, 1) is None and case in loop.batch.done  # the event still counts it once


def test_expired_lease_returns_the_case_and_activity_renews(pool, model):
    now = [1000.0]
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=1, max_iterations=2, lease_ttl_s=60, clock=lambda: now[0])
    loop.on_model(model, 0)
    case, _, lease, _ = loop.next_case("alice")
    with pytest.raises(FailedPrecondition, match="no free case"):
        loop.next_case("bob")
    now[0] += 50
    loop.renew_lease(case, lease, "alice")  # activity: the lease now runs until 1110
    now[0] += 50
    with pytest.raises(FailedPrecondition, match="no free case"):
        loop.next_case("bob")
    now[0] += 61  # alice vanished
    taken, _, new_lease, _ = loop.next_case("bob")
    assert taken == case and new_lease != lease
    with pytest.raises(PermissionDenied, match="leased to another annotator"):
        loop.renew_lease(case, lease, "alice")
    assert loop.progress() == {"bob": {"leased": 1, "submitted": 0}}


def test_expired_lease_nobody_took_is_a_failed_precondition(pool, model):
    now = [0.0]
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=1, max_iterations=2, lease_ttl_s=10, clock=lambda: now[0])
    loop.on_model(model, 0)
    case, _, lease, _ = loop.next_case("alice")
    now[0] = 11
    with pytest.raises(FailedPrecondition, match="expired"):
        loop.renew_lease(case, lease, "alice")


def test_overlap_needs_distinct_annotators_per_case(pool, model):
    import numpy as np

    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2, overlap=2)
    batch = loop.on_model(model, 0)
    a = loop.next_case("alice")
    b = loop.next_case("bob")
    assert a[0] != b[0]  # concurrent annotators still get different cases
    image, affine = pool.load_volume(a[0])
    labels = np.zeros(image.shape, np.uint8)
    pool.store_submission(a[0], "alice", labels, affine, {"annotator": "alice"}, overlap=2)
    assert pool.store.exists(f"annotations/{a[0]}.json")  # the first rater's copy is the primary
    assert loop.on_annotation(a[0], 1, "alice") is None and a[0] not in batch.done
    with pytest.raises(FailedPrecondition, match="no free case"):
        loop.next_case("alice")  # the other case is bob's; alice never gets the case she already annotated
    c = loop.next_case("carol")
    assert c[0] == a[0] and c[2] != a[2]  # the second rater of alice's case, under a new lease
    pool.store_submission(a[0], "carol", labels, affine, {"annotator": "carol"}, overlap=2)
    assert pool.store.get_json(f"annotations/{a[0]}.json")["annotator"] == "alice"  # the primary stays alice's
    assert pool.raters(a[0]) == {"alice", "carol"}
    assert loop.on_annotation(a[0], 1, "carol") is None and a[0] in batch.done
    again = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2, overlap=2)
    assert a[0] in again.batch.done and b[0] not in again.batch.done  # restored from the raters in the bucket
    loop.on_annotation(b[0], 1, "bob")
    assert loop.on_annotation(b[0], 1, "bob") is None and b[0] not in batch.done  # one rater, even twice
    completed = loop.on_annotation(b[0], 1, "dave")
    assert completed is batch and completed.complete


def test_a_completion_that_could_not_be_stored_is_not_counted(pool, model):
    """Found by the chaos suite: the save failed during an S3 outage, the retried event then found the case done in
    memory, and the completed batch was never stored nor announced; the loop stalled."""
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=1, max_iterations=2)
    batch = loop.on_model(model, 0)
    case = batch.cases[0]
    put = pool.store.put_bytes

    pool.store.put_bytes = _storage_down
    with pytest.raises(Unavailable):
        loop.on_annotation(case, 1, "alice")
    assert case not in loop.batch.done and not loop.batch.complete
    pool.store.put_bytes = put
    assert loop.on_annotation(case, 1, "alice") is loop.batch  # the retried event completes it, exactly once
    assert pool.store.get_json("state/selector.json")["batch"]["done"] == [case]


def test_state_a_failed_save_left_in_memory_is_flushed(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    loop.on_model(model, 0)
    put = pool.store.put_bytes

    pool.store.put_bytes = _storage_down
    with pytest.raises(Unavailable):
        loop.next_case("alice")  # the lease exists in memory; the client saw an error and will ask again
    pool.store.put_bytes = put
    loop.flush()
    assert "alice" in pool.store.get_json("state/selector.json")["batch"]["assigned"].values()


def _storage_down(*args, **kwargs):
    raise Unavailable("object storage unreachable")


class _GatedEntropy(EntropyStrategy):
    """Entropy scoring that waits at the first series until the test opens the gate (a long rescoring)."""

    def __init__(self):
        self.started, self.gate = threading.Event(), threading.Event()

    def score(self, predictor, pool):
        self.started.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().score(predictor, pool)


def test_leases_and_status_keep_answering_while_the_pool_is_rescored(pool, model):
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=3)
    loop.on_model(model, 0)
    case, _, lease, _ = loop.next_case("alice")
    first_table = loop.scores
    loop.strategy = loop.scoring.strategy = gated = _GatedEntropy()
    newer = ServedModel("v0001", model.predictor, {})
    rescoring = threading.Thread(target=loop.on_model, args=(newer, 0))
    rescoring.start()
    try:
        assert gated.started.wait(30)
        started = time.monotonic()
        assert loop.renew_lease(case, lease, "alice").iteration == 1  # CheckLease
        assert loop.next_case("alice")[0] == case  # NextCase
        assert loop.progress() == {"alice": {"leased": 1, "submitted": 0}}  # GetStatus
        assert time.monotonic() - started < 5  # answered while scoring is blocked, not after it
        assert loop.scores is first_table  # the last complete table until the new one is whole
    finally:
        gated.gate.set()
        rescoring.join(30)
    assert loop.scores.version == "v0001" and set(loop.scores.scores) == set(first_table.scores)


class _CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.gets: list[str] = []

    def get_bytes(self, key):
        self.gets.append(key)
        return super().get_bytes(key)


def test_series_cache_is_bounded_by_bytes_and_prefetching_keeps_order(dataset):
    store = _CountingStore()
    cases = dataset.cases
    import_dataset(store, dataset, Splits(tuple(cases[:1]), tuple(cases[1:2]), tuple(cases[2:3]), tuple(cases[3:])))
    one = PoolStore(store, image_size=32, max_slices=2).load_series(cases[3])
    budget_mb = 2.5 * series_bytes(one) / 2**20  # room for two series
    bounded = PoolStore(store, image_size=32, max_slices=2, cache_mb=budget_mb)
    streamed = list(bounded.iter_series(list(cases), workers=3))
    assert [s.case for s in streamed] == list(cases)  # in order, whichever thread finished first
    for s in streamed:
        np.testing.assert_array_equal(s.images, PoolStore(store, 32, 2).load_series(s.case).images)
    kept = {case for case, _ in bounded._cache}
    assert len(kept) == 2 and bounded._cache.currsize <= bounded._cache.maxsize
    evicted = [c for c in cases if c not in kept]
    for case in [*sorted(kept), evicted[0]]:  # the kept ones first: each load of an evicted one evicts another
        store.gets.clear()
        bounded.load_series(case)
        downloaded = [k for k in store.gets if case in k]
        assert len(downloaded) == (0 if case in kept else 1), case  # a cached series costs no download


class _CountingEntropy(EntropyStrategy):
    def __init__(self):
        self.series_scored = 0

    def score(self, predictor, pool):
        self.series_scored += len(pool)
        return super().score(predictor, pool)


def test_a_restarted_selector_reuses_the_stored_scores_of_its_model(pool, model):
    first = _CountingEntropy()
    loop = SelectionLoop(pool, first, batch_size=2, max_iterations=2)
    batch = loop.on_model(model, 0)
    assert first.series_scored == len(pool.splits.pool)
    pool.store.put_json(f"annotations/{batch.cases[0]}.json", {"annotator": "alice"})  # annotated since
    restarted_strategy = _CountingEntropy()
    restarted = SelectionLoop(pool, restarted_strategy, batch_size=2, max_iterations=2)
    restarted.on_model(model, 0)
    assert restarted_strategy.series_scored == 0  # nothing rescored
    unannotated = set(pool.splits.pool) - restarted.annotated
    assert batch.cases[0] not in unannotated
    assert restarted.scores.scores == {c: loop.scores.scores[c] for c in sorted(unannotated)}
    newer = ServedModel("v0001", model.predictor, {})
    restarted.on_model(newer, 0)  # another version: scored anew
    assert restarted_strategy.series_scored == len(unannotated)


def test_the_loops_documents_keep_one_version_and_annotated_cases_leave_no_draft(pool, model):
    """Storage hygiene in a versioned bucket: the loop state and the score table are rewritten in place, and the
    drafts of an annotated case go with every version, a lease's that went to someone else included."""
    from saim.selection.loop import DRAFT_SWEEP_S
    from saim.storage.pool import draft_slice_key

    store, now = pool.store, [time.time()]
    loop = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2, clock=lambda: now[0])
    loop.on_model(model, 0)
    a, b = loop.next_case("alice"), loop.next_case("bob")
    for who, case in (("carol", a[0]), ("alice", a[0]), ("bob", b[0])):  # carol's lease expired, alice got it
        for _ in range(3):
            store.put_bytes(draft_slice_key(case, who, 0), b"a click's slice")
    store.delete(draft_slice_key(b[0], "bob", 0))  # bob's own Submit discarded his draft before the change
    loop.on_annotation(a[0], 1, "alice")
    loop.collect_drafts()  # what the selector does after the annotation event, outside the loop's lock
    assert store.stored_versions(f"drafts/{a[0]}/") == 0  # alice's and carol's: versions and markers
    loop.on_annotation(b[0], 1, "bob")
    loop.collect_drafts()
    assert store.stored_versions(f"drafts/{b[0]}/") == 0
    store.put_bytes(draft_slice_key(a[0], "carol", 1), b"a click after the collection")
    loop.collect_drafts()  # a reconcile before the next sweep: nothing listed
    assert store.stored_versions("drafts/") == 1
    now[0] += DRAFT_SWEEP_S
    loop.collect_drafts()  # the sweep finds it
    assert store.stored_versions("drafts/") == 0
    assert store.stored_versions("state/selector.json") == 1 and store.stored_versions("scores/") == 1


def test_a_deposed_selector_cannot_overwrite_its_successors_state(pool, model):
    """Two selector processes over one bucket (a leader that has not noticed it was deposed, and its successor):
    the state is written only over the state the writer read or wrote last (saim.selection.leader)."""
    old = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)
    old.on_model(model, 0)
    new = SelectionLoop(pool, EntropyStrategy(), batch_size=2, max_iterations=2)  # reads the state old wrote
    fenced: list[bool] = []
    old.on_fenced = lambda: fenced.append(True)
    first = new.next_case("alice")  # the successor moves the state on
    before = pool.store.get_bytes(SELECTOR_STATE)
    with pytest.raises(Conflict):
        old.next_case("bob")  # the deposed one still believes it leads
    assert fenced == [True] and pool.store.get_bytes(SELECTOR_STATE) == before
    old.reload()  # what a standby does when it takes over: start from the stored state
    second = old.next_case("bob")
    assert second[0] != first[0]
    assert pool.store.get_json(SELECTOR_STATE)["batch"]["assigned"] == {first[0]: "alice", second[0]: "bob"}
