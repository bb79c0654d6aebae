"""How far from a click test-time refinement should change the answer (ModelConfig.refine_reach): a saved model
(tools/click_study.py --save DIR) on its split's test series, evaluated as the emulation evaluates
(saim.training.evaluation.evaluate: 3-click mIoU, NoC@85/90 over images with foreground, Dice-AUC5, and the
two-sided click measures: recall within a click's disk, precision there, overshoot outside) once per reach. Split
flags as tools/click_study.py:

    .venv/bin/python tools/refine_reach.py DIR --data synthetic --seed 1 --pretrain-fraction auto \
        --refine-steps 5 --reach anywhere 1 2 3 5

Prints one JSON line per reach (append them with --out). Never run by the tests."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saim.cli.flags import add_fields, from_args  # noqa: E402
from saim.data.sources import open_source  # noqa: E402
from saim.data.splits import SplitRule  # noqa: E402
from saim.model.predictor import InteractivePredictor  # noqa: E402
from saim.research.emulate import EmulationConfig, split_series  # noqa: E402
from saim.training.evaluation import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a saved model directory")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-slices", type=int, default=8, help="slices kept per series (evenly spaced); 0 = all")
    ap.add_argument("--refine-steps", type=int, default=5)
    ap.add_argument("--refine-radius", type=float, default=0.0)
    ap.add_argument("--reach", nargs="+", default=["anywhere", "1", "2", "3", "5"], help="click radii, or anywhere")
    ap.add_argument("--no-noc", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    add_fields(ap.add_argument_group("split"), SplitRule)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = InteractivePredictor.load(args.model)
    cfg = EmulationConfig(
        data=args.data, seed=args.seed, max_slices=args.max_slices or None, split=from_args(args, SplitRule)
    )
    size = predictor.config.image_size
    classes, series = open_source(cfg.data, size, cfg.max_slices, cfg.synthetic_series, cfg.synthetic_slices, cfg.seed)
    if tuple(classes) != predictor.config.classes:
        ap.error(f"the data's classes {classes} are not the model's {predictor.config.classes}")
    test = split_series(series, cfg).test
    base = replace(predictor.config, refine_steps=args.refine_steps, refine_radius=args.refine_radius)
    for reach in [*(["off"] if args.refine_steps else []), *args.reach]:
        if reach == "off":
            predictor.config = replace(base, refine_steps=0)
        else:
            predictor.config = replace(base, refine_reach=reach if reach == "anywhere" else float(reach))
        started = time.perf_counter()
        metrics = evaluate(predictor, test, 3, not args.no_noc)
        row = {
            "model": str(args.model),
            "refine_steps": 0 if reach == "off" else args.refine_steps,
            "refine_radius": args.refine_radius,
            "reach": reach,
            "reach_px": None if reach in ("off", "anywhere") else float(reach) * predictor.config.radius,
            **{k: v for k, v in metrics.items() if k != "per_class_iou"},
            "seconds": round(time.perf_counter() - started, 1),
        }
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
