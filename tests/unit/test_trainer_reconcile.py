from types import SimpleNamespace

from saim.rpc.server import Health
from saim.storage import ModelRegistry
from services.trainer.server import TrainerApp, TrainerDeps
from tests.unit.fakes import MemoryStore


class _Pool:
    def __init__(self, store):
        self.store = store

    def selector_state(self):
        from saim.pool import PoolStore

        return PoolStore.selector_state(self)


def _app(store):
    deps = TrainerDeps(pipeline=SimpleNamespace(pool=_Pool(store)), registry=ModelRegistry(store), publisher=None)
    return TrainerApp(
        SimpleNamespace(kafka_bootstrap="127.0.0.1:9", reconcile_s=10.0), deps, Health("saim.v1.TrainerService")
    )


def test_completed_batch_without_a_model_is_queued_at_start_up():
    store = MemoryStore()
    store.put_json("state/selector.json", {"batch": {"iteration": 2, "cases": ["a", "b"], "done": ["a", "b"]}})
    app = _app(store)
    app.state.planned = {0, 1}
    assert app._unfinished_batch() == 2
    app.state.planned = {0, 1, 2}
    assert app._unfinished_batch() is None


def test_open_batch_or_no_state_queues_nothing():
    store = MemoryStore()
    assert _app(store)._unfinished_batch() is None
    store.put_json("state/selector.json", {"batch": {"iteration": 1, "cases": ["a", "b"], "done": ["a"]}})
    assert _app(store)._unfinished_batch() is None


def test_undecided_version_of_a_killed_run_is_abandoned_and_its_iteration_retrained():
    store = MemoryStore()
    reg = ModelRegistry(store)
    for v, it in (("v0000", 0), ("v0001", 1)):
        store.put_json(reg.metadata_key(v), {"iteration": it})
    reg.set_current("v0000")
    store.put_json("state/selector.json", {"batch": {"iteration": 1, "cases": ["a"], "done": ["a"]}})
    app = _app(store)
    assert app._trained_iterations() == {0}  # v0001 was written but its promotion never decided
    assert reg.status("v0001") == "abandoned" and reg.current_version() == "v0000"
    app.state.planned = app._trained_iterations()
    assert reg.status("v0001") == "abandoned"  # marking is idempotent
    app.reconcile()
    assert app.queue.get_nowait()[0] == 1
