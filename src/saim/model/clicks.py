"""Clicks at model resolution and the error region a click corrects: the geometry shared by the virtual user
(saim.training.virtual_user), click simulation at training time (saim.training.recipe) and the predictor's input
encoding.

A leaf module (numpy and scipy only), so that the model package and the virtual user both stand on it and neither
imports the other for it. The click for a region goes to the point farthest from the region's boundary
(distance-transform peak; the image border counts as boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Click:
    """A user click at model resolution. `cls` is the foreground class index 1..K."""

    cls: int
    y: int
    x: int
    positive: bool


@dataclass(frozen=True)
class ErrorRegion:
    size: int
    click: Click


def largest_error(gt: np.ndarray, pred: np.ndarray, cls: int) -> ErrorRegion | None:
    """The largest connected error region of class `cls` and the click that corrects it; None if no error."""
    best: tuple[int, np.ndarray, bool] | None = None
    for mask, positive in (((gt == cls) & (pred != cls), True), ((pred == cls) & (gt != cls), False)):
        regions, n = ndimage.label(mask)
        if n == 0:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        i = int(np.argmax(sizes))
        if best is None or sizes[i] > best[0]:
            best = (int(sizes[i]), regions == i + 1, positive)
    if best is None:
        return None
    size, region, positive = best
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return ErrorRegion(size, Click(cls=cls, y=int(y), x=int(x), positive=positive))


def click_fidelity(answer: np.ndarray, gt: np.ndarray, click: Click, radius: float) -> float | None:
    """How far an answer follows one click: of the pixels within `radius` of the click where the ground truth agrees
    with it (the clicked class for a positive click, any other for a negative one), the share the answer gives the
    click's meaning. A perfect answer scores 1 wherever the click sits; None when no such pixel exists."""
    h, w = answer.shape
    r = int(radius)
    y0, y1, x0, x1 = max(click.y - r, 0), min(click.y + r + 1, h), max(click.x - r, 0), min(click.x + r + 1, w)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    disk = (yy - click.y) ** 2 + (xx - click.x) ** 2 <= radius**2
    truth, said = gt[y0:y1, x0:x1] == click.cls, answer[y0:y1, x0:x1] == click.cls
    if not click.positive:
        truth, said = ~truth, ~said
    agree = disk & truth
    return float(said[agree].mean()) if agree.any() else None
