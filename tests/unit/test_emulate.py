"""The emulated scenario's report contract and determinism (tiny budget: the mechanics, not the accuracy)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from saim.data.slices import Series
from saim.data.splits import SplitRule
from saim.errors import SaimError
from saim.model.config import ModelConfig
from saim.research.emulate import Emulation, EmulationConfig, Split, covering_order, format_table, plot_report
from saim.training.config import TrainConfig

TINY = dict(
    iterations=2,
    baseline="classical",
    # refinement off: an untrained model ignores every click, and 20 refinement steps on each made these tests 4-10x
    # slower (tests/unit/test_refine.py covers it)
    model=ModelConfig(image_size=32, encoder="resnet18", refine_steps=0),
    train=TrainConfig(epochs=1, finetune_epochs=1, steps_per_epoch=2, batch_size=4),
    max_slices=2,
    synthetic_series=8,
    synthetic_slices=4,
    threads=1,
    seed=3,
    split=SplitRule(pretrain_fraction=0.1),  # one initial series, so the pool lasts two iterations
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
    "noc90",
    "dice_auc5",
    "click_fidelity",
    "annotation_miou",
    "auto_miou_selected",
    "gate",
    "selection",
    "selected",
    "train_seconds",
}


@pytest.fixture(scope="module")
def reports():
    """The same emulation twice: once whole, once from a pre-training made beforehand in another Emulation (as
    saim experiment shares one per seed between its arms)."""
    cfg = EmulationConfig(**TINY)
    pretrained = Emulation(cfg, show_progress=False).pretrain()
    return [Emulation(cfg, show_progress=False).run(), Emulation(cfg, show_progress=False).run(pretrained)]


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
    assert 0 <= rows[1]["noc85"] <= rows[1]["noc90"] <= 20 and 0 <= rows[1]["dice_auc5"] <= 4
    assert 0 <= rows[1]["click_fidelity"] <= 1 and 0 <= rows[1]["annotation_miou"] <= 1
    assert rows[0]["gate"]["reason"] == "first model" and report["initial_set"]["rule"] == 0.1
    initial = report["initial_set"]
    assert initial["series"] == len(initial["cases"]) == 1 and not set(initial["cases"]) & {
        c for r in rows for c in r["selected"]
    }
    assert report["rejected_versions"] == [r["iteration"] for r in rows if not r["gate"]["promoted"]]
    assert len(format_table(report).splitlines()) == 4
    plot_report(report, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_same_seed_same_numbers(reports):
    assert _numbers(reports[0]) == _numbers(reports[1])
    assert reports[0]["initial_set"] == reports[1]["initial_set"]


def test_a_pretraining_of_other_settings_is_refused():
    cfg = EmulationConfig(**TINY)
    pretrained = Emulation(cfg, show_progress=False).pretrain()
    for other in (replace(cfg, seed=4), replace(cfg, max_slices=3), replace(cfg, train=replace(cfg.train, lr=0.1))):
        with pytest.raises(SaimError, match="other data, split, model or training"):
            Emulation(other, show_progress=False).run(pretrained)
    # the arms' own settings are not the pre-training's
    assert Emulation(replace(cfg, selection="random", baseline="none", iterations=1), False).run(pretrained)


def test_the_arms_share_the_pretrained_models_test_measures_made_with_their_own_settings():
    cfg = EmulationConfig(**TINY)
    pretrained = Emulation(cfg, show_progress=False).pretrain()
    assert set(pretrained.first) >= {"miou", "interactive_miou", "click_overshoot"}
    marked = replace(pretrained, first={**pretrained.first, "miou": -1.0})  # iteration 0 reads it, not a new measure
    arm = replace(cfg, selection="random", iterations=1)
    assert Emulation(arm, show_progress=False).run(marked)["iterations"][0]["miou"] == -1.0
    # other evaluation settings measure again; with the same, the measures agree with a fresh run's
    other = Emulation(replace(arm, clicks=cfg.clicks + 1), show_progress=False).run(marked)["iterations"][0]
    assert other["miou"] == pretrained.first["miou"] and other["clicks_per_class"] == cfg.clicks + 1


def test_each_arm_fine_tunes_from_its_own_previous_model(monkeypatch):
    """The classical baseline must start from the pre-trained model, never from a SAIM-trained one."""
    import saim.research.emulate as emulate
    from saim.model.predictor import InteractivePredictor
    from saim.training.recipe import TrainResult

    calls = []

    def fake_train(mc, images, labels, tc, parent=None, progress=None, series_counts=None):
        predictor = InteractivePredictor(mc)
        calls.append((parent, predictor))
        return TrainResult(predictor, {"seconds": 0.0})

    monkeypatch.setattr(emulate, "train_predictor", fake_train)
    cfg = EmulationConfig(**TINY, gate=False)  # TrainConfig's default mode: finetune; every version used
    report = Emulation(cfg, show_progress=False).run()
    assert all(r["gate"]["promoted"] for r in report["iterations"]) and report["rejected_versions"] == []
    (p0, pre), (p1s, saim1), (p1c, classical1), (p2s, _), (p2c, _) = calls
    assert p0 is None
    assert p1s is pre and p1c is pre  # both arms of iteration 1 start from the pre-trained model
    assert p2s is saim1 and p2c is classical1


def test_the_gate_keeps_a_worse_version_from_annotating_the_next_round(monkeypatch):
    """Services' rule in the emulation: a retrained version worse on validation by more than the tolerance is
    rejected, and the next round annotates with (and fine-tunes) the kept model."""
    import saim.research.emulate as emulate
    from saim.model.predictor import InteractivePredictor
    from saim.training.recipe import TrainResult

    qualities, parents = iter([0.60, 0.40, 0.59]), []  # pre-train, retrain 1 (rejected), retrain 2 (within 0.02)

    def fake_train(mc, images, labels, tc, parent=None, progress=None, series_counts=None):
        predictor = InteractivePredictor(mc)
        predictor.quality = next(qualities)
        parents.append(parent)
        return TrainResult(predictor, {"seconds": 0.0})

    monkeypatch.setattr(emulate, "train_predictor", fake_train)
    monkeypatch.setattr(Emulation, "_val_miou", lambda self, predictor, val: predictor.quality)
    report = Emulation(EmulationConfig(**{**TINY, "baseline": "none"}), show_progress=False).run()
    gates = [r["gate"] for r in report["iterations"]]
    assert [g["promoted"] for g in gates] == [True, False, True] and report["rejected_versions"] == [1]
    assert "rejected: val mIoU 0.400" in gates[1]["reason"]
    assert parents[2].quality == 0.60  # retrain 2 fine-tuned the kept pre-trained model, not the rejected one


def _toy(case: str, classes: list[int]) -> Series:
    labels = np.zeros((2, 8, 8), np.uint8)
    for c in classes:
        labels[:, c : c + 2, 1:7] = c
    return Series(case, labels.astype(np.float32), labels, np.arange(2), None)


class _Learner:
    """A pre-trained model that knows exactly the classes in `learns`, perfectly, and nothing else."""

    def __init__(self, learns: set[int]):
        self.learns = learns

    def predict(self, images: np.ndarray) -> np.ndarray:
        labels = images.astype(np.uint8)
        return np.where(np.isin(labels, list(self.learns)), labels, 0).astype(np.uint8)


def _initial_set(monkeypatch, ordered: list[Series], learns, classes=("a", "b")):
    """Emulation._initial_set under `auto` with a fake trainer: `learns(n)` is what a model pre-trained on n
    series knows. Returns (chosen series, info, sizes trained)."""
    trained = []

    def fake_train(self, mc, train, seed, parent, desc):
        trained.append(len(train))
        return SimpleNamespace(predictor=_Learner(learns(len(train))), stats={"seconds": 0.0})

    monkeypatch.setattr(Emulation, "_train", fake_train)
    val = _toy("val", range(1, len(classes) + 1))
    split = Split(test=[], val=[val], initial=ordered[:1], pool=ordered[1:])
    emulation = Emulation(EmulationConfig(split=SplitRule(pretrain_fraction="auto")), show_progress=False)
    initial, pool, _, info = emulation._initial_set(split, ModelConfig(classes=classes), (val.images, val.labels))
    taken = {s.case for s in initial}
    assert pool == [s for s in ordered if s.case not in taken]  # the rest, in the split's order
    assert info["cases"] == [s.case for s in initial]
    return [s.case for s in initial], info, trained


def test_auto_initial_set_is_the_least_data_with_every_class_above_half_iou(monkeypatch):
    ordered = [_toy("s1", [1]), _toy("s2", [1, 2]), _toy("s3", [1, 2])] + [_toy(f"p{i}", [1, 2]) for i in range(5)]
    chosen, info, trained = _initial_set(monkeypatch, ordered, lambda n: {1, 2} if n >= 3 else {1})
    assert chosen == ["s1", "s2", "s3"] and info["series"] == 3 and trained == [2, 3]  # 1 series: class b absent
    assert info["tried"][0] == {"series": 1, "absent_classes": ["b"]}
    assert info["tried"][1]["val_per_class_iou"] == {"a": 1.0, "b": 0.0} and not info["tried"][1]["every_class_above"]
    assert info["reason"] == "every class above 0.5 IoU on validation"


def test_auto_falls_back_to_the_least_data_with_miou_above_half(monkeypatch):
    ordered = [_toy(f"s{i}", [1, 2, 3]) for i in range(6)]
    chosen, info, trained = _initial_set(monkeypatch, ordered, lambda n: {1, 2}, classes=("a", "b", "c"))
    assert trained == [1, 2, 3] and chosen == ["s0"] and "mIoU above it" in info["reason"]  # cap: half of 6


def test_auto_reaches_for_a_series_with_the_class_the_set_lacks(monkeypatch):
    # class b only in the 5th series of 8: the split's order would never hold it within the cap (half of 8)
    ordered = [_toy(f"s{i}", [1]) for i in range(4)] + [_toy("b4", [1, 2])] + [_toy(f"p{i}", [1, 2]) for i in range(3)]
    chosen, info, trained = _initial_set(monkeypatch, ordered, lambda n: {1, 2} if n >= 3 else {1})
    assert chosen == ["s0", "b4", "s1"] and trained == [2, 3]  # s0 lacks b: b4 next, then the split's order again
    assert info["tried"][0] == {"series": 1, "absent_classes": ["b"]}
    covering, covered = covering_order(ordered, ("a", "b"))
    assert [s.case for s in covering] == ["s0", "b4", "s1", "s2", "s3", "p0", "p1", "p2"] and covered == 2
    every = [_toy(f"s{i}", [1, 2]) for i in range(4)]
    assert covering_order(every, ("a", "b")) == (every, 1)  # nothing lacking: the split's order unchanged
    assert covering_order(ordered[:4], ("a", "b"))[1] is None  # no series holds b


def test_the_cap_grows_to_the_fewest_series_that_hold_every_class(monkeypatch):
    ordered = [_toy("a0", [1]), _toy("b1", [2]), _toy("c2", [3]), _toy("s3", [1]), _toy("s4", [1])]
    chosen, info, trained = _initial_set(monkeypatch, ordered, lambda n: {1, 2, 3}, classes=("a", "b", "c"))
    assert chosen == ["a0", "b1", "c2"] and trained == [3]  # half of 5 is 2, but 3 are needed for every class
    assert [t.get("absent_classes") for t in info["tried"][:2]] == [["b", "c"], ["c"]]


def test_a_class_without_labels_is_an_error_not_a_silent_zero(monkeypatch):
    ordered = [_toy(f"s{i}", [1]) for i in range(6)]
    with pytest.raises(SaimError, match=r"\['b'\] have no labelled pixel"):
        _initial_set(monkeypatch, ordered, lambda n: {1})
    fixed = Emulation(EmulationConfig(split=SplitRule(pretrain_fraction=0.1)), show_progress=False)
    split = Split(test=[], val=[], initial=[_toy("s0", [1])], pool=[_toy("s1", [1, 2])])
    with pytest.raises(SaimError, match="initial set"):
        fixed._initial_set(split, ModelConfig(classes=("a", "b")), (None, None))


def test_the_cvpr_protocol_and_noc_at_the_ends_only():
    """--protocol cvpr adds the challenge's volume measures to every iteration; --noc-at ends measures NoC and
    Dice-AUC at the first and the last iteration only."""
    cfg = EmulationConfig(**{**TINY, "baseline": "none", "protocol": "cvpr", "noc_at": "ends"})
    rows = Emulation(cfg, show_progress=False).run()["iterations"]
    assert len(rows) == 3
    for row in rows:
        assert 0 <= row["cvpr_dice"] <= 1 and 0 <= row["cvpr_nsd"] <= 1
        assert 0 <= row["cvpr_dice_auc"] <= 4 and 0 <= row["cvpr_nsd_auc"] <= 4
    assert rows[0]["noc85"] is not None and rows[2]["noc85"] is not None
    assert rows[1]["noc85"] is None and rows[1]["dice_auc5"] is None
