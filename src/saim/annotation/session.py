"""Interactive annotation sessions in scan space: per-slice clicks and edits, interaction memory, undo.

A session holds the series twice: the source volume (what the client sees: slices at source resolution) and its
model slices (what the model sees). A click at source voxel (i, j, k) becomes a click on model slice k's grid; the
model's probabilities come back to the source grid (bilinear, then argmax) and the mask is kept there, so a brush
edit at source resolution is exact. Slices are predicted on demand, never all up front. Each answer is produced by
the model version current at that moment; the session records which version produced every mask, and which slices
were accepted as the model predicted them, so the stored annotation carries full provenance.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from saim.data.slices import Series
from saim.errors import InvalidInput, NotFound
from saim.model.clicks import Box, Click, scribble_clicks
from saim.model.compute import Compute, Inline
from saim.registry.live import ServedModel

PREFILL_QUIET_S = 0.5  # the prefill's next slice waits until the replica's clicks have paused this long
OPENING_S = 60.0  # a session not yet on screen this long after it opened no longer holds the replica's prefills
AUTO_BATCH = 4  # untouched slices predicted per forward pass (at submit: a click waits for at most one such pass)

REQUESTS_KEPT = 32  # request ids a slice remembers: a retry arrives within seconds, not 32 operations later

# operations that are the person's own work (the others are derived from it)
PERSONAL = ("click", "edit", "box", "scribble")

MAX_SCRIBBLE_POINTS = 4096

RESAMPLING = "model probabilities resampled bilinearly to the source grid, then argmax"


@dataclass(frozen=True)
class Op:
    """One interaction on a slice: a click (voxel, model-grid click), a brush/eraser edit (painted pixels), a box
    around a structure (`region` in the slice's pixels, `model_box` on the model grid), a propagation (the model's
    answer with a neighbouring slice's mask as its previous mask; `source`) or an interpolation between two annotated
    slices (`between`)."""

    kind: str  # "click" | "edit" | "box" | "scribble" | "propagate" | "interpolate"
    cls: int
    model_version: str
    positive: bool = True
    voxel: tuple[int, int, int] | None = None
    model_click: Click | None = None
    painted: np.ndarray | None = None  # bool (rows, cols), edits only
    source: int | None = None  # the slice whose mask was carried here, propagations only
    classes: tuple[int, ...] = ()  # the classes carried (propagations) or filled (interpolations)
    between: tuple[int, int] | None = None  # the two annotated slices an interpolation filled between
    region: tuple[int, int, int, int] | None = None  # a box: row0, col0, row1, col1 of the slice, inclusive
    model_box: Box | None = None  # the box on the model grid
    path: tuple[tuple[int, int], ...] = ()  # a scribble: its points (row, col) on the slice, in drawing order
    model_clicks: tuple[Click, ...] = ()  # a scribble as the model takes it: clicks along its path

    @property
    def prompt_clicks(self) -> tuple[Click, ...]:
        """The clicks on the model grid this operation adds to its slice's prompts (a click's, a scribble's)."""
        if self.kind == "click" and self.model_click is not None:
            return (self.model_click,)
        return self.model_clicks if self.kind == "scribble" else ()

    def describe(self, index: int) -> dict:
        out = {"slice": index, "class": self.cls, "model_version": self.model_version}
        if self.voxel is not None:  # a click
            out.update(voxel=list(self.voxel), positive=self.positive)
        if self.painted is not None:  # an edit
            out.update(pixels=int(self.painted.sum()))
        if self.region is not None:  # a box
            out.update(box=list(self.region))
        if self.path:  # a scribble
            first, last = list(self.path[0]), list(self.path[-1])
            out.update(points=len(self.path), positive=self.positive, first=first, last=last)
        if self.source is not None:  # a propagation
            del out["class"]
            out.update(source=self.source, classes=list(self.classes))
        if self.between is not None:  # an interpolation
            del out["class"]
            out.update(between=list(self.between), classes=list(self.classes))
        return out


@dataclass
class SliceState:
    auto: np.ndarray | None = None  # the model's automatic prediction at source resolution (computed on demand)
    auto_version: str | None = None
    ops: list[Op] = field(default_factory=list)
    history: list[np.ndarray] = field(default_factory=list)  # the mask after each op (for undo)
    undone: list[tuple[Op, np.ndarray]] = field(default_factory=list)  # undone ops and their masks (for redo)
    # the latest requests applied (a retry: answered)
    request_ids: list[str] = field(default_factory=list)
    etag: str | None = None  # the stored draft this state was read from or written as (saim.annotation.drafts)

    def applied(self, request_id: str) -> bool:
        return bool(request_id) and request_id in self.request_ids

    def record_request(self, request_id: str) -> None:
        if request_id:
            self.request_ids = [*self.request_ids, request_id][-REQUESTS_KEPT:]

    @property
    def mask(self) -> np.ndarray:
        """The mask after the last operation, else the automatic prediction (computed before a slice is shown)."""
        if self.history:
            return self.history[-1]
        if self.auto is None:
            raise RuntimeError("a slice's mask was asked for before its automatic prediction")
        return self.auto

    def count(self, kind: str) -> int:
        return sum(op.kind == kind for op in self.ops)

    def prompts(self, new: Op | None = None) -> tuple[list[Click], list[Box]]:
        """The slice's prompts on the model grid with `new` added: every click (a scribble's along its path
        included, in the order given) and the latest box per class (what every later answer on it keeps)."""
        ops = [*self.ops, *([] if new is None else [new])]
        latest = {op.cls: op.model_box for op in ops if op.kind == "box" and op.model_box is not None}
        return [c for op in ops for c in op.prompt_clicks], [latest[c] for c in sorted(latest)]

    def push(self, op: Op, mask: np.ndarray) -> None:
        """A new operation and the mask after it; what was undone can no longer be redone."""
        self.ops.append(op)
        self.history.append(mask)
        self.undone.clear()


@dataclass
class AnnotationSession:
    session_id: str
    case: str
    annotator: str
    iteration: int
    lease_id: str
    series: Series  # model slices, one per source slice along the acquisition axis
    image: np.ndarray  # the source volume
    affine: np.ndarray
    opened_version: str
    num_classes: int
    slices: dict[int, SliceState] = field(default_factory=dict)
    image_wire_dtype: np.dtype | None = None  # how GetSlice sends the image (set once by the service)
    started_at: float = field(default_factory=time.time)
    opened_at: float = field(default_factory=time.monotonic)  # on this replica
    last_active: float = field(default_factory=time.monotonic)
    versions_used: set[str] = field(default_factory=set)
    lease_renewed: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # set by the first request for a slice's mask or an operation: the person has the case on screen
    on_screen: threading.Event = field(default_factory=threading.Event)
    ops_lock: threading.Lock = field(default_factory=threading.Lock)  # one operation at a time (read, apply, store)
    compute: Compute = field(default_factory=Inline)  # where the tensor work runs (saim.model.compute)

    @classmethod
    def open(
        cls,
        case: str,
        annotator: str,
        iteration: int,
        lease_id: str,
        series: Series,
        image: np.ndarray,
        affine: np.ndarray,
        model: ServedModel,
        compute: Compute | None = None,
    ) -> AnnotationSession:
        if series.num_slices != series.geometry.num_slices:
            raise InvalidInput(
                f"{case}: a session needs every slice, got {series.num_slices} of {series.geometry.num_slices}"
            )
        return cls(
            uuid.uuid4().hex,
            case,
            annotator,
            iteration,
            lease_id,
            series,
            image,
            affine,
            model.version,
            model.predictor.config.num_classes,
            compute=compute or Inline(),
        )

    @property
    def geometry(self):
        return self.series.geometry

    @property
    def size(self) -> int:
        return int(self.series.images.shape[1])

    def restore(self, states: dict[int, SliceState]) -> None:
        """Resume a draft (saim.annotation.drafts, which checked it against this geometry): the slices as the annotator
        last saw them, with their operations."""
        with self.lock:
            for index, state in states.items():
                self.slices[index] = state
                self.versions_used.update(op.model_version for op in state.ops)

    # ---- slices ----------------------------------------------------------------------------------------------
    def _active(self) -> None:
        """A request for a slice's mask or an operation: the session is in use, and its case is on screen."""
        self.last_active = time.monotonic()
        self.on_screen.set()

    def check_classes(self, classes: tuple[int, ...]) -> None:
        """The foreground classes an operation names (propagation, interpolation)."""
        if not classes or not all(1 <= c <= self.num_classes for c in classes):
            raise InvalidInput(f"classes {list(classes)} are not foreground classes 1..{self.num_classes}")

    def _state(self, index: int) -> SliceState:
        self.geometry.check_slice(index)
        return self.slices.setdefault(index, SliceState())

    def _to_source(self, probs) -> np.ndarray:
        return self.geometry.probabilities_to_source(probs, self.size)

    def _predict_auto(self, model: ServedModel, chunk: list[int]) -> np.ndarray:
        return self._to_source(model.predictor.probabilities(self.series.images[chunk]))

    def _ensure_auto(self, model: ServedModel, indices: list[int], background: bool = False) -> None:
        """Predict the automatic masks of the slices that have none yet, in batches."""
        todo = [i for i in indices if self._state(i).auto is None]
        for start in range(0, len(todo), AUTO_BATCH):
            chunk = todo[start : start + AUTO_BATCH]
            labels = self.compute.run(self._predict_auto, model, chunk, background=background)
            for index, mask in zip(chunk, labels, strict=True):
                self.slices[index].auto, self.slices[index].auto_version = mask, model.version
            self.versions_used.add(model.version)

    def prefill(self, model: ServedModel, closed: Callable[[], bool], hold: Callable[[], bool] = lambda: False) -> int:
        """Predict, in the background, the automatic mask of every slice that has none yet, one slice per piece of
        tensor work, while the person works: Submit then has nothing left to predict. It begins once the person has
        the case on screen (`on_screen`): before, it would compete with the opening itself, the scan streamed to the
        page and, where the page runs on the same cores, its load. A piece starts only once the replica's
        interactive work has paused for PREFILL_QUIET_S, so a burst of clicks or a scan being streamed never waits
        for one (a click that comes while a piece runs waits for at most that one slice's forward). The session's
        lock is held only to store each answer. While `hold()` (another person's case opening on the replica) it
        waits too. Stops once `closed()`. Returns how many slices it predicted."""
        predicted = 0
        while not self.on_screen.wait(0.1):
            if closed():
                return predicted
        for index in range(self.geometry.num_slices):
            if closed():
                break
            with self.lock:
                if self._state(index).auto is not None:
                    continue
            self.compute.wait_quiet(PREFILL_QUIET_S, closed)  # in the person's pauses, not under a burst of clicks
            while hold() and not closed():
                time.sleep(0.05)
            (mask,) = self.compute.run(self._predict_auto, model, [index], background=True)
            with self.lock:
                state = self.slices[index]
                if state.auto is None:  # a fetch or a click may have predicted it meanwhile
                    state.auto, state.auto_version = mask, model.version
                    self.versions_used.add(model.version)
                    predicted += 1
        return predicted

    def mask(self, model: ServedModel, index: int) -> tuple[np.ndarray, SliceState]:
        """The slice's current mask (the automatic prediction until it is clicked or edited)."""
        with self.lock:
            self._ensure_auto(model, [index])
            self._active()
            state = self.slices[index]
            return state.mask, state

    def image_slice(self, index: int) -> np.ndarray:
        self.geometry.check_slice(index)
        return self.geometry.slices(self.image)[index]

    def _reapply_edits(self, state: SliceState, mask: np.ndarray) -> np.ndarray:
        """Edits are a person's explicit strokes: they stay on top of every later model answer."""
        for op in state.ops:
            if op.kind == "edit":
                mask[op.painted] = op.cls
        return mask

    # ---- interactions ----------------------------------------------------------------------------------------
    def add_click(
        self, model: ServedModel, voxel: tuple[int, int, int], cls: int, positive: bool
    ) -> tuple[int, np.ndarray, SliceState]:
        """A click at source voxel `voxel`; returns (slice index, the slice's new mask, its state)."""
        index, row, col = self.geometry.split_voxel(voxel)
        y, x = self.geometry.pixel_to_model(row, col, self.size)
        click = Click(cls=int(cls), y=y, x=x, positive=bool(positive))
        model.predictor.validate_click(click)
        voxel_at = (int(voxel[0]), int(voxel[1]), int(voxel[2]))
        mask, state = self._prompt(model, index, Op("click", click.cls, model.version, click.positive, voxel_at, click))
        return index, mask, state

    def add_box(
        self, model: ServedModel, index: int, cls: int, region: tuple[int, int, int, int]
    ) -> tuple[np.ndarray, SliceState]:
        """A box around a structure of class `cls` on slice `index` (row0, col0, row1, col1 of the slice, corners
        inclusive): the model answers with the slice's boxes (this one replacing an earlier box of the class), its
        clicks and its current mask; the person's strokes and clicked voxels stay."""
        self.geometry.check_slice(index)
        row0, col0, row1, col1 = (int(v) for v in region)
        rows, cols = self.geometry.slice_shape
        if not (0 <= row0 <= row1 < rows and 0 <= col0 <= col1 < cols):
            raise InvalidInput(
                f"box rows {row0}-{row1}, columns {col0}-{col1} is not a box within the {rows}x{cols} slice"
            )
        corners = [self.geometry.pixel_to_model(r, c, self.size) for r, c in ((row0, col0), (row1, col1))]
        (y0, y1), (x0, x1) = (sorted(v) for v in zip(*corners, strict=True))
        box = Box(int(cls), y0, x0, y1, x1)
        model.predictor.validate_box(box)
        op = Op("box", box.cls, model.version, region=(row0, col0, row1, col1), model_box=box)
        return self._prompt(model, index, op)

    def add_scribble(
        self, model: ServedModel, index: int, cls: int, positive: bool, path: list[tuple[int, int]]
    ) -> tuple[np.ndarray, SliceState]:
        """A scribble of class `cls` on slice `index` along `path` ((row, col) of the slice, in drawing order): the
        model takes it as clicks of its sign along the path (a click radius apart on the model grid) with the slice's
        other prompts; every voxel on the path keeps the scribble's meaning, as a clicked voxel does."""
        self.geometry.check_slice(index)
        rows, cols = self.geometry.slice_shape
        if not path:
            raise InvalidInput("the scribble has no point")
        if len(path) > MAX_SCRIBBLE_POINTS:
            raise InvalidInput(f"the scribble has {len(path)} points, at most {MAX_SCRIBBLE_POINTS} are taken")
        points = tuple((int(r), int(c)) for r, c in path)
        if not all(0 <= r < rows and 0 <= c < cols for r, c in points):
            raise InvalidInput(f"the scribble leaves the {rows}x{cols} slice")
        on_grid = [self.geometry.pixel_to_model(r, c, self.size) for r, c in points]
        clicks = tuple(scribble_clicks(on_grid, int(cls), bool(positive), model.predictor.config.radius))
        for click in clicks:
            model.predictor.validate_click(click)
        op = Op("scribble", int(cls), model.version, bool(positive), path=points, model_clicks=clicks)
        return self._prompt(model, index, op)

    def _prompt(self, model: ServedModel, index: int, op: Op) -> tuple[np.ndarray, SliceState]:
        """A click, box or scribble on slice `index`: the model answers with the slice's prompts and `op`'s and its
        current mask; the voxels the person clicked or scribbled keep their meaning and the strokes stay on top."""
        with self.lock:
            self._ensure_auto(model, [index])
            state = self.slices[index]
            clicks, boxes = state.prompts(op)
            answer = self.compute.run(self._answer_click, model, index, clicks, state.mask, boxes)
            placed = [spot for done in (*state.ops, op) for spot in self._placed_on(done)]
            mask = self._reapply_edits(state, self._honour(answer, placed))
            state.push(op, mask)
            self.versions_used.add(model.version)
            self._active()
            return mask, state

    def touched_by_person(self, index: int) -> bool:
        """Whether the slice has the person's own clicks or edits (a propagation never overwrites them)."""
        with self.lock:
            state = self.slices.get(index)
            return state is not None and any(op.kind in PERSONAL for op in state.ops)

    def annotated(self) -> list[int]:
        """The slices with the person's own clicks or edits, in order."""
        with self.lock:
            return self._annotated()

    def _annotated(self) -> list[int]:
        return sorted(i for i, s in self.slices.items() if any(op.kind in PERSONAL for op in s.ops))

    def interpolate(
        self, model: ServedModel, index: int, between: tuple[int, int], regions: dict[int, np.ndarray]
    ) -> tuple[np.ndarray, SliceState]:
        """Slice `index` between two annotated slices takes the interpolated `regions` ({class: bool (rows, cols)}):
        those classes as interpolated, its other classes as they were, the person's strokes on top."""
        with self.lock:
            self._ensure_auto(model, [index])
            state = self.slices[index]
            mask = state.mask.copy()
            classes = tuple(sorted(regions))
            mask[np.isin(mask, classes)] = 0
            for cls in classes:
                mask[regions[cls]] = cls
            mask = self._reapply_edits(state, mask)
            state.push(Op("interpolate", 0, model.version, classes=classes, between=between), mask)
            self._active()
            return mask, state

    def propagate(
        self, model: ServedModel, source: int, index: int, classes: tuple[int, ...]
    ) -> tuple[np.ndarray, SliceState, bool]:
        """Slice `index` predicted with slice `source`'s mask of `classes` as the model's previous mask, no clicks:
        where the answer has those classes they replace the slice's pixels of them; its other classes stay. Returns
        (mask, state, whether any carried class is on it); nothing is applied when none is (the structure ended)."""
        self.check_classes(classes)
        with self.lock:
            self._ensure_auto(model, [source, index])
            carried = self.slices[source].mask
            previous = np.where(np.isin(carried, classes), carried, 0).astype(np.uint8)
            state = self.slices[index]
            answer = self.compute.run(self._answer_click, model, index, [], previous)
            found = np.isin(answer, classes)
            if not found.any():
                return state.mask, state, False
            mask = state.mask.copy()
            mask[np.isin(mask, classes)] = 0
            mask[found] = answer[found]
            mask = self._reapply_edits(state, mask)
            state.push(Op("propagate", 0, model.version, source=int(source), classes=tuple(classes)), mask)
            self.versions_used.add(model.version)
            self._active()
            return mask, state, True

    def _answer_click(
        self,
        model: ServedModel,
        index: int,
        clicks: list[Click],
        previous: np.ndarray,
        boxes: list[Box] | tuple[Box, ...] = (),
    ) -> np.ndarray:
        """The model's answer on slice `index` at source resolution, from its clicks, its previous mask and (a model
        with box prompts) its boxes."""
        prev = self.geometry.to_model(previous[None], self.size, nearest=True)
        given = [list(boxes)] if boxes and model.predictor.config.box_prompts else None
        probs = model.predictor.probabilities(self.series.images[index : index + 1], [clicks], prev, boxes=given)
        return self._to_source(probs)[0]

    def _placed_on(self, op: Op) -> list[tuple[int, int, Click]]:
        """Where the person put a click or a scribble: (row, col) of the slice and its meaning."""
        if op.kind == "click" and op.voxel is not None and op.model_click is not None:
            row, col = self.geometry.split_voxel(op.voxel)[1:]
            return [(row, col, op.model_click)]
        if op.kind == "scribble":
            meaning = Click(op.cls, 0, 0, op.positive)
            return [(row, col, meaning) for row, col in op.path]
        return []

    @staticmethod
    def _honour(mask: np.ndarray, clicks: list[tuple[int, int, Click]]) -> np.ndarray:
        """A click is never ignored, at source resolution too: each clicked (or scribbled) voxel has the class of
        the slice's latest positive prompt there, and not the class of a negative one (background instead). The
        model grid already honours them (saim.model.predictor.honour_clicks); resampling back could move a voxel next
        to the class boundary across it."""
        for row, col, click in clicks:
            if click.positive:
                mask[row, col] = click.cls
            elif mask[row, col] == click.cls:
                mask[row, col] = 0
        return mask

    def edit(self, model: ServedModel, index: int, cls: int, painted: np.ndarray) -> tuple[np.ndarray, SliceState]:
        """A brush (cls 1..K) or eraser (cls 0) stroke: the painted pixels (bool, the slice's shape) take `cls`."""
        if not 0 <= cls <= self.num_classes:
            raise InvalidInput(f"edit class {cls} is not 0 (eraser) or a foreground class (1..{self.num_classes})")
        painted = np.asarray(painted) != 0
        if painted.shape != self.geometry.slice_shape:
            raise InvalidInput(f"edit of shape {painted.shape}, the slice has {self.geometry.slice_shape}")
        if not painted.any():
            raise InvalidInput("the edit paints no pixel")
        with self.lock:
            self._ensure_auto(model, [index])
            state = self.slices[index]
            mask = state.mask.copy()
            mask[painted] = cls
            state.push(Op("edit", int(cls), model.version, painted=painted), mask)
            self._active()
            return mask, state

    def undo(self, model: ServedModel, index: int) -> tuple[np.ndarray, SliceState]:
        """Drop the last click or edit of the slice and return the mask as it was before it."""
        with self.lock:
            self.geometry.check_slice(index)
            state = self.slices.get(index)
            if state is None or not state.ops:
                raise InvalidInput(f"slice {index} has no click or edit to undo")
            state.undone.append((state.ops.pop(), state.history.pop()))
            self._active()
            return state.mask, state

    def redo(self, model: ServedModel, index: int) -> tuple[np.ndarray, SliceState]:
        """Apply again the operation the last undo on the slice took back (its mask as it was), unless a new
        operation came since."""
        with self.lock:
            self.geometry.check_slice(index)
            state = self.slices.get(index)
            if state is None or not state.undone:
                raise InvalidInput(f"slice {index} has nothing undone to redo")
            op, mask = state.undone.pop()
            state.ops.append(op)
            state.history.append(mask)
            self._active()
            return state.mask, state

    # ---- submission ------------------------------------------------------------------------------------------
    def labels(self, model: ServedModel) -> np.ndarray:
        """The label volume in source space (0..K): every touched slice's mask, the automatic prediction elsewhere
        (predicted now, by `model`, for slices never fetched)."""
        self._ensure_auto(model, list(range(self.geometry.num_slices)), background=True)
        rows, cols = self.geometry.slice_shape
        out = np.zeros((self.geometry.num_slices, rows, cols), np.uint8)
        for index, state in self.slices.items():
            out[index] = state.mask
        return self.geometry.volume(out)

    def provenance(self, seconds_client: float | None) -> dict:
        """What the annotation's provenance JSON says of the session; called with the session's lock held."""
        edited = self._annotated()  # the caller holds the lock (Submit)

        def derived(kind: str) -> list[int]:  # not the person's own: what the last operation on the slice made it
            return sorted(i for i, s in self.slices.items() if i not in edited and s.ops and s.ops[-1].kind == kind)

        propagated, interpolated = derived("propagate"), derived("interpolate")
        ops = [(i, op) for i in sorted(self.slices) for op in self.slices[i].ops]
        auto_versions = sorted({s.auto_version for i, s in self.slices.items() if not s.ops and s.auto_version})
        return {
            "case": self.case,
            "annotator": self.annotator,
            "iteration": self.iteration,
            "lease_id": self.lease_id,
            "session_id": self.session_id,
            "model_version_opened": self.opened_version,
            "model_versions_used": sorted(self.versions_used),
            "geometry": self.geometry.to_json(),
            "clicks": [op.describe(i) for i, op in ops if op.kind == "click"],
            "edits": [op.describe(i) for i, op in ops if op.kind == "edit"],
            "num_clicks": sum(op.kind == "click" for _, op in ops),
            "num_edits": sum(op.kind == "edit" for _, op in ops),
            "boxes": [op.describe(i) for i, op in ops if op.kind == "box"],
            "num_boxes": sum(op.kind == "box" for _, op in ops),
            "scribbles": [op.describe(i) for i, op in ops if op.kind == "scribble"],
            "num_scribbles": sum(op.kind == "scribble" for _, op in ops),
            "propagations": [op.describe(i) for i, op in ops if op.kind == "propagate"],
            "num_propagated": sum(op.kind == "propagate" for _, op in ops),
            "interpolations": [op.describe(i) for i, op in ops if op.kind == "interpolate"],
            "num_interpolated": sum(op.kind == "interpolate" for _, op in ops),
            "slices_edited": edited,
            "slices_propagated": propagated,  # the model's answers carried from a neighbour, not edited after
            "slices_interpolated": interpolated,  # filled between annotated slices, not edited after
            "slices_accepted_unedited": sorted(
                set(range(self.geometry.num_slices)) - set(edited) - set(propagated) - set(interpolated)
            ),
            "accepted_unedited_model_versions": auto_versions,
            "resampling": RESAMPLING,
            "seconds_spent_server": round(time.time() - self.started_at, 3),
            "seconds_spent_client": seconds_client,
            "submitted_at": time.time(),
        }


class SessionStore:
    """Open sessions by id; idle ones expire."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._sessions: dict[str, AnnotationSession] = {}
        self._lock = threading.Lock()

    def add(self, session: AnnotationSession) -> None:
        with self._lock:
            self._expire()
            self._sessions[session.session_id] = session

    def get(self, session_id: str) -> AnnotationSession:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"unknown or expired session {session_id!r}")
        return session

    def open(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def opening(self) -> bool:
        """Whether a session is opening: opened (or rebuilt) less than OPENING_S ago and not yet on screen."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
        return any(not s.on_screen.is_set() and now - s.opened_at < OPENING_S for s in sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, sess in self._sessions.items() if now - sess.last_active > self.ttl_s]:
            del self._sessions[sid]
