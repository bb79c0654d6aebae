"""`saim experiment`'s aggregation over seeds and its per-arm rows, on known numbers, and one tiny experiment in
worker processes (the emulation's own figures are tested in test_emulate.py)."""

import math

import pytest

from saim.research.emulate import EmulationConfig
from saim.research.experiment import ARMS, TimeModel, aggregate, arm_rows, format_markdown, mean_sd, run_experiment
from tests.unit.test_emulate import TINY


def test_mean_and_sample_sd_on_known_numbers():
    mean, sd, n = mean_sd([0.70, 0.80, 0.90])
    assert mean == pytest.approx(0.80) and sd == pytest.approx(0.10) and n == 3  # sqrt(0.02 / 2)
    assert mean_sd([0.5]) == (0.5, 0.0, 1)
    assert mean_sd([None, float("nan")]) == (None, None, 0)
    assert mean_sd([2.0, None, 4.0])[:2] == (3.0, pytest.approx(math.sqrt(2)))


def test_aggregate_per_iteration_over_seeds():
    seed_a = [
        {"miou": 0.6, "noc85": 10.0, "annotated_fraction": 0.2},
        {"miou": 0.8, "noc85": None, "annotated_fraction": 0.4},
    ]
    seed_b = [
        {"miou": 0.7, "noc85": 12.0, "annotated_fraction": 0.2},
        {"miou": 0.9, "noc85": 6.0, "annotated_fraction": 0.4},
    ]
    seed_c = [{"miou": 0.8, "noc85": 14.0, "annotated_fraction": 0.2}]  # its pool ran out after iteration 0
    out = aggregate([seed_a, seed_b, seed_c])
    assert [r["seeds"] for r in out] == [3, 2]
    assert out[0]["miou_mean"] == pytest.approx(0.7) and out[0]["miou_sd"] == pytest.approx(0.1)
    assert out[0]["noc85_mean"] == pytest.approx(12.0) and out[0]["noc85_sd"] == pytest.approx(2.0)
    assert out[1]["miou_mean"] == pytest.approx(0.85) and out[1]["miou_sd"] == pytest.approx(math.sqrt(0.005))
    assert out[1]["noc85_mean"] == 6.0 and out[1]["noc85_sd"] == 0.0 and out[1]["noc85_n"] == 1  # one seed had it
    assert out[1]["dice_auc5_mean"] is None  # a measure no run reported


def _run(mious, classical=None):
    rows = []
    for it, m in enumerate(mious):
        rows.append(
            {
                "iteration": it,
                "annotated_fraction": 0.1 * (it + 1),
                "miou": m,
                "miou_classical": None if classical is None else classical[it],
                "slices_selected": 0 if it == 0 else 60,
                "clicks_placed": 0 if it == 0 else 36,
            }
        )
    return {"iterations": rows}


def test_arms_of_one_seed_ratio_and_time_model():
    arms = arm_rows(_run([0.6, 0.8], classical=[0.6, 0.9]), _run([0.6, 0.7]), TimeModel())
    assert set(arms) == set(ARMS)
    assert [r["miou"] for r in arms["classical"]] == [0.6, 0.9]
    assert arms["saim_entropy"][1]["ratio_to_classical"] == pytest.approx(0.8 / 0.9)
    assert arms["saim_random"][1]["ratio_to_classical"] == pytest.approx(0.7 / 0.9)
    # the paper's anchors for a 60-slice series: 15' by hand, 3'43" with SAIM at 36 clicks
    assert arms["classical"][1]["annotation_hours"] * 3600 == pytest.approx(900)
    assert arms["saim_entropy"][1]["annotation_hours"] * 3600 == pytest.approx(222, abs=1)


def test_markdown_tables_carry_mean_and_sd():
    per_seed = [arm_rows(_run([0.6, 0.8], [0.6, 0.9]), _run([0.6, 0.7]), TimeModel()) for _ in range(2)]
    report = {
        "arms": {arm: {"iterations": aggregate([s[arm] for s in per_seed])} for arm in ARMS},
        "seeds": [0, 1],
        "config": {"data": "synthetic"},
    }
    text = format_markdown(report)
    assert "| 1 | 20% | 0.800 ± 0.000 | 0.700 ± 0.000 | 0.900 ± 0.000 | 0.89 ± 0.00 | 0.78 ± 0.00 |" in text


def test_per_seed_table_shows_each_arm_and_seed():
    def run(mious, interactive, noc85, fidelity, annotated, auto, classical=None):
        out = _run(mious, classical)
        for row, i, n, f, a, b in zip(out["iterations"], interactive, noc85, fidelity, annotated, auto, strict=True):
            row.update(interactive_miou=i, noc85=n, noc90=n + 5, dice_auc5=3.5, click_fidelity=f)
            row.update(annotation_miou=a, auto_miou_selected=b)
        return out

    entropy = run([0.6, 0.8], [0.75, 0.86], [6.0, 2.0], [0.88, 0.93], [None, 0.85], [None, 0.70], [0.6, 0.9])
    random = run([0.6, 0.7], [0.75, 0.79], [6.0, 3.0], [0.88, 0.91], [None, 0.90], [None, 0.72])
    seeds = [arm_rows(entropy, random, TimeModel())]
    report = {
        "arms": {arm: {"iterations": aggregate([s[arm] for s in seeds])} for arm in ARMS},
        "per_seed": {arm: [s[arm] for s in seeds] for arm in ARMS},
        "runs": [{"seed": 7, "initial_set": {"series": 3}, "rejected_versions": {"entropy": [], "random": [1]}}],
        "seeds": [7],
        "config": {"data": "synthetic"},
    }
    text = format_markdown(report)
    assert (
        "| saim_entropy | 7 | 3 | 0.600 → 0.800 (0.900) | +0.150 / +0.060 | 6.0 / 2.0 | 11.0 / 7.0 | 3.50 | 0.88 "
        "| 0.850 vs 0.700 | none |" in text
    )
    assert (
        "| saim_random | 7 | 3 | 0.600 → 0.700 (0.900) | +0.150 / +0.090 | 6.0 / 3.0 | 11.0 / 8.0 | 3.50 | 0.88 "
        in text
    )
    assert text.rstrip().endswith("| 0.900 vs 0.720 | v1 |")


def test_an_experiment_pretrains_once_per_seed_and_runs_both_arms_in_worker_processes():
    report = run_experiment(EmulationConfig(**{**TINY, "iterations": 1}), seeds=[3], jobs=2)
    assert report["seeds"] == [3] and report["config"]["jobs"] == 2
    (run,) = report["runs"]
    assert set(run["wall_seconds"]) == {"pretrain", "entropy", "random"} and run["initial_set"]["series"] == 1
    rows = {arm: report["per_seed"][arm][0] for arm in ARMS}
    assert [len(r) for r in rows.values()] == [2, 2, 2]
    # one pre-trained model: every arm starts from the same test mIoU
    assert rows["saim_entropy"][0]["miou"] == rows["saim_random"][0]["miou"] == rows["classical"][0]["miou"]
    assert rows["saim_random"][1]["selection"] == "random" and rows["saim_entropy"][1]["selection"] == "entropy"
    assert report["arms"]["saim_entropy"]["iterations"][1]["seeds"] == 1
