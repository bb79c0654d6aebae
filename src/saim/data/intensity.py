"""Intensity preprocessing by modality (dataset.json channel_names), the nnU-Net schemes.

- CT: clip to the 0.5-99.5 percentiles of the foreground intensities of the labelled set, then z-score with the
  foreground mean and standard deviation. The statistics are fitted once, at import, and travel with the dataset
  (dataset/preprocessing.json) and with every model version's metadata, so all services preprocess identically.
- Every other modality (MRI, ...): z-score per series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from saim.errors import DatasetError

CT_SCHEME, ZSCORE_SCHEME = "ct", "zscore"
SAMPLES_PER_CASE = 10_000  # foreground voxels sampled per labelled case (as nnU-Net's fingerprint)


@dataclass(frozen=True)
class Intensity:
    scheme: str
    lower: float | None = None  # CT only: the clip range and the statistics of the labelled foreground
    upper: float | None = None
    mean: float | None = None
    std: float | None = None

    def apply(self, volume: np.ndarray) -> np.ndarray:
        v = np.asarray(volume, dtype=np.float32)
        if self.scheme == CT_SCHEME:
            if self.lower is None or self.upper is None or self.mean is None or self.std is None:
                raise DatasetError("CT preprocessing without its clip range and statistics")
            return ((np.clip(v, self.lower, self.upper) - self.mean) / max(self.std, 1e-8)).astype(np.float32)
        std = float(v.std())
        return ((v - float(v.mean())) / max(std, 1e-8)).astype(np.float32)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Intensity:
        try:
            out = cls(**d)
        except TypeError as exc:
            raise DatasetError(f"invalid preprocessing description {d!r} ({exc})") from exc
        if out.scheme == CT_SCHEME and None in (out.lower, out.upper, out.mean, out.std):
            raise DatasetError(f"CT preprocessing needs lower, upper, mean and std, got {d!r}")
        if out.scheme not in (CT_SCHEME, ZSCORE_SCHEME):
            raise DatasetError(f"unknown preprocessing scheme {out.scheme!r}")
        return out


def is_ct(channel_names: dict[str, str]) -> bool:
    return str(channel_names.get("0", "")).strip().lower() == "ct"


def fit_intensity(channel_names: dict[str, str], labelled: Iterable[tuple[np.ndarray, np.ndarray]]) -> Intensity:
    """The scheme for the dataset's modality; for CT, its statistics from (image, label) pairs of the labelled set."""
    if not is_ct(channel_names):
        return Intensity(ZSCORE_SCHEME)
    rng = np.random.default_rng(0)
    samples = []
    for image, label in labelled:
        fg = image[label > 0]
        if fg.size > SAMPLES_PER_CASE:
            fg = rng.choice(fg, SAMPLES_PER_CASE, replace=False)
        samples.append(fg.astype(np.float64))
    values = np.concatenate(samples) if samples else np.zeros(0)
    if values.size == 0:
        raise DatasetError("CT intensity statistics need labelled foreground; the labelled set has none")
    lower, upper = np.percentile(values, [0.5, 99.5])
    return Intensity(CT_SCHEME, float(lower), float(upper), float(values.mean()), float(values.std()))
