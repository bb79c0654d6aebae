"""`saim experiment`'s aggregation over seeds and its per-arm rows, on known numbers, and one tiny experiment in
worker processes (the emulation's own figures are tested in test_emulate.py)."""

import math

import pytest

from saim.errors import SaimError
from saim.research.emulate import EmulationConfig
from saim.research.experiment import (
    ARMS,
    TimeModel,
    aggregate,
    arm_rows,
    format_markdown,
    mean_sd,
    paired,
    run_experiment,
    t_interval,
    verdict,
)
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
    arms = arm_rows({"entropy": _run([0.6, 0.8], classical=[0.6, 0.9]), "random": _run([0.6, 0.7])}, TimeModel())
    assert set(arms) == set(ARMS)
    assert [r["miou"] for r in arms["classical"]] == [0.6, 0.9]
    assert arms["saim_entropy"][1]["ratio_to_classical"] == pytest.approx(0.8 / 0.9)
    assert arms["saim_random"][1]["ratio_to_classical"] == pytest.approx(0.7 / 0.9)
    # the paper's anchors for a 60-slice series: 15' by hand, 3'43" with SAIM at 36 clicks
    assert arms["classical"][1]["annotation_hours"] * 3600 == pytest.approx(900)
    assert arms["saim_entropy"][1]["annotation_hours"] * 3600 == pytest.approx(222, abs=1)


def test_markdown_tables_carry_mean_and_sd():
    per_seed = [
        arm_rows({"entropy": _run([0.6, 0.8], [0.6, 0.9]), "random": _run([0.6, 0.7])}, TimeModel()) for _ in range(2)
    ]
    report = {
        "arms": {arm: {"iterations": aggregate([s[arm] for s in per_seed])} for arm in ARMS},
        "seeds": [0, 1],
        "config": {"data": "synthetic"},
    }
    text = format_markdown(report)
    assert "| iteration | annotated | entropy mIoU | random mIoU | classical mIoU | entropy / classical |" in text
    assert "| 1 | 20% | 0.800 ± 0.000 | 0.700 ± 0.000 | 0.900 ± 0.000 | 0.89 ± 0.00 |" in text


def test_per_seed_table_shows_each_arm_and_seed():
    def run(mious, interactive, noc85, fidelity, annotated, auto, classical=None):
        out = _run(mious, classical)
        for row, i, n, f, a, b in zip(out["iterations"], interactive, noc85, fidelity, annotated, auto, strict=True):
            row.update(interactive_miou=i, noc85=n, noc90=n + 5, dice_auc5=3.5, click_fidelity=f)
            row.update(annotation_miou=a, auto_miou_selected=b)
        return out

    entropy = run([0.6, 0.8], [0.75, 0.86], [6.0, 2.0], [0.88, 0.93], [None, 0.85], [None, 0.70], [0.6, 0.9])
    random = run([0.6, 0.7], [0.75, 0.79], [6.0, 3.0], [0.88, 0.91], [None, 0.90], [None, 0.72])
    seeds = [arm_rows({"entropy": entropy, "random": random}, TimeModel())]
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


def test_t_interval_on_known_numbers():
    mean, low, high = t_interval([0.01, 0.03, 0.02, 0.04, 0.00])
    # mean 0.02, sd 0.0158, t(0.975, 4) = 2.776: half-width 2.776 * 0.0158 / sqrt(5) = 0.0196
    assert mean == pytest.approx(0.02) and low == pytest.approx(0.02 - 0.01963, abs=1e-4)
    assert high == pytest.approx(0.02 + 0.01963, abs=1e-4)
    assert t_interval([0.5])[1:] == (-math.inf, math.inf)


def _seeds(*last):
    """Per-seed rows of one arm: iteration 0 at 0.5, then the given last-iteration mIoU."""
    return [[{"miou": 0.5, "interactive_miou": 0.6}, {"miou": m, "interactive_miou": m + 0.1}] for m in last]


