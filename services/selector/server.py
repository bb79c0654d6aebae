"""Selector service: the selection strategy's scores of the pool under the current model, batches and work
distribution."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc

from saim.errors import Conflict, FailedPrecondition, InvalidInput, Unavailable
from saim.events import (
    ANNOTATION_SUBMITTED,
    BATCH_COMPLETED,
    GROUP_SELECTOR,
    MODEL_PUBLISHED,
    EventPublisher,
    TopicSpec,
    new_meta,
)
from saim.registry import LiveModel
from saim.rpc import telemetry as m
from saim.rpc.auth import current_principal, require_actor
from saim.rpc.errors import error_of
from saim.rpc.periodic import Periodic
from saim.rpc.server import Health
from saim.rpc.service import ServiceApp
from saim.rpc.tokens import ADMIN
from saim.selection import Leader, LeaderLease, SelectionLoop
from saim.settings import ServiceSettings
from saim.storage.pool import provenance_key
from saim.v1 import events_pb2, selector_pb2, selector_pb2_grpc

log = logging.getLogger(__name__)


class Leadership:
    """This replica's part in the selectors' leader lease (saim.selection.leader): `leading` while it holds the
    lease; otherwise it forwards every call to the leader, with the caller's own credentials."""

    def __init__(self, lease: LeaderLease, channel_to: Callable[[str], grpc.Channel]):
        self.lease, self.channel_to = lease, channel_to
        self.leading = threading.Event()
        self._stubs: dict[str, selector_pb2_grpc.SelectorServiceStub] = {}
        self._known: Leader | None = None
        self._read_at = 0.0

    def _leader(self) -> Leader | None:
        """The lease's holder, read at most once a second (every forwarded call would read the bucket)."""
        if time.monotonic() - self._read_at > 1.0:
            self._known, self._read_at = self.lease.leader(), time.monotonic()
        return self._known

    def forward(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        leader = self._leader()
        if leader is None or leader.holder == self.lease.holder or not leader.address:
            raise Unavailable("no selector leads at the moment (a standby takes over within SAIM_SELECTOR_LEASE_S)")
        if leader.address not in self._stubs:
            self._stubs[leader.address] = selector_pb2_grpc.SelectorServiceStub(self.channel_to(leader.address))
        credentials = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
        remaining = context.time_remaining()
        try:
            return getattr(self._stubs[leader.address], method)(
                request, metadata=credentials, timeout=remaining if remaining is not None else 30.0
            )
        except grpc.RpcError as exc:
            m.FORWARDED_FAILED.inc()
            self._read_at = 0.0  # the leader may have changed: read the lease again on the next call
            if exc.code() == grpc.StatusCode.ABORTED:
                raise Conflict(exc.details()) from exc
            raise error_of(exc, f"the selector leader at {leader.address}") from exc


Method = TypeVar("Method", bound=Callable[..., Any])


def leader_or_forward(method: Method) -> Method:
    """A SelectorService method that the leader answers itself and a standby forwards to the leader."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: SelectorServicer, request: Any, context: grpc.ServicerContext) -> Any:
        if self.leadership is None or self.leadership.leading.is_set():
            return method(self, request, context)
        return self.leadership.forward(name, request, context)

    return cast(Method, call)


@dataclass
class SelectorDeps:
    loop: SelectionLoop
    model: LiveModel
    publisher: EventPublisher
    leadership: Leadership | None = None  # None: this selector always leads (one replica, the tests)


class SelectorServicer(selector_pb2_grpc.SelectorServiceServicer):
    def __init__(self, deps: SelectorDeps, event_lag: dict[str, float] | None = None):
        self.d = deps
        self.leadership = deps.leadership
        self.event_lag = event_lag if event_lag is not None else {}

    @leader_or_forward
    def GetStatus(
        self, request: selector_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> selector_pb2.SelectorStatus:
        loop = self.d.loop
        b, table = loop.batch, loop.scores
        return selector_pb2.SelectorStatus(
            iteration=loop.iteration,
            batch=b.cases if b else [],
            batch_done=sorted(b.done) if b else [],
            model_version=b.model_version if b else (self.d.model.version() or ""),
            pool_size=len(loop.unannotated()),
            annotated=len(loop.annotated),
            initial=len(loop.pool.splits.initial),
            complete=loop.complete(),
            max_iterations=loop.max_iterations,
            annotators=[
                selector_pb2.AnnotatorProgress(annotator_id=who, leased=p["leased"], submitted=p["submitted"])
                for who, p in sorted(loop.progress().items())
            ],
            scoring_slices_per_s=table.slices / table.seconds if table is not None and table.seconds > 0 else 0.0,
            scores_version=table.version if table is not None else "",
            event_lag_s=dict(self.event_lag),
        )

    @leader_or_forward
    def NextCase(
        self, request: selector_pb2.NextCaseRequest, context: grpc.ServicerContext
    ) -> selector_pb2.NextCaseResponse:
        if not request.annotator_id:
            raise InvalidInput("annotator_id is required")
        require_actor(request.annotator_id)
        case, iteration, lease, version = self.d.loop.next_case(request.annotator_id)
        return selector_pb2.NextCaseResponse(
            case_id=case,
            iteration=iteration,
            lease_id=lease,
            model_version=version,
            lease_expires_at=self.d.loop.lease_expiry(case),
        )

    @leader_or_forward
    def GetScores(
        self, request: selector_pb2.GetScoresRequest, context: grpc.ServicerContext
    ) -> selector_pb2.GetScoresResponse:
        table = self.d.loop.scores
        if table is None:
            raise FailedPrecondition("the pool has not been scored yet")
        return selector_pb2.GetScoresResponse(
            scores=[
                selector_pb2.CaseScore(case_id=c, score=s, model_version=table.version)
                for c, s in sorted(table.scores.items(), key=lambda kv: -kv[1])
            ],
            strategy=self.d.loop.strategy.name,
        )

    @leader_or_forward
    def CheckLease(
        self, request: selector_pb2.CheckLeaseRequest, context: grpc.ServicerContext
    ) -> selector_pb2.CheckLeaseResponse:
        batch = self.d.loop.renew_lease(request.case_id, request.lease_id, request.annotator_id)
        return selector_pb2.CheckLeaseResponse(
            iteration=batch.iteration,
            model_version=batch.model_version,
            lease_expires_at=self.d.loop.lease_expiry(request.case_id),
        )

    def WhoAmI(self, request: selector_pb2.WhoAmIRequest, context: grpc.ServicerContext) -> selector_pb2.WhoAmIResponse:
        p = current_principal()
        if p is None:  # SAIM_AUTH=false: everyone is everything
            return selector_pb2.WhoAmIResponse(name="anonymous", role=ADMIN)
        return selector_pb2.WhoAmIResponse(name=p.name, role=p.role)


class SelectorApp(ServiceApp):
    NAME, SERVICE, TOPICS = "selector", "saim.v1.SelectorService", (MODEL_PUBLISHED, ANNOTATION_SUBMITTED)

    def __init__(self, settings: ServiceSettings, deps: SelectorDeps, health: Health):
        super().__init__(settings, deps.publisher, health, GROUP_SELECTOR)
        self.deps = deps
        self._lock = threading.Lock()  # events and reconciliation are handled one at a time
        self.report_model_version(deps.model)
        self.leadership = deps.leadership
        self._campaign: Periodic | None = None
        self._leading_since: threading.Thread | None = None  # the thread that started the leader's work
        deps.loop.on_fenced = self._deposed

    # ---- leadership (saim.selection.leader) ------------------------------------------------------------------
    def start(self) -> None:
        """Lead when this replica holds the lease (or when there is no lease: one replica); else stand by, forwarding
        calls to the leader, and try for the lease every third of its term."""
        if self.leadership is None:
            super().start()
            return
        m.SELECTOR_LEADING.set(0)
        self._campaign = Periodic("selector-lease", self.leadership.lease.term_s / 3, self._campaign_round)
        self._campaign_round()
        self._campaign.start()

    def _campaign_round(self) -> None:
        assert self.leadership is not None
        lease = self.leadership.lease
        if self.leadership.leading.is_set():
            if not lease.renew():
                self._deposed()
            return
        if not lease.acquire():
            self.health.set(lease.leader() is not None)  # a standby answers by forwarding while a leader lives
            return
        self.health.set(False)  # until this replica's own scores are loaded (on_start -> _on_model)
        self.deps.loop.reload()  # the previous leader moved the state on since this replica read it
        self.leadership.leading.set()
        m.SELECTOR_LEADING.set(1)
        # the leader's work starts beside the lease's renewals (loading the scores may take long)
        self._leading_since = threading.Thread(target=super().start, name="selector-lead", daemon=True)
        self._leading_since.start()

    def _deposed(self) -> None:
        """Another selector holds the lease now: this replica's memory is stale. It stops (its orchestrator restarts
        it as a standby), and answers nothing meanwhile."""
        if self.leadership is None:
            return
        log.error("this selector no longer leads (another replica took the lease); stopping")
        self.leadership.leading.clear()
        m.SELECTOR_LEADING.set(0)
        self.health.set(False)
        os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> None:
        if self._campaign is not None:
            self._campaign.stop()
        if self.leadership is None or self._leading_since is not None:
            if self._leading_since is not None:
                self._leading_since.join(timeout=30)
            super().stop()
        else:
            self.publisher.close()
        if self.leadership is not None and self.leadership.leading.is_set():
            self.leadership.lease.release()  # a standby takes over at its next round, not after the term

    def add_servicer(self, server: grpc.Server) -> None:
        selector_pb2_grpc.add_SelectorServiceServicer_to_server(SelectorServicer(self.deps, self.event_lag), server)

    def _update_gauges(self) -> None:
        loop = self.deps.loop
        m.POOL.labels("unannotated").set(len(loop.unannotated()))
        m.POOL.labels("batch").set(len(loop.batch.cases) if loop.batch else 0)
        m.POOL.labels("annotated").set(len(loop.annotated))
        m.POOL.labels("initial").set(len(loop.pool.splits.initial))
        m.BATCH_ITERATION.set(loop.iteration)
        for who, p in loop.progress().items():
            m.ANNOTATOR_LEASED.labels(who).set(p["leased"])

    def _on_model(self, iteration: int, promoted: bool) -> None:
        """A decided model version of `iteration`: follow the registry, rescore, maybe open the next batch."""
        if promoted:
            # The registry's pointer, not the event, says what is current: a late or replayed event of an older
            # version must not roll the served model back (rollbacks move the pointer too).
            self.deps.model.load_current()
        # A rejected version still closes its iteration: the next batch opens with the current model's scores.
        table_before = self.deps.loop.scores
        self.deps.loop.on_model(self.deps.model.current, iteration)
        table = self.deps.loop.scores
        if table is not None and table is not table_before and table.seconds > 0:
            m.SCORING_RATE.set(table.slices / table.seconds)
            m.SCORED_SERIES.inc(len(table.scores))
        self.health.set(True)

    def on_event(self, topic: TopicSpec, event: Any) -> None:
        self._apply(topic, event)
        if topic is ANNOTATION_SUBMITTED:
            self.deps.loop.collect_drafts()  # housekeeping, outside the service's lock

    def _apply(self, topic: TopicSpec, event: Any) -> None:
        with self._lock:
            if topic is MODEL_PUBLISHED:
                self._on_model(event.iteration, event.promoted)
            elif topic is ANNOTATION_SUBMITTED:
                self._on_annotation(event.case_id, event.iteration, event.annotator_id)
            self._update_gauges()

    def _on_annotation(self, case: str, iteration: int, annotator: str) -> None:
        completed = self.deps.loop.on_annotation(case, iteration, annotator)
        if completed is None:
            return
        log.info("batch %d complete", completed.iteration)
        try:
            self.deps.publisher.publish(
                BATCH_COMPLETED,
                events_pb2.BatchCompleted(
                    meta=new_meta("selector"), iteration=completed.iteration, case_ids=completed.cases
                ),
            )
        except Exception as exc:  # the completed batch is in the selector state: the trainer reconciles it
            log.warning("BatchCompleted %d not sent (%s); the trainer finds it in storage", completed.iteration, exc)

    def reconcile(self) -> None:
        """Catch up with object storage on what lost events would have said: annotations stored for the open
        batch, a new CURRENT pointer (promotion or rollback), a decided model for the open iteration."""
        with self._lock:
            self.deps.loop.flush()
            self.deps.loop.pool.refresh()  # series added by `saim admin import` are scored below (on_model)
            batch = self.deps.loop.batch
            if batch is not None:
                for case in batch.cases:
                    if case in batch.done or not self.deps.loop.pool.store.exists(provenance_key(case)):
                        continue
                    for annotator in sorted(self.deps.loop.pool.raters(case)):
                        if annotator not in batch.raters.get(case, []):
                            log.info("reconciled annotation of %s by %s (its event was not seen)", case, annotator)
                            self._on_annotation(case, batch.iteration, annotator)
            decided = self.deps.model.registry.latest_decided()
            if decided is not None:
                self._on_model(decided.iteration, decided.promoted)
            self._update_gauges()
        self.deps.loop.collect_drafts()  # housekeeping, outside the service's lock

    def on_start(self) -> None:
        registry = self.deps.model.registry
        if registry.current_version() is not None:
            with self._lock:
                self._on_model(registry.current_iteration(), promoted=True)
                self._update_gauges()
