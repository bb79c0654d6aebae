"""The virtual user (paper §3.3, §4.2): deterministic clicks computed from ground truth.

The next click for a class corrects the largest error region of that class (saim.model.clicks.largest_error): positive
where the class is missed, negative where it is wrongly predicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from saim.model.clicks import Box, Click, box_around, click_fidelity, click_overshoot, click_precision, largest_error
from saim.model.predictor import InteractivePredictor
from saim.training.metrics import image_mious


def next_click(gt: np.ndarray, pred: np.ndarray, cls: int) -> Click | None:
    region = largest_error(gt, pred, cls)
    return None if region is None else region.click


def tight_boxes(gt: np.ndarray, num_classes: int) -> list[list[Box]]:
    """Per image (gt (N, H, W)), the tight box around every class present: what the virtual user draws."""
    return [[b for c in range(1, num_classes + 1) if (b := box_around(g, c)) is not None] for g in gt]


def worst_click(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> Click | None:
    """The click for the largest error region over all classes (ties: lowest class)."""
    regions = [r for c in range(1, num_classes + 1) if (r := largest_error(gt, pred, c)) is not None]
    return max(regions, key=lambda r: r.size).click if regions else None


@dataclass
class AnnotationResult:
    labels: np.ndarray  # (N, H, W) final annotation
    clicks: list[list[Click]]
    rounds: list[np.ndarray] = field(default_factory=list)  # the labels before any click, then after each round
    fidelity: list[float] = field(default_factory=list)  # per click: saim.model.clicks.click_fidelity of its answer
    click_counts: list[list[int]] = field(default_factory=list)  # after each round: each image's clicks so far
    precision: list[float] = field(default_factory=list)  # per click: click_precision of its answer
    overshoot: list[float] = field(default_factory=list)  # per image and round with clicks: click_overshoot


class VirtualUser:
    """Drives an interactive predictor with ground-truth-derived clicks."""

    def __init__(self, clicks_per_class: int = 3):
        self.clicks_per_class = clicks_per_class

    def annotate(
        self, predictor: InteractivePredictor, images: np.ndarray, gt: np.ndarray, boxes: list[list[Box]] | None = None
    ) -> AnnotationResult:
        """k rounds; each round adds at most one click per class per image, then the model answers. Every round is
        kept (a round in which no image needs a click repeats the labels), with each click's fidelity (recall and
        precision within its disk) and each answer's overshoot beyond the round's disks. With `boxes` (per image, a
        model with box prompts) the first answer is the boxes' and every later one keeps them."""
        k, radius = predictor.config.num_classes, predictor.config.radius
        pred = predictor.predict(images, boxes=boxes)
        rounds = [pred.copy()]
        fidelity: list[float] = []
        precision: list[float] = []
        overshoot: list[float] = []
        clicks: list[list[Click]] = [[] for _ in range(len(images))]
        counts: list[list[int]] = []
        for _ in range(self.clicks_per_class):
            touched, new_by_image = [], {}
            for i in range(len(images)):
                new = [c for cls in range(1, k + 1) if (c := next_click(gt[i], pred[i], cls)) is not None]
                if new:
                    clicks[i].extend(new)
                    touched.append(i)
                    new_by_image[i] = new
            if touched:
                idx = np.array(touched)
                before = pred[idx].copy()
                kept = None if boxes is None else [boxes[i] for i in idx]
                pred[idx] = predictor.predict(images[idx], [clicks[i] for i in idx], pred[idx], boxes=kept)
                for n, (i, new) in enumerate(new_by_image.items()):
                    fidelity += [f for c in new if (f := click_fidelity(pred[i], gt[i], c, radius)) is not None]
                    precision += [p for c in new if (p := click_precision(pred[i], gt[i], c, radius)) is not None]
                    broken = click_overshoot(before[n], pred[i], gt[i], new, radius)
                    overshoot += [] if broken is None else [broken]
            rounds.append(pred.copy())
            counts.append([len(c) for c in clicks])
        return AnnotationResult(pred, clicks, rounds, fidelity, counts, precision, overshoot)


def number_of_clicks(
    predictor: InteractivePredictor,
    images: np.ndarray,
    gt: np.ndarray,
    targets: tuple[float, ...] = (0.85, 0.90),
    max_clicks: int = 20,
) -> dict[float, float]:
    """NoC@target: mean clicks until the per-image mIoU reaches each target, capped at `max_clicks`, over the images
    with foreground (as Dice-AUC): an empty slice would count as reached at 0 clicks. NaN when no image has any."""
    k = predictor.config.num_classes
    foreground = gt.reshape(len(gt), -1).any(axis=1)
    if not foreground.any():
        return {t: float("nan") for t in targets}
    images, gt = images[foreground], gt[foreground]
    pred = predictor.predict(images)
    iou = image_mious(gt, pred, k)
    noc = {t: np.where(iou >= t, 0.0, np.nan) for t in targets}
    clicks: list[list[Click]] = [[] for _ in range(len(images))]
    top = max(targets)
    for n in range(1, max_clicks + 1):
        active = np.flatnonzero(iou < top)
        if active.size == 0:
            break
        for i in active:
            c = worst_click(gt[i], pred[i], k)
            if c is not None:
                clicks[i].append(c)
        pred[active] = predictor.predict(images[active], [clicks[i] for i in active], pred[active])
        iou[active] = image_mious(gt[active], pred[active], k)
        for t in targets:
            reached = np.isnan(noc[t]) & (iou >= t)
            noc[t][reached] = n
    return {t: float(np.nan_to_num(v, nan=max_clicks).mean()) for t, v in noc.items()}
