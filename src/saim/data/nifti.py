"""NIfTI read/write with validation. Every failure is a DatasetError naming the file."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from saim.errors import DatasetError, TooLarge

MAX_VOXELS = 512 * 512 * 1024  # default size cap for one volume


def _squeeze_channel(data: np.ndarray, name: str) -> np.ndarray:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{name}: expected a 3D volume, got shape {tuple(data.shape)}")
    return data


def _from_image(img: nib.spatialimages.SpatialImage, name: str, max_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(int(s) for s in img.shape)
    if int(np.prod(shape)) > max_voxels:
        raise TooLarge(f"{name}: {int(np.prod(shape))} voxels exceeds the cap of {max_voxels}")
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise DatasetError(f"{name}: truncated or corrupt NIfTI data ({exc})") from exc
    data = _squeeze_channel(np.asarray(data), name)
    return data, np.asarray(img.affine, dtype=np.float64)


def load_volume(path: Path | str, max_voxels: int = MAX_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI volume, or the DICOM series of a folder (saim.data.dicom); returns (data, affine)."""
    path = Path(path)
    if path.is_dir():
        from saim.data.dicom import read_folder
        from saim.errors import InvalidInput

        try:
            data, affine = read_folder(path)
        except InvalidInput as exc:
            raise DatasetError(str(exc)) from exc
        if data.size > max_voxels:
            raise TooLarge(f"{path}: {data.size} voxels exceeds the cap of {max_voxels}")
        return data, affine
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers
        raise DatasetError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise DatasetError(f"{path}: not an image volume")
    return _from_image(img, str(path), max_voxels)


def volume_from_bytes(
    blob: bytes, name: str = "<bytes>", max_voxels: int = MAX_VOXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Decode NIfTI (optionally gzipped) bytes, as stored in object storage or sent over the wire."""
    try:
        raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        img = nib.Nifti1Image.from_bytes(raw)
    except Exception as exc:
        raise DatasetError(f"{name}: not a readable NIfTI payload ({exc})") from exc
    return _from_image(img, name, max_voxels)


def volume_to_bytes(data: np.ndarray, affine: np.ndarray | None = None, compress: bool = True) -> bytes:
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6) if compress else raw


def save_volume(path: Path | str, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))


def check_finite(data: np.ndarray, name: str) -> None:
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise DatasetError(f"{name}: contains NaN or infinite values")
