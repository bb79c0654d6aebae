"""DICOM series in: each series of a folder read into (volume, affine) in NIfTI's convention (RAS+ world, voxel axes
i = column, j = row, k = slice), the geometry from the headers alone (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) and checked as a scanner writes it: one orientation, one grid, slices evenly spaced along one
direction. saim stores and exports the result as NIfTI, so the dataset it writes stays nnU-Net's.

Refused, naming the series: enhanced multi-frame objects, colour images, several images at one position (a 4D or
multi-echo series: split it first), uneven slice spacing (missing slices), a gantry tilt (slices not stacked along
their normal), pixel data in a transfer syntax this installation cannot decode. Files that are not image slices
(DICOM-SEG, RT structures, reports, non-DICOM files) are left out.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saim.errors import InvalidInput

ORIENTATION_TOLERANCE = 1e-4  # direction cosines of one series' slices may differ by rounding only
SPACING_TOLERANCE = 0.01  # slice steps may differ from their mean by this fraction (positions written with few digits)
NOT_IMAGES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class DicomSeries:
    uid: str  # SeriesInstanceUID
    files: tuple[Path, ...]
    folder: str  # its files' folder, relative to where the search began
    series_number: int | None = None

    @property
    def name(self) -> str:
        """What messages call it: its files' folder, and its number where it has one."""
        where = str(self.files[0].parent)
        return where if self.series_number is None else f"{where} (series {self.series_number})"


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # a runtime dependency; named in case an installation lacks it
        raise InvalidInput("DICOM input needs pydicom (pip install pydicom)") from exc
    return pydicom


def find_series(root: Path | str) -> list[DicomSeries]:
    """Every image series under `root` (recursively), from the headers alone; in path order."""
    pydicom = _pydicom()
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"{root}: not a directory")
    found: dict[str, list[Path]] = defaultdict(list)
    numbers: dict[str, int | None] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():  # pydicom's remarks on files that turn out not to be slices
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 -- not DICOM (a README, a NIfTI, a DICOMDIR index): not a slice
            continue
        if "SeriesInstanceUID" not in ds or ds.get("Modality", "") in NOT_IMAGES or "Rows" not in ds:
            continue
        found[str(ds.SeriesInstanceUID)].append(path)
        number = ds.get("SeriesNumber")
        numbers[str(ds.SeriesInstanceUID)] = None if number in (None, "") else int(number)
    series = []
    for uid, files in found.items():
        folder = files[0].parent.relative_to(root)
        series.append(DicomSeries(uid, tuple(files), root.name if folder == Path(".") else str(folder), numbers[uid]))
    return sorted(series, key=lambda s: (s.folder, s.series_number or 0, s.uid))


