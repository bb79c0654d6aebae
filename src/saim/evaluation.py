"""Evaluation of an interactive predictor on labelled series: automatic and interactive mIoU, per-class IoU, NoC.

Shared by the trainer's pipeline (every published version is evaluated on the fixed validation and test splits)
and the emulated scenario."""

from __future__ import annotations

import numpy as np

from saim.clicker import VirtualUser, number_of_clicks
from saim.data.slices import Series, stack
from saim.metrics import iou_per_class, mean_iou
from saim.model.predictor import InteractivePredictor


def evaluate(predictor: InteractivePredictor, series: list[Series], clicks: int, noc: bool) -> dict:
    """mIoU of the automatic prediction (with per-class IoU), mIoU after `clicks` virtual-user clicks per class,
    and with `noc` the mean number of clicks to reach 85 % and 90 % per-image mIoU."""
    images, gt = stack(series)
    k = predictor.config.num_classes
    auto = predictor.predict(images)
    per_class = iou_per_class(gt, auto, k)
    interactive = VirtualUser(clicks).annotate(predictor, images, gt).labels
    out = {
        "miou": mean_iou(gt, auto, k),
        "per_class_iou": {
            c: (None if np.isnan(v) else float(v)) for c, v in zip(predictor.config.classes, per_class, strict=True)
        },
        "interactive_miou": mean_iou(gt, interactive, k),
    }
    if noc:
        nocs = number_of_clicks(predictor, images, gt, (0.85, 0.90))
        out.update(noc85=nocs[0.85], noc90=nocs[0.90])
    return out
