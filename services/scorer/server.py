"""Scorer worker (`python -m services.scorer`, the selector's image), for sharded scoring.

It consumes `saim.scoring.requested` in the `saim-scorer` consumer group, one record at a time: loads the requested
model version, scores its part of the pool and writes `scores/{version}/part-{k}.json`, then commits
(saim.selection.scoring says how the selector merges the parts). Run as many workers as the topic has partitions; a
killed worker's partitions move to the others with the group's rebalance. Serves gRPC health and
`ScorerService.GetStatus`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from saim.errors import NotFound
from saim.events import GROUP_SCORER, SCORING_REQUESTED, EventPublisher, TopicSpec
from saim.registry import LiveModel
from saim.rpc.server import Health
from saim.rpc.service import ServiceApp, failure_reporter
from saim.selection import make_strategy, part_document, part_key, score_pool, scores_key, stored_part
from saim.settings import ServiceSettings
from saim.storage.pool import PoolStore
from saim.v1 import selector_pb2, selector_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class ScorerDeps:
    pool: PoolStore
    model: LiveModel  # loads the version each request names (not only CURRENT)
    publisher: EventPublisher  # dead letters
    seed: int = 0
    decode_workers: int = 2
    name: str = ""


class ScorerServicer(selector_pb2_grpc.ScorerServiceServicer):
    def __init__(self, app: ScorerApp):
        self.app = app

    def GetStatus(
        self, request: selector_pb2.GetScorerStatusRequest, context: grpc.ServicerContext
    ) -> selector_pb2.ScorerStatus:
        a = self.app
        with a.stats_lock:
            return selector_pb2.ScorerStatus(
                partitions=sorted(p for _, p in a.consumer.assignment),
                parts_scored=a.parts_scored,
                slices_scored=a.slices_scored,
                slices_per_s=a.slices_scored / a.seconds if a.seconds > 0 else 0.0,
                last_version=a.last_version,
            )


class ScorerApp(ServiceApp):
    NAME, SERVICE, TOPICS = "scorer", "saim.v1.ScorerService", (SCORING_REQUESTED,)
    MAX_POLL_RECORDS = 1

    def __init__(self, settings: ServiceSettings, deps: ScorerDeps, health: Health):
        super().__init__(settings, deps.publisher, health, GROUP_SCORER)
        self.deps = deps
        self.name = deps.name or f"{socket.gethostname()}:{id(self):x}"
        self.stats_lock = threading.Lock()
        self.parts_scored, self.slices_scored, self.seconds, self.last_version = 0, 0, 0.0, ""

    def add_servicer(self, server: grpc.Server) -> None:
        selector_pb2_grpc.add_ScorerServiceServicer_to_server(ScorerServicer(self), server)

    def on_start(self) -> None:
        self.health.set(True)

    def on_event(self, topic: TopicSpec, event: Any) -> None:
        version, part, cases = event.model_version, event.part, list(event.case_ids)
        if self.deps.pool.store.exists(scores_key(version)):  # merged already: a redelivered or replayed request
            return
        if stored_part(self.deps.pool.store, version, event.strategy, part, event.parts, cases) is not None:
            log.info("part %d of %s is stored already", part, version)
            return
        try:
            self.deps.model.load(version)
            strategy = make_strategy(event.strategy, self.deps.seed)
        except (NotFound, ValueError) as exc:  # nothing is lost: the selector sends missing parts again
            log.error("part %d of %s not scored: %s", part, version, exc)
            return
        started = time.perf_counter()
        report = failure_reporter(self.NAME, self.deps.publisher)
        table = score_pool(
            self.deps.pool, strategy, self.deps.model.current, cases, self.deps.decode_workers, report=report
        )
        doc = part_document(table, event.strategy, part, event.parts, cases, self.name)
        self.deps.pool.store.rewrite_json(part_key(version, part), doc)
        seconds = time.perf_counter() - started
        with self.stats_lock:
            self.parts_scored += 1
            self.slices_scored += table.slices
            self.seconds += seconds
            self.last_version = version
        log.info("scored part %d of %s: %d series, %d slices, %.1f s", part, version, len(cases), table.slices, seconds)
