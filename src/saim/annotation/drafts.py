"""Drafts: a person's clicks and edits on a leased case, kept in object storage as they go.

After every click, edit or undo the annotator writes that slice's state — its automatic mask, every operation and
the mask after each one — to `drafts/{case}/{annotator}/slice-{index}.draft` before it answers. A reload of the page,
a lost connection or a killed replica therefore loses nothing the person was shown: OpenSession on the same case by
the same annotator restores the slices exactly (the masks are stored, not recomputed, so a newer model version
does not change what was on the screen; later clicks use the version current then). Submit discards the draft.

Several replicas serve one session (saim.annotation's package notes): each slice's state carries the ETag of the
draft it was read from or written as; an operation first reads the slice again if the stored draft changed, and
writes only if it is still the one it read (a conditional write). Two replicas therefore never keep diverging
copies: the loser of a race reads the winner's state and applies its operation on top. The draft also remembers the
latest request ids applied to the slice, so a retried request is answered instead of applied twice.

The session itself (case, annotator, lease, model version opened) is a small record, `sessions/{id}.json`, written
at OpenSession: a replica that receives a request for a session it does not hold rebuilds it from the record and the
drafts.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator

import numpy as np

from saim.annotation.session import AnnotationSession, Op, SliceState
from saim.data.geometry import ScanGeometry
from saim.errors import Conflict, NotFound, SaimError
from saim.model.clicks import Box, Click
from saim.storage.objects import ObjectStore
from saim.storage.pool import draft_prefix, draft_slice_key, session_key

log = logging.getLogger(__name__)

FORMAT = 5  # 3: request ids, 4: propagations, interpolations, undone operations, 5: boxes, scribbles; 2-4 still read
READABLE = (2, 3, 4, 5)
MAGIC = b"SAIMDRAFT"
ZLIB_LEVEL = 1


def _op_json(op: Op) -> dict:
    out = {"kind": op.kind, "cls": op.cls, "model_version": op.model_version, "positive": op.positive}
    if op.voxel is not None and op.model_click is not None:  # a click
        c = op.model_click
        out.update(voxel=list(op.voxel), model_click=[c.cls, c.y, c.x, c.positive])
    if op.source is not None:  # a propagation: its result is the mask after it
        out.update(source=op.source, classes=list(op.classes))
    if op.between is not None:  # an interpolation: likewise
        out.update(between=list(op.between), classes=list(op.classes))
    if op.path:  # a scribble
        clicks = [[c.cls, c.y, c.x, c.positive] for c in op.model_clicks]
        out.update(path=[list(p) for p in op.path], model_clicks=clicks)
    if op.region is not None and op.model_box is not None:  # a box
        b = op.model_box
        out.update(region=list(op.region), model_box=[b.cls, b.y0, b.x0, b.y1, b.x1])
    return out


def encode_slice(state: SliceState) -> bytes:
    """One slice's state: a JSON header (operations, undone operations, sizes), then zlib (level 1: the fastest, and
    a click's latency includes it) of the automatic mask, the mask after each operation, each undone operation's
    mask, and the strokes of the edits among them."""
    shape = state.mask.shape
    auto = state.auto if state.auto is not None else np.zeros(shape, np.uint8)
    undone_ops = [op for op, _ in state.undone]
    strokes = [op.painted for op in (*state.ops, *undone_ops) if op.kind == "edit"]
    meta = {
        "format": FORMAT,
        "shape": list(shape),
        "auto_version": state.auto_version,
        "ops": [_op_json(op) for op in state.ops],
        "undone": [_op_json(op) for op in undone_ops],
        "request_ids": state.request_ids,
    }
    planes = (auto, *state.history, *(mask for _, mask in state.undone), *strokes)
    raw = b"".join(np.ascontiguousarray(a, np.uint8).tobytes() for a in planes)
    header = json.dumps(meta).encode()
    return MAGIC + len(header).to_bytes(4, "little") + header + zlib.compress(raw, ZLIB_LEVEL)


def decode_slice(data: bytes, slice_shape: tuple[int, int]) -> SliceState:
    if not data.startswith(MAGIC):
        raise SaimError("not a saim draft")
    n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
    start = len(MAGIC) + 4
    meta = json.loads(data[start : start + n])
    if meta.get("format") not in READABLE or tuple(meta["shape"]) != tuple(slice_shape):
        raise SaimError(
            f"draft of format {meta.get('format')} and shape {meta.get('shape')} does not fit {slice_shape}"
        )
    ops_meta, undone_meta = meta["ops"], meta.get("undone", [])
    edits = sum(o["kind"] == "edit" for o in (*ops_meta, *undone_meta))
    pixels = slice_shape[0] * slice_shape[1]
    expected = pixels * (1 + len(ops_meta) + len(undone_meta) + edits)
    try:
        raw = zlib.decompressobj().decompress(data[start + n :], expected + 1)  # bounded
    except zlib.error as exc:
        raise SaimError(f"draft data is not valid zlib ({exc})") from None
    if len(raw) != expected:
        raise SaimError(f"draft holds {len(raw)} bytes where {expected} were expected")
    planes = np.frombuffer(raw, np.uint8).reshape(-1, *slice_shape)
    n_ops, n_undone = len(ops_meta), len(undone_meta)
    auto, history = planes[0], list(planes[1 : 1 + n_ops])
    undone_masks = list(planes[1 + n_ops : 1 + n_ops + n_undone])
    strokes = iter(planes[1 + n_ops + n_undone :])
    ops = [_op_from_json(o, strokes) for o in ops_meta]
    undone = [(_op_from_json(o, strokes), mask.copy()) for o, mask in zip(undone_meta, undone_masks, strict=True)]
    return SliceState(
        auto=auto.copy(),
        auto_version=meta["auto_version"],
        ops=ops,
        history=[h.copy() for h in history],
        undone=undone,
        request_ids=list(meta.get("request_ids", [])),
    )


def _op_from_json(o: dict, strokes: Iterator[np.ndarray]) -> Op:
    """One operation of a draft's header; an edit takes the next stroke plane."""
    if o["kind"] == "click":
        cls, y, x, positive = o["model_click"]
        return Op("click", o["cls"], o["model_version"], o["positive"], tuple(o["voxel"]), Click(cls, y, x, positive))
    if o["kind"] == "propagate":
        return Op("propagate", 0, o["model_version"], source=o["source"], classes=tuple(o["classes"]))
    if o["kind"] == "interpolate":
        low, high = o["between"]
        return Op("interpolate", 0, o["model_version"], classes=tuple(o["classes"]), between=(low, high))
    if o["kind"] == "scribble":
        path = tuple((int(r), int(c)) for r, c in o["path"])
        clicks = tuple(Click(cls, y, x, positive) for cls, y, x, positive in o["model_clicks"])
        return Op("scribble", o["cls"], o["model_version"], o["positive"], path=path, model_clicks=clicks)
    if o["kind"] == "box":
        row0, col0, row1, col1 = o["region"]
        return Op("box", o["cls"], o["model_version"], region=(row0, col0, row1, col1), model_box=Box(*o["model_box"]))
    return Op("edit", o["cls"], o["model_version"], painted=next(strokes).astype(bool))


