"""Scan space and the model grid: how a source series maps onto the model's square slices and back.

Scan space is the contract: clients see and send source voxels (i, j, k) of the NIfTI grid. Internally a series is
cut into 2D slices along its acquisition axis; each slice is reoriented to the closest canonical (RAS+) in-plane
orientation (axis permutation and flips only: exact, no resampling), resampled in-plane to the model size with its
physical aspect ratio kept, and padded to a square, never squashed. Every map here is invertible up to the
in-plane resampling, which `to_source_*` undoes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from saim.errors import InvalidInput

ANISOTROPY = 1.1  # an axis this much coarser than the others is the acquisition (slice) axis


def channel_argmax(t: torch.Tensor) -> torch.Tensor:
    """argmax over dim 1 of (B, C, H, W) as uint8 (first maximum wins, as torch.argmax): C elementwise passes, much
    faster on a CPU than torch's argmax over a strided channel dimension (docs/benchmarks.md)."""
    best = t[:, 0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8)
    for c in range(1, t.shape[1]):
        better = t[:, c] > best
        best = torch.where(better, t[:, c], best)
        labels[better] = c
    return labels


@dataclass(frozen=True)
class ModelGrid:
    """Where a canonical slice of (rows, cols) source pixels lies on the model's size x size grid."""

    size: int
    rows: int  # resampled extent on the model grid
    cols: int
    top: int  # padding before the content
    left: int
    src_rows: int
    src_cols: int

    def to_model(self, r: float, c: float) -> tuple[int, int]:
        """Source pixel centre (canonical orientation) -> model pixel."""
        y = self.top + (r + 0.5) * self.rows / self.src_rows - 0.5
        x = self.left + (c + 0.5) * self.cols / self.src_cols - 0.5
        clamp = lambda v, lo, hi: int(min(max(round(v), lo), hi))  # noqa: E731
        return clamp(y, self.top, self.top + self.rows - 1), clamp(x, self.left, self.left + self.cols - 1)


