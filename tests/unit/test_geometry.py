"""Scan space and the model grid (saim.data.geometry): exact reorientation, the acquisition axis, aspect kept."""

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from saim.data.geometry import ScanGeometry
from saim.errors import InvalidInput
from tests.unit.echo import oblique_affine


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, 1, -1), (1, -1, 1), (-1, -1, -1)])
@pytest.mark.parametrize("perm", [(0, 1, 2), (1, 0, 2), (2, 1, 0), (0, 2, 1)])
def test_canonical_orientation_is_nibabels_and_invertible(perm, flips):
    """The in-plane orientation the model sees is nibabel's closest canonical (RAS+) one, for every axis order."""
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, list(perm)] * np.array([0.8, 0.9, 3.0])[list(perm)] * np.array(flips)
    shape = (7, 9, 5)
    volume = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    g = ScanGeometry.of(shape, affine)
    assert g.spacing[g.slice_axis] == 3.0  # the coarse axis is the acquisition axis
    canonical = np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(volume, affine)).dataobj)
    slice_axis_canonical = int(nib.io_orientation(affine)[g.slice_axis, 0])
    k = 2
    k_canonical = k if nib.io_orientation(affine)[g.slice_axis, 1] > 0 else g.num_slices - 1 - k
    expected = np.take(canonical, k_canonical, axis=slice_axis_canonical)
    ours = g.to_canonical(g.slices(volume)[k])
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(g.from_canonical(ours), g.slices(volume)[k])
    rows, cols = g.slice_shape
    for r, c in [(0, 0), (rows - 1, 1), (2, cols - 1)]:
        one = np.zeros((rows, cols), np.uint8)
        one[r, c] = 1
        assert tuple(np.argwhere(g.to_canonical(one))[0]) == g.point_to_canonical(r, c)


def test_acquisition_axis_and_isotropic_fallback():
    sagittal = np.diag([3.0, 0.7, 0.7, 1.0])
    assert ScanGeometry.of((40, 256, 256), sagittal).slice_axis == 0
    iso = np.eye(4)[:, [1, 2, 0, 3]]  # i -> A, j -> S, k -> R: the axial slices are along j
    assert ScanGeometry.of((30, 30, 30), iso).slice_axis == 1
    with pytest.raises(InvalidInput, match="singular"):
        ScanGeometry.of((4, 4, 4), np.zeros((4, 4)))


def test_model_grid_keeps_the_aspect_ratio_and_pads():
    g = ScanGeometry.of((200, 100, 10), np.diag([1.0, 1.0, 5.0, 1.0]))
    grid = g.grid(64)
    assert (grid.rows, grid.cols, grid.top, grid.left) == (64, 32, 0, 16)
    anisotropic = ScanGeometry.of((100, 100, 10), np.diag([1.0, 0.5, 5.0, 1.0]))
    assert (anisotropic.grid(64).rows, anisotropic.grid(64).cols) == (64, 32)  # 100 mm x 50 mm
    image = np.ones((10, 200, 100), np.float32)
    model = g.to_model(image, 64, nearest=False, pad=-3.0)
    assert model.shape == (10, 64, 64) and (model[:, :, :16] == -3.0).all() and np.allclose(model[:, :, 16:48], 1)


def _disk_probabilities(g, labels, size):
    """What a perfect model would say on the model grid: the one-hot labels, area-averaged (antialiased)."""
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(3)], axis=1)  # (S, C, rows, cols)
    probs = np.stack([g.to_model(onehot[:, c], size, nearest=False) for c in range(3)], axis=1)
    probs[:, 0][probs.sum(axis=1) == 0] = 1.0  # padding is background
    return probs


def _labels_to_source(g: ScanGeometry, labels: np.ndarray, size: int) -> np.ndarray:
    """The alternative Submit does not take: the model's label maps upsampled by nearest neighbour."""
    grid = g.grid(size)
    t = torch.from_numpy(labels.astype(np.float32))[:, None, grid.top : grid.top + grid.rows]
    t = t[..., grid.left : grid.left + grid.cols]
    up = F.interpolate(t, size=(grid.src_rows, grid.src_cols), mode="nearest-exact")[:, 0]
    return g.from_canonical(up.numpy().astype(np.uint8))


def test_probabilities_resample_back_more_accurately_than_labels():
    """Submit resamples probabilities, not labels: measured at the boundaries of shapes on an oblique,
    anisotropic 0.7 x 0.7 x 3 mm grid, 256 x 192 source pixels on a 64-pixel model grid."""
    g = ScanGeometry.of((256, 192, 4), oblique_affine())
    rows, cols = g.slice_shape
    yy, xx = np.mgrid[:rows, :cols]
    labels = np.zeros((4, rows, cols), np.uint8)
    for s in range(4):
        labels[s][((yy - 120) / (60 + 5 * s)) ** 2 + ((xx - 90) / 40) ** 2 <= 1] = 1
        labels[s][((yy - 60) / 14) ** 2 + ((xx - 140 + 3 * s) / 9) ** 2 <= 1] = 2
    probs = _disk_probabilities(g, labels, 64)
    via_probs = g.probabilities_to_source(probs, 64)
    via_labels = _labels_to_source(g, probs.argmax(axis=1), 64)
    boundary = np.zeros_like(labels, bool)
    for s in range(4):
        boundary[s] = ndimage.morphological_gradient(labels[s], size=7) > 0
    err_probs = float((via_probs != labels)[boundary].mean())
    err_labels = float((via_labels != labels)[boundary].mean())
    print(f"boundary-band error: probabilities {err_probs:.4f}, labels {err_labels:.4f}")
    assert err_probs < err_labels
    assert (via_probs == labels).mean() > 0.98
