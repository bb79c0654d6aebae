"""Resolve a data source ("synthetic" or an nnU-Net raw directory) into model-resolution series."""

from __future__ import annotations

import tempfile
from pathlib import Path

from saim.data import phantom
from saim.data.dataset import NnUNetDataset
from saim.data.intensity import fit_intensity
from saim.data.slices import Series, series_from_volume


def load_series(dataset: NnUNetDataset, image_size: int, max_slices: int | None) -> list[Series]:
    """Every labelled case of the dataset as model slices. The emulation knows every label, so the intensity
    statistics (CT) are fitted on all of them."""
    volumes = {case: dataset.load_case(case) for case in dataset.cases}
    intensity = fit_intensity(dataset.info.channel_names, ((img, lab) for img, lab, _ in volumes.values()))
    return [
        series_from_volume(case, image, affine, label, image_size, intensity, max_slices)
        for case, (image, label, affine) in volumes.items()
    ]


def open_source(
    source: str,
    image_size: int,
    max_slices: int | None,
    synthetic_series: int = 24,
    synthetic_slices: int = 12,
    seed: int = 0,
) -> tuple[tuple[str, ...], list[Series]]:
    """Returns (foreground class names, series). "synthetic" generates phantoms into a temporary directory and
    reads them back through the same nnU-Net reader as any real dataset."""
    if source == "synthetic":
        with tempfile.TemporaryDirectory(prefix="saim-phantom-") as tmp:
            ds = NnUNetDataset(phantom.generate(Path(tmp), synthetic_series, synthetic_slices, seed=seed))
            return ds.info.classes, load_series(ds, image_size, max_slices)
    ds = NnUNetDataset(source)
    return ds.info.classes, load_series(ds, image_size, max_slices)


def dataset_dir(spec: str, series: int, seed: int) -> Path:
    """'synthetic' (phantoms generated into a temporary directory) or the path of an nnU-Net raw directory."""
    if spec != "synthetic":
        return Path(spec)
    return phantom.generate(Path(tempfile.mkdtemp(prefix="saim-phantom-")), num_series=series, seed=seed)
