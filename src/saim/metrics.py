"""Segmentation metrics: dataset-level per-class IoU, mIoU over foreground classes, per-image mIoU."""

from __future__ import annotations

import numpy as np


def iou_per_class(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """IoU of each foreground class 1..K accumulated over all pixels; NaN where a class is in neither map."""
    out = np.full(num_classes, np.nan)
    for c in range(1, num_classes + 1):
        g, p = gt == c, pred == c
        union = np.logical_or(g, p).sum()
        if union:
            out[c - 1] = np.logical_and(g, p).sum() / union
    return out


def mean_iou(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """mIoU over foreground classes present in the ground truth or the prediction (1.0 if none is)."""
    ious = iou_per_class(gt, pred, num_classes)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else 1.0


def image_mious(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image mIoU for stacks (N, H, W)."""
    return np.array([mean_iou(g, p, num_classes) for g, p in zip(gt, pred, strict=True)])
