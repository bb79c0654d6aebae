"""Evaluation of an interactive predictor on labelled series: automatic and interactive mIoU, per-class IoU, NoC.

Shared by the trainer's pipeline (every published version is evaluated on the fixed validation and test splits)
and the emulated scenario."""

from __future__ import annotations

import numpy as np

from saim.data.slices import Series, stack
from saim.model.predictor import InteractivePredictor
from saim.training.metrics import dice_auc, iou_per_class, mean_iou
from saim.training.virtual_user import VirtualUser, number_of_clicks

AUC_CLICKS = 5  # Dice-AUC over this many click rounds (the CVPR 2025 interactive 3D challenge's protocol)


def evaluate(predictor: InteractivePredictor, series: list[Series], clicks: int, noc: bool) -> dict:
    """mIoU of the automatic prediction (with per-class IoU), mIoU after `clicks` virtual-user clicks per class and
    how far the answers followed those clicks, two-sided (means over clicks of saim.model.clicks' `click_fidelity`,
    the recall of each click's meaning within its disk, and `click_precision`; and `click_overshoot`, the pixels an
    answer broke outside the round's disks per pixel of them). With `noc` also the interactive measures that cost
    more forwards: NoC@85 and NoC@90 (mean clicks until the per-image mIoU reaches 85 % / 90 %, capped at 20, over
    the images with foreground) and Dice-AUC over 5 rounds of one click per class (`dice_auc5`, 0..4)."""
    images, gt = stack(series)
    k = predictor.config.num_classes
    rounds = max(clicks, AUC_CLICKS) if noc else clicks
    result = VirtualUser(rounds).annotate(predictor, images, gt)
    auto = result.rounds[0]
    per_class = iou_per_class(gt, auto, k)
    out = {
        "miou": mean_iou(gt, auto, k),
        "per_class_iou": {
            c: (None if np.isnan(v) else float(v)) for c, v in zip(predictor.config.classes, per_class, strict=True)
        },
        "interactive_miou": mean_iou(gt, result.rounds[clicks], k),
        "click_fidelity": float(np.mean(result.fidelity)) if result.fidelity else None,
        "click_precision": float(np.mean(result.precision)) if result.precision else None,
        "click_overshoot": float(np.mean(result.overshoot)) if result.overshoot else None,
    }
    if noc:
        nocs = {t: (None if np.isnan(v) else v) for t, v in number_of_clicks(predictor, images, gt).items()}
        out.update(noc85=nocs[0.85], noc90=nocs[0.90], dice_auc5=dice_auc(gt, result.rounds[1 : AUC_CLICKS + 1], k))
    return out
