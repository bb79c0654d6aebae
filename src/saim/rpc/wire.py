"""Slices on the wire: label maps and image slices at the source in-plane resolution, zlib-compressed.

One home for the encoding, used by the annotator service and its clients (virtual annotators, benchmarks)."""

from __future__ import annotations

import zlib

import numpy as np

from saim.errors import InvalidInput, TooLarge
from saim.v1 import annotator_pb2

MAX_SLICE_PIXELS = 4096 * 4096
WIRE_DTYPES: dict[str, np.dtype] = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}  # SliceResponse.image_dtype
ZLIB_LEVEL = 1  # the fastest level: label maps compress well at any level


def encode_mask(index: int, mask: np.ndarray) -> annotator_pb2.SliceMask:
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return annotator_pb2.SliceMask(
        slice=index,
        rows=mask.shape[0],
        cols=mask.shape[1],
        encoding=annotator_pb2.ENCODING_ZLIB,
        data=zlib.compress(mask.tobytes(), ZLIB_LEVEL),
    )


def _decode(data: bytes, encoding: int, expected: int, what: str) -> bytes:
    if encoding == annotator_pb2.ENCODING_ZLIB:
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(data, expected + 1)  # bounded: a zlib bomb is refused, not inflated
        except zlib.error as exc:
            raise InvalidInput(f"{what}: not valid zlib data ({exc})") from exc
    elif encoding == annotator_pb2.ENCODING_RAW:
        raw = data
    else:
        raise InvalidInput(f"{what}: unknown encoding {encoding}")
    if len(raw) != expected:
        raise InvalidInput(f"{what}: {len(raw)} bytes where {expected} were expected")
    return raw


def decode_mask(msg: annotator_pb2.SliceMask, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The label map of a SliceMask; with `shape`, its rows and columns must be these."""
    rows, cols = int(msg.rows), int(msg.cols)
    if shape is not None and (rows, cols) != tuple(shape):
        raise InvalidInput(f"mask of {rows} x {cols} pixels, the slice has {shape[0]} x {shape[1]}")
    if rows * cols > MAX_SLICE_PIXELS:
        raise TooLarge(f"mask of {rows} x {cols} pixels exceeds {MAX_SLICE_PIXELS}")
    return np.frombuffer(_decode(msg.data, msg.encoding, rows * cols, "mask"), np.uint8).reshape(rows, cols)


def image_dtype(volume: np.ndarray) -> np.dtype:
    """int16 for integral intensities that fit (CT in HU, most MRI), float32 otherwise."""
    if np.issubdtype(volume.dtype, np.integer):
        info = np.iinfo(np.int16)
        if volume.min(initial=0) >= info.min and volume.max(initial=0) <= info.max:
            return WIRE_DTYPES["int16"]
    return WIRE_DTYPES["float32"]


def encode_image(image: np.ndarray, dtype: np.dtype) -> tuple[bytes, str]:
    raw = np.ascontiguousarray(image, dtype=dtype).tobytes()
    return zlib.compress(raw, ZLIB_LEVEL), next(name for name, d in WIRE_DTYPES.items() if d == dtype)


def decode_image(reply: annotator_pb2.SliceResponse, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The image of a SliceResponse; its size is the mask's, or `shape` (an image-only reply has no mask)."""
    dtype = WIRE_DTYPES.get(reply.image_dtype)
    if dtype is None:
        raise InvalidInput(f"image: unknown dtype {reply.image_dtype!r}")
    rows, cols = shape if shape is not None else (int(reply.mask.rows), int(reply.mask.cols))
    raw = _decode(reply.image, reply.image_encoding, rows * cols * dtype.itemsize, "image")
    return np.frombuffer(raw, dtype).reshape(rows, cols)
