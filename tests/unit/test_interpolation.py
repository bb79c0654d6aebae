"""Shape-based interpolation between two annotated slices, on hand-made regions."""

import numpy as np

from saim.annotation import interpolate_masks


def _disk(shape, centre, radius, value=1) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.where((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2, value, 0).astype(np.uint8)


def test_a_growing_structure_grows_gradually_and_one_that_ends_is_left_alone():
    low = _disk((64, 64), (32, 32), 4) + _disk((64, 64), (10, 10), 3, value=2)  # class 2 only on the low slice
    high = _disk((64, 64), (32, 32), 16)
    filled = interpolate_masks(low, high, 3, (1, 2), (1.0, 1.0))
    radii = [np.sqrt(f[1].sum() / np.pi) for f in filled]
    np.testing.assert_allclose(radii, [7, 10, 13], atol=0.7)  # a quarter, a half, three quarters of the way
    assert all(2 not in f for f in filled)


def test_anisotropic_pixels_are_measured_in_millimetres():
    low = np.zeros((40, 40), np.uint8)
    low[18:22, 10:30] = 1  # a bar along the columns
    high = np.zeros((40, 40), np.uint8)
    high[10:30, 18:22] = 1  # the same bar along the rows
    square = interpolate_masks(low, high, 1, (1,), (1.0, 1.0))[0][1]
    stretched = interpolate_masks(low, high, 1, (1,), (1.0, 3.0))[0][1]
    assert not np.array_equal(square, stretched)  # where the middle shape's border lies depends on the spacing
    assert square[20, 20] and stretched[20, 20]
