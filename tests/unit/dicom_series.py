"""Write a volume as a DICOM series, as a scanner does: one file per slice, the geometry in ImagePositionPatient,
ImageOrientationPatient and PixelSpacing (LPS), stored values with RescaleIntercept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat


def _ds(values) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def write_series(
    folder: Path,
    volume: np.ndarray,
    affine: np.ndarray,
    number: int = 1,
    intercept: int = -1024,
    order: list[int] | None = None,
    skip: tuple[int, ...] = (),
    series_uid: str | None = None,
) -> list[Path]:
    """`volume` (i = column, j = row, k = slice; whole numbers) with its RAS affine, one file per slice, written in
    `order` (default: reversed, so nothing relies on file order); slices in `skip` are left out."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    col_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = [*(lps[:3, 0] / col_step), *(lps[:3, 1] / row_step)]
    study, series = generate_uid(), series_uid or generate_uid()
    paths = []
    for k in order if order is not None else reversed(range(volume.shape[2])):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", number, k + 1
        ds.PatientID = "saim-test"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.PixelSpacing = _ds([row_step, col_step])
        ds.ImageOrientationPatient = _ds(orientation)
        ds.ImagePositionPatient = _ds(lps[:3, 3] + k * lps[:3, 2])
        ds.SliceThickness = DSfloat(float(np.linalg.norm(lps[:3, 2])), auto_format=True)
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (volume[:, :, k].T.astype(np.int32) - intercept).astype(np.uint16).tobytes()
        path = folder / f"IM{uid[-8:]}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
