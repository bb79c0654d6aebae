"""`saim experiment`: the paper's curves over several seeds — SAIM with entropy selection, SAIM with random selection
and the classical baseline — aggregated per iteration as mean and sample standard deviation.

Per seed, the initial set is chosen and pre-trained once, then two emulations (saim.research.emulate) run from that
model on the same split: entropy selection with the classical baseline (which trains on the ground truth of the same
selected series), and random selection. The seed changes the split, the initial set, the training randomness and the
random arm's draws.

Annotation time is an estimate from a stated model, not a measurement: a SAIM series costs
`seconds_per_click` x the virtual user's clicks + `seconds_per_slice` x its slices (looking at and accepting each),
a manually annotated series `manual_seconds_per_slice` x its slices. The defaults put a 60-slice series at the
paper's anchors — 15' by hand in 3D Slicer, 3'43" with SAIM when about 36 clicks suffice.

Report contract (`--report`): {"config", "seeds", "time_model", "arms": {arm: {"iterations": [{"iteration",
"annotated_fraction", "miou_mean", "miou_sd", "noc85_mean", "noc90_mean", "dice_auc5_mean", "interactive3_miou_mean",
... }]}}, "per_seed": {arm: [[row per iteration] per seed]}, "runs": [{"seed", "initial_set", "wall_seconds":
{"pretrain", "entropy", "random"}, "rejected_versions"}], "wall_seconds"}.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from saim.model.device import resolve_device
from saim.research.emulate import Emulation, EmulationConfig, Pretrained

log = logging.getLogger(__name__)

ARMS = ("saim_entropy", "saim_random", "classical")
# per-iteration measures aggregated over seeds: report name -> emulation row field
MEASURES = {
    "miou": "miou",
    "noc85": "noc85",
    "noc90": "noc90",
    "dice_auc5": "dice_auc5",
    "interactive3_miou": "interactive_miou",
    "click_fidelity": "click_fidelity",
    "click_precision": "click_precision",
    "click_overshoot": "click_overshoot",
    "annotation_miou": "annotation_miou",
    "annotated_fraction": "annotated_fraction",
    "ratio_to_classical": "ratio_to_classical",
    "annotation_hours": "annotation_hours",
}


@dataclass(frozen=True)
class TimeModel:
    seconds_per_click: float = 3.0
    seconds_per_slice: float = 1.9
    manual_seconds_per_slice: float = 15.0

    def saim(self, clicks: int, slices: int) -> float:
        return clicks * self.seconds_per_click + slices * self.seconds_per_slice

    def manual(self, slices: int) -> float:
        return slices * self.manual_seconds_per_slice


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (n - 1) of the values that exist; sd 0 for one value; (None, None, 0) for
    none."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return None, None, 0
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, len(xs)


def aggregate(per_seed: list[list[dict]]) -> list[dict]:
    """Per iteration, mean and sd over seeds of every measure in MEASURES (a seed whose run stopped early, the pool
    exhausted, contributes to the iterations it has)."""
    out = []
    for it in range(max((len(rows) for rows in per_seed), default=0)):
        rows = [r[it] for r in per_seed if it < len(r)]
        entry: dict = {"iteration": it, "seeds": len(rows)}
        for name, field in MEASURES.items():
            mean, sd, n = mean_sd([r.get(field) for r in rows])
            entry[f"{name}_mean"], entry[f"{name}_sd"] = mean, sd
            if n and n < len(rows):
                entry[f"{name}_n"] = n
        out.append(entry)
    return out


def arm_rows(entropy: dict, random: dict, time_model: TimeModel) -> dict[str, list[dict]]:
    """The three arms' per-iteration rows of one seed: from the entropy run (with its classical baseline) and the
    random run, with the ratio to classical and the cumulative annotation-time estimate added."""
    arms: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    classical_rows = []
    hours = {"entropy": 0.0, "random": 0.0, "classical": 0.0}
    for row in entropy["iterations"]:
        hours["classical"] += time_model.manual(row.get("slices_selected", 0)) / 3600
        classical_rows.append(
            {
                "iteration": row["iteration"],
                "annotated_fraction": row["annotated_fraction"],
                "miou": row["miou_classical"],
                "annotation_hours": hours["classical"],
            }
        )
    by_iteration = {r["iteration"]: r for r in classical_rows}
    for name, report in (("entropy", entropy), ("random", random)):
        for row in report["iterations"]:
            hours[name] += time_model.saim(row.get("clicks_placed", 0), row.get("slices_selected", 0)) / 3600
            classical = by_iteration.get(row["iteration"], {}).get("miou")
            ratio = row["miou"] / classical if classical else None
            arms[f"saim_{name}"].append({**row, "ratio_to_classical": ratio, "annotation_hours": hours[name]})
    arms["classical"] = classical_rows
    return arms


def _pretrain(cfg: EmulationConfig) -> Pretrained:
    return Emulation(cfg, show_progress=False).pretrain()


def _emulate(cfg: EmulationConfig, pretrained: Pretrained | None = None, show_progress: bool = False) -> dict:
    return Emulation(cfg, show_progress).run(pretrained)


def run_experiment(
    base: EmulationConfig,
    seeds: list[int],
    time_model: TimeModel = TimeModel(),
    show_progress: bool = False,
    jobs: int = 1,
) -> dict:
    """Per seed: choose the initial set and pre-train once (`Emulation.pretrain`), then run the entropy arm (with the
    classical baseline) and the random arm from that model. `jobs` > 1 runs these steps in that many spawned
    processes, each with `base.threads` torch threads; a seed's arms start as soon as its pre-training is done (on 2
    cores, two single-threaded scorer processes outran one two-threaded one, 193 against 168 slices/s in
    make bench-scale; the same was not measured for emulations)."""
    started = time.perf_counter()
    per_seed: dict[str, list[list[dict]]] = {arm: [] for arm in ARMS}
    runs = []
    configs = {
        s: (
            replace(base, seed=s, selection="entropy", baseline="classical"),
            replace(base, seed=s, selection="random", baseline="none"),
        )
        for s in seeds
    }
    results: dict[int, tuple[dict, dict]] = {}
    pretrain_seconds: dict[int, float] = {}
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            pretraining = {pool.submit(_pretrain, configs[s][0]): s for s in seeds}
            arms = {}
            for done in as_completed(pretraining):
                s, pretrained = pretraining[done], done.result()
                pretrain_seconds[s] = pretrained.wall_seconds
                arms[s] = [pool.submit(_emulate, cfg, pretrained) for cfg in configs[s]]
            results = {s: (arms[s][0].result(), arms[s][1].result()) for s in seeds}
    else:
        for s in seeds:
            pretrained = _pretrain(configs[s][0])
            pretrain_seconds[s] = pretrained.wall_seconds
            entropy_arm, random_arm = (_emulate(cfg, pretrained, show_progress) for cfg in configs[s])
            results[s] = (entropy_arm, random_arm)
    for seed in seeds:
        entropy, random = results[seed]
        for arm, rows in arm_rows(entropy, random, time_model).items():
            per_seed[arm].append(rows)
        runs.append(
            {
                "seed": seed,
                "initial_set": entropy["initial_set"],
                "wall_seconds": {
                    "pretrain": pretrain_seconds[seed],  # once for both arms; theirs below do not include it
                    "entropy": entropy["wall_seconds"],
                    "random": random["wall_seconds"],
                },
                "rejected_versions": {"entropy": entropy["rejected_versions"], "random": random["rejected_versions"]},
            }
        )
    return {
        "config": {**asdict(base), "device": resolve_device(base.device), "threads": base.threads, "jobs": jobs},
        "seeds": list(seeds),
        "time_model": asdict(time_model),
        "arms": {arm: {"iterations": aggregate(per_seed[arm])} for arm in ARMS},
        "per_seed": per_seed,
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _pm(mean: float | None, sd: float | None, spec: str = ".3f") -> str:
    if mean is None:
        return "–"
    return f"{mean:{spec}} ± {sd:{spec}}"


def format_markdown(report: dict) -> str:
    """The report's tables in Markdown (docs/results.md)."""
    arms = report["arms"]
    lines = [
        "| iteration | annotated | SAIM entropy mIoU | SAIM random mIoU | classical mIoU | entropy / classical "
        "| random / classical |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = zip(  # the same iterations in every arm, unless a pool ran out (then the shortest decides)
        arms["saim_entropy"]["iterations"],
        arms["saim_random"]["iterations"],
        arms["classical"]["iterations"],
        strict=False,
    )
    for e, r, c in rows:
        lines.append(
            f"| {e['iteration']} | {e['annotated_fraction_mean']:.0%} | {_pm(e['miou_mean'], e['miou_sd'])} "
            f"| {_pm(r['miou_mean'], r['miou_sd'])} | {_pm(c['miou_mean'], c['miou_sd'])} "
            f"| {_pm(e['ratio_to_classical_mean'], e['ratio_to_classical_sd'], '.2f')} "
            f"| {_pm(r['ratio_to_classical_mean'], r['ratio_to_classical_sd'], '.2f')} |"
        )
    lines += [
        "",
        "| arm | iteration | 3-click mIoU | NoC@85 | NoC@90 | Dice-AUC5 | click fidelity | annotations' mIoU "
        "| annotation hours (model) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in ("saim_entropy", "saim_random"):
        for e in arms[arm]["iterations"]:
            lines.append(
                f"| {arm} | {e['iteration']} | {_pm(e['interactive3_miou_mean'], e['interactive3_miou_sd'])} "
                f"| {_pm(e['noc85_mean'], e['noc85_sd'], '.1f')} | {_pm(e['noc90_mean'], e['noc90_sd'], '.1f')} "
                f"| {_pm(e['dice_auc5_mean'], e['dice_auc5_sd'], '.2f')} "
                f"| {_pm(e['click_fidelity_mean'], e['click_fidelity_sd'], '.2f')} "
                f"| {_pm(e['annotation_miou_mean'], e['annotation_miou_sd'])} "
                f"| {_pm(e['annotation_hours_mean'], e['annotation_hours_sd'], '.2f')} |"
            )
    classical = arms["classical"]["iterations"]
    lines.append(
        f"| classical | last | – | – | – | – | – | ground truth "
        f"| {_pm(classical[-1]['annotation_hours_mean'], classical[-1]['annotation_hours_sd'], '.2f')} |"
    )
    if report.get("per_seed") and report.get("runs"):
        lines += ["", format_per_seed(report)]
    return "\n".join(lines)


def _f(value: float | None, spec: str) -> str:
    return "–" if value is None else f"{value:{spec}}"


def _click_gain(row: dict) -> float | None:
    """What the virtual user's clicks add over the automatic prediction (3-click mIoU - mIoU)."""
    if row.get("interactive_miou") is None or row.get("miou") is None:
        return None
    return row["interactive_miou"] - row["miou"]


def format_per_seed(report: dict) -> str:
    """Per arm and seed, the interactive figures at the first and the last iteration (issue 12's measures): the
    3-click gain over the automatic prediction, NoC@85/90, Dice-AUC5, the lowest click fidelity of any iteration, the
    annotations of the selected series against the model's automatic prediction of them (mean over iterations), the
    initial set's size and the versions the gate rejected."""
    lines = [
        "| arm | seed | initial series | mIoU first → last (classical last) | 3-click gain first / last "
        "| NoC@85 first / last | NoC@90 first / last | Dice-AUC5 last | lowest click fidelity "
        "| annotations vs automatic (selected) | rejected versions |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    classical = report["per_seed"]["classical"]
    for arm, run_key in (("saim_entropy", "entropy"), ("saim_random", "random")):
        for rows, run, classical_rows in zip(report["per_seed"][arm], report["runs"], classical, strict=True):
            first, last = rows[0], rows[-1]
            fidelity = [r["click_fidelity"] for r in rows if r.get("click_fidelity") is not None]
            selected = [r for r in rows if r.get("annotation_miou") is not None]
            annotated = (
                f"{np.mean([r['annotation_miou'] for r in selected]):.3f} vs "
                f"{np.mean([r['auto_miou_selected'] for r in selected]):.3f}"
                if selected and all(r.get("auto_miou_selected") is not None for r in selected)
                else "–"
            )
            rejected = run.get("rejected_versions", {}).get(run_key) or []
            lines.append(
                f"| {arm} | {run['seed']} | {run['initial_set'].get('series', '–')} "
                f"| {_f(first['miou'], '.3f')} → {_f(last['miou'], '.3f')} ({_f(classical_rows[-1]['miou'], '.3f')}) "
                f"| {_f(_click_gain(first), '+.3f')} / {_f(_click_gain(last), '+.3f')} "
                f"| {_f(first.get('noc85'), '.1f')} / {_f(last.get('noc85'), '.1f')} "
                f"| {_f(first.get('noc90'), '.1f')} / {_f(last.get('noc90'), '.1f')} "
                f"| {_f(last.get('dice_auc5'), '.2f')} | {_f(min(fidelity) if fidelity else None, '.2f')} "
                f"| {annotated} | {', '.join(f'v{v}' for v in rejected) or 'none'} |"
            )
    return "\n".join(lines)


def plot_experiment(report: dict, path: str) -> None:
    """mIoU per annotated fraction, mean ± sd bands per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {
        "saim_entropy": ("tab:blue", "o-"),
        "saim_random": ("tab:orange", "^-"),
        "classical": ("tab:green", "s--"),
    }
    for arm, (color, style) in styles.items():
        rows = [r for r in report["arms"][arm]["iterations"] if r["miou_mean"] is not None]
        x = [100 * r["annotated_fraction_mean"] for r in rows]
        m = np.array([r["miou_mean"] for r in rows])
        sd = np.array([r["miou_sd"] for r in rows])
        ax.plot(x, m, style, color=color, label=arm.replace("_", " "))
        ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.15)
    ax.set_xlabel("annotated share of the training pool (%)")
    ax.set_ylabel("test mIoU (automatic)")
    ax.set_title(f"{report['config']['data']}: mean ± sd over seeds {report['seeds']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
