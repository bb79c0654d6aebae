"""Evaluation of an interactive predictor on labelled series: automatic and interactive mIoU, per-class IoU, NoC.

Shared by the trainer's pipeline (every published version is evaluated on the fixed validation and test splits)
and the emulated scenario. `evaluate_cvpr` adds the CVPR 2025 interactive 3D challenge's protocol on whole series
(`saim emulate --protocol cvpr`)."""

from __future__ import annotations

import numpy as np

from saim.data.slices import Series, stack
from saim.model.clicks import Click, error_scribble, farthest_from_boundary, largest_error_region
from saim.model.predictor import InteractivePredictor
from saim.training.metrics import auc, dice_auc, iou_per_class, mean_iou, surface_dice
from saim.training.virtual_user import VirtualUser, number_of_clicks, tight_boxes

AUC_CLICKS = 5  # Dice-AUC over this many click rounds (the CVPR 2025 interactive 3D challenge's protocol)
BOX_CLICKS = 2  # a model with box prompts: the mIoU after one tight box per class, then after this many click rounds


def evaluate(predictor: InteractivePredictor, series: list[Series], clicks: int, noc: bool) -> dict:
    """mIoU of the automatic prediction (with per-class IoU), mIoU after `clicks` virtual-user clicks per class and
    how far the answers followed those clicks, two-sided (means over clicks of saim.model.clicks' `click_fidelity`,
    the recall of each click's meaning within its disk, and `click_precision`; and `click_overshoot`, the pixels an
    answer broke outside the round's disks per pixel of them). With `noc` also the interactive measures that cost
    more forwards: NoC@85 and NoC@90 (mean clicks until the per-image mIoU reaches 85 % / 90 %, capped at 20, over
    the images with foreground) and Dice-AUC over 5 rounds of one click per class (`dice_auc5`, 0..4). A model with
    box prompts also answers one tight box per class present (`box_miou`) and then 2 click rounds (`box_click_miou`);
    every model one scribble per class along its largest error region after the automatic answer
    (`scribble_miou`)."""
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
    out["scribble_miou"] = mean_iou(gt, scribble_round(predictor, images, gt, auto), k)
    if predictor.config.box_prompts:
        boxed = VirtualUser(BOX_CLICKS).annotate(predictor, images, gt, tight_boxes(gt, k))
        out["box_miou"] = mean_iou(gt, boxed.rounds[0], k)
        out["box_click_miou"] = mean_iou(gt, boxed.rounds[BOX_CLICKS], k)
    if noc:
        nocs = {t: (None if np.isnan(v) else v) for t, v in number_of_clicks(predictor, images, gt).items()}
        out.update(noc85=nocs[0.85], noc90=nocs[0.90], dice_auc5=dice_auc(gt, result.rounds[1 : AUC_CLICKS + 1], k))
    return out


CVPR_CLICKS = 5
CVPR_MEASURES = ("cvpr_dice_auc", "cvpr_nsd_auc", "cvpr_dice", "cvpr_nsd")
NSD_TOLERANCE = 2.0  # voxels of the model grid (the challenge states its tolerance in mm of the source spacing)


def scribble_round(predictor: InteractivePredictor, images: np.ndarray, gt: np.ndarray, auto: np.ndarray) -> np.ndarray:
    """The answers after one scribble per class (along its largest error region, saim.model.clicks.scribble_points)
    (saim.model.clicks.error_scribble) drawn on the automatic answers `auto`; images without an error keep theirs."""
    k, spacing = predictor.config.num_classes, predictor.config.radius
    drawn = [
        [click for c in range(1, k + 1) for click in error_scribble(g, a, c, spacing)]
        for g, a in zip(gt, auto, strict=True)
    ]
    out = auto.copy()
    idx = [i for i, strokes in enumerate(drawn) if strokes]
    if idx:
        out[idx] = predictor.predict(images[idx], [drawn[i] for i in idx], auto[idx])
    return out


def largest_error_3d(gt: np.ndarray, pred: np.ndarray, cls: int) -> tuple[int, Click] | None:
    """The largest 3D connected error component of class `cls` in a volume (S, H, W) and the click that corrects it,
    at the component's distance-transform peak (positive on missed voxels, negative on extra ones); with its slice."""
    best = largest_error_region(gt, pred, cls)
    if best is None:
        return None
    _, region, positive = best
    z, y, x = farthest_from_boundary(region)
    return z, Click(cls=cls, y=y, x=x, positive=positive)


def _volume_scores(gt: np.ndarray, pred: np.ndarray, num_classes: int, tolerance: float) -> tuple[float, float]:
    """Mean Dice and NSD over the foreground classes present in the volume's ground truth (NaN if none is)."""
    dice, nsd = [], []
    for c in range(1, num_classes + 1):
        g, p = gt == c, pred == c
        if not g.any():
            continue
        dice.append(2 * (g & p).sum() / (g.sum() + p.sum()))
        nsd.append(surface_dice(g, p, tolerance))
    return (float(np.mean(dice)), float(np.mean(nsd))) if dice else (float("nan"), float("nan"))


def evaluate_cvpr(
    predictor: InteractivePredictor,
    series: list[Series],
    clicks: int = CVPR_CLICKS,
    tolerance: float = NSD_TOLERANCE,
) -> dict:
    """The CVPR 2025 interactive 3D challenge's protocol, on each series as one volume (its slices stacked; with
    `max_slices` those are a spaced subset of the scan's): the automatic prediction, then `clicks` rounds in which
    every class gets one click at the distance-transform peak of its largest 3D connected error component, placed on
    that voxel's slice; the slices clicked in a round are predicted again with all their clicks so far and their
    previous answer. After each round, the volume's Dice and NSD (tolerance in voxels) averaged over the classes
    present; DSC_AUC and NSD_AUC over rounds 1..clicks (trapezoids, 0..clicks-1) and the final DSC and NSD, each
    averaged over the series with foreground."""
    k = predictor.config.num_classes
    per_series = []
    for s in series:
        gt = np.asarray(s.truth)
        if not (gt > 0).any():
            continue
        pred = predictor.predict(s.images)
        placed: list[list[Click]] = [[] for _ in range(len(gt))]
        curve = []
        for _ in range(clicks):
            touched = set()
            for c in range(1, k + 1):
                found = largest_error_3d(gt, pred, c)
                if found is not None:
                    z, click = found
                    placed[z].append(click)
                    touched.add(z)
            if touched:
                idx = np.array(sorted(touched))
                pred[idx] = predictor.predict(s.images[idx], [placed[z] for z in idx], pred[idx])
            curve.append(_volume_scores(gt, pred, k, tolerance))
        dice, nsd = [d for d, _ in curve], [n for _, n in curve]
        per_series.append((auc(dice), auc(nsd), dice[-1], nsd[-1]))
    if not per_series:
        return dict.fromkeys(CVPR_MEASURES)
    means = np.array(per_series).mean(axis=0)
    return {key: float(v) for key, v in zip(CVPR_MEASURES, means, strict=True)}
