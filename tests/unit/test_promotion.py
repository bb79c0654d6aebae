import pytest

from saim.errors import NotFound
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.registry.versions import Decision, ModelRegistry, VersionStatus, version_name, version_number
from saim.training.pipeline import promotion_decision
from tests.unit.fakes import MemoryStore


def test_first_model_is_promoted():
    assert promotion_decision({"val_miou": 0.1}, None, 0.02) == (True, "first model")


@pytest.mark.parametrize("new, promoted", [(0.70, True), (0.685, True), (0.679, False), (0.40, False)])
def test_gate_compares_validation_miou_within_tolerance(new, promoted):
    ok, reason = promotion_decision({"val_miou": new}, {"val_miou": 0.70}, 0.02)
    assert ok is promoted
    assert ("rejected" in reason) is (not promoted) and "0.700" in reason


@pytest.mark.parametrize(
    "name, number", [("v0000", 0), ("v0012", 12), ("v10000", 10000), (None, -1), ("", -1), ("x0001", -1), ("v1a", -1)]
)
def test_version_names_parse_in_one_place(name, number):
    assert version_number(name) == number
    if number >= 0 and name != "v10000":
        assert version_name(number) == name


@pytest.fixture
def registry_with_two():
    registry = ModelRegistry(MemoryStore())
    predictor = InteractivePredictor(ModelConfig(classes=("a",), image_size=32, encoder="resnet18"))
    first = registry.publish(predictor, iteration=0, metrics={"val_miou": 0.5, "note": "text"})
    second = registry.publish(predictor, make_current=False, iteration=1)
    return registry, first, second


def test_publish_returns_typed_metadata_and_numbers_versions(registry_with_two):
    registry, first, second = registry_with_two
    assert (first.version, second.version) == ("v0000", "v0001") and registry.next_version() == "v0002"
    assert first.iteration == 0 and first.metrics == {"val_miou": 0.5}  # numbers only: they go into protos
    assert registry.metadata("v0001").iteration == 1 and registry.metadata("v0001").raw["format"]


def test_registry_keeps_rejected_versions_and_pointer_moves_only_on_promotion(registry_with_two):
    registry, first, second = registry_with_two
    assert registry.status(second.version) is VersionStatus.UNDECIDED
    registry.decide(second.version, promoted=False, reason="rejected: worse")
    assert registry.current_version() == "v0000" and registry.versions() == ["v0000", "v0001"]
    assert registry.status(second.version) is VersionStatus.REJECTED
    assert registry.status(first.version) is VersionStatus.PROMOTED  # current without a record: promoted
    assert registry.latest_decided() == Decision("v0001", 1, promoted=False)
    assert registry.decided_iterations() == {0, 1} and registry.current_iteration() == 0
    registry.set_current(second.version)  # an admin rollback/forward to a stored version
    assert registry.current_version() == "v0001" and registry.current_iteration() == 1
    with pytest.raises(NotFound, match="v0099"):
        registry.set_current("v0099")


def test_undecided_versions_are_abandoned_once_and_never_count_as_decided(registry_with_two):
    registry, first, second = registry_with_two
    assert registry.latest_decided() == Decision("v0000", 0, promoted=True)  # the undecided v0001 is skipped
    assert registry.decided_iterations() == {0}
    assert registry.abandon_undecided() == ["v0001"]
    assert registry.abandon_undecided() == []
    assert registry.status("v0001") is VersionStatus.ABANDONED and registry.decided_iterations() == {0}
    registry.decide("v0000", promoted=True, reason="first model")
    assert registry.status("v0000") is VersionStatus.PROMOTED and registry.current_version() == "v0000"