class DraftStore:
    """Drafts in the bucket, one object per touched slice (a click writes only its slice), and the session records."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def save(self, session: AnnotationSession, index: int) -> bool:
        """Write the slice's state now, if the stored draft is still the one this state was read from or written as.
        False (logged) when storage failed: the next operation writes it again. Conflict when another replica wrote
        the slice meanwhile (the caller reads it again and applies its operation on top)."""
        with session.lock:  # ordered with the session's operations: an older state never overwrites a newer one
            state = session.slices[index]
            data = encode_slice(state)
            try:
                key = draft_slice_key(session.case, session.annotator, index)
                state.etag = self.store.put_if(key, data, state.etag)
                return True
            except Conflict:
                raise
            except SaimError as exc:
                log.warning("draft of %s slice %d not saved (%s)", session.case, index, exc)
                return False

    @staticmethod
    def _index(key: str) -> int | None:
        """The slice index a draft key names (drafts/{case}/{annotator}/slice-NNNNN.draft), or None."""
        try:
            return int(key.rsplit("slice-", 1)[1].removesuffix(".draft"))
        except (IndexError, ValueError):
            return None

    def _read(self, key: str, geometry: ScanGeometry) -> tuple[int, SliceState] | None:
        """The slice's stored state with the ETag it was read at; None (logged) when it does not fit the scan."""
        index = self._index(key)
        try:
            if index is None:
                raise ValueError("not a slice's draft")
            geometry.check_slice(index)
            data, etag = self.store.get_tagged(key)
            state = decode_slice(data, geometry.slice_shape)
        except NotFound:  # discarded meanwhile
            return None
        except (SaimError, ValueError, KeyError, IndexError) as exc:
            log.warning("draft %s ignored (%s)", key, exc)
            return None
        state.etag = etag
        return index, state

    def load(self, case: str, annotator: str, geometry: ScanGeometry) -> dict[int, SliceState]:
        """The slices of the annotator's draft of `case` that hold clicks or edits (none: an empty dict); a slice that
        does not fit the scan's geometry is logged and left out."""
        out = {}
        for key in self.store.list(draft_prefix(case, annotator)):
            if (found := self._read(key, geometry)) is not None and found[1].ops:
                out[found[0]] = found[1]
        return out

    def refresh(self, session: AnnotationSession, index: int) -> bool:
        """Make the slice's state the stored one if another replica changed it since this one read or wrote it.
        True when it was read again."""
        key = draft_slice_key(session.case, session.annotator, index)
        with session.lock:
            known = session.slices[index].etag if index in session.slices else None
        if self.store.etag(key) in (known, None):
            return False
        found = self._read(key, session.geometry)
        if found is None:
            return False
        session.restore({index: found[1]})
        return True

    def refresh_all(self, session: AnnotationSession) -> int:
        """Every slice another replica changed, read again (one listing): before Submit. Returns how many."""
        with session.lock:
            known: dict[int | None, str | None] = {i: s.etag for i, s in session.slices.items()}
        changed = 0
        for key, etag in self.store.etags(draft_prefix(session.case, session.annotator)).items():
            if known.get(self._index(key)) == etag:
                continue
            if (found := self._read(key, session.geometry)) is not None:
                session.restore({found[0]: found[1]})
                changed += 1
        return changed

    def discard(self, case: str, annotator: str) -> None:
        """The annotator's draft of the case, gone with every version (a delete would keep them under a marker)."""
        self.store.purge_prefix(draft_prefix(case, annotator))

    # ---- session records: what a replica needs to rebuild a session it did not open --------------------------------
    def write_record(self, session: AnnotationSession, lease_expires_at: float, new: bool = False) -> None:
        """The session's record; `new`: only if no session has this id (Conflict otherwise), as at OpenSession."""
        record = {
            "session_id": session.session_id,
            "case": session.case,
            "annotator": session.annotator,
            "iteration": session.iteration,
            "lease_id": session.lease_id,
            "model_version_opened": session.opened_version,
            "started_at": session.started_at,
            "lease_expires_at": lease_expires_at,
        }
        key = session_key(session.session_id)
        if new:
            self.store.put_if(key, json.dumps(record).encode(), None, "application/json")
        else:
            self.store.rewrite_json(key, record)

    def read_record(self, session_id: str) -> dict:
        """NotFound: no such session (never opened, submitted, or collected)."""
        try:
            return self.store.get_json(session_key(session_id))
        except NotFound:
            raise NotFound(f"unknown or expired session {session_id!r}") from None

    def forget_record(self, session_id: str) -> None:
        self.store.purge(session_key(session_id))
