"""Filling the slices between two annotated ones: shape-based interpolation (Raya and Udupa 1990; what "fill between
slices" tools do) of each class present on both, from the signed distance of its region, in millimetres, with the
two regions' centroids aligned first (as ITK's morphological contour interpolation aligns regions that do not
overlap): a structure that moves from one slice to the other is carried along instead of vanishing in between.

A class's region on slice a and on slice b gives two signed distance maps (negative inside); the slice a fraction t
of the way from a to b has its centroid at (1 - t) c_a + t c_b and takes the class where (1 - t) d_a + t d_b < 0,
each map shifted to that centroid. A region that moves, grows or shrinks between the two slices does so gradually; a
class on only one of the two slices is not interpolated (it ends in between, and where is for the person or the
model to say).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def signed_distance(region: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Distance (mm) to the region's border: negative inside, positive outside."""
    inside = ndimage.distance_transform_edt(region, sampling=spacing)
    outside = ndimage.distance_transform_edt(~region, sampling=spacing)
    return np.asarray(outside - inside, np.float64)


def interpolate_masks(
    low: np.ndarray, high: np.ndarray, steps: int, classes: tuple[int, ...], spacing: tuple[float, float]
) -> list[dict[int, np.ndarray]]:
    """For each of the `steps` slices strictly between two label slices `low` and `high` (rows, cols), in order from
    `low`: {class: region (bool)} of every class in `classes` present on both."""
    out: list[dict[int, np.ndarray]] = [{} for _ in range(steps)]
    for cls in classes:
        a, b = low == cls, high == cls
        if not a.any() or not b.any():
            continue
        da, db = signed_distance(a, spacing), signed_distance(b, spacing)
        ca, cb = np.argwhere(a).mean(axis=0), np.argwhere(b).mean(axis=0)
        for n in range(steps):
            t = (n + 1) / (steps + 1)
            centre = (1 - t) * ca + t * cb
            moved_a = ndimage.shift(da, centre - ca, order=1, mode="nearest")
            moved_b = ndimage.shift(db, centre - cb, order=1, mode="nearest")
            out[n][cls] = (1 - t) * moved_a + t * moved_b < 0
    return out
