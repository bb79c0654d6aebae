"""What clicks leave: a saved model (tools/click_study.py --save DIR) on its split's test series, driven by the
virtual user for N rounds (one click per class per round, saim.training.virtual_user.VirtualUser). Prints the mIoU
after every round, per-class IoU before and after `--clicks` rounds, and where the wrong pixels of the automatic answer
and after `--clicks` rounds lie: within 1 px of a ground-truth border, or farther, with the mIoU either kind of error
leaves once the other is corrected. It also bounds what a better answer to the same clicks could give: the mIoU
with every clicked disk exactly right, and how many pixels outside the disks the clicks fixed or broke. Split flags
as tools/click_study.py (the model's own image size and refinement settings are used unless overridden):

    .venv/bin/python tools/click_curve.py DIR --data synthetic --seed 2 --pretrain-fraction auto --rounds 20

Never run by the tests."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saim.cli.flags import add_fields, from_args  # noqa: E402
from saim.data.slices import stack  # noqa: E402
from saim.data.sources import open_source  # noqa: E402
from saim.data.splits import SplitRule  # noqa: E402
from saim.model.encoding import rasterize_clicks  # noqa: E402
from saim.model.predictor import InteractivePredictor  # noqa: E402
from saim.research.emulate import EmulationConfig, split_series  # noqa: E402
from saim.training.metrics import iou_per_class, mean_iou  # noqa: E402
from saim.training.virtual_user import VirtualUser  # noqa: E402


def near_border(gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, H, W) bool: pixels within 1 px of a border between two labels of the ground truth."""
    out = np.zeros(gt.shape, bool)
    for i, labels in enumerate(gt):
        border = np.zeros(labels.shape, bool)
        for c in range(num_classes + 1):
            mask = labels == c
            border |= mask ^ ndimage.binary_erosion(mask)
        out[i] = ndimage.binary_dilation(border)
    return out


def error_anatomy(pred: np.ndarray, gt: np.ndarray, border: np.ndarray, num_classes: int) -> dict:
    """Wrong pixels near a ground-truth border and farther, and the mIoU with only one of the two kinds left."""
    wrong = pred != gt
    return {
        "miou": round(mean_iou(gt, pred, num_classes), 4),
        "wrong": int(wrong.sum()),
        "wrong_within_1px_of_border": int((wrong & border).sum()),
        "miou_with_border_errors_only": round(mean_iou(gt, np.where(border, pred, gt), num_classes), 4),
        "miou_with_far_errors_only": round(mean_iou(gt, np.where(border, gt, pred), num_classes), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a saved model directory")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-slices", type=int, default=8, help="slices kept per series (evenly spaced); 0 = all")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clicks", type=int, default=3, help="the round whose errors are located")
    ap.add_argument("--refine-steps", type=int, default=None, help="override the model's refinement steps")
    add_fields(ap.add_argument_group("split"), SplitRule)
    args = ap.parse_args()
    if not 0 <= args.clicks <= args.rounds:
        ap.error(f"--clicks must be between 0 and --rounds ({args.rounds})")
    torch.set_num_threads(args.threads)
    predictor = InteractivePredictor.load(args.model)
    if args.refine_steps is not None:
        predictor.config = replace(predictor.config, refine_steps=args.refine_steps)
    cfg = EmulationConfig(
        data=args.data, seed=args.seed, max_slices=args.max_slices or None, split=from_args(args, SplitRule)
    )
    size = predictor.config.image_size
    classes, series = open_source(cfg.data, size, cfg.max_slices, cfg.synthetic_series, cfg.synthetic_slices, cfg.seed)
    if tuple(classes) != predictor.config.classes:
        ap.error(f"the data's classes {classes} are not the model's {predictor.config.classes}")
    images, gt = stack(split_series(series, cfg).test)
    k = predictor.config.num_classes
    result = VirtualUser(args.rounds).annotate(predictor, images, gt)
    auto, answer = result.rounds[0], result.rounds[args.clicks]
    border = near_border(gt, k)
    placed = result.click_counts[args.clicks - 1] if args.clicks else [0] * len(images)
    first = [image_clicks[:n] for image_clicks, n in zip(result.clicks, placed, strict=True)]
    pos, neg = rasterize_clicks(first, k, size, predictor.config.radius, "disk")
    disks = (torch.maximum(pos, neg).amax(1) > 0.5).numpy()  # within a click's disk, any class
    was_wrong, now_wrong = auto != gt, answer != gt
    row = {
        "model": str(args.model),
        "test_slices": len(images),
        "miou_by_round": [round(mean_iou(gt, r, k), 4) for r in result.rounds],
        "per_class_iou_auto": np.round(iou_per_class(gt, auto, k), 4).tolist(),
        f"per_class_iou_{args.clicks}": np.round(iou_per_class(gt, answer, k), 4).tolist(),
        "errors_auto": error_anatomy(auto, gt, border, k),
        f"errors_{args.clicks}": error_anatomy(answer, gt, border, k),
        f"miou_{args.clicks}_with_click_disks_right": round(mean_iou(gt, np.where(disks, gt, answer), k), 4),
        f"outside_click_disks_{args.clicks}": {
            "fixed": int((was_wrong & ~now_wrong & ~disks).sum()),
            "broken": int((~was_wrong & now_wrong & ~disks).sum()),
        },
        "click_fidelity": round(float(np.mean(result.fidelity)), 4) if result.fidelity else None,
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
