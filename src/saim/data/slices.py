"""Cut 3D series into model-sized 2D slices (the training/inference unit); the series stays the selection unit.

Slices are taken along the scan's acquisition axis and laid onto the model grid by `saim.data.geometry`; every slice
by default. The emulation may keep an explicit slice budget (`max_slices`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from saim.data.geometry import ScanGeometry
from saim.data.intensity import Intensity
from saim.errors import InvalidInput


@dataclass
class Series:
    """One series at model resolution: slices (S, H, W) of preprocessed intensities (see saim.data.intensity)."""

    case: str
    images: np.ndarray
    labels: np.ndarray | None  # (S, H, W) uint8 in 0..K, None when unannotated
    slice_index: np.ndarray  # index along the acquisition axis of each model slice in the source volume
    geometry: ScanGeometry

    @property
    def num_slices(self) -> int:
        return int(self.images.shape[0])

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def truth(self) -> np.ndarray:
        """The labels of a series known to be labelled (initial, validation, test, or annotated)."""
        if self.labels is None:
            raise InvalidInput(f"series {self.case} has no labels")
        return self.labels

    def with_labels(self, label: np.ndarray) -> Series:
        """The same series with a label volume in source space (e.g. a stored annotation) on its model slices."""
        return replace(self, labels=label_slices(self.geometry, label, self.slice_index, self.images.shape[1]))


def check_max_slices(max_slices: int | None) -> int | None:
    if max_slices is not None and max_slices < 1:
        raise InvalidInput(f"max_slices must be at least 1 (or unset for every slice), got {max_slices}")
    return max_slices


def pick_slices(label: np.ndarray | None, depth: int, max_slices: int | None) -> np.ndarray:
    """Slice indices: every slice by default; with a budget, evenly spaced ones, restricted to the range holding
    foreground when a label map (S, ...) is given."""
    check_max_slices(max_slices)
    lo, hi = 0, depth - 1
    if label is not None:
        z = np.flatnonzero(label.reshape(depth, -1).any(axis=1))
        if z.size:
            lo, hi = int(z[0]), int(z[-1])
    count = hi - lo + 1
    if max_slices is None or count <= max_slices:
        return np.arange(lo, hi + 1)
    return np.unique(np.round(np.linspace(lo, hi, max_slices)).astype(np.int64))


def series_from_volume(
    case: str,
    image: np.ndarray,
    affine: np.ndarray,
    label: np.ndarray | None,
    image_size: int,
    intensity: Intensity,
    max_slices: int | None = None,
    pick_by_label: bool = False,
) -> Series:
    """A source volume and its affine -> model slices. Slices are picked over the whole depth by default: an
    unannotated pool series has no label to go by, and the emulation must see series the way the services do."""
    geometry = ScanGeometry.of(image.shape, affine)
    source = geometry.slices(intensity.apply(image))
    z = pick_slices(geometry.slices(label) if pick_by_label and label is not None else None, len(source), max_slices)
    images = geometry.to_model(source[z], image_size, nearest=False, pad=float(source.min(initial=0.0)))
    labels = None if label is None else label_slices(geometry, label, z, image_size)
    return Series(case, images, labels, z, geometry)


def label_slices(geometry: ScanGeometry, label: np.ndarray, z: np.ndarray, image_size: int) -> np.ndarray:
    """A label volume in source space on given slices at model resolution (nearest neighbour)."""
    return geometry.to_model(geometry.slices(label)[z], image_size, nearest=True)


def stack(series: list[Series]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate labelled series into one slice stack (N, H, W) with its labels."""
    return np.concatenate([s.images for s in series]), np.concatenate([s.truth for s in series])
