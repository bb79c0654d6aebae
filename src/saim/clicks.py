"""Clicks at model resolution and the error region a click corrects: the geometry shared by the virtual user
(saim.clicker), click simulation at training time (saim.model.training) and the predictor's input encoding.

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
