"""The runtime every saim service shares: a gRPC server with health and reflection, an event consumer, a periodic
reconciliation with object storage, metrics, and a graceful stop. A service subclasses `ServiceApp` with its
domain only (its servicer, its event handling, what it reconciles) and is built by `create_service`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import grpc

from saim.errors import SaimError
from saim.events import DEAD_LETTER, EventConsumer, EventPublisher, TopicSpec
from saim.registry.live import LiveModel
from saim.registry.versions import version_number
from saim.rpc import telemetry as m
from saim.rpc.periodic import Periodic
from saim.rpc.server import Health, Security, create_server

log = logging.getLogger(__name__)


class ServiceApp:
    NAME: ClassVar[str]  # "selector": logs, metric labels, thread names
    SERVICE: ClassVar[str]  # the full gRPC service name, for health and reflection
    TOPICS: ClassVar[tuple[TopicSpec, ...]]  # the topics its consumer group follows
    MAX_POLL_RECORDS: ClassVar[int] = 500  # 1 for work queues: each record is committed once handled

    def __init__(self, settings, publisher: EventPublisher, health: Health, group: str | None):
        """`group`: the role's consumer group, or None for a broadcast reader (every replica sees every event)."""
        self.settings, self.publisher, self.health = settings, publisher, health
        self.consumer = EventConsumer(
            settings.kafka_bootstrap,
            group,
            list(self.TOPICS),
            self._handle,
            dead_letter=publisher,
            on_lag=self._on_lag,
            max_poll_records=self.MAX_POLL_RECORDS,
        )
        self.event_lag: dict[str, float] = {}  # topic -> lag of the last event handled (status calls report it)
        self.reconciler = Periodic(f"{self.NAME}-reconcile", settings.reconcile_s, self.reconcile)

    # ---- the domain: what a service defines ------------------------------------------------------------------
    def add_servicer(self, server: grpc.Server) -> None:
        raise NotImplementedError

    def on_event(self, topic: TopicSpec, event: Any) -> None:
        """One event of the service's topics (events are at least once: handlers are idempotent)."""

    def reconcile(self) -> None:
        """Catch up with object storage on what lost events would have said (every SAIM_RECONCILE_S)."""

    def on_start(self) -> None:
        """Runs before the consumer and the reconciler start."""

    def on_stop(self) -> None:
        """Runs after the consumer and the reconciler stopped, before the publisher closes."""

    # ---- the runtime -----------------------------------------------------------------------------------------
    def report_model_version(self, model: LiveModel) -> None:
        """Export the version this process serves as a metric whenever it changes."""
        model.on_change = lambda served: m.MODEL_VERSION.labels(self.NAME).set(version_number(served.version))

    def _on_lag(self, topic: str, seconds: float) -> None:
        m.EVENT_LAG.labels(topic).observe(seconds)
        self.event_lag[topic] = seconds

    def _handle(self, topic: TopicSpec, event) -> None:
        m.EVENTS_HANDLED.labels(topic.name).inc()
        self.on_event(topic, event)

    def start(self) -> None:
        self.on_start()
        self.consumer.start()
        self.reconciler.start()

    def stop(self) -> None:
        self.reconciler.stop()
        self.consumer.stop()
        self.on_stop()
        self.publisher.close()


class AppClass(Protocol):
    """A ServiceApp subclass as create_service builds it: its names, and a constructor over its dependencies."""

    NAME: str
    SERVICE: str

    def __call__(self, settings: Any, deps: Any, health: Health) -> ServiceApp: ...


def failure_reporter(service: str, publisher: EventPublisher) -> Callable[[str, SaimError], None]:
    """What a service does with a series that failed to decode: count it (saim_series_failed_total) and put a
    record of it on the dead-letter topic for the operator; the series is left out, the work goes on."""

    def report(case: str, exc: SaimError) -> None:
        m.SERIES_FAILED.labels(service).inc()
        record = {"kind": "series_failed", "service": service, "case": case, "error": str(exc), "unix_s": time.time()}
        try:
            publisher.send_raw(DEAD_LETTER.name, json.dumps(record).encode(), case.encode())
        except Exception as exc:  # the metric and the log have it; the broker's outage is not the series' fault
            log.warning("dead letter for series %s not sent: %s", case, exc)

    return report


def create_service(
    app_cls: AppClass, settings: Any, deps: Any, security: Security | None = None
) -> tuple[grpc.Server, int, ServiceApp]:
    """The service's app over its dependencies, and its gRPC server bound (not started): (server, port, app)."""
    health = Health(app_cls.SERVICE)
    app = app_cls(settings, deps, health)
    server, port = create_server(app_cls.NAME, app_cls.SERVICE, app.add_servicer, health, settings, security)
    return server, port, app
