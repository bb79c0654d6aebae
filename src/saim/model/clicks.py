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
class Box:
    """A box around one structure at model resolution, corners inclusive: "class `cls` is in here, and only here"."""

    cls: int
    y0: int
    x0: int
    y1: int
    x1: int

    def contains(self, y: int, x: int) -> bool:
        return self.y0 <= y <= self.y1 and self.x0 <= x <= self.x1


def box_around(labels: np.ndarray, cls: int, margin: int = 0) -> Box | None:
    """The tight box around class `cls` in a label map (widened by `margin` px, kept on the slice); None if absent."""
    ys, xs = np.nonzero(labels == cls)
    if ys.size == 0:
        return None
    h, w = labels.shape
    return Box(
        cls,
        max(int(ys.min()) - margin, 0),
        max(int(xs.min()) - margin, 0),
        min(int(ys.max()) + margin, h - 1),
        min(int(xs.max()) + margin, w - 1),
    )


@dataclass(frozen=True)
class ErrorRegion:
    size: int
    click: Click
    mask: np.ndarray  # the region's pixels (bool, the label's shape)
    depth: float  # how far its innermost pixel (the click's) lies from its border: 1.0 for a line one pixel wide


def largest_error_region(gt: np.ndarray, pred: np.ndarray, cls: int) -> tuple[int, np.ndarray, bool] | None:
    """The largest connected error region of class `cls` in label arrays of any dimension (a slice, or a volume for
    the CVPR protocol's 3D clicks): its size, its mask and whether it is missed (positive) rather than false; a
    missed region wins a tie in size. None if there is no error."""
    best: tuple[int, np.ndarray, bool] | None = None
    for mask, positive in (((gt == cls) & (pred != cls), True), ((pred == cls) & (gt != cls), False)):
        regions, n = ndimage.label(mask)
        if n == 0:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        i = int(np.argmax(sizes))
        if best is None or sizes[i] > best[0]:
            best = (int(sizes[i]), regions == i + 1, positive)
    return best


def innermost(region: np.ndarray) -> tuple[tuple[int, ...], float]:
    """The region's distance-transform peak (the array's border counts as boundary; the first peak in raster
    order) and its distance from the boundary."""
    inner = tuple(slice(1, -1) for _ in region.shape)
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[inner]
    peak = int(np.argmax(dist))
    return tuple(int(v) for v in np.unravel_index(peak, dist.shape)), float(dist.flat[peak])


def farthest_from_boundary(region: np.ndarray) -> tuple[int, ...]:
    """The region's distance-transform peak (innermost's)."""
    return innermost(region)[0]


def largest_error(gt: np.ndarray, pred: np.ndarray, cls: int) -> ErrorRegion | None:
    """The largest connected error region of class `cls` and the click that corrects it; None if no error."""
    best = largest_error_region(gt, pred, cls)
    if best is None:
        return None
    size, region, positive = best
    (y, x), depth = innermost(region)
    return ErrorRegion(size, Click(cls=cls, y=y, x=x, positive=positive), region, depth)


def _disk(shape: tuple[int, int], click: Click, radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - click.y) ** 2 + (xx - click.x) ** 2 <= radius**2


def _meaning(labels: np.ndarray, click: Click) -> np.ndarray:
    """Where `labels` agree with the click: its class for a positive click, any other for a negative one."""
    return labels == click.cls if click.positive else labels != click.cls


def click_fidelity(answer: np.ndarray, gt: np.ndarray, click: Click, radius: float) -> float | None:
    """How far an answer follows one click (its recall within the disk): of the pixels within `radius` of the click
    where the ground truth agrees with it (the clicked class for a positive click, any other for a negative one),
    the share the answer gives the click's meaning. A perfect answer scores 1 wherever the click sits; None when no
    such pixel exists. An answer that overshoots scores 1 here too: `click_precision` and `click_overshoot` see it."""
    disk = _disk(answer.shape, click, radius)
    agree = disk & _meaning(gt, click)
    return float(_meaning(answer, click)[agree].mean()) if agree.any() else None


def click_precision(answer: np.ndarray, gt: np.ndarray, click: Click, radius: float) -> float | None:
    """Of the pixels within `radius` of the click that the answer gives the click's meaning, the share where the
    ground truth agrees: an answer that paints the clicked class across a border inside the disk scores lower.
    None when the answer gives no pixel of the disk the click's meaning."""
    said = _disk(answer.shape, click, radius) & _meaning(answer, click)
    return float(_meaning(gt, click)[said].mean()) if said.any() else None


def click_overshoot(
    before: np.ndarray, after: np.ndarray, gt: np.ndarray, clicks: list[Click], radius: float
) -> float | None:
    """What a round of clicks broke elsewhere: the pixels outside every click's disk that were right before the
    answer and are wrong after it, per pixel of the disks (0: nothing broken; 1: as many pixels broken elsewhere as
    the clicks cover). None without clicks."""
    if not clicks:
        return None
    near = np.zeros(gt.shape, bool)
    for click in clicks:
        near |= _disk(gt.shape, click, radius)
    broken = ~near & (before == gt) & (after != gt)
    return float(broken.sum() / near.sum())


def scribble_points(region: np.ndarray) -> list[tuple[int, int]]:
    """The virtual user's scribble through an error region (bool (H, W)): from the region's distance-transform peak
    both ways along its longest axis (the principal axis of its pixels), one pixel at a time while inside the
    region; the points in order from one end to the other."""
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return []
    py, px = farthest_from_boundary(region)
    peak = (py, px)
    if ys.size < 2:
        return [peak]
    coords = np.stack([ys, xs], axis=1).astype(np.float64)
    _, vectors = np.linalg.eigh(np.cov(coords.T))
    axis = vectors[:, -1]  # the direction of the largest spread
    h, w = region.shape
    ends: list[list[tuple[int, int]]] = []
    for sign in (-1.0, 1.0):
        walk: list[tuple[int, int]] = []
        for t in range(1, h + w):
            y, x = (int(round(v)) for v in np.asarray(peak) + sign * t * axis)
            if not (0 <= y < h and 0 <= x < w) or not region[y, x]:
                break
            if not walk or walk[-1] != (y, x):
                walk.append((y, x))
        ends.append(walk)
    return [*reversed(ends[0]), peak, *ends[1]]


def scribble_clicks(points: list[tuple[int, int]], cls: int, positive: bool, spacing: float) -> list[Click]:
    """A scribble as the model takes it: clicks of its class and sign along its path, at most `spacing` pixels
    apart (every point kept where the path turns more finely), the path's ends included."""
    out: list[Click] = []
    last: tuple[int, int] | None = None
    for i, (y, x) in enumerate(points):
        end = i == len(points) - 1
        if last is None or end or (y - last[0]) ** 2 + (x - last[1]) ** 2 >= spacing**2:
            if last != (y, x):
                out.append(Click(cls=cls, y=int(y), x=int(x), positive=positive))
            last = (y, x)
    return out


def error_scribble(gt: np.ndarray, pred: np.ndarray, cls: int, spacing: float) -> list[Click]:
    """The virtual user's scribble for class `cls`: along its largest error region (positive where the class is
    missed, negative where it is wrongly predicted), as clicks `spacing` apart; none without an error."""
    found = largest_error_region(gt, pred, cls)
    if found is None:
        return []
    _, region, positive = found
    return scribble_clicks(scribble_points(region), cls, positive, spacing)
