"""Annotator service: interactive inference. Every reply names the model version that produced it."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

import numpy as np

from saim.clicks import Click
from saim.errors import InvalidInput
from saim.events import ANNOTATION_SUBMITTED, GROUP_ANNOTATOR_PREFIX, MODEL_PUBLISHED, EventPublisher, new_meta
from saim.live_model import LiveModel, ServedModel
from saim.pool import PoolStore
from saim.rpc import metrics as m
from saim.rpc.auth import require_actor
from saim.rpc.peers import LeaseChecker
from saim.rpc.server import Health
from saim.rpc.service import ServiceApp
from saim.session import AnnotationSession, SessionStore
from saim.settings import ServiceSettings
from saim.storage import version_number
from saim.v1 import annotator_pb2, annotator_pb2_grpc, events_pb2

log = logging.getLogger(__name__)


def mask_message(index: int, mask: np.ndarray) -> annotator_pb2.SliceMask:
    return annotator_pb2.SliceMask(slice=index, labels=np.ascontiguousarray(mask, dtype=np.uint8).tobytes())


@dataclass
class AnnotatorDeps:
    pool: PoolStore
    model: LiveModel
    sessions: SessionStore
    publisher: EventPublisher
    leases: LeaseChecker
    renew_every_s: float = 30.0  # activity renews the lease at most this often (a third of the lease TTL)
    overlap: int = 1  # annotators per case: > 1 keeps every rater's copy under raters/{case}/


class AnnotatorServicer(annotator_pb2_grpc.AnnotatorServiceServicer):
    def __init__(self, deps: AnnotatorDeps):
        self.d = deps

    def OpenSession(self, request, context):
        started = time.perf_counter()
        if not request.case_id or not request.annotator_id:
            raise InvalidInput("case_id and annotator_id are required")
        require_actor(request.annotator_id)
        iteration, batch_version = self.d.leases.check(request.case_id, request.lease_id, request.annotator_id)
        series = self.d.pool.load_series(request.case_id)
        if version_number(self.d.model.version()) < version_number(batch_version):
            self.d.model.load_current()  # the model event has not reached this replica yet: catch up now
        model = self.d.model.current
        session = AnnotationSession.open(
            request.case_id, request.annotator_id, iteration, request.lease_id, series, model
        )
        self.d.sessions.add(session)
        m.OPEN_LATENCY.observe(time.perf_counter() - started)
        size = series.images.shape[1]
        return annotator_pb2.OpenSessionResponse(
            session_id=session.session_id,
            case_id=session.case,
            num_slices=series.num_slices,
            height=size,
            width=size,
            classes=list(self.d.pool.classes),
            slice_index=[int(z) for z in series.slice_index],
            volume_shape=list(series.volume_shape),
            masks=[mask_message(i, s.auto) for i, s in enumerate(session.slices)],
            model_version=model.version,
            iteration=iteration,
        )

    def _mask_reply(self, session, index: int, mask, model: ServedModel, started: float):
        elapsed = time.perf_counter() - started
        m.CLICK_LATENCY.observe(elapsed)
        return annotator_pb2.MaskResponse(
            mask=mask_message(index, mask),
            model_version=model.version,
            clicks_on_slice=len(session.slices[index].clicks),
            inference_ms=elapsed * 1000,
        )

    def _renew(self, session) -> None:
        """Annotator activity renews the case's lease (at most every renew_every_s per session)."""
        if time.monotonic() - session.lease_renewed >= self.d.renew_every_s:
            self.d.leases.check(session.case, session.lease_id, session.annotator)
            session.lease_renewed = time.monotonic()

    def _session(self, session_id: str) -> AnnotationSession:
        """The caller's own session: an annotator cannot click on or submit another annotator's case."""
        session = self.d.sessions.get(session_id)
        require_actor(session.annotator)
        return session

    def AddClick(self, request, context):
        started = time.perf_counter()
        session = self._session(request.session_id)
        self._renew(session)
        model = self.d.model.current
        click = Click(cls=int(request.class_index), y=int(request.y), x=int(request.x), positive=bool(request.positive))
        mask = session.add_click(model, int(request.slice), click)
        return self._mask_reply(session, request.slice, mask, model, started)

    def Undo(self, request, context):
        started = time.perf_counter()
        session = self._session(request.session_id)
        self._renew(session)
        model = self.d.model.current
        mask = session.undo(model, int(request.slice))
        return self._mask_reply(session, request.slice, mask, model, started)

    def Submit(self, request, context):
        session = self._session(request.session_id)
        self.d.leases.check(session.case, session.lease_id, session.annotator)  # still ours: store it
        with session.lock:
            provenance = session.provenance(request.seconds_spent or None)
            ann_key, prov_key = self.d.pool.store_submission(
                session.case, session.annotator, session.labels(), provenance, self.d.overlap
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
        try:
            self.d.publisher.publish(ANNOTATION_SUBMITTED, event, key=session.case)
        except Exception as exc:  # stored first: the selector reconciles it from the bucket (at-least-once)
            log.warning("AnnotationSubmitted for %s not sent (%s); the selector finds it in storage", session.case, exc)
        self.d.sessions.remove(session.session_id)
        m.ANNOTATOR_DONE.labels(session.annotator).inc()
        return annotator_pb2.SubmitResponse(
            annotation_key=ann_key,
            provenance_key=prov_key,
            model_version=session.opened_version,
            event_id=event.meta.event_id,
        )


class AnnotatorApp(ServiceApp):
    """Wires the servicer, the model hot reload (Kafka) and health."""

    NAME, SERVICE, TOPICS = "annotator", "saim.v1.AnnotatorService", (MODEL_PUBLISHED,)

    def __init__(self, settings: ServiceSettings, deps: AnnotatorDeps, health: Health):
        instance = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        super().__init__(settings, deps.publisher, health, GROUP_ANNOTATOR_PREFIX + instance)  # every replica
        self.deps = deps
        self.report_model_version(deps.model)

    def add_servicer(self, server) -> None:
        annotator_pb2_grpc.add_AnnotatorServiceServicer_to_server(AnnotatorServicer(self.deps), server)

    def on_event(self, topic, event) -> None:
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
