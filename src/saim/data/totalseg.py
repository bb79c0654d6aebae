"""A small real dataset from the TotalSegmentator source distribution (Apache-2.0).

The sdist's tests/reference_files hold an abdominal CT and an MR scan with TotalSegmentator label maps. We keep
four organ classes and cut each scan into slabs of consecutive slices, each slab a case, so the emulation has
enough cases to split. Slabs of one scan are not independent patients: this is a real-data smoke dataset, not a
benchmark.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from saim.data.dataset import DatasetInfo, write_dataset
from saim.data.nifti import volume_from_bytes
from saim.errors import DatasetError

VERSION = "2.18.0"
SCANS = (  # (image, label map, modality) under tests/reference_files/
    ("example_ct_sm.nii.gz", "example_seg.nii.gz", "ct"),
    ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "mr"),
)
KEEP = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}  # TotalSegmentator v2 label ids


def fetch_sdist(cache_dir: Path) -> Path:
    """Download the sdist with pip (from the configured package index) unless it is cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(f"totalsegmentator-{VERSION}.tar.gz"))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"totalsegmentator=={VERSION}",
        "-d",
        str(cache_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache_dir.glob(f"totalsegmentator-{VERSION}.tar.gz"))
    if proc.returncode != 0 or not found:
        raise DatasetError(f"could not download totalsegmentator=={VERSION} sdist: {proc.stderr.strip()[-500:]}")
    return found[0]


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    path = f"totalsegmentator-{VERSION}/tests/reference_files/{name}"
    try:
        member = tar.extractfile(path)
    except KeyError:
        member = None
    if member is None:
        raise DatasetError(f"{tar.name!s}: {path} not found in the sdist")
    return member.read()


def build(
    out_dir: Path | str, sdist: Path | str | None = None, slab: int = 5, cache_dir: Path | str = ".cache"
) -> Path:
    sdist = Path(sdist) if sdist else fetch_sdist(Path(cache_dir))
    values = list(KEEP.values())
    lut = np.zeros(256, np.uint8)
    for i, v in enumerate(values):
        lut[v] = i + 1
    cases = {}
    with tarfile.open(sdist) as tar:
        for image_name, label_name, modality in SCANS:
            image, affine = volume_from_bytes(_member(tar, image_name), image_name)
            label, _ = volume_from_bytes(_member(tar, label_name), label_name)
            if image.shape != label.shape:
                raise DatasetError(f"{label_name}: shape {label.shape} differs from {image_name} {image.shape}")
            label = lut[label.astype(np.uint8)]
            for start in range(0, image.shape[2] - slab + 1, slab):
                z = slice(start, start + slab)
                if label[:, :, z].any():
                    slab_affine = affine.copy()  # the slab's first voxel is the scan's voxel (0, 0, start)
                    slab_affine[:3, 3] += affine[:3, 2] * start
                    cases[f"ts_{modality}_{start:03d}"] = (
                        image[:, :, z].astype(np.float32),
                        label[:, :, z],
                        slab_affine,
                    )
    info = DatasetInfo(
        name="TotalSegmentatorExamples", classes=tuple(KEEP), label_values=(1, 2, 3, 4), channel_names={"0": "CT_or_MR"}
    )
    return write_dataset(out_dir, info, cases)