def test_paired_differences_and_the_verdict_follow_the_seeds():
    per_seed = {
        "saim_fg_random": _seeds(0.70, 0.72, 0.68, 0.71, 0.69),
        "saim_clasp_pe": _seeds(0.74, 0.75, 0.71, 0.76, 0.72),  # ahead in every seed
        "saim_entropy": _seeds(0.72, 0.70, 0.69, 0.70, 0.70),  # ahead in some, behind in others
        "classical": _seeds(0.8, 0.8, 0.8, 0.8, 0.8),
    }
    out = paired(per_seed, "saim_fg_random")
    assert set(out) == {"saim_clasp_pe", "saim_entropy"}  # neither the reference nor classical
    clasp = out["saim_clasp_pe"]["last_miou"]
    assert clasp["diffs"] == pytest.approx([0.04, 0.03, 0.03, 0.05, 0.03]) and clasp["wins"] == 5
    assert clasp["mean"] == pytest.approx(0.036) and clasp["ci95"][0] > 0
    entropy = out["saim_entropy"]["last_miou"]
    assert entropy["wins"] == 3 and entropy["ci95"][0] < 0 < entropy["ci95"][1]
    report = {"reference": "saim_fg_random", "paired": out}
    text = verdict(report)
    assert text.startswith(
        "On test mIoU at the last iteration, better than saim_fg_random (95 % interval above 0): saim_clasp_pe (+0.036"
    )
    assert "saim_entropy" not in text
    # the same seeds with clasp_pe behind everywhere: no arm beats the reference, and it is named as worse
    per_seed["saim_clasp_pe"] = _seeds(0.66, 0.69, 0.64, 0.66, 0.65)
    text = verdict({"reference": "saim_fg_random", "paired": paired(per_seed, "saim_fg_random")})
    assert text.startswith("On test mIoU at the last iteration, no strategy beats saim_fg_random")
    assert "Worse than saim_fg_random: saim_clasp_pe (-0.040" in text


def test_an_unknown_or_repeated_strategy_is_refused_before_any_training():
    with pytest.raises(ValueError, match="unknown selection strategy 'best'"):
        run_experiment(EmulationConfig(**TINY), seeds=[0], strategies=("fg_random", "best"))
    with pytest.raises(SaimError, match="name each strategy once"):
        run_experiment(EmulationConfig(**TINY), seeds=[0], strategies=("entropy", "entropy"))


def test_an_experiment_pretrains_once_per_seed_and_runs_every_arm_in_worker_processes():
    report = run_experiment(
        EmulationConfig(**{**TINY, "iterations": 1}), seeds=[3], jobs=2, strategies=("fg_random", "clasp_pe")
    )
    assert report["seeds"] == [3] and report["config"]["jobs"] == 2
    assert report["strategies"] == ["fg_random", "clasp_pe"] and report["reference"] == "saim_fg_random"
    (run,) = report["runs"]
    assert set(run["wall_seconds"]) == {"pretrain", "fg_random", "clasp_pe"} and run["initial_set"]["series"] == 1
    arms = ("saim_fg_random", "saim_clasp_pe", "classical")
    assert set(report["arms"]) == set(arms)
    rows = {arm: report["per_seed"][arm][0] for arm in arms}
    assert [len(r) for r in rows.values()] == [2, 2, 2]
    # one pre-trained model: every arm starts from the same test mIoU
    assert rows["saim_fg_random"][0]["miou"] == rows["saim_clasp_pe"][0]["miou"] == rows["classical"][0]["miou"]
    assert rows["saim_clasp_pe"][1]["selection"] == "clasp_pe" and rows["saim_fg_random"][1]["selection"] == "fg_random"
    assert report["arms"]["saim_fg_random"]["iterations"][1]["seeds"] == 1
    # one seed: a difference, no interval
    last = report["paired"]["saim_clasp_pe"]["last_miou"]
    assert last["n"] == 1 and last["ci95"] == [-math.inf, math.inf]
    assert last["mean"] == pytest.approx(rows["saim_clasp_pe"][1]["miou"] - rows["saim_fg_random"][1]["miou"])
    assert "| arm − saim_fg_random (paired per seed) |" in format_markdown(report)
