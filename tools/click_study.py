"""How well a pre-trained model follows clicks: pre-train on the emulation's initial set, then measure on its test
split the automatic mIoU, the mIoU after 3 clicks per class, NoC@85/90, Dice-AUC over 5 clicks and click fidelity
(saim.training.evaluation.evaluate). Model and training settings are the emulation's flags, so variants are one flag
away:

    .venv/bin/python tools/click_study.py --image-size 64 --threads 2 --click-radius 3 --label radius3

`--save DIR` keeps the model and `--parent DIR` starts another run from it (e.g. phantoms first, then real data);
`--mix-synthetic N` trains on N phantom series besides the data's own.

Prints one JSON line per run (append them with --out). Never run by the tests."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saim.cli.flags import add_fields, from_args  # noqa: E402
from saim.data.sources import open_source  # noqa: E402
from saim.data.splits import SplitRule  # noqa: E402
from saim.model.config import ModelConfig  # noqa: E402
from saim.model.predictor import InteractivePredictor  # noqa: E402
from saim.research.emulate import EmulationConfig, split_series  # noqa: E402
from saim.training.config import TrainConfig  # noqa: E402
from saim.training.evaluation import evaluate  # noqa: E402
from saim.training.recipe import train_predictor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-slices", type=int, default=8, help="slices kept per series (evenly spaced); 0 = all")
    ap.add_argument("--initial", type=int, default=None, help="initial series (default: the split rule's)")
    ap.add_argument("--label", default="default")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--save", type=Path, default=None, help="keep the pre-trained model in this directory")
    ap.add_argument(
        "--parent",
        type=Path,
        default=None,
        help="start from this saved model (--save of an earlier run; same classes and image size), fine-tuned as the "
        "training mode says",
    )
    ap.add_argument(
        "--mix-synthetic",
        type=int,
        default=0,
        metavar="N",
        help="add N synthetic phantom series (same classes required) to the training set",
    )
    add_fields(ap.add_argument_group("split"), SplitRule)
    add_fields(ap.add_argument_group("model"), ModelConfig)
    add_fields(ap.add_argument_group("training"), TrainConfig, rename={"batch_size": "train_batch_size"})
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = EmulationConfig(
        data=args.data,
        seed=args.seed,
        max_slices=args.max_slices or None,
        split=from_args(args, SplitRule),
        model=from_args(args, ModelConfig),
        train=from_args(args, TrainConfig),
    )
    classes, series = open_source(
        cfg.data, cfg.model.image_size, cfg.max_slices, cfg.synthetic_series, cfg.synthetic_slices, cfg.seed
    )
    split = split_series(series, cfg)
    initial = split.initial if args.initial is None else (split.initial + split.pool)[: args.initial]
    mc = replace(cfg.model, classes=tuple(classes))
    parent = InteractivePredictor.load(args.parent) if args.parent else None
    if parent is not None and (parent.config.classes, parent.config.image_size) != (mc.classes, mc.image_size):
        ap.error(f"--parent {args.parent}: its classes and image size differ from this run's")
    training = list(initial)
    if args.mix_synthetic:
        phantom_classes, phantoms = open_source(
            "synthetic",
            mc.image_size,
            cfg.max_slices,
            max(cfg.synthetic_series, args.mix_synthetic),
            cfg.synthetic_slices,
            cfg.seed,
        )
        if tuple(phantom_classes) != mc.classes:
            ap.error(f"--mix-synthetic: the phantoms' classes {phantom_classes} are not this dataset's {mc.classes}")
        training += phantoms[: args.mix_synthetic]
    images = np.concatenate([s.images for s in training])
    labels = np.concatenate([s.truth for s in training])
    started = time.perf_counter()
    result = train_predictor(mc, images, labels, replace(cfg.train, seed=cfg.seed), parent=parent)
    train_s = time.perf_counter() - started
    if args.save:
        result.predictor.save(args.save)
    metrics = evaluate(result.predictor, split.test, cfg.clicks, noc=True)
    row = {
        "label": args.label,
        "data": cfg.data,
        "seed": cfg.seed,
        "threads": args.threads,
        "initial_series": len(initial),  # of the data's own; mix_synthetic phantom series besides
        "parent": str(args.parent) if args.parent else None,
        "mix_synthetic": args.mix_synthetic,
        "test_slices": sum(s.num_slices for s in split.test),
        "train_seconds": round(train_s, 1),
        **{k: metrics[k] for k in ("miou", "interactive_miou", "noc85", "noc90", "dice_auc5", "click_fidelity")},
        "per_class_iou": metrics["per_class_iou"],
        "model": {k: v for k, v in asdict(mc).items() if k != "classes"},
        "train": {k: v for k, v in asdict(cfg.train).items() if k not in ("seed", "device")},
    }
    line = json.dumps(row)
    print(line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
