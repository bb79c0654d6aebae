"""`saim experiment`: the paper's curves over several seeds — SAIM with each selection strategy named
(`--strategies`, by default entropy and random) and the classical baseline — aggregated per iteration as mean and
sample standard deviation, and compared pairwise against foreground-aware random selection when it is one of them.

Per seed, the initial set is chosen and pre-trained once, then one emulation (saim.research.emulate) per strategy
runs from that model on the same split: the first strategy's with the classical baseline (which trains on the ground
truth of the same selected series). The seed changes the split, the initial set, the training randomness and the
random strategies' draws. Because every arm of a seed shares its split and pre-trained model, arms are compared per
seed: the mean of the per-seed differences against the reference arm (`saim_fg_random`, nnActive's baseline) with a
95 % Student-t interval (`paired`); `verdict` states which arm, if any, has its interval above zero.

Annotation time is an estimate from a stated model, not a measurement: a SAIM series costs
`seconds_per_click` x the virtual user's clicks + `seconds_per_slice` x its slices (looking at and accepting each),
a manually annotated series `manual_seconds_per_slice` x its slices. The defaults put a 60-slice series at the
paper's anchors — 15' by hand in 3D Slicer, 3'43" with SAIM when about 36 clicks suffice.

Report contract (`--report`): {"config", "seeds", "strategies", "reference", "time_model", "arms": {arm:
{"iterations": [{"iteration",
"annotated_fraction", "miou_mean", "miou_sd", "noc85_mean", "noc90_mean", "dice_auc5_mean", "interactive3_miou_mean",
... }]}}, "per_seed": {arm: [[row per iteration] per seed]}, "runs": [{"seed", "initial_set", "wall_seconds":
{"pretrain", strategy...}, "rejected_versions": {strategy: [...]}}], "paired": {arm: {measure: {"diffs", "mean",
"ci95", "wins", "n"}}}, "wall_seconds"}.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from saim.errors import SaimError
from saim.model.device import resolve_device
from saim.research.emulate import Emulation, EmulationConfig, Pretrained
from saim.selection.strategies import make_strategy
from saim.training.evaluation import CVPR_MEASURES

log = logging.getLogger(__name__)

STRATEGIES = ("entropy", "random")  # the arms when none are named: the paper's two
REFERENCE = "fg_random"  # what the paired differences are against, when it is one of the arms (nnActive's baseline)
ARMS = ("saim_entropy", "saim_random", "classical")  # the arms of STRATEGIES


def arm_names(strategies: tuple[str, ...]) -> tuple[str, ...]:
    """One SAIM arm per strategy, then the classical baseline (trained along the first strategy's selections)."""
    return (*(f"saim_{s}" for s in strategies), "classical")


# per-iteration measures aggregated over seeds: report name -> emulation row field
MEASURES = {
    "miou": "miou",
    "noc85": "noc85",
    "noc90": "noc90",
    "dice_auc5": "dice_auc5",
    "interactive3_miou": "interactive_miou",
    "scribble_miou": "scribble_miou",
    "box_miou": "box_miou",
    "box_click_miou": "box_click_miou",
    "click_fidelity": "click_fidelity",
    "click_precision": "click_precision",
    "click_overshoot": "click_overshoot",
    "annotation_miou": "annotation_miou",
    "annotated_fraction": "annotated_fraction",
    "ratio_to_classical": "ratio_to_classical",
    "annotation_hours": "annotation_hours",
    **{m: m for m in CVPR_MEASURES},  # with --protocol cvpr
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


def arm_rows(reports: dict[str, dict], time_model: TimeModel) -> dict[str, list[dict]]:
    """The arms' per-iteration rows of one seed, from each strategy's emulation report (the first one with the
    classical baseline), with the ratio to classical and the cumulative annotation-time estimate added."""
    strategies = list(reports)
    first = reports[strategies[0]]
    classical_rows, hours = [], 0.0
    for row in first["iterations"]:
        hours += time_model.manual(row.get("slices_selected", 0)) / 3600
        classical_rows.append(
            {
                "iteration": row["iteration"],
                "annotated_fraction": row["annotated_fraction"],
                "miou": row["miou_classical"],
                "annotation_hours": hours,
            }
        )
    by_iteration = {r["iteration"]: r for r in classical_rows}
    arms: dict[str, list[dict]] = {}
    for name, report in reports.items():
        rows, hours = [], 0.0
        for row in report["iterations"]:
            hours += time_model.saim(row.get("clicks_placed", 0), row.get("slices_selected", 0)) / 3600
            classical = by_iteration.get(row["iteration"], {}).get("miou")
            ratio = row["miou"] / classical if classical else None
            rows.append({**row, "ratio_to_classical": ratio, "annotation_hours": hours})
        arms[f"saim_{name}"] = rows
    arms["classical"] = classical_rows
    return arms


# what the paired comparison measures per seed: the test mIoU at the last iteration, its mean over the iterations
# after the first (the area under the learning curve, per iteration) and the 3-click mIoU at the last iteration
PAIRED = {
    "last_miou": lambda rows: rows[-1]["miou"],
    "mean_miou": lambda rows: mean_sd([r["miou"] for r in rows[1:]])[0],
    "last_interactive3_miou": lambda rows: rows[-1].get("interactive_miou"),
}


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided Student-t interval at `level` (n - 1 degrees of freedom); for
    one difference the interval is unbounded."""
    from scipy import stats

    x = np.asarray(diffs, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def paired(per_seed: dict[str, list[list[dict]]], reference: str) -> dict[str, dict]:
    """Per SAIM arm other than `reference`, per PAIRED measure: the per-seed differences arm - reference (same seed:
    same split, initial set and pre-trained model), their mean, 95 % t interval and how many seeds the arm won."""
    out: dict[str, dict] = {}
    ref_rows = per_seed[reference]
    for arm, seeds in per_seed.items():
        if arm in (reference, "classical"):
            continue
        entry = {}
        for name, measure in PAIRED.items():
            pairs = [(measure(rows), measure(ref)) for rows, ref in zip(seeds, ref_rows, strict=True)]
            diffs = [a - b for a, b in pairs if a is not None and b is not None]
            if not diffs:
                continue
            mean, low, high = t_interval(diffs)
            entry[name] = {
                "diffs": diffs,
                "mean": mean,
                "ci95": [low, high],
                "wins": sum(d > 0 for d in diffs),
                "n": len(diffs),
            }
        out[arm] = entry
    return out


def verdict(report: dict, measure: str = "last_miou") -> str:
    """One sentence: which arm's 95 % interval against the reference lies above zero on `measure`, if any."""
    reference = report.get("reference")
    if not reference or not report.get("paired"):
        return "No reference arm: no paired comparison."
    better, worse = [], []
    for arm, entry in report["paired"].items():
        if measure not in entry:
            continue
        e = entry[measure]
        text = (
            f"{arm} ({e['mean']:+.3f}, 95 % CI {e['ci95'][0]:+.3f} to {e['ci95'][1]:+.3f}, {e['wins']}/{e['n']} seeds)"
        )
        if e["ci95"][0] > 0:
            better.append(text)
        elif e["ci95"][1] < 0:
            worse.append(text)
    label = {"last_miou": "test mIoU at the last iteration", "mean_miou": "mean test mIoU over the iterations"}
    what = label.get(measure, measure)
    if better:
        head = f"On {what}, better than {reference} (95 % interval above 0): " + "; ".join(better) + "."
    else:
        head = f"On {what}, no strategy beats {reference}: no 95 % interval of a difference lies above 0."
    return head + (f" Worse than {reference}: " + "; ".join(worse) + "." if worse else "")


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
    strategies: tuple[str, ...] = STRATEGIES,
) -> dict:
    """Per seed: choose the initial set and pre-train once (`Emulation.pretrain`), then run one emulation per
    strategy from that model (the first with the classical baseline). `jobs` > 1 runs these steps in that many
    spawned processes, each with `base.threads` torch threads; a seed's arms start as soon as its pre-training is
    done (on 2 cores, two single-threaded scorer processes outran one two-threaded one, 193 against 168 slices/s in
    make bench-scale; the same was not measured for emulations). With `REFERENCE` among the strategies the report
    carries the paired differences of every other arm against it (`paired`)."""
    if len(set(strategies)) != len(strategies) or not strategies:
        raise SaimError(f"name each strategy once, at least one: {list(strategies)}")
    for name in strategies:
        make_strategy(name)  # an unknown name fails here, before any training
    started = time.perf_counter()
    arms = arm_names(strategies)
    per_seed: dict[str, list[list[dict]]] = {arm: [] for arm in arms}
    runs = []
    configs = {
        s: {
            name: replace(base, seed=s, selection=name, baseline="classical" if i == 0 else "none")  # type: ignore[arg-type]
            for i, name in enumerate(strategies)
        }
        for s in seeds
    }
    results: dict[int, dict[str, dict]] = {}
    pretrain_seconds: dict[int, float] = {}
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            first = strategies[0]
            pretraining = {pool.submit(_pretrain, configs[s][first]): s for s in seeds}
            futures = {}
            for done in as_completed(pretraining):
                s, pretrained = pretraining[done], done.result()
                pretrain_seconds[s] = pretrained.wall_seconds
                futures[s] = {name: pool.submit(_emulate, cfg, pretrained) for name, cfg in configs[s].items()}
            results = {s: {name: f.result() for name, f in futures[s].items()} for s in seeds}
    else:
        for s in seeds:
            pretrained = _pretrain(configs[s][strategies[0]])
            pretrain_seconds[s] = pretrained.wall_seconds
            results[s] = {name: _emulate(cfg, pretrained, show_progress) for name, cfg in configs[s].items()}
    for seed in seeds:
        reports = results[seed]
        for arm, rows in arm_rows(reports, time_model).items():
            per_seed[arm].append(rows)
        runs.append(
            {
                "seed": seed,
                "initial_set": reports[strategies[0]]["initial_set"],
                # pre-training once for every arm; theirs below do not include it
                "wall_seconds": {
                    "pretrain": pretrain_seconds[seed],
                    **{n: r["wall_seconds"] for n, r in reports.items()},
                },
                "rejected_versions": {n: r["rejected_versions"] for n, r in reports.items()},
            }
        )
    reference = f"saim_{REFERENCE}" if REFERENCE in strategies else None
    return {
        "config": {**asdict(base), "device": resolve_device(base.device), "threads": base.threads, "jobs": jobs},
        "seeds": list(seeds),
        "strategies": list(strategies),
        "reference": reference,
        "time_model": asdict(time_model),
        "arms": {arm: {"iterations": aggregate(per_seed[arm])} for arm in arms},
        "paired": paired(per_seed, reference) if reference else {},
        "per_seed": per_seed,
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _pm(mean: float | None, sd: float | None, spec: str = ".3f") -> str:
    if mean is None:
        return "–"
    return f"{mean:{spec}} ± {sd:{spec}}"


def _saim_arms(report: dict) -> list[str]:
    return [arm for arm in report["arms"] if arm != "classical"]


def format_markdown(report: dict) -> str:
    """The report's tables in Markdown (docs/results.md): test mIoU per iteration and arm, the paired differences
    against the reference arm, the interactive measures per arm and iteration, and per seed."""
    arms = report["arms"]
    saim = _saim_arms(report)
    first = saim[0]
    header = " | ".join(f"{a.removeprefix('saim_')} mIoU" for a in saim)
    lines = [
        f"| iteration | annotated | {header} | classical mIoU | {first.removeprefix('saim_')} / classical |",
        "| --- | --- | " + "--- | " * len(saim) + "--- | --- |",
    ]
    columns = [arms[a]["iterations"] for a in saim] + [arms["classical"]["iterations"]]
    for rows in zip(*columns, strict=False):  # the same iterations in every arm unless a pool ran out
        e, c = rows[0], rows[-1]
        cells = " | ".join(_pm(r["miou_mean"], r["miou_sd"]) for r in rows[:-1])
        lines.append(
            f"| {e['iteration']} | {e['annotated_fraction_mean']:.0%} | {cells} | {_pm(c['miou_mean'], c['miou_sd'])} "
            f"| {_pm(e['ratio_to_classical_mean'], e['ratio_to_classical_sd'], '.2f')} |"
        )
    if report.get("paired"):
        lines += ["", format_paired(report)]
    lines += [
        "",
        "| arm | iteration | 3-click mIoU | NoC@85 | NoC@90 | Dice-AUC5 | click recall | click precision "
        "| click overshoot | annotations' mIoU | annotation hours (model) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in saim:
        for e in arms[arm]["iterations"]:
            lines.append(
                f"| {arm} | {e['iteration']} | {_pm(e['interactive3_miou_mean'], e['interactive3_miou_sd'])} "
                f"| {_pm(e['noc85_mean'], e['noc85_sd'], '.1f')} | {_pm(e['noc90_mean'], e['noc90_sd'], '.1f')} "
                f"| {_pm(e['dice_auc5_mean'], e['dice_auc5_sd'], '.2f')} "
                f"| {_pm(e['click_fidelity_mean'], e['click_fidelity_sd'], '.2f')} "
                f"| {_pm(e.get('click_precision_mean'), e.get('click_precision_sd'), '.2f')} "
                f"| {_pm(e.get('click_overshoot_mean'), e.get('click_overshoot_sd'), '.3f')} "
                f"| {_pm(e['annotation_miou_mean'], e['annotation_miou_sd'])} "
                f"| {_pm(e['annotation_hours_mean'], e['annotation_hours_sd'], '.2f')} |"
            )
    classical = arms["classical"]["iterations"]
    lines.append(
        f"| classical | last | – | – | – | – | – | – | – | ground truth "
        f"| {_pm(classical[-1]['annotation_hours_mean'], classical[-1]['annotation_hours_sd'], '.2f')} |"
    )
    if any(e.get("cvpr_dice_auc_mean") is not None for arm in saim for e in arms[arm]["iterations"]):
        lines += [
            "",
            "| arm | iteration | DSC_AUC (CVPR protocol) | NSD_AUC | final DSC | final NSD |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for arm in saim:
            for e in arms[arm]["iterations"]:
                lines.append(
                    f"| {arm} | {e['iteration']} | {_pm(e['cvpr_dice_auc_mean'], e['cvpr_dice_auc_sd'], '.2f')} "
                    f"| {_pm(e['cvpr_nsd_auc_mean'], e['cvpr_nsd_auc_sd'], '.2f')} "
                    f"| {_pm(e['cvpr_dice_mean'], e['cvpr_dice_sd'])} | {_pm(e['cvpr_nsd_mean'], e['cvpr_nsd_sd'])} |"
                )
    if report.get("per_seed") and report.get("runs"):
        lines += ["", format_per_seed(report)]
    return "\n".join(lines)


def format_paired(report: dict) -> str:
    """Per arm, the mean paired difference against the reference arm with its 95 % t interval and the seeds won."""
    ref = report["reference"]
    lines = [
        f"| arm − {ref} (paired per seed) | last-iteration mIoU | mean mIoU over iterations 1+ "
        "| last-iteration 3-click mIoU |",
        "| --- | --- | --- | --- |",
    ]

    def cell(e: dict | None) -> str:
        if e is None:
            return "–"
        low, high = e["ci95"]
        return f"{e['mean']:+.3f} [{low:+.3f}, {high:+.3f}] ({e['wins']}/{e['n']} seeds better)"

    for arm, entry in report["paired"].items():
        lines.append(
            f"| {arm} | {cell(entry.get('last_miou'))} | {cell(entry.get('mean_miou'))} "
            f"| {cell(entry.get('last_interactive3_miou'))} |"
        )
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
    for arm in _saim_arms(report):
        run_key = arm.removeprefix("saim_")
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
    markers = "o^vD<>ph*"
    for i, arm in enumerate(report["arms"]):
        rows = [r for r in report["arms"][arm]["iterations"] if r["miou_mean"] is not None]
        x = [100 * r["annotated_fraction_mean"] for r in rows]
        m = np.array([r["miou_mean"] for r in rows])
        sd = np.array([r["miou_sd"] for r in rows])
        style = "s--" if arm == "classical" else f"{markers[i % len(markers)]}-"
        line = ax.plot(x, m, style, label=arm.replace("_", " "))[0]
        ax.fill_between(x, m - sd, m + sd, color=line.get_color(), alpha=0.12)
    ax.set_xlabel("annotated share of the training pool (%)")
    ax.set_ylabel("test mIoU (automatic)")
    ax.set_title(f"{report['config']['data']}: mean ± sd over seeds {report['seeds']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
