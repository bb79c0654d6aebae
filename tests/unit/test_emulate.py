"""The emulated scenario's report contract and determinism (tiny budget: the mechanics, not the accuracy)."""

from __future__ import annotations

import pytest

from saim.config import ModelConfig, TrainConfig
from saim.emulate import Emulation, EmulationConfig, format_table, plot_report

TINY = dict(
    iterations=2,
    baseline="classical",
    model=ModelConfig(image_size=32, encoder="resnet18"),
    train=TrainConfig(epochs=1, finetune_epochs=1, steps_per_epoch=2, batch_size=4),
    max_slices=2,
    synthetic_series=8,
    synthetic_slices=4,
    threads=1,
    seed=3,
)
ROW_KEYS = {
    "iteration",
    "annotated_series",
    "annotated_fraction",
    "miou",
    "miou_classical",
    "per_class_iou",
    "interactive_miou",
    "clicks_per_class",
    "noc85",
    "selection",
    "selected",
    "train_seconds",
}


@pytest.fixture(scope="module")
def reports():
    return [Emulation(EmulationConfig(**TINY), show_progress=False).run() for _ in range(2)]


def _numbers(report):
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in report["iterations"]]


def test_report_follows_the_contract(reports, tmp_path):
    report = reports[0]
    assert {"config", "classes", "iterations", "final"} <= set(report)
    assert report["classes"] == ["liver", "spleen", "kidney_right", "kidney_left"]
    rows = report["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and all(ROW_KEYS <= set(r) for r in rows)
    assert rows[0]["selected"] == [] and rows[0]["miou_classical"] == rows[0]["miou"]
    assert rows[1]["annotated_series"] == rows[0]["annotated_series"] + report["config"]["batch_size"]
    assert not set(rows[1]["selected"]) & set(rows[2]["selected"])
    assert 0 < rows[0]["annotated_fraction"] < rows[2]["annotated_fraction"] <= 1
    assert report["final"] == {"miou": rows[-1]["miou"], "miou_classical": rows[-1]["miou_classical"]}
    assert 0 <= rows[1]["noc85"] <= 20
    assert len(format_table(report).splitlines()) == 4
    plot_report(report, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_same_seed_same_numbers(reports):
    assert _numbers(reports[0]) == _numbers(reports[1])


def test_each_arm_fine_tunes_from_its_own_previous_model(monkeypatch):
    """The classical baseline must start from the pre-trained model, never from a SAIM-trained one."""
    import saim.emulate as emulate
    from saim.model.predictor import InteractivePredictor
    from saim.model.training import TrainResult

    calls = []

    def fake_train(mc, images, labels, tc, parent=None, progress=None):
        predictor = InteractivePredictor(mc)
        calls.append((parent, predictor))
        return TrainResult(predictor, {"seconds": 0.0})

    monkeypatch.setattr(emulate, "train_predictor", fake_train)
    Emulation(EmulationConfig(**TINY), show_progress=False).run()  # TrainConfig's default mode: finetune
    (p0, pre), (p1s, saim1), (p1c, classical1), (p2s, _), (p2c, _) = calls
    assert p0 is None
    assert p1s is pre and p1c is pre  # both arms of iteration 1 start from the pre-trained model
    assert p2s is saim1 and p2c is classical1
