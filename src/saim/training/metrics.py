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


def image_dice(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Multi-class Dice of one image: the mean Dice over the foreground classes present in the ground truth (NaN
    when none is), as the CVPR 2025 interactive 3D challenge scores a case."""
    present = [c for c in range(1, num_classes + 1) if (gt == c).any()]
    if not present:
        return float("nan")
    dice = [2 * np.logical_and(gt == c, pred == c).sum() / ((gt == c).sum() + (pred == c).sum()) for c in present]
    return float(np.mean(dice))


def dice_auc(gt: np.ndarray, rounds: list[np.ndarray], num_classes: int) -> float:
    """Dice-AUC over a click sequence (the CVPR 2025 interactive 3D challenge's DSC_AUC, per image): the area under
    each image's Dice after click rounds 1..n, trapezoids of width 1 (0 to n - 1 for n = 5: a perfect answer from
    the first click scores 4), averaged over the images with a foreground class. `rounds`: label stacks (N, H, W)
    after each round."""
    per_image = np.array([[image_dice(g, r[i], num_classes) for r in rounds] for i, g in enumerate(gt)])
    keep = ~np.isnan(per_image).any(axis=1)
    if not keep.any():
        return float("nan")
    curves = per_image[keep]
    return float(np.mean(curves[:, 1:].sum(axis=1) + curves[:, :-1].sum(axis=1)) / 2)


def surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of a boolean mask (2D or 3D) with a neighbour outside it (face connectivity)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_dice(gt: np.ndarray, pred: np.ndarray, tolerance: float) -> float:
    """Normalised surface Dice (NSD) of two boolean masks: the share of both surfaces' voxels that lie within
    `tolerance` voxels of the other surface (Nikolov et al. 2021, as the CVPR 2025 interactive 3D challenge scores
    it, there in mm). 1 when both are empty, 0 when only one is."""
    from scipy import ndimage

    sg, sp = surface(gt), surface(pred)
    if not sg.any() and not sp.any():
        return 1.0
    if not sg.any() or not sp.any():
        return 0.0
    to_gt = ndimage.distance_transform_edt(~sg)
    to_pred = ndimage.distance_transform_edt(~sp)
    close = (to_pred[sg] <= tolerance).sum() + (to_gt[sp] <= tolerance).sum()
    return float(close / (sg.sum() + sp.sum()))


def auc(curve: list[float]) -> float:
    """Area under a per-round curve, trapezoids of width 1 (0 to n - 1 for n rounds)."""
    return float(np.sum(curve[1:]) + np.sum(curve[:-1])) / 2