@dataclass(frozen=True)
class ScanGeometry:
    """A source series' voxel grid: shape, affine (voxel -> RAS+ mm), and the axis its slices are taken along."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    slice_axis: int

    @classmethod
    def of(cls, shape, affine) -> ScanGeometry:
        shape = tuple(int(s) for s in shape)
        affine = np.asarray(affine, dtype=np.float64)
        if len(shape) != 3 or affine.shape != (4, 4):
            raise InvalidInput(f"a scan needs a 3D shape and a 4x4 affine, got {shape} and {affine.shape}")
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise InvalidInput("the scan's affine is singular or not finite")
        spacing = nib.affines.voxel_sizes(affine)
        coarse = int(np.argmax(spacing))
        others = np.delete(spacing, coarse)
        if spacing[coarse] > ANISOTROPY * others.max():
            axis = coarse  # anisotropic: slices are the acquisition planes
        else:  # near-isotropic: axial slices (the source axis closest to superior-inferior)
            axis = int(np.flatnonzero(nib.io_orientation(affine)[:, 0] == 2)[0])
        return cls(shape, affine, axis)

    # ---- description -----------------------------------------------------------------------------------------
    @property
    def spacing(self) -> tuple[float, float, float]:
        x, y, z = (float(s) for s in nib.affines.voxel_sizes(self.affine))
        return x, y, z

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def num_slices(self) -> int:
        return self.shape[self.slice_axis]

    @property
    def inplane_axes(self) -> tuple[int, int]:
        """The source axes of a slice's rows and columns (the two other axes, in increasing order)."""
        p, q = (a for a in range(3) if a != self.slice_axis)
        return p, q

    @property
    def slice_shape(self) -> tuple[int, int]:
        p, q = self.inplane_axes
        return self.shape[p], self.shape[q]

    def to_json(self) -> dict:
        return {
            "shape": list(self.shape),
            "affine": self.affine.tolist(),
            "spacing": [round(s, 6) for s in self.spacing],
            "orientation": self.orientation,
            "slice_axis": self.slice_axis,
        }

    # ---- source <-> canonical in-plane orientation -----------------------------------------------------------
    @cached_property
    def _ornt(self) -> tuple[bool, bool, bool]:
        """(flip rows, flip cols, transpose) taking a source slice to the canonical in-plane orientation (computed
        once per series: every click maps through it several times)."""
        ornt = nib.io_orientation(self.affine)
        p, q = self.inplane_axes
        return bool(ornt[p, 1] < 0), bool(ornt[q, 1] < 0), bool(ornt[p, 0] > ornt[q, 0])

    def to_canonical(self, arr: np.ndarray) -> np.ndarray:
        """Source slice(s) (..., rows, cols) -> canonical orientation."""
        flip_r, flip_c, transpose = self._ornt
        if flip_r:
            arr = arr[..., ::-1, :]
        if flip_c:
            arr = arr[..., :, ::-1]
        return np.swapaxes(arr, -1, -2) if transpose else arr

    def from_canonical(self, arr: np.ndarray) -> np.ndarray:
        flip_r, flip_c, transpose = self._ornt
        if transpose:
            arr = np.swapaxes(arr, -1, -2)
        if flip_c:
            arr = arr[..., :, ::-1]
        if flip_r:
            arr = arr[..., ::-1, :]
        return arr

    def point_to_canonical(self, r: int, c: int) -> tuple[int, int]:
        flip_r, flip_c, transpose = self._ornt
        rows, cols = self.slice_shape
        r, c = (rows - 1 - r if flip_r else r), (cols - 1 - c if flip_c else c)
        return (c, r) if transpose else (r, c)

    # ---- voxels and slices -----------------------------------------------------------------------------------
    def check_voxel(self, voxel: tuple[int, int, int]) -> None:
        if len(voxel) != 3 or any(not 0 <= v < s for v, s in zip(voxel, self.shape, strict=True)):
            raise InvalidInput(f"voxel {tuple(voxel)} is outside the scan's grid {self.shape}")

    def split_voxel(self, voxel: tuple[int, int, int]) -> tuple[int, int, int]:
        """(i, j, k) -> (slice, row, col) in source slice coordinates."""
        self.check_voxel(voxel)
        p, q = self.inplane_axes
        return int(voxel[self.slice_axis]), int(voxel[p]), int(voxel[q])

    def check_slice(self, index: int) -> None:
        if not 0 <= index < self.num_slices:
            raise InvalidInput(f"slice {index} is outside 0..{self.num_slices - 1} (axis {self.slice_axis})")

    def slices(self, volume: np.ndarray) -> np.ndarray:
        """Volume in source space -> source slices (S, rows, cols) (a view)."""
        if tuple(volume.shape) != self.shape:
            raise InvalidInput(f"volume shape {tuple(volume.shape)} is not the scan's {self.shape}")
        return np.moveaxis(volume, self.slice_axis, 0)

    def volume(self, slices: np.ndarray) -> np.ndarray:
        """Source slices (S, rows, cols) -> volume in source space."""
        return np.ascontiguousarray(np.moveaxis(slices, 0, self.slice_axis))

    # ---- the model grid --------------------------------------------------------------------------------------
    def grid(self, size: int) -> ModelGrid:
        """Aspect-preserving fit of a canonical slice into size x size, centred."""
        p, q = self.inplane_axes
        sp = self.spacing
        (rows, sp_r), (cols, sp_c) = (self.shape[p], sp[p]), (self.shape[q], sp[q])
        if self._ornt[2]:
            (rows, sp_r), (cols, sp_c) = (cols, sp_c), (rows, sp_r)
        pixel = max(rows * sp_r, cols * sp_c) / size
        m_r = int(min(size, max(1, round(rows * sp_r / pixel))))
        m_c = int(min(size, max(1, round(cols * sp_c / pixel))))
        return ModelGrid(size, m_r, m_c, (size - m_r) // 2, (size - m_c) // 2, rows, cols)

    def to_model(self, slices: np.ndarray, size: int, nearest: bool, pad: float = 0.0) -> np.ndarray:
        """Source slices (S, rows, cols) -> model slices (S, size, size): float32 images, or uint8 labels."""
        g = self.grid(size)
        canon = np.ascontiguousarray(self.to_canonical(slices), dtype=np.float32)
        t = torch.from_numpy(canon)[:, None]
        if nearest:
            t = F.interpolate(t, size=(g.rows, g.cols), mode="nearest-exact")
        else:
            t = F.interpolate(t, size=(g.rows, g.cols), mode="bilinear", align_corners=False, antialias=True)
        out = np.full((len(slices), size, size), pad, dtype=np.float32)
        out[:, g.top : g.top + g.rows, g.left : g.left + g.cols] = t[:, 0].numpy()
        return out.astype(np.uint8) if nearest else out

    def probabilities_to_source(self, probs: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
        """Model probabilities (B, C, size, size) -> source label slices (B, rows, cols): the probabilities are
        resampled bilinearly to the source grid, then argmax (smoother and more accurate at boundaries than
        upsampling the model's label map; see tests/unit/test_geometry.py)."""
        g = self.grid(size)
        t = torch.as_tensor(probs, dtype=torch.float32)[:, :, g.top : g.top + g.rows, g.left : g.left + g.cols]
        up = F.interpolate(t, size=(g.src_rows, g.src_cols), mode="bilinear", align_corners=False)
        return np.ascontiguousarray(self.from_canonical(channel_argmax(up).numpy()))

    def pixel_to_model(self, row: int, col: int, size: int) -> tuple[int, int]:
        """Source slice pixel (row, col) -> model pixel (y, x)."""
        r, c = self.point_to_canonical(row, col)
        return self.grid(size).to_model(r, c)
