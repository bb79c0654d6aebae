"""Drafts: a person's clicks and edits on a leased case, kept in object storage as they go.

After every click, edit or undo the annotator writes that slice's state — its automatic mask, every operation and
the mask after each one — to `drafts/{case}/{annotator}/slice-{index}.npz` before it answers. A reload of the page,
a lost connection or a killed replica therefore loses nothing the person was shown: OpenSession on the same case by
the same annotator restores the slices exactly (the masks are stored, not recomputed, so a newer model version
does not change what was on the screen; later clicks use the version current then). Submit discards the draft.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np

from saim.clicks import Click
from saim.errors import SaimError
from saim.session import AnnotationSession, Op, SliceState
from saim.storage import ObjectStore

log = logging.getLogger(__name__)

DRAFTS = "drafts/"
FORMAT = 1


def draft_prefix(case: str, annotator: str) -> str:
    return f"{DRAFTS}{case}/{annotator}/"


def slice_key(case: str, annotator: str, index: int) -> str:
    return f"{draft_prefix(case, annotator)}slice-{index:05d}.npz"


def _op_json(op: Op) -> dict:
    out = {"kind": op.kind, "cls": op.cls, "model_version": op.model_version, "positive": op.positive}
    if op.kind == "click":
        c = op.model_click
        out.update(voxel=list(op.voxel), model_click=[c.cls, c.y, c.x, c.positive])
    return out


def encode_slice(state: SliceState) -> bytes:
    """One slice's state as an .npz (masks uint8, strokes bool, operations as JSON)."""
    shape = state.mask.shape
    arrays = {
        "auto": state.auto if state.auto is not None else np.zeros(shape, np.uint8),
        "history": np.stack(state.history) if state.history else np.zeros((0, *shape), np.uint8),
        "painted": np.stack([op.painted for op in state.ops if op.kind == "edit"] or [np.zeros((0, *shape), bool)]),
    }
    meta = {"format": FORMAT, "auto_version": state.auto_version, "ops": [_op_json(op) for op in state.ops]}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return buf.getvalue()


def decode_slice(data: bytes, slice_shape: tuple[int, int]) -> SliceState:
    with np.load(io.BytesIO(data)) as z:
        meta = json.loads(z["meta"].tobytes())
        auto, history, painted = z["auto"], z["history"], z["painted"].reshape(-1, *slice_shape)
    if meta.get("format") != FORMAT or auto.shape != tuple(slice_shape) or len(history) != len(meta["ops"]):
        raise SaimError(f"draft of format {meta.get('format')} and shape {auto.shape} does not fit {slice_shape}")
    ops, strokes = [], iter(painted)
    for o in meta["ops"]:
        if o["kind"] == "click":
            cls, y, x, positive = o["model_click"]
            ops.append(
                Op("click", o["cls"], o["model_version"], o["positive"], tuple(o["voxel"]), Click(cls, y, x, positive))
            )
        else:
            ops.append(Op("edit", o["cls"], o["model_version"], painted=next(strokes).astype(bool)))
    return SliceState(auto=auto, auto_version=meta["auto_version"], ops=ops, history=list(history))


class DraftStore:
    """Drafts in the bucket, one object per touched slice (a click writes only its slice)."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def save(self, session: AnnotationSession, index: int) -> bool:
        """Write the slice's state now; False (logged) when storage failed: the next operation writes it again."""
        with session.lock:  # ordered with the session's operations: an older state never overwrites a newer one
            data = encode_slice(session.slices[index])
            try:
                self.store.put_bytes(slice_key(session.case, session.annotator, index), data)
                return True
            except SaimError as exc:
                log.warning("draft of %s slice %d not saved (%s)", session.case, index, exc)
                return False

    def load(self, case: str, annotator: str, slice_shape: tuple[int, int]) -> dict[int, SliceState]:
        """The slices of the annotator's draft of `case` that hold clicks or edits (none: an empty dict)."""
        out = {}
        for key in self.store.list(draft_prefix(case, annotator)):
            try:
                index = int(key.rsplit("slice-", 1)[1].removesuffix(".npz"))
                state = decode_slice(self.store.get_bytes(key), slice_shape)
            except (SaimError, ValueError, KeyError, IndexError) as exc:
                log.warning("draft %s ignored (%s)", key, exc)
                continue
            if state.ops:
                out[index] = state
        return out

    def discard(self, case: str, annotator: str) -> None:
        for key in self.store.list(draft_prefix(case, annotator)):
            self.store.delete(key)
