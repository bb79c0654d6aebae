"""Deterministic synthetic abdomen-like MRI phantoms, written in the nnU-Net raw layout.

Each series has its own body outline, organ shapes and poses, acquisition protocol (contrast), noise level and
bias field. Organs: liver, spleen, right and left kidney (told apart by position only), plus a spine distractor.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def make_series(
    seed: int, index: int, size: int = 96, depth: int = 12, rarest_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom series: (image float32 (size, size, depth), label uint8 in 0..4). `rarest_scale` shrinks the
    left kidney in-plane (0.4: about 6 px across at the 64 px model size, a small structure few clicks can fix)."""
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
        (4, *jitter((0.29, 0.36, 0.2), (0.17 * rarest_scale, 0.23 * rarest_scale, 1.1))),  # kidney left
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


def generate(
    out_dir: Path | str,
    num_series: int = 24,
    depth: int = 12,
    size: int = 96,
    seed: int = 0,
    rarest_scale: float = 1.0,
    affine: np.ndarray | None = None,
) -> Path:
    """Write `num_series` phantoms as an nnU-Net raw dataset; same arguments, same bytes of data. The affine defaults
    to RAS+ 1.5 x 1.5 x 5 mm."""
    affine = np.diag([1.5, 1.5, 5.0, 1.0]) if affine is None else np.asarray(affine, float)
    return write_dataset(out_dir, phantom_info(), iter_series(num_series, depth, size, seed, rarest_scale, affine))


def iter_series(
    num_series: int,
    depth: int = 12,
    size: int = 96,
    seed: int = 0,
    rarest_scale: float = 1.0,
    affine: np.ndarray | None = None,
) -> Iterator[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The phantoms one at a time, (case, (image, label, affine)), each made only when asked for: an AMOS-size pool
    (1,200 series) is generated in the memory of one series."""
    affine = np.diag([1.5, 1.5, 5.0, 1.0]) if affine is None else np.asarray(affine, float)
    for i in range(num_series):
        image, label = make_series(seed, i, size, depth, rarest_scale)
        yield f"phantom_{i:04d}", (image, label, affine)


CT_HU = {"air": -1000, "body": 40, "liver": 60, "spleen": 50, "kidney": 150, "spine": 700}


def make_ct(shape: tuple[int, int, int] = (512, 512, 200), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A large CT-like series in Hounsfield units (int16) with the phantom's organs, built slice by slice so a
    512 x 512 x 200 volume costs its own size in memory: (image int16, label uint8 in 0..4)."""
    nx, ny, nz = shape
    rng = np.random.default_rng(seed)
    image = np.empty(shape, np.int16)
    label = np.zeros(shape, np.uint8)
    u = (np.arange(nx, dtype=np.float32)[:, None] + 0.5) / nx - 0.5
    v = (np.arange(ny, dtype=np.float32)[None, :] + 0.5) / ny - 0.5
    organs = (  # (label, HU, centre (u, v, w), radii (u, v, w)) in fractions of the field of view and the depth
        (1, CT_HU["liver"], (-0.12, -0.05, 0.55), (0.17, 0.14, 0.30)),
        (2, CT_HU["spleen"], (0.17, 0.08, 0.60), (0.06, 0.07, 0.15)),
        (3, CT_HU["kidney"], (-0.10, 0.15, 0.40), (0.04, 0.05, 0.12)),
        (4, CT_HU["kidney"], (0.11, 0.15, 0.42), (0.04, 0.05, 0.12)),
    )
    for z in range(nz):
        w = (z + 0.5) / nz
        sl = np.full((nx, ny), CT_HU["air"], np.float32)
        body = (u / 0.42) ** 2 + (v / 0.33) ** 2 <= 1
        sl[body] = CT_HU["body"]
        sl[(u / 0.035) ** 2 + ((v - 0.22) / 0.035) ** 2 <= 1] = CT_HU["spine"]
        lab = np.zeros((nx, ny), np.uint8)
        for value, hu, (cu, cv, cw), (ru, rv, rw) in organs:
            dz = ((w - cw) / rw) ** 2
            if dz >= 1:
                continue
            inside = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1 - dz
            sl[inside], lab[inside] = hu, value
        sl += rng.normal(0, 12, sl.shape).astype(np.float32) * body
        image[:, :, z], label[:, :, z] = np.round(sl).astype(np.int16), lab
    return image, label
