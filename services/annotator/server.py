"""Annotator service: interactive inference. Every reply names the model version that produced it."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict, ParseDict

from saim.annotation import AnnotationSession, DraftStore, LeaseKeeper, SessionStore, SliceState, interpolate_masks
from saim.errors import Conflict, InvalidInput, NotFound, SaimError, Unavailable
from saim.events import (
    ANNOTATION_SUBMITTED,
    MODEL_PUBLISHED,
    EventPublisher,
    TopicSpec,
    new_meta,
)
from saim.model.compute import Compute, Inline
from saim.model.config import ServingConfig
from saim.registry import LiveModel, ServedModel, version_number
from saim.rpc import telemetry as m
from saim.rpc.auth import require_actor
from saim.rpc.peers import LeaseChecker
from saim.rpc.server import Health
from saim.rpc.service import ServiceApp
from saim.rpc.wire import decode_mask, encode_image, encode_mask, image_dtype
from saim.settings import ServiceSettings
from saim.storage.pool import PoolStore, check_request_id, check_session_id, submission_key
from saim.v1 import annotator_pb2, annotator_pb2_grpc, events_pb2

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 3  # an operation that lost a draft write to another replica is applied again on its state
CLAIM_STALE_S = 30.0  # a submission claimed this long ago and never finished: its replica died, take it over
VOLUME_CHUNK_BYTES = 2 << 20  # GetVolume: at most this much raw image per message (under gRPC's 4 MiB default)


def geometry_message(session: AnnotationSession) -> annotator_pb2.Geometry:
    g = session.geometry
    rows, cols = g.slice_shape
    return annotator_pb2.Geometry(
        shape=list(g.shape),
        spacing=list(g.spacing),
        affine=[float(v) for v in np.asarray(session.affine).ravel()],
        orientation=g.orientation,
        slice_axis=g.slice_axis,
        num_slices=g.num_slices,
        rows=rows,
        cols=cols,
    )


@dataclass
class AnnotatorDeps:
    pool: PoolStore
    model: LiveModel
    sessions: SessionStore
    publisher: EventPublisher
    leases: LeaseChecker
    compute: Compute = field(default_factory=Inline)  # the process's tensor thread (saim.model.compute)
    renew_every_s: float = 30.0  # activity renews the lease at most this often (a third of the lease TTL)
    submit_wait_s: float = 20.0  # Submit waits this long for an unreachable selector's answer on the lease
    prefill: bool = True  # predict untouched slices in the background while the person works (Submit is quick)
    overlap: int = 1  # annotators per case: > 1 keeps every rater's copy under raters/{case}/
    drafts: DraftStore | None = None  # every operation's slice saved before the answer (saim.annotation.drafts)
    # a propagation's walk per direction unless the request says
    propagate_max_slices: int = ServingConfig().propagate_max_slices


class _WalkEnds(Exception):
    """A propagation's next slice is not written: none of the carried classes is on it ("vanished"), or the person
    clicked or edited it, here or on another replica ("edited")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AnnotatorServicer(annotator_pb2_grpc.AnnotatorServiceServicer):
    def __init__(self, deps: AnnotatorDeps):
        self.d = deps
        self.leases = LeaseKeeper(  # clicks never wait for the selector
            deps.leases, deps.renew_every_s, deps.submit_wait_s, on_renewed=self._renewed
        )
        self._rebuilding = threading.Lock()  # one rebuild at a time: a second request for the session finds it built

    def _renewed(self, session: AnnotationSession, expires_at: float) -> None:
        if self.d.drafts is not None:
            self.d.drafts.write_record(session, expires_at)

    def OpenSession(
        self, request: annotator_pb2.OpenSessionRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.OpenSessionResponse:
        started = time.perf_counter()
        case, annotator, lease = request.case_id, request.annotator_id, request.lease_id
        if not case or not annotator:
            raise InvalidInput("case_id and annotator_id are required")
        require_actor(annotator)
        lease_info = self.d.leases.check(case, lease, annotator)
        if request.session_id:  # the gateway's: its later calls come to this replica
            check_session_id(request.session_id)
        session, model = self._load(case, annotator, lease_info.iteration, lease, lease_info.model_version)
        session.session_id = request.session_id or session.session_id
        draft = {i: s for i, s in session.slices.items() if s.ops}
        if self.d.drafts is not None:  # before the answer: any replica can rebuild the session from here on
            self.d.drafts.write_record(session, lease_info.expires_at, new=True)
        self.leases.opened(session, lease_info.expires_at)
        self._start(session, model)
        m.OPEN_LATENCY.observe(time.perf_counter() - started)
        reply = self._describe(session)
        reply.draft_slices.extend(sorted(draft))
        reply.draft_clicks = sum(state.count("click") for state in draft.values())
        reply.draft_edits = sum(state.count("edit") for state in draft.values())
        reply.lease_expires_at = lease_info.expires_at
        return reply

    def _load(
        self, case: str, annotator: str, iteration: int, lease: str, at_least: str
    ) -> tuple[AnnotationSession, ServedModel]:
        """A session on the case, its scan loaded and the annotator's draft restored; not yet served."""
        image, affine = self.d.pool.load_volume(case)
        series = self.d.compute.run(self.d.pool.load_series, case, False, (image, affine), background=True)
        served = self.d.model.version()
        if served is None or version_number(served) < version_number(at_least):
            # just started (it serves before its start-up load is done) or the model event has not reached it yet:
            # catch up now (a load under way is waited for, not repeated)
            self.d.model.load_current()
        model, compute = self.d.model.current, self.d.compute
        session = AnnotationSession.open(case, annotator, iteration, lease, series, image, affine, model, compute)
        if self.d.drafts is not None:
            session.restore(self.d.drafts.load(case, annotator, session.geometry))
        return session, model

    def _start(self, session: AnnotationSession, model: ServedModel) -> None:
        self.d.sessions.add(session)
        if self.d.prefill:  # a daemon thread: a prefill never holds up the process's exit
            threading.Thread(target=self._prefill, args=(session, model), name="prefill", daemon=True).start()

    def _rebuild(self, session_id: str) -> AnnotationSession:
        """A session another replica opened (or this one, before a restart or its idle expiry), rebuilt from its
        record and the drafts: the scan, every slice's operations and masks, the lease as last renewed."""
        with self._rebuilding:
            if self.d.sessions.open(session_id):
                return self.d.sessions.get(session_id)
            assert self.d.drafts is not None
            record = self.d.drafts.read_record(session_id)
            require_actor(record["annotator"])  # before anything is loaded for the caller
            session, model = self._load(
                record["case"], record["annotator"], record["iteration"], record["lease_id"], ""
            )
            session.session_id, session.started_at = session_id, float(record["started_at"])
            session.opened_version = record["model_version_opened"]
            self.leases.adopted(session, float(record["lease_expires_at"]))
            self._start(session, model)
        m.SESSIONS_REBUILT.inc()
        log.info("session %s on %s rebuilt from storage", session_id, session.case)
        return session

    def _prefill(self, session: AnnotationSession, model: ServedModel) -> None:
        try:
            session.prefill(model, lambda: not self.d.sessions.open(session.session_id), self.d.sessions.opening)
        except Exception:  # background work: Submit predicts whatever is left
            log.exception("prefill of %s stopped", session.case)

    def _describe(self, session: AnnotationSession) -> annotator_pb2.OpenSessionResponse:
        return annotator_pb2.OpenSessionResponse(
            session_id=session.session_id,
            case_id=session.case,
            classes=list(self.d.pool.classes),
            model_version=session.opened_version,
            iteration=session.iteration,
            geometry=geometry_message(session),
        )

    def GetSession(
        self, request: annotator_pb2.GetSessionRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.OpenSessionResponse:
        return self._describe(self._session(request.session_id))

    @staticmethod
    def _mask_reply(
        index: int, mask: np.ndarray, state: SliceState, started: float, replayed: bool = False
    ) -> annotator_pb2.MaskResponse:
        elapsed = time.perf_counter() - started
        if not replayed:
            m.CLICK_LATENCY.observe(elapsed)
        return annotator_pb2.MaskResponse(
            mask=encode_mask(index, mask),
            model_version=state.ops[-1].model_version if state.ops else (state.auto_version or ""),
            clicks_on_slice=state.count("click"),
            edits_on_slice=state.count("edit"),
            inference_ms=elapsed * 1000,
            replayed=replayed,
        )

    def _operate(
        self,
        session: AnnotationSession,
        index: int,
        request_id: str,
        apply: Callable[[ServedModel], tuple[np.ndarray, SliceState]],
    ) -> annotator_pb2.MaskResponse:
        """A click, an edit or an undo on one slice, as every replica sees it: the slice is read again if another
        replica changed it, a retried request is answered rather than applied again, and the new state is stored
        before the answer only if nobody wrote the slice meanwhile (else it is read again and applied on top)."""
        started = time.perf_counter()
        check_request_id(request_id)
        self._renew(session)
        with session.ops_lock:
            for _ in range(CONFLICT_RETRIES):
                if self.d.drafts is not None:
                    self.d.drafts.refresh(session, index)
                with session.lock:
                    known = session.slices.get(index)
                    if known is not None and known.applied(request_id):
                        return self._mask_reply(index, known.mask, known, started, replayed=True)
                mask, state = apply(self.d.model.current)
                with session.lock:
                    state.record_request(request_id)
                try:
                    self._save(session, index)
                except Conflict:
                    m.DRAFT_CONFLICTS.inc()
                    self._still_open(session)  # a draft that vanished: the session may be submitted elsewhere
                    continue
                return self._mask_reply(index, mask, state, started)
        raise Conflict(f"slice {index} of {session.case} keeps changing on other replicas; try again")

    def _still_open(self, session: AnnotationSession) -> None:
        """NotFound (and the copy dropped) if another replica submitted the session: its record is gone."""
        if self.d.drafts is None:
            return
        try:
            self.d.drafts.read_record(session.session_id)
        except NotFound:
            self.d.sessions.remove(session.session_id)
            self.leases.closed(session)
            raise NotFound(f"session {session.session_id} was submitted") from None

    def _save(self, session: AnnotationSession, index: int) -> None:
        if self.d.drafts is None:
            return
        saving = time.perf_counter()
        if not self.d.drafts.save(session, index):
            m.DRAFT_FAILURES.inc()
        m.DRAFT_SAVE.observe(time.perf_counter() - saving)

    def _renew(self, session: AnnotationSession) -> None:
        """Activity on the case: refused if its lease is lost or expired, renewed in the background when due."""
        self.leases.activity(session)

    def _session(self, session_id: str) -> AnnotationSession:
        """The caller's own session: an annotator cannot click on or submit another annotator's case. A session
        this replica does not hold is rebuilt from storage."""
        try:
            session = self.d.sessions.get(session_id)
        except NotFound:
            if self.d.drafts is None:
                raise
            session = self._rebuild(session_id)
        require_actor(session.annotator)
        return session

    def GetSlice(
        self, request: annotator_pb2.GetSliceRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.SliceResponse:
        session = self._session(request.session_id)
        self._renew(session)
        index = int(request.slice)
        if request.image_only:
            reply = annotator_pb2.SliceResponse()
            self._add_image(session, index, reply)
            return reply
        session.geometry.check_slice(index)
        with session.ops_lock:  # as stored: another replica may have changed the slice
            if self.d.drafts is not None:
                self.d.drafts.refresh(session, index)
            mask, state = session.mask(self.d.model.current, index)
        reply = annotator_pb2.SliceResponse(
            mask=encode_mask(index, mask),
            model_version=state.auto_version if not state.ops else state.ops[-1].model_version,
            clicks_on_slice=state.count("click"),
            edits_on_slice=state.count("edit"),
        )
        if request.include_image:
            self._add_image(session, index, reply)
        return reply

    def GetVolume(
        self, request: annotator_pb2.GetVolumeRequest, context: grpc.ServicerContext
    ) -> Iterator[annotator_pb2.VolumeChunk]:
        session = self._session(request.session_id)
        self._renew(session)
        if session.image_wire_dtype is None:
            session.image_wire_dtype = image_dtype(session.image)
        rows, cols = session.geometry.slice_shape
        per_slice = rows * cols * session.image_wire_dtype.itemsize
        step = int(request.slices_per_chunk) or max(1, VOLUME_CHUNK_BYTES // per_slice)
        slices = session.geometry.slices(session.image)
        with self.d.compute.interactive():  # the replica's background work waits while a page opens its case
            for first in range(0, session.geometry.num_slices, step):
                chunk = slices[first : first + step]
                data, dtype = encode_image(chunk, session.image_wire_dtype)
                yield annotator_pb2.VolumeChunk(
                    first_slice=first,
                    num_slices=len(chunk),
                    image_dtype=dtype,
                    encoding=annotator_pb2.ENCODING_ZLIB,
                    data=data,
                )

    @staticmethod
    def _add_image(session: AnnotationSession, index: int, reply: annotator_pb2.SliceResponse) -> None:
        if session.image_wire_dtype is None:  # a pass over the whole volume: once per session
            session.image_wire_dtype = image_dtype(session.image)
        reply.image, reply.image_dtype = encode_image(session.image_slice(index), session.image_wire_dtype)
        reply.image_encoding = annotator_pb2.ENCODING_ZLIB

    def AddClick(
        self, request: annotator_pb2.AddClickRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.MaskResponse:
        session = self._session(request.session_id)
        if not request.HasField("voxel"):
            raise InvalidInput("a click needs its voxel (i, j, k) in the scan's grid")
        voxel = (request.voxel.i, request.voxel.j, request.voxel.k)
        index = session.geometry.split_voxel(voxel)[0]

        def click(model: ServedModel) -> tuple[np.ndarray, SliceState]:
            _, mask, state = session.add_click(model, voxel, request.class_index, request.positive)
            return mask, state

        return self._operate(session, index, request.request_id, click)

    def EditSlice(
        self, request: annotator_pb2.EditSliceRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.MaskResponse:
        session = self._session(request.session_id)
        if not request.HasField("painted"):
            raise InvalidInput("an edit needs its painted pixels")
        painted = decode_mask(request.painted, session.geometry.slice_shape)
        index = int(request.slice)
        session.geometry.check_slice(index)
        return self._operate(
            session,
            index,
            request.request_id,
            lambda model: session.edit(model, index, int(request.class_index), painted),
        )

    def AddBox(self, request: annotator_pb2.AddBoxRequest, context: grpc.ServicerContext) -> annotator_pb2.MaskResponse:
        session = self._session(request.session_id)
        index = int(request.slice)
        session.geometry.check_slice(index)
        region = (request.row0, request.col0, request.row1, request.col1)
        return self._operate(
            session, index, request.request_id, lambda model: session.add_box(model, index, request.class_index, region)
        )

    def AddScribble(
        self, request: annotator_pb2.AddScribbleRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.MaskResponse:
        session = self._session(request.session_id)
        index = int(request.slice)
        session.geometry.check_slice(index)
        if len(request.rows) != len(request.cols):
            raise InvalidInput(f"the scribble has {len(request.rows)} rows and {len(request.cols)} columns")
        path = list(zip(request.rows, request.cols, strict=True))
        return self._operate(
            session,
            index,
            request.request_id,
            lambda model: session.add_scribble(model, index, request.class_index, request.positive, path),
        )

    def Undo(self, request: annotator_pb2.UndoRequest, context: grpc.ServicerContext) -> annotator_pb2.MaskResponse:
        session = self._session(request.session_id)
        index = int(request.slice)
        session.geometry.check_slice(index)
        return self._operate(session, index, request.request_id, lambda model: session.undo(model, index))

    def Redo(self, request: annotator_pb2.UndoRequest, context: grpc.ServicerContext) -> annotator_pb2.MaskResponse:
        session = self._session(request.session_id)
        index = int(request.slice)
        session.geometry.check_slice(index)
        return self._operate(session, index, request.request_id, lambda model: session.redo(model, index))

    def _across_slices(
        self, request: annotator_pb2.PropagateRequest | annotator_pb2.InterpolateRequest
    ) -> tuple[AnnotationSession, int]:
        """The session and slice of an operation that writes other slices (each through `_operate`), checked."""
        session = self._session(request.session_id)
        index = int(request.slice)
        session.geometry.check_slice(index)
        check_request_id(request.request_id)
        self._renew(session)
        return session, index

    def Propagate(
        self, request: annotator_pb2.PropagateRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.PropagateResponse:
        if request.direction not in (-1, 0, 1):
            raise InvalidInput(f"direction {request.direction}: +1, -1 or 0 (both)")
        session, start = self._across_slices(request)
        limit = int(request.max_slices) or self.d.propagate_max_slices
        if self.d.drafts is not None:
            self.d.drafts.refresh(session, start)
        classes = tuple(sorted(set(request.class_indices)))
        if not classes:
            source, _ = session.mask(self.d.model.current, start)
            classes = tuple(int(c) for c in np.unique(source) if c)
            if not classes:
                raise InvalidInput(f"slice {start} shows no structure to propagate")
        reply = annotator_pb2.PropagateResponse()
        for step, name in ((1, "up"), (-1, "down")):
            if request.direction not in (0, step):
                continue
            reply.stopped[name] = self._walk(session, start, step, limit, classes, request.request_id, reply)
        m.PROPAGATED_SLICES.inc(len(reply.masks))
        return reply

    def _walk(
        self,
        session: AnnotationSession,
        start: int,
        step: int,
        limit: int,
        classes: tuple[int, ...],
        request_id: str,
        reply: annotator_pb2.PropagateResponse,
    ) -> str:
        """Propagate from `start` in one direction; each slice is an operation of its own (stored, retry-safe)."""
        source = start
        for index in range(start + step, start + step * (limit + 1), step):
            if not 0 <= index < session.geometry.num_slices:
                return "edge"

            def carry(model: ServedModel, source: int = source, index: int = index) -> tuple[np.ndarray, SliceState]:
                if session.touched_by_person(index):  # as the draft is now: _operate has read it again
                    raise _WalkEnds("edited")
                mask, state, present = session.propagate(model, source, index, classes)
                if not present:  # nothing applied, nothing stored: a retry asks the model again
                    raise _WalkEnds("vanished")
                return mask, state

            try:
                answer = self._operate(session, index, f"{request_id[:120]}-{index}" if request_id else "", carry)
            except _WalkEnds as end:
                return end.reason
            reply.masks.append(answer)
            source = index
        return "limit"

    def Interpolate(
        self, request: annotator_pb2.InterpolateRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.InterpolateResponse:
        session, index = self._across_slices(request)
        classes = tuple(sorted(set(request.class_indices))) or tuple(range(1, session.num_classes + 1))
        session.check_classes(classes)
        if self.d.drafts is not None:
            self.d.drafts.refresh_all(session)  # what the person annotated, as every replica saw it
        annotated = session.annotated()
        below, above = [i for i in annotated if i < index], [i for i in annotated if i > index]
        if index in annotated:
            gaps = [(below[-1], index)] if below else []
            gaps += [(index, above[0])] if above else []
        else:
            gaps = [(below[-1], above[0])] if below and above else []
        gaps = [(low, high) for low, high in gaps if high - low > 1]
        if not gaps:
            raise InvalidInput(
                f"nothing to fill at slice {index}: interpolation needs a slice you clicked or edited on each side "
                "of the gap (this slice may be one of them)"
            )
        p, q = session.geometry.inplane_axes
        spacing = (session.geometry.spacing[p], session.geometry.spacing[q])
        reply = annotator_pb2.InterpolateResponse()
        model = self.d.model.current
        for low, high in gaps:
            bounds = [session.mask(model, i)[0] for i in (low, high)]
            regions = interpolate_masks(bounds[0], bounds[1], high - low - 1, classes, spacing)
            for index_between, found in zip(range(low + 1, high), regions, strict=True):
                if not found:
                    continue

                def fill(
                    model: ServedModel, at: int = index_between, found: dict = found, gap: tuple = (low, high)
                ) -> tuple[np.ndarray, SliceState]:
                    return session.interpolate(model, at, gap, found)

                rid = f"{request.request_id[:120]}-{index_between}" if request.request_id else ""
                reply.masks.append(self._operate(session, index_between, rid, fill))
            reply.gaps.append(annotator_pb2.Gap(low=low, high=high))
        m.INTERPOLATED_SLICES.inc(len(reply.masks))
        return reply

    def Submit(
        self, request: annotator_pb2.SubmitRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.SubmitResponse:
        # a retry of a submission, here or on another replica, is answered with the first one's result; without an
        # id the session is the submission (it can be submitted once)
        key = submission_key(request.submission_id or f"session-{request.session_id}")
        if (first := self._first_answer(key)) is not None:
            return first
        session = self._session(request.session_id)
        self.leases.confirm(session)  # still ours (waits out a restarting selector): store it
        first, took_over = self._claim(key, session)
        if first is not None:  # another replica stored it meanwhile
            return first
        try:
            self._still_open(session)  # not submitted by another replica under another id
            reply, event = self._store(session, request.seconds_spent or None, took_over)
            self.d.pool.store.put_json(key, {"state": "done", "annotator": session.annotator, **MessageToDict(reply)})
        except BaseException:
            self._release(key)
            raise
        try:
            self.d.publisher.publish(ANNOTATION_SUBMITTED, event, key=session.case)
        except Exception as exc:  # stored first: the selector reconciles it from the bucket (at-least-once)
            log.warning("AnnotationSubmitted for %s not sent (%s); the selector finds it in storage", session.case, exc)
        self.d.sessions.remove(session.session_id)
        self.leases.closed(session)
        if self.d.drafts is not None:
            try:
                self.d.drafts.discard(session.case, session.annotator)
                self.d.drafts.forget_record(session.session_id)
            except SaimError as exc:  # stored and announced: a stale draft is only resumed if the case comes back
                log.warning("draft of %s by %s not discarded (%s)", session.case, session.annotator, exc)
        m.ANNOTATOR_DONE.labels(session.annotator).inc()
        return reply

    def _store(
        self, session: AnnotationSession, seconds_client: float | None, took_over: bool
    ) -> tuple[annotator_pb2.SubmitResponse, events_pb2.AnnotationSubmitted]:
        """The annotation as every replica's drafts have it, stored (unless the claim was taken over from a replica
        that died after it had stored the annotation: then that one is answered)."""
        with session.ops_lock:
            if self.d.drafts is not None:
                self.d.drafts.refresh_all(session)
            with session.lock:
                stored = None
                if took_over:
                    stored = self.d.pool.stored_by_session(session.case, session.annotator, session.session_id)
                if stored is None:
                    labels = session.labels(self.d.model.current)
                    provenance = session.provenance(seconds_client)
                    stored = self.d.pool.store_submission(
                        session.case, session.annotator, labels, session.affine, provenance, self.d.overlap
                    )
        event = events_pb2.AnnotationSubmitted(
            meta=new_meta("annotator"),
            case_id=session.case,
            iteration=session.iteration,
            annotation_key=stored[0],
            provenance_key=stored[1],
            annotator_id=session.annotator,
            model_version=session.opened_version,
        )
        reply = annotator_pb2.SubmitResponse(
            annotation_key=stored[0],
            provenance_key=stored[1],
            model_version=session.opened_version,
            event_id=event.meta.event_id,
        )
        return reply, event

    def _claim(self, key: str, session: AnnotationSession) -> tuple[annotator_pb2.SubmitResponse | None, bool]:
        """Claim the submission (a conditional write of a pending record), so that of two replicas that receive it
        at once only one stores it: (None, whether the claim was taken over) when it is ours to store, else (the
        first one's answer, waited for up to submit_wait_s, False). A claim left pending by a replica that died is
        taken over after CLAIM_STALE_S."""
        store = self.d.pool.store
        pending = json.dumps(
            {"state": "pending", "annotator": session.annotator, "session_id": session.session_id, "at": time.time()}
        ).encode()
        deadline = time.monotonic() + self.d.submit_wait_s
        while True:
            try:
                store.put_if(key, pending, None, "application/json")
                return None, False
            except Conflict:
                pass
            try:
                data, etag = store.get_tagged(key)
            except NotFound:  # released meanwhile: claim it again
                continue
            record = json.loads(data)
            if record.get("state", "done") == "done":
                return self._answer(record), False
            if time.time() - float(record.get("at", 0)) > CLAIM_STALE_S:
                try:
                    store.put_if(key, pending, etag, "application/json")
                    return None, True
                except Conflict:
                    continue
            if time.monotonic() > deadline:
                raise Unavailable("the first submission of this id is still being stored; try again")
            time.sleep(0.25)

    def _release(self, key: str) -> None:
        try:
            self.d.pool.store.purge(key)
        except SaimError as exc:  # the claim goes stale and is taken over
            log.warning("claim %s not released (%s)", key, exc)

    def _first_answer(self, key: str) -> annotator_pb2.SubmitResponse | None:
        """The answer to the first submission of this id, if it finished (for the same annotator only)."""
        try:
            record = self.d.pool.store.get_json(key)
        except NotFound:
            return None
        if record.get("state", "done") != "done":
            return None
        return self._answer(record)

    @staticmethod
    def _answer(record: dict) -> annotator_pb2.SubmitResponse:
        require_actor(record.pop("annotator", ""))
        record.pop("state", None)
        reply = annotator_pb2.SubmitResponse()
        ParseDict(record, reply, ignore_unknown_fields=True)
        reply.replayed = True
        return reply


class AnnotatorApp(ServiceApp):
    """Wires the servicer, the model hot reload (Kafka) and health."""

    NAME, SERVICE, TOPICS = "annotator", "saim.v1.AnnotatorService", (MODEL_PUBLISHED,)

    def __init__(self, settings: ServiceSettings, deps: AnnotatorDeps, health: Health):
        super().__init__(settings, deps.publisher, health, None)  # every replica reads every model event
        self.deps = deps
        self.report_model_version(deps.model)

    def add_servicer(self, server: grpc.Server) -> None:
        annotator_pb2_grpc.add_AnnotatorServiceServicer_to_server(AnnotatorServicer(self.deps), server)

    def on_event(self, topic: TopicSpec, event: Any) -> None:
        if event.promoted:  # a rejected version stays in the registry: keep serving the current one
            self.reconcile()

    def reconcile(self) -> None:
        """Serve what the registry's CURRENT pointer names (not the event's version: a late or replayed event of an
        older version must not roll the model back). Also run periodically, for events lost with a broker."""
        if self.deps.model.load_current():
            m.MODEL_RELOADS.labels(self.NAME).inc()
        if self.deps.model.version() is not None:
            self.health.set(True)

    def on_start(self) -> None:
        self.reconcile()
