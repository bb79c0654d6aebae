"""The emulated annotation scenario (paper §4.2): SAIM with a virtual user, optionally against classical annotation.

Split: fixed test and validation series, an initial (pre-training) set annotated with ground truth, and the
unannotated pool. Per iteration: select series with the current model, annotate them with the virtual user driving
that model, add them to the training set, retrain, evaluate on the fixed test set. The classical baseline trains
on the ground truth of the same series.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from saim.data.slices import Series, stack
from saim.data.sources import open_source
from saim.data.splits import SplitRule, make_splits
from saim.errors import SaimError
from saim.model.config import ModelConfig
from saim.model.device import precision, resolve_device
from saim.model.predictor import InteractivePredictor
from saim.selection.strategies import make_strategy, select
from saim.training.config import TrainConfig
from saim.training.evaluation import CVPR_MEASURES, evaluate, evaluate_cvpr
from saim.training.metrics import iou_per_class, mean_iou
from saim.training.pipeline import promotion_decision
from saim.training.recipe import train_predictor
from saim.training.virtual_user import VirtualUser

log = logging.getLogger(__name__)


@dataclass
class EmulationConfig:
    data: str = "synthetic"
    iterations: int = 3
    batch_size: int | None = None  # series per iteration; default: size of the initial training set (paper)
    split: SplitRule = field(default_factory=lambda: SplitRule(pretrain_fraction="auto"))
    model: ModelConfig = field(default_factory=ModelConfig)  # classes come from the data
    train: TrainConfig = field(default_factory=TrainConfig)  # seed and device are set per run
    max_slices: int | None = 8
    clicks: int = 3
    selection: Literal["entropy", "random", "fg_random", "mc_dropout", "clasp_pe"] = "fg_random"
    baseline: Literal["none", "classical"] = "none"
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda[:N] (saim.model.device)
    threads: int | None = None
    synthetic_series: int = 24
    synthetic_slices: int = 12
    noc: bool = True
    noc_at: Literal["every", "ends"] = "every"  # NoC and Dice-AUC at every iteration, or at the first and last only
    protocol: Literal["saim", "cvpr"] = "saim"  # cvpr: also the CVPR 2025 challenge's volume measures (evaluate_cvpr)
    gate: bool = True  # the services' promotion gate: a version worse on validation does not annotate the next round
    promotion_tolerance: float = 0.02  # as SAIM_PROMOTION_TOLERANCE


@dataclass
class Split:
    test: list[Series]
    val: list[Series]
    initial: list[Series]
    pool: list[Series]


def split_series(series: list[Series], cfg: EmulationConfig) -> Split:
    if len(series) < 4:
        raise ValueError(f"need at least 4 series to split into test/val/initial/pool, got {len(series)}")
    by_case = {s.case: s for s in series}
    sp = make_splits([s.case for s in series], cfg.seed, cfg.split)
    return Split(*([by_case[c] for c in cases] for cases in (sp.test, sp.val, sp.initial, sp.pool)))


@dataclass(frozen=True)
class Pretrained:
    """The initial set an emulation chose and the model pre-trained on it, in a form that crosses processes:
    `saim experiment` pre-trains once per seed and runs every arm of that seed from it (the arms share the split, so
    they would choose the same set and train the same model)."""

    initial: tuple[str, ...]  # the initial set's cases, in the split's order
    weights: bytes
    metadata: dict
    info: dict  # how the set was chosen (the report's initial_set)
    seconds: float  # the chosen model's training time
    wall_seconds: float  # choosing the set and pre-training, in all
    key: tuple  # what decides the pre-training: data, split, sizes, model, training recipe, seed, device
    first: dict  # the pre-trained model's measures on the test series (iteration 0 of every arm)
    first_key: tuple  # what decides those measures besides the pre-training: clicks, NoC, protocol

    def predictor(self, device: str) -> InteractivePredictor:
        return InteractivePredictor.from_bytes(self.weights, self.metadata, device=device)


AUTO_IOU = 0.5  # the paper's initial-set rule: every class above this IoU on validation


def absent_classes(series: list[Series], classes: tuple[str, ...]) -> list[str]:
    """The classes with no labelled pixel in `series`."""
    present = set().union(*(np.unique(s.truth).tolist() for s in series)) if series else set()
    return [name for c, name in enumerate(classes, start=1) if c not in present]


def _rest(split: Split, initial: list[Series]) -> list[Series]:
    """The pool left by an initial set taken from the split's training series: the others, in the split's order."""
    taken = {s.case for s in initial}
    return [s for s in split.initial + split.pool if s.case not in taken]


def covering_order(series: list[Series], classes: tuple[str, ...]) -> tuple[list[Series], int | None]:
    """The order in which the auto rule adds series to the initial set: the split's order, except that while a class
    has no labelled pixel in the set so far, the next series is the first one that has it (a class confined to a few
    series, such as a kidney in the lower slabs of a scan, is not left out by the split's order). Returns the order
    and how many of its first series hold every class (None if all of them together do not)."""
    wanted = set(range(1, len(classes) + 1))
    present = {s.case: wanted & set(np.unique(s.truth).tolist()) for s in series}  # one pass over each label map
    rest, grown, covered = list(series), [], None
    have: set[int] = set()
    while rest:
        missing = wanted - have
        pick = next((s for s in rest if present[s.case] & missing), rest[0])
        rest.remove(pick)
        grown.append(pick)
        have |= present[pick.case]
        if covered is None and have == wanted:
            covered = len(grown)
    return grown, covered


class Emulation:
    def __init__(self, cfg: EmulationConfig, show_progress: bool = True):
        self.cfg = cfg
        self.show_progress = show_progress
        self.device = resolve_device(cfg.device)

    def _train(self, mc: ModelConfig, train: list[tuple[np.ndarray, np.ndarray]], seed: int, parent, desc: str):
        images = np.concatenate([i for i, _ in train])
        labels = np.concatenate([l for _, l in train])
        tc = replace(self.cfg.train, seed=seed, device=self.device)
        bar = tqdm(desc=desc, total=None, leave=False, disable=not self.show_progress, unit="step")

        def progress(step: int, total: int, loss: float) -> None:
            bar.total = total
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        counts = [len(i) for i, _ in train]
        result = train_predictor(mc, images, labels, tc, parent=parent, progress=progress, series_counts=counts)
        bar.close()
        return result

    def _val_miou(self, predictor, val: tuple[np.ndarray, np.ndarray]) -> float:
        """What the promotion gate compares: the automatic prediction's mIoU on the validation series."""
        return mean_iou(val[1], predictor.predict(val[0]), predictor.config.num_classes)

    def _auto_miou(self, predictor, test: list[Series]) -> float:
        """The automatic prediction's mIoU on the test series (the classical baseline's measure; `evaluate`'s miou)."""
        return self._val_miou(predictor, stack(test))

    def _initial_set(self, split: Split, mc: ModelConfig, val: tuple[np.ndarray, np.ndarray]):
        """The initial (pre-training) set, its pre-trained model and how it was chosen. A fixed fraction is taken as
        split; `auto` grows the set one series at a time (in the split's order, but reaching first for a series with a
        class the set lacks: covering_order) until the pre-trained model has every class above 0.5 IoU on validation,
        up to half of the training series or the fewest that hold every class; if no size gets there, the smallest
        with validation mIoU above 0.5, else the largest tried. A class without a labelled pixel is an error."""
        cfg = self.cfg

        def pretrain(initial: list[Series]):
            return self._train(mc, [(s.images, s.truth) for s in initial], cfg.seed, None, "pre-train")

        if cfg.split.pretrain_fraction != "auto":
            if missing := absent_classes(split.initial, mc.classes):
                raise SaimError(
                    f"class(es) {missing} have no labelled pixel in the initial set ({len(split.initial)} series): "
                    "use --pretrain-fraction auto or a larger fraction"
                )
            info = {
                "rule": cfg.split.pretrain_fraction,
                "series": len(split.initial),
                "cases": [s.case for s in split.initial],
            }
            return split.initial, split.pool, pretrain(split.initial), info
        ordered, covered = covering_order(split.initial + split.pool, mc.classes)
        if covered is None:
            raise SaimError(
                f"class(es) {absent_classes(ordered, mc.classes)} have no labelled pixel in any of the {len(ordered)} "
                "training series: the pre-trained model could not learn them; check the dataset's labels"
            )
        cap = max(1, len(ordered) // 2, covered)
        tried = [{"series": n, "absent_classes": absent_classes(ordered[:n], mc.classes)} for n in range(1, covered)]
        chosen, fallback = None, None
        for n in range(covered, cap + 1):
            last = (n, pretrain(ordered[:n]))
            per_class = iou_per_class(val[1], last[1].predictor.predict(val[0]), mc.num_classes)
            scored = per_class[~np.isnan(per_class)]
            miou = float(scored.mean()) if scored.size else 0.0
            ok = bool(scored.size) and bool((scored > AUTO_IOU).all())
            tried.append(
                {
                    "series": n,
                    "val_miou": miou,
                    "val_per_class_iou": dict(zip(mc.classes, map(_num, per_class), strict=True)),
                    "every_class_above": ok,
                }
            )
            if ok:
                chosen, reason = last, f"every class above {AUTO_IOU} IoU on validation"
                break
            if fallback is None and miou > AUTO_IOU:
                fallback = last
        else:
            if fallback is not None:
                chosen = fallback
                reason = (
                    f"no set of up to {cap} series has every class above {AUTO_IOU}; the smallest with mIoU above it"
                )
            else:
                chosen = last
                reason = f"no set of up to {cap} series reaches validation mIoU {AUTO_IOU}; the largest tried"
            log.warning("initial set: %s (%d series)", reason, chosen[0])
        n, result = chosen
        initial = ordered[:n]
        info = {"rule": "auto", "series": n, "cases": [s.case for s in initial], "reason": reason, "tried": tried}
        return initial, _rest(split, initial), result, info

    def _pretraining_key(self) -> tuple:
        cfg = self.cfg
        return (
            cfg.data,
            repr(cfg.split),
            cfg.max_slices,
            cfg.synthetic_series,
            cfg.synthetic_slices,
            repr(cfg.model),
            repr(cfg.train),
            cfg.seed,
            self.device,
            cfg.threads,
        )

    def _evaluation_key(self) -> tuple:
        return (self.cfg.clicks, self.cfg.noc, self.cfg.protocol)

    def _evaluate(self, model: InteractivePredictor, test: list[Series], ends: bool) -> dict:
        cfg = self.cfg
        metrics = evaluate(model, test, cfg.clicks, cfg.noc and (cfg.noc_at == "every" or ends))
        if cfg.protocol == "cvpr":
            metrics.update(evaluate_cvpr(model, test))
        return metrics

    def _open(self) -> tuple[tuple[str, ...], Split, ModelConfig]:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        classes, series = open_source(
            cfg.data, cfg.model.image_size, cfg.max_slices, cfg.synthetic_series, cfg.synthetic_slices, cfg.seed
        )
        return tuple(classes), split_series(series, cfg), replace(cfg.model, classes=tuple(classes))

    def pretrain(self) -> Pretrained:
        """Choose the initial set, pre-train on it and measure the model on the test series (what `run` does first), for
        runs that share it."""
        started = time.perf_counter()
        _, split, mc = self._open()
        initial, _, result, info = self._initial_set(split, mc, stack(split.val))
        predictor = result.predictor
        first = self._evaluate(predictor, split.test, ends=True)
        return Pretrained(
            initial=tuple(s.case for s in initial),
            weights=predictor.to_bytes(),
            metadata=predictor.describe(),
            info=info,
            seconds=result.stats["seconds"],
            wall_seconds=round(time.perf_counter() - started, 1),
            key=self._pretraining_key(),
            first=first,
            first_key=self._evaluation_key(),
        )

    def _adopt(self, pretrained: Pretrained, split: Split) -> tuple[list[Series], list[Series], InteractivePredictor]:
        """The initial set, pool and model of a run that shares another run's pre-training."""
        if pretrained.key != self._pretraining_key():
            raise SaimError("the pre-trained model was made with other data, split, model or training settings")
        by_case = {s.case: s for s in split.initial + split.pool}
        if not set(pretrained.initial) <= set(by_case):
            raise SaimError("the pre-trained model's initial set is not this split's")
        initial = [by_case[case] for case in pretrained.initial]
        return initial, _rest(split, initial), pretrained.predictor(self.device)

    def run(self, pretrained: Pretrained | None = None) -> dict:
        """The scenario; with `pretrained` (from `pretrain` with the same settings) its initial set and model are
        used instead of choosing and training them again."""
        cfg = self.cfg
        started = time.perf_counter()
        classes, split, mc = self._open()
        total_train = len(split.initial) + len(split.pool)
        val = stack(split.val)
        if pretrained is None:
            initial, pool_series, result, initial_info = self._initial_set(split, mc, val)
            first_model, train_seconds = result.predictor, result.stats["seconds"]
        else:
            initial, pool_series, first_model = self._adopt(pretrained, split)
            initial_info, train_seconds = pretrained.info, pretrained.seconds
        split = replace(split, initial=initial, pool=pool_series)
        batch = cfg.batch_size or len(split.initial)
        strategy = make_strategy(cfg.selection, cfg.seed)
        user = VirtualUser(cfg.clicks)

        saim_set = {s.case: (s.images, s.truth) for s in split.initial}
        classical_set = dict(saim_set)
        pool = {s.case: s for s in split.pool}
        rows: list[dict] = []
        model = classical_model = first_model  # both arms start from the same pre-trained model
        model_val = self._val_miou(model, val)
        selected: list[str] = []
        annotation_miou = auto_miou_selected = None
        clicks_placed = slices_selected = 0
        gate = {"version": 0, "promoted": True, "reason": "first model", "val_miou": model_val}
        for it in range(cfg.iterations + 1):
            if it > 0:
                if not pool:
                    log.info("pool exhausted after %d iterations", it - 1)
                    break
                selected, _ = select(strategy, model, {c: s.images for c, s in pool.items()}, batch, it)
                chosen = [pool.pop(c) for c in selected]
                images, gt = stack(chosen)
                annotated = user.annotate(model, images, gt)
                annotation_miou = mean_iou(gt, annotated.labels, mc.num_classes)
                clicks_placed, slices_selected = sum(len(c) for c in annotated.clicks), len(images)
                auto_miou_selected = mean_iou(gt, annotated.rounds[0], mc.num_classes)
                offset = 0
                for s in chosen:
                    saim_set[s.case] = (s.images, annotated.labels[offset : offset + s.num_slices])
                    classical_set[s.case] = (s.images, s.truth)
                    offset += s.num_slices
                result = self._train(mc, list(saim_set.values()), cfg.seed + it, model, f"retrain it {it}")
                train_seconds = result.stats["seconds"]
                candidate_val = self._val_miou(result.predictor, val)
                promoted, reason = promotion_decision(
                    {"val_miou": candidate_val}, {"val_miou": model_val}, cfg.promotion_tolerance
                )
                if not promoted and not cfg.gate:
                    promoted, reason = True, f"used without the gate (--no-gate); the gate would have {reason}"
                gate = {"version": it, "promoted": promoted, "reason": reason, "val_miou": candidate_val}
                if promoted:
                    model, model_val = result.predictor, candidate_val
                if cfg.baseline == "classical":
                    classical_model = self._train(
                        mc, list(classical_set.values()), cfg.seed + it, classical_model, f"classical it {it}"
                    ).predictor
            if it == 0 and pretrained is not None and pretrained.first_key == self._evaluation_key():
                metrics = pretrained.first  # the same model on the same test series: measured once per seed
            else:
                metrics = self._evaluate(model, split.test, ends=it == 0 or it == cfg.iterations or not pool)
            if cfg.baseline == "classical":
                miou_classical = metrics["miou"] if it == 0 else self._auto_miou(classical_model, split.test)
            else:
                miou_classical = None
            row = {
                "iteration": it,
                "annotated_series": len(saim_set),
                "annotated_fraction": len(saim_set) / total_train,
                "miou": metrics["miou"],
                "miou_classical": miou_classical,
                "per_class_iou": metrics["per_class_iou"],
                "interactive_miou": metrics["interactive_miou"],
                "clicks_per_class": cfg.clicks,
                "noc85": metrics.get("noc85"),
                "noc90": metrics.get("noc90"),
                "dice_auc5": metrics.get("dice_auc5"),
                "click_fidelity": metrics["click_fidelity"],
                "click_precision": metrics["click_precision"],
                "click_overshoot": metrics["click_overshoot"],
                "scribble_miou": metrics.get("scribble_miou"),  # one scribble per class after the automatic answer
                "box_miou": metrics.get("box_miou"),  # one tight box per class (a model with box prompts)
                "box_click_miou": metrics.get("box_click_miou"),  # the box, then 2 click rounds
                **{key: metrics.get(key) for key in CVPR_MEASURES if cfg.protocol == "cvpr"},
                "annotation_miou": annotation_miou,
                "auto_miou_selected": auto_miou_selected,
                "gate": gate,
                "selection": cfg.selection,
                "selected": selected,
                "slices_selected": slices_selected,  # slices of this iteration's selected series
                "clicks_placed": clicks_placed,  # the virtual user's clicks on them (the annotation-time model's input)
                "train_seconds": train_seconds,
            }
            rows.append(row)
            if self.show_progress:
                tqdm.write(format_row(row))
        return {
            "config": {**asdict(cfg), "batch_size": batch, "device": self.device, "precision": precision(self.device)},
            "classes": list(classes),
            "split": {
                "test": [s.case for s in split.test],
                "val": [s.case for s in split.val],
                "initial": [s.case for s in split.initial],
                "pool": [s.case for s in split.pool],
            },
            "initial_set": initial_info,
            "iterations": rows,
            "rejected_versions": [r["gate"]["version"] for r in rows if not r["gate"]["promoted"]],
            "final": {"miou": rows[-1]["miou"], "miou_classical": rows[-1]["miou_classical"]},
            "wall_seconds": round(time.perf_counter() - started, 1),
        }


def _num(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


TABLE_HEADER = (
    f"{'it':>3} {'annotated':>10} {'mIoU':>7} {'classical':>9} {'inter.':>7} {'box':>6} {'NoC85':>6} {'NoC90':>6} "
    f"{'DiceAUC5':>8} {'fidel.':>6} {'prec.':>6} {'over.':>6} {'annot.':>7} {'gate':>9} {'train s':>8}"
)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_row(row: dict) -> str:
    frac = f"{row['annotated_series']} ({row['annotated_fraction']:.0%})"
    gate = "promoted" if row["gate"]["promoted"] else "rejected"
    return (
        f"{row['iteration']:>3} {frac:>10} {row['miou']:>7.3f} {_fmt(row['miou_classical'], '.3f'):>9} "
        f"{row['interactive_miou']:>7.3f} {_fmt(row.get('box_miou'), '.3f'):>6} "
        f"{_fmt(row['noc85'], '.2f'):>6} {_fmt(row['noc90'], '.2f'):>6} "
        f"{_fmt(row['dice_auc5'], '.3f'):>8} {_fmt(row['click_fidelity'], '.3f'):>6} "
        f"{_fmt(row.get('click_precision'), '.3f'):>6} {_fmt(row.get('click_overshoot'), '.3f'):>6} "
        f"{_fmt(row['annotation_miou'], '.3f'):>7} {gate:>9} {row['train_seconds']:>8.1f}"
    )


def format_table(report: dict) -> str:
    return "\n".join([TABLE_HEADER] + [format_row(r) for r in report["iterations"]])


def plot_report(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["iterations"]
    x = [r["iteration"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [r["miou"] for r in rows], "o-", color="tab:blue", label="SAIM (virtual-user annotations)")
    if rows[0]["miou_classical"] is not None:
        ax.plot(x, [r["miou_classical"] for r in rows], "s--", color="tab:green", label="classical (ground truth)")
    for r in rows:
        ax.annotate(
            f"{r['annotated_fraction']:.0%}",
            (r["iteration"], r["miou"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax.set_xlabel("iteration (label: annotated fraction of the training pool)")
    ax.set_ylabel("test mIoU (automatic, foreground classes)")
    ax.set_xticks(x)
    ax.set_title(f"SAIM emulation: {report['config']['data']} ({report['config']['selection']} selection)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
