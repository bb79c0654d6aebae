"""Annotator service: interactive inference. Every reply names the model version that produced it."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict, ParseDict

from saim.annotation import AnnotationSession, DraftStore, LeaseKeeper, SessionStore, SliceState
from saim.errors import InvalidInput, NotFound, SaimError
from saim.events import (
    ANNOTATION_SUBMITTED,
    MODEL_PUBLISHED,
    EventPublisher,
    TopicSpec,
    new_meta,
)
from saim.model.compute import Compute, Inline
from saim.registry import LiveModel, ServedModel, version_number
from saim.rpc import telemetry as m
from saim.rpc.auth import require_actor
from saim.rpc.peers import LeaseChecker
from saim.rpc.server import Health
from saim.rpc.service import ServiceApp
from saim.rpc.wire import decode_mask, encode_image, encode_mask, image_dtype
from saim.settings import ServiceSettings
from saim.storage.pool import PoolStore, submission_key
from saim.v1 import annotator_pb2, annotator_pb2_grpc, events_pb2

log = logging.getLogger(__name__)


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


class AnnotatorServicer(annotator_pb2_grpc.AnnotatorServiceServicer):
    def __init__(self, deps: AnnotatorDeps):
        self.d = deps
        self.leases = LeaseKeeper(deps.leases, deps.renew_every_s, deps.submit_wait_s)  # clicks never wait for it

    def OpenSession(
        self, request: annotator_pb2.OpenSessionRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.OpenSessionResponse:
        started = time.perf_counter()
        case, annotator, lease = request.case_id, request.annotator_id, request.lease_id
        if not case or not annotator:
            raise InvalidInput("case_id and annotator_id are required")
        require_actor(annotator)
        lease_info = self.d.leases.check(case, lease, annotator)
        image, affine = self.d.pool.load_volume(case)
        series = self.d.compute.run(self.d.pool.load_series, case, False, (image, affine), background=True)
        if version_number(self.d.model.version()) < version_number(lease_info.model_version):
            self.d.model.load_current()  # the model event has not reached this replica yet: catch up now
        model, compute = self.d.model.current, self.d.compute
        session = AnnotationSession.open(
            case, annotator, lease_info.iteration, lease, series, image, affine, model, compute
        )
        draft = self.d.drafts.load(case, annotator, session.geometry) if self.d.drafts else {}
        session.restore(draft)
        self.leases.opened(session, lease_info.expires_at)
        self.d.sessions.add(session)
        if self.d.prefill:  # a daemon thread: a prefill never holds up the process's exit
            threading.Thread(target=self._prefill, args=(session, model), name="prefill", daemon=True).start()
        m.OPEN_LATENCY.observe(time.perf_counter() - started)
        reply = self._describe(session)
        reply.draft_slices.extend(sorted(draft))
        reply.draft_clicks = sum(state.count("click") for state in draft.values())
        reply.draft_edits = sum(state.count("edit") for state in draft.values())
        reply.lease_expires_at = lease_info.expires_at
        return reply

    def _prefill(self, session: AnnotationSession, model: ServedModel) -> None:
        try:
            session.prefill(model, lambda: not self.d.sessions.open(session.session_id))
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

    def _mask_reply(
        self,
        session: AnnotationSession,
        index: int,
        mask: np.ndarray,
        state: SliceState,
        model: ServedModel,
        started: float,
    ) -> annotator_pb2.MaskResponse:
        if self.d.drafts is not None:
            saving = time.perf_counter()
            if not self.d.drafts.save(session, index):
                m.DRAFT_FAILURES.inc()
            m.DRAFT_SAVE.observe(time.perf_counter() - saving)
        elapsed = time.perf_counter() - started
        m.CLICK_LATENCY.observe(elapsed)
        return annotator_pb2.MaskResponse(
            mask=encode_mask(index, mask),
            model_version=model.version,
            clicks_on_slice=state.count("click"),
            edits_on_slice=state.count("edit"),
            inference_ms=elapsed * 1000,
        )

    def _renew(self, session: AnnotationSession) -> None:
        """Activity on the case: refused if its lease is lost or expired, renewed in the background when due."""
        self.leases.activity(session)

    def _session(self, session_id: str) -> AnnotationSession:
        """The caller's own session: an annotator cannot click on or submit another annotator's case."""
        session = self.d.sessions.get(session_id)
        require_actor(session.annotator)
        return session

    def GetSlice(
        self, request: annotator_pb2.GetSliceRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.SliceResponse:
        session = self._session(request.session_id)
        self._renew(session)
        if request.image_only:
            reply = annotator_pb2.SliceResponse()
            self._add_image(session, int(request.slice), reply)
            return reply
        model = self.d.model.current
        mask, state = session.mask(model, int(request.slice))
        reply = annotator_pb2.SliceResponse(
            mask=encode_mask(request.slice, mask),
            model_version=state.auto_version if not state.ops else state.ops[-1].model_version,
            clicks_on_slice=state.count("click"),
            edits_on_slice=state.count("edit"),
        )
        if request.include_image:
            self._add_image(session, int(request.slice), reply)
        return reply

    @staticmethod
    def _add_image(session: AnnotationSession, index: int, reply: annotator_pb2.SliceResponse) -> None:
        if session.image_wire_dtype is None:  # a pass over the whole volume: once per session
            session.image_wire_dtype = image_dtype(session.image)
        reply.image, reply.image_dtype = encode_image(session.image_slice(index), session.image_wire_dtype)
        reply.image_encoding = annotator_pb2.ENCODING_ZLIB

    def AddClick(
        self, request: annotator_pb2.AddClickRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.MaskResponse:
        started = time.perf_counter()
        session = self._session(request.session_id)
        if not request.HasField("voxel"):
            raise InvalidInput("a click needs its voxel (i, j, k) in the scan's grid")
        self._renew(session)
        model = self.d.model.current
        v = request.voxel
        index, mask, state = session.add_click(model, (v.i, v.j, v.k), request.class_index, request.positive)
        return self._mask_reply(session, index, mask, state, model, started)

    def EditSlice(
        self, request: annotator_pb2.EditSliceRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.MaskResponse:
        started = time.perf_counter()
        session = self._session(request.session_id)
        if not request.HasField("painted"):
            raise InvalidInput("an edit needs its painted pixels")
        self._renew(session)
        model = self.d.model.current
        painted = decode_mask(request.painted, session.geometry.slice_shape)
        mask, state = session.edit(model, int(request.slice), int(request.class_index), painted)
        return self._mask_reply(session, request.slice, mask, state, model, started)

    def Undo(self, request: annotator_pb2.UndoRequest, context: grpc.ServicerContext) -> annotator_pb2.MaskResponse:
        started = time.perf_counter()
        session = self._session(request.session_id)
        self._renew(session)
        model = self.d.model.current
        mask, state = session.undo(model, int(request.slice))
        return self._mask_reply(session, request.slice, mask, state, model, started)

    def Submit(
        self, request: annotator_pb2.SubmitRequest, context: grpc.ServicerContext
    ) -> annotator_pb2.SubmitResponse:
        key = submission_key(request.submission_id) if request.submission_id else None
        if (first := self._first_answer(key)) is not None:  # a retry, here or on another replica
            return first
        session = self._session(request.session_id)
        self.leases.confirm(session)  # still ours (waits out a restarting selector): store it
        with session.lock:
            if (first := self._first_answer(key)) is not None:  # a concurrent retry: the first one finished meanwhile
                return first
            labels = session.labels(self.d.model.current)
            provenance = session.provenance(request.seconds_spent or None)
            ann_key, prov_key = self.d.pool.store_submission(
                session.case, session.annotator, labels, session.affine, provenance, self.d.overlap
            )
            event = events_pb2.AnnotationSubmitted(
                meta=new_meta("annotator"),
                case_id=session.case,
                iteration=session.iteration,
                annotation_key=ann_key,
                provenance_key=prov_key,
                annotator_id=session.annotator,
                model_version=session.opened_version,
            )
            reply = annotator_pb2.SubmitResponse(
                annotation_key=ann_key,
                provenance_key=prov_key,
                model_version=session.opened_version,
                event_id=event.meta.event_id,
            )
            if key is not None:  # stored with the annotation, before anything announces it
                self.d.pool.store.put_json(key, {"annotator": session.annotator, **MessageToDict(reply)})
        try:
            self.d.publisher.publish(ANNOTATION_SUBMITTED, event, key=session.case)
        except Exception as exc:  # stored first: the selector reconciles it from the bucket (at-least-once)
            log.warning("AnnotationSubmitted for %s not sent (%s); the selector finds it in storage", session.case, exc)
        self.d.sessions.remove(session.session_id)
        self.leases.closed(session)
        if self.d.drafts is not None:
            try:
                self.d.drafts.discard(session.case, session.annotator)
            except SaimError as exc:  # stored and announced: a stale draft is only resumed if the case comes back
                log.warning("draft of %s by %s not discarded (%s)", session.case, session.annotator, exc)
        m.ANNOTATOR_DONE.labels(session.annotator).inc()
        return reply

    def _first_answer(self, key: str | None) -> annotator_pb2.SubmitResponse | None:
        """The answer to the first submission of this id, if there was one (for the same annotator only)."""
        if key is None:
            return None
        try:
            record = self.d.pool.store.get_json(key)
        except NotFound:
            return None
        require_actor(record.pop("annotator", ""))
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
