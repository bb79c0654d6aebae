"""The preprocessed slice store: each series' model-grid slices, written once next to the series in object storage,
so that scoring and training read them without decoding the NIfTI again (gzip, resampling, normalisation: most of
a cold rescoring's time, docs/benchmarks.md).

One object per series and preprocessing, `preprocessed/{fingerprint}/{case}.slices`: a JSON header (the scan's
shape and affine, the source index of every model slice, the chunks) and the slices as float16 in chunks of
`CHUNK_SLICES` slices, each zlib-compressed when that halves it (a CT's air does; noise does not). Normalised
intensities keep about three significant digits in float16; the pool store rounds every series it serves to float16,
so a series read from here is the one decoded from its NIfTI. The fingerprint
covers what the slices depend on (the model size, the intensity preprocessing, the slice budget, this format): a
new preprocessing or model size writes beside the old objects and never reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import zlib

import numpy as np

from saim.data.geometry import ScanGeometry
from saim.data.intensity import Intensity
from saim.data.slices import Series
from saim.errors import DatasetError, NotFound
from saim.storage.objects import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "preprocessed/"
FORMAT = 1
MAGIC = b"SAIMSLC1"
CHUNK_SLICES = 16  # slices per chunk (a 512² chunk is 8 MiB of float16)
RAW_ABOVE = 0.5  # a chunk that zlib does not halve is stored raw: inflating it costs more reading time than it saves


def fingerprint(image_size: int, intensity: Intensity, max_slices: int | None) -> str:
    """What the model-grid slices of a series depend on, as 16 hex digits."""
    spec = {"format": FORMAT, "image_size": image_size, "intensity": intensity.to_json(), "max_slices": max_slices}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def slices_key(fp: str, case: str) -> str:
    return f"{PREFIX}{fp}/{case}.slices"


def as_stored(images: np.ndarray) -> np.ndarray:
    """Model-grid slices as the store keeps them (float16), back in float32."""
    return np.asarray(images, np.float16).astype(np.float32)


def encode_series(series: Series) -> bytes:
    images = np.ascontiguousarray(series.images, np.float16)
    chunks, packed = [], []
    for i in range(0, len(images), CHUNK_SLICES):
        raw = images[i : i + CHUNK_SLICES].tobytes()
        small = zlib.compress(raw, 1)
        keep = len(small) < RAW_ABOVE * len(raw)  # noise-like slices barely shrink: raw reads faster
        chunks.append(small if keep else raw)
        packed.append(keep)
    header = {
        "case": series.case,
        "shape": list(series.geometry.shape),
        "affine": np.asarray(series.geometry.affine, np.float64).tolist(),
        "slice_index": [int(z) for z in series.slice_index],
        "grid": list(images.shape),
        "dtype": "float16",
        "chunk_slices": CHUNK_SLICES,
        "chunks": [len(c) for c in chunks],
        "zlib": packed,
    }
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)


def decode_series(blob: bytes, name: str) -> Series:
    """A series from its stored bytes (labels None); a damaged object is a DatasetError naming it."""
    try:
        if blob[: len(MAGIC)] != MAGIC:
            raise ValueError("not a saim slice object")
        (n,) = struct.unpack_from("<I", blob, len(MAGIC))
        start = len(MAGIC) + 4
        header = json.loads(blob[start : start + n])
        grid = tuple(header["grid"])
        images = np.empty(grid, np.float32)
        offset, at = start + n, 0
        for size, packed in zip(header["chunks"], header["zlib"], strict=True):
            data = blob[offset : offset + size]
            part = np.frombuffer(zlib.decompress(data) if packed else data, np.float16)
            count = part.size // (grid[1] * grid[2])
            images[at : at + count] = part.reshape(count, grid[1], grid[2])  # to float32 in the copy
            offset, at = offset + size, at + count
        if at != grid[0] or offset != len(blob):
            raise ValueError(f"{at} of {grid[0]} slices")
        geometry = ScanGeometry.of(header["shape"], np.asarray(header["affine"], np.float64))
        return Series(header["case"], images, None, np.asarray(header["slice_index"]), geometry)
    except (ValueError, KeyError, TypeError, zlib.error, struct.error) as exc:
        raise DatasetError(f"{name}: damaged preprocessed slices ({exc})") from exc


class SliceStore:
    """The preprocessed slices of one preprocessing (`fp`, from `fingerprint`) in an object store."""

    def __init__(self, store: ObjectStore, fp: str):
        self.store, self.fp = store, fp

    def get(self, case: str) -> Series | None:
        """The case's stored slices, or None when none are stored (or they are damaged: decoded again)."""
        key = slices_key(self.fp, case)
        try:
            return decode_series(self.store.get_bytes(key), key)
        except NotFound:
            return None
        except DatasetError as exc:
            log.warning("%s; decoding the series again", exc)
            return None

    def put(self, series: Series) -> None:
        self.store.put_bytes(slices_key(self.fp, series.case), encode_series(series))
