"""Cut 3D series into model-sized 2D slices (the training/inference unit); the series stays the selection unit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Series:
    """One series at model resolution: slices (S, H, W), intensities normalised to [0, 1]."""

    case: str
    images: np.ndarray
    labels: np.ndarray | None  # (S, H, W) uint8 in 0..K, None when unannotated
    slice_index: np.ndarray  # z index of each slice in the original volume
    volume_shape: tuple[int, int, int]

    @property
    def num_slices(self) -> int:
        return int(self.images.shape[0])


def normalize_intensity(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Percentile clip and scale to [0, 1] (per series). Standardisation happens in the input encoding."""
    lo, hi = np.percentile(volume, [low, high])
    if hi <= lo:
        return np.zeros_like(volume, dtype=np.float32)
    return np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def pick_slices(label: np.ndarray | None, depth: int, max_slices: int | None) -> np.ndarray:
    """Evenly spaced z indices; restricted to the z range holding foreground when a label map is known."""
    lo, hi = 0, depth - 1
    if label is not None:
        z = np.flatnonzero(label.reshape(-1, depth).any(axis=0))
        if z.size:
            lo, hi = int(z[0]), int(z[-1])
    count = hi - lo + 1
    if max_slices is None or count <= max_slices:
        return np.arange(lo, hi + 1)
    return np.unique(np.round(np.linspace(lo, hi, max_slices)).astype(np.int64))


def resize_slices(stack: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    """(S, h, w) -> (S, size, size)."""
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    if nearest:
        out = F.interpolate(t, size=(size, size), mode="nearest")
        return out[:, 0].numpy().astype(np.uint8)
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0].numpy().astype(np.float32)


def series_from_volume(
    case: str,
    image: np.ndarray,
    label: np.ndarray | None,
    image_size: int,
    max_slices: int | None = None,
    pick_by_label: bool = False,
) -> Series:
    """Slices are picked over the whole depth by default: an unannotated pool series has no label to go by, and
    the emulation must see series the way the services do."""
    z = pick_slices(label if pick_by_label else None, image.shape[2], max_slices)
    norm = normalize_intensity(image)
    images = resize_slices(np.moveaxis(norm[:, :, z], 2, 0), image_size, nearest=False)
    labels = None if label is None else label_slices(label, z, image_size)
    return Series(case, np.clip(images, 0, 1), labels, z, tuple(int(s) for s in image.shape))


def label_slices(label: np.ndarray, z: np.ndarray, image_size: int) -> np.ndarray:
    """A label volume resampled onto given slices at model resolution (nearest neighbour)."""
    return resize_slices(np.moveaxis(label[:, :, z], 2, 0), image_size, nearest=True)


def stack(series: list[Series], use_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Concatenate series into one slice stack (N, H, W)."""
    images = np.concatenate([s.images for s in series])
    if not use_labels:
        return images, None
    return images, np.concatenate([s.labels for s in series])