def read_folder(folder: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """The one series of a folder (an nnU-Net image entry `{case}_0000/`), as `read_series`."""
    series = find_series(folder)
    if len(series) != 1:
        raise InvalidInput(f"{folder}: {len(series)} DICOM image series, expected one")
    return read_series(series[0])


def case_names(series: list[DicomSeries]) -> dict[str, DicomSeries]:
    """{case: series}: the series' folder (path parts joined by '_', characters other than letters, digits, '-'
    and '.' replaced), with its series number (or an index) appended where one folder holds several series."""
    by_folder: dict[str, list[DicomSeries]] = defaultdict(list)
    for s in series:
        by_folder[s.folder].append(s)
    names: dict[str, DicomSeries] = {}
    for folder, group in by_folder.items():
        base = re.sub(r"[^A-Za-z0-9.\-]+", "_", folder.replace("/", "_")).strip("_") or "series"
        for index, s in enumerate(group):
            name = base if len(group) == 1 else f"{base}_s{s.series_number if s.series_number is not None else index}"
            if name in names:
                raise InvalidInput(f"{folder}: two series would both be named {name!r}; put them in their own folders")
            names[name] = s
    return names


def _floats(ds, keyword: str, count: int, name: str) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != count:
        raise InvalidInput(f"{name}: a slice has no {keyword} (needed for its geometry)")
    return np.array([float(v) for v in value], dtype=np.float64)


def read_series(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """(volume, affine): the slices stacked along their positions, values with RescaleSlope/Intercept applied
    (int16 where every value is a whole number in its range, else float32), the affine in RAS+ mm."""
    pydicom = _pydicom()
    name = series.name
    slices = [pydicom.dcmread(path) for path in series.files]
    first = slices[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise InvalidInput(f"{name}: enhanced multi-frame DICOM is not read here; convert it (e.g. dcm2niix)")
    if first.get("PhotometricInterpretation", "MONOCHROME2") not in ("MONOCHROME1", "MONOCHROME2"):
        raise InvalidInput(f"{name}: {first.PhotometricInterpretation} images are not scans saim can label")
    orientation = _floats(first, "ImageOrientationPatient", 6, name)
    spacing = _floats(first, "PixelSpacing", 2, name)  # between rows, between columns
    grid = (int(first.Rows), int(first.Columns))
    row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (columns increase), along a column
    normal = np.cross(row_dir, col_dir)
    positions = []
    for ds in slices:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, name), orientation, atol=ORIENTATION_TOLERANCE):
            raise InvalidInput(f"{name}: slices of more than one orientation")
        if (int(ds.Rows), int(ds.Columns)) != grid or not np.allclose(
            _floats(ds, "PixelSpacing", 2, name), spacing, rtol=1e-6
        ):
            raise InvalidInput(f"{name}: slices of more than one grid (rows, columns, pixel spacing)")
        positions.append(_floats(ds, "ImagePositionPatient", 3, name))
    order = np.argsort([p @ normal for p in positions], kind="stable")
    slices = [slices[i] for i in order]
    pos = np.array([positions[i] for i in order])
    if len(pos) > 1:
        along = pos @ normal
        steps = np.diff(along)
        if np.any(np.abs(steps) < 1e-3):
            raise InvalidInput(
                f"{name}: several images at one position (a 4D, multi-echo or repeated series): split it first"
            )
        if np.max(np.abs(steps - steps.mean())) > SPACING_TOLERANCE * abs(steps.mean()):
            raise InvalidInput(
                f"{name}: slices are not evenly spaced (steps from {steps.min():.3f} to {steps.max():.3f} mm): "
                "missing slices?"
            )
        step = (pos[-1] - pos[0]) / (len(pos) - 1)
        tilt = np.linalg.norm(step - (step @ normal) * normal)
        if tilt > SPACING_TOLERANCE * np.linalg.norm(step):
            raise InvalidInput(f"{name}: slices are not stacked along their normal (a gantry tilt); resample it first")
    else:
        thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
        if not thickness:
            raise InvalidInput(f"{name}: one slice without SliceThickness: its third axis has no size")
        step = float(thickness) * normal
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[1]  # i: the column index
    affine[:3, 1] = col_dir * spacing[0]  # j: the row index
    affine[:3, 2] = step
    affine[:3, 3] = pos[0]
    return _pixels(slices, name), LPS_TO_RAS @ affine


def _pixels(slices, name: str) -> np.ndarray:
    planes = []
    whole = True
    for ds in slices:
        try:
            raw = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 -- pydicom names the missing decoder
            syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
            name_of = getattr(syntax, "name", syntax)
            raise InvalidInput(f"{name}: pixel data in {name_of} cannot be decoded here ({exc})") from exc
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        whole &= slope.is_integer() and intercept.is_integer()
        planes.append(raw.astype(np.float64) * slope + intercept)
    volume = np.stack(planes, axis=-1).transpose(1, 0, 2)  # (rows, cols, k) -> (i = column, j = row, k)
    info = np.iinfo(np.int16)
    if whole and volume.min() >= info.min and volume.max() <= info.max:
        return volume.astype(np.int16)
    return volume.astype(np.float32)
