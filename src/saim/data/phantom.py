"""Deterministic synthetic abdomen-like MRI phantoms, written in the nnU-Net raw layout.

Each series has its own body outline, organ shapes and poses, acquisition protocol (contrast), noise level and
bias field. Organs: liver, spleen, right and left kidney (told apart by position only), plus a spine distractor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from saim.data.dataset import DatasetInfo, write_dataset

CLASSES = ("liver", "spleen", "kidney_right", "kidney_left")

# Mean intensities per protocol: body, liver, spleen, kidney, spine. Protocols mimic a multi-vendor pool of one
# sequence type: levels and contrast differ, the ordering of the organs does not.
PROTOCOLS = {
    "vendor_a": (0.30, 0.62, 0.45, 0.82, 0.95),
    "vendor_b": (0.40, 0.70, 0.55, 0.80, 0.88),
    "fatsat": (0.18, 0.52, 0.38, 0.72, 0.60),
}


def _ellipsoid(xx, yy, zz, center, radii, angle):
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xx - center[0], yy - center[1]
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + ((zz - center[2]) / radii[2]) ** 2 <= 1.0


def make_series(seed: int, index: int, size: int = 96, depth: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """One phantom series: (image float32 (size, size, depth), label uint8 in 0..4)."""
    rng = np.random.default_rng([seed, index])
    lin = np.linspace(-1, 1, size)
    zs = np.linspace(-1, 1, depth)
    xx, yy, zz = np.meshgrid(lin, lin, zs, indexing="ij")
    shift = rng.normal(0, 0.05, 2)
    rot = rng.normal(0, 0.12)

    def jitter(center, radii, spread=0.06, scale=0.15):
        c = np.array(center) + np.r_[rng.normal(0, spread, 2) + shift, rng.normal(0, 0.1)]
        r = np.array(radii) * rng.uniform(1 - scale, 1 + scale, 3)
        return c, r

    body = _ellipsoid(xx, yy, zz, (shift[0], shift[1], 0), (rng.uniform(0.84, 0.95), rng.uniform(0.66, 0.78), 9.0), rot)
    label = np.zeros(xx.shape, np.uint8)
    # Organ sizes are chosen so that at the default 64 px model resolution the smallest organ spans ~15 px: errors
    # are then regions a click can fix, not 1-px boundary bands.
    organs = [
        (1, *jitter((-0.30, -0.15, -0.2), (0.46, 0.36, 1.4))),  # liver (image left = patient right)
        (2, *jitter((0.42, 0.05, -0.2), (0.22, 0.27, 1.1))),  # spleen
        (3, *jitter((-0.27, 0.36, 0.2), (0.17, 0.23, 1.1))),  # kidney right
        (4, *jitter((0.29, 0.36, 0.2), (0.17, 0.23, 1.1))),  # kidney left
    ]
    for value, center, radii in organs:
        label[_ellipsoid(xx, yy, zz, center, radii, rot + rng.normal(0, 0.25)) & body] = value
    spine = _ellipsoid(xx, yy, zz, (shift[0], 0.45 + shift[1], 0), (0.09, 0.09, 9.0), 0)

    protocol = list(PROTOCOLS)[rng.integers(len(PROTOCOLS))]
    mu = np.array(PROTOCOLS[protocol]) + rng.normal(0, 0.03, 5)
    image = np.zeros(xx.shape, np.float32)
    image[body] = mu[0]
    for value, organ_mu in ((1, mu[1]), (2, mu[2]), (3, mu[3]), (4, mu[3])):
        image[label == value] = organ_mu
    image[spine & body] = mu[4]
    texture = ndimage.gaussian_filter(rng.normal(0, 1, xx.shape), (2, 2, 0.5))
    image += 0.04 * texture / (texture.std() + 1e-6) * body
    bias = 1 + rng.uniform(0.1, 0.35) * (rng.normal(0, 1) * xx + rng.normal(0, 1) * yy + 0.5 * rng.normal() * xx * yy)
    image = image * np.clip(bias, 0.4, 1.8)
    image += rng.normal(0, rng.uniform(0.02, 0.06), xx.shape)
    image = ndimage.gaussian_filter(image, (0.6, 0.6, 0))
    return (np.clip(image, 0, None) * 1000).astype(np.float32), label


def phantom_info() -> DatasetInfo:
    return DatasetInfo(name="SaimPhantom", classes=CLASSES, label_values=(1, 2, 3, 4), channel_names={"0": "MRI"})


def generate(out_dir: Path | str, num_series: int = 24, depth: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Write `num_series` phantoms as an nnU-Net raw dataset; same arguments, same bytes of data."""
    affine = np.diag([1.5, 1.5, 5.0, 1.0])
    cases = {}
    for i in range(num_series):
        image, label = make_series(seed, i, size, depth)
        cases[f"phantom_{i:04d}"] = (image, label, affine)
    return write_dataset(out_dir, phantom_info(), cases)
