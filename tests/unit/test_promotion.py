import pytest

from saim.config import ModelConfig
from saim.errors import NotFound
from saim.model.predictor import InteractivePredictor
from saim.retrain import promotion_decision
from saim.storage import ModelRegistry
from tests.unit.fakes import MemoryStore


def test_first_model_is_promoted():
    assert promotion_decision({"val_miou": 0.1}, None, 0.02) == (True, "first model")


@pytest.mark.parametrize("new, promoted", [(0.70, True), (0.685, True), (0.679, False), (0.40, False)])
def test_gate_compares_validation_miou_within_tolerance(new, promoted):
    ok, reason = promotion_decision({"val_miou": new}, {"val_miou": 0.70}, 0.02)
    assert ok is promoted
    assert ("rejected" in reason) is (not promoted) and "0.700" in reason


def test_registry_keeps_rejected_versions_and_pointer_moves_only_on_promotion():
    registry = ModelRegistry(MemoryStore())
    predictor = InteractivePredictor(ModelConfig(classes=("a",), image_size=32, encoder="resnet18"))
    first = registry.publish(predictor, iteration=0)["version"]
    second = registry.publish(predictor, make_current=False, iteration=1)["version"]
    registry.mark(second, "rejected", "rejected: worse")
    assert (first, second) == ("v0000", "v0001")
    assert registry.current_version() == "v0000" and registry.versions() == ["v0000", "v0001"]
    assert registry.status(second) == "rejected" and registry.status(first) == "promoted"
    registry.set_current(second)  # an admin rollback/forward to a stored version
    assert registry.current_version() == "v0001"
    with pytest.raises(NotFound, match="v0099"):
        registry.set_current("v0099")
