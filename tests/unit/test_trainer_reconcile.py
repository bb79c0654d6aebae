from types import SimpleNamespace

from saim.registry.versions import ModelRegistry, VersionStatus
from saim.rpc.server import Health
from saim.selection.loop import SELECTOR_STATE, Batch
from services.trainer.server import TrainerApp, TrainerDeps
from tests.unit.fakes import MemoryStore


def _app(store):
    deps = TrainerDeps(
        pipeline=SimpleNamespace(pool=SimpleNamespace(store=store)), registry=ModelRegistry(store), publisher=None
    )
    return TrainerApp(
        SimpleNamespace(kafka_bootstrap="127.0.0.1:9", reconcile_s=10.0), deps, Health("saim.v1.TrainerService")
    )


def _store_batch(store, iteration: int, cases: list[str], done: list[str]) -> None:
    store.put_json(SELECTOR_STATE, {"batch": Batch(iteration, cases, "v0000", done=set(done)).to_json()})


def _queued(app) -> list[int]:
    return [app.queue.get_nowait()[0] for _ in range(app.queue.qsize())]


def test_completed_batch_without_a_model_is_queued():
    store = MemoryStore()
    _store_batch(store, 2, ["a", "b"], done=["a", "b"])
    app = _app(store)
    app.state.planned = {0, 1, 2}
    app.reconcile()
    assert _queued(app) == []  # already trained or queued
    app.state.planned = {0, 1}
    app.reconcile()
    app.reconcile()
    assert _queued(app) == [2]  # once


def test_open_batch_or_no_state_queues_nothing():
    store = MemoryStore()
    app = _app(store)
    app.reconcile()
    _store_batch(store, 1, ["a", "b"], done=["a"])
    app.reconcile()
    assert _queued(app) == []


def test_undecided_version_of_a_killed_run_is_abandoned_and_its_iteration_retrained():
    store = MemoryStore()
    reg = ModelRegistry(store)
    for v, it in (("v0000", 0), ("v0001", 1)):
        store.put_json(reg.metadata_key(v), {"version": v, "iteration": it})
    reg.set_current("v0000")
    _store_batch(store, 1, ["a"], done=["a"])
    app = _app(store)
    assert app._trained_iterations() == {0}  # v0001 was written but its promotion never decided
    assert reg.status("v0001") is VersionStatus.ABANDONED and reg.current_version() == "v0000"
    app.state.planned = app._trained_iterations()
    assert reg.status("v0001") is VersionStatus.ABANDONED  # marking is idempotent
    app.reconcile()
    assert _queued(app) == [1]


def test_a_completed_batch_behind_an_immediately_opened_one_is_queued():
    store = MemoryStore()  # SAIM_NEXT_BATCH=immediate: batch 3 opened while batch 2 had no model yet
    state = {
        "previous": Batch(2, ["a", "b"], "v0001", done={"a", "b"}).to_json(),
        "batch": Batch(3, ["c", "d"], "v0001").to_json(),
    }
    store.put_json(SELECTOR_STATE, state)
    app = _app(store)
    app.state.planned = {0, 1}
    app.reconcile()
    assert _queued(app) == [2]
