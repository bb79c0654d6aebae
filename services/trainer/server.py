"""Trainer service: retrain on the whole annotated pool when a batch completes; publish the new version.

Runs are non-preemptive: one at a time in a worker thread; a completion that arrives during a run is queued, and
a replayed completion of an iteration already trained or queued changes nothing. A version whose promotion was
never decided (the trainer killed between writing it and the gate) is abandoned and never becomes current.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc

from saim.errors import InvalidInput
from saim.events import BATCH_COMPLETED, GROUP_TRAINER, MODEL_PUBLISHED, EventPublisher, TopicSpec, new_meta
from saim.registry import ModelMetadata, ModelRegistry, version_number
from saim.rpc import telemetry as m
from saim.rpc.server import Health
from saim.rpc.service import ServiceApp
from saim.selection import stored_batches
from saim.settings import ServiceSettings
from saim.training import RunResult, TrainingPipeline
from saim.v1 import events_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class TrainerState:
    state: str = "idle"
    runs_completed: int = 0
    last_duration: float = 0.0
    last_loss: float = 0.0
    planned: set[int] = field(default_factory=set)  # iterations trained or queued


@dataclass
class TrainerDeps:
    pipeline: TrainingPipeline
    registry: ModelRegistry
    publisher: EventPublisher


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, app: TrainerApp):
        self.app = app

    def GetStatus(
        self, request: trainer_pb2.GetTrainerStatusRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TrainerStatus:
        s = self.app.state
        return trainer_pb2.TrainerStatus(
            state=s.state,
            current_version=self.app.deps.registry.current_version() or "",
            runs_completed=s.runs_completed,
            last_duration_seconds=s.last_duration,
            last_loss=s.last_loss,
            queued=self.app.queue.qsize(),
        )

    def ListModels(
        self, request: trainer_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.ListModelsResponse:
        registry = self.app.deps.registry
        current = registry.current_version()
        out = []
        for version in registry.versions():
            meta = registry.metadata(version)
            out.append(
                trainer_pb2.ModelVersion(
                    version=version,
                    parent_version=meta.parent_version or "",
                    created_at=meta.created_at,
                    iteration=meta.iteration,
                    metrics=meta.metrics,
                    training_series=len(meta.training_set),
                    current=version == current,
                    status=registry.status(version).value,
                )
            )
        return trainer_pb2.ListModelsResponse(models=out)

    def Rollback(
        self, request: trainer_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.RollbackResponse:
        registry = self.app.deps.registry
        if not request.version:
            raise InvalidInput("version is required")
        previous = registry.current_version() or ""
        registry.set_current(request.version)  # NotFound for a version that is not in the registry
        self.app.announce(registry.metadata(request.version), True, f"rollback from {previous or 'none'}")
        return trainer_pb2.RollbackResponse(previous_version=previous, current_version=request.version)

    def TriggerTraining(
        self, request: trainer_pb2.TriggerTrainingRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TriggerTrainingResponse:
        iteration = self.app.deps.registry.current_iteration()
        run_id = self.app.enqueue(iteration, force=True, reason=request.reason or "manual")
        return trainer_pb2.TriggerTrainingResponse(accepted=True, run_id=run_id)


class TrainerApp(ServiceApp):
    NAME, SERVICE, TOPICS = "trainer", "saim.v1.TrainerService", (BATCH_COMPLETED,)

    def __init__(self, settings: ServiceSettings, deps: TrainerDeps, health: Health):
        super().__init__(settings, deps.publisher, health, GROUP_TRAINER)
        self.deps = deps
        self.state = TrainerState()
        self.queue: queue.Queue[tuple[int, str]] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="trainer-worker", daemon=True)

    def add_servicer(self, server: grpc.Server) -> None:
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(self), server)

    def _trained_iterations(self) -> set[int]:
        """Iterations with a decided version; undecided leftovers of a killed run are abandoned and retrained."""
        for version in self.deps.registry.abandon_undecided():
            log.warning("version %s was never decided (trainer stopped mid-run): marked abandoned", version)
        return self.deps.registry.decided_iterations()

    def enqueue(self, iteration: int, force: bool = False, reason: str = "") -> str:
        with self._lock:
            if not force and iteration in self.state.planned:
                return ""
            self.state.planned.add(iteration)
            run_id = uuid.uuid4().hex[:12]
            self.queue.put((iteration, run_id))
            log.info("queued training run %s for iteration %d (%s)", run_id, iteration, reason)
            return run_id

    def on_event(self, topic: TopicSpec, event: Any) -> None:
        self.enqueue(event.iteration, reason=f"batch {event.iteration} completed")

    def reconcile(self) -> None:
        """A batch the selector stored as complete without a model (its event lost, or the trainer stopped after
        committing the event and before training): storage, not the topic, is the system of record."""
        store = self.deps.pipeline.pool.store
        current, previous = stored_batches(store)
        for batch in (previous, current):  # previous: SAIM_NEXT_BATCH=immediate
            if batch is not None and batch.complete and batch.iteration not in self.state.planned:
                self.enqueue(batch.iteration, reason=f"batch {batch.iteration} is complete in storage but has no model")

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                iteration, run_id = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.state.state = "training"
            started = time.perf_counter()
            try:
                run = self.deps.pipeline.run(iteration, self.deps.registry.current_version())
            except Exception:
                log.exception("training run %s (iteration %d) failed", run_id, iteration)
                m.TRAINING_RUNS.labels("failed").inc()
                with self._lock:
                    self.state.planned.discard(iteration)
                self.state.state = "idle"
                continue
            self._finished(run, time.perf_counter() - started)
            self.state.state = "idle"

    def _finished(self, run: RunResult, duration: float) -> None:
        self.state.runs_completed += 1
        self.state.last_duration, self.state.last_loss = duration, run.metadata.metrics["train_loss"]
        m.TRAINING_SECONDS.observe(duration)
        m.TRAINING_LOSS.set(self.state.last_loss)
        m.TRAINING_RUNS.labels(run.status.value).inc()
        try:
            self.announce(run.metadata, run.promoted, run.reason)
        except Exception as exc:  # the version is stored and decided; consumers reconcile from the registry
            log.warning("ModelPublished for %s not sent (%s); services find it in storage", run.metadata.version, exc)
        self.health.set(True)

    def announce(self, meta: ModelMetadata, promoted: bool, reason: str) -> None:
        """ModelPublished for a stored version (after training, or a rollback)."""
        if promoted:
            m.MODEL_VERSION.labels(self.NAME).set(version_number(meta.version))
        event = events_pb2.ModelPublished(
            meta=new_meta("trainer"),
            version=meta.version,
            parent_version=meta.parent_version or "",
            weights_key=self.deps.registry.weights_key(meta.version),
            metadata_key=self.deps.registry.metadata_key(meta.version),
            iteration=meta.iteration,
            metrics=meta.metrics,
            promoted=promoted,
            reason=reason,
        )
        self.publisher.publish(MODEL_PUBLISHED, event)

    def on_start(self) -> None:
        self.state.planned = self._trained_iterations()
        if self.deps.registry.current_version() is not None:
            self.health.set(True)
        elif 0 not in self.state.planned:
            self.enqueue(0, reason="no model yet: pre-train on the initial split")
        self.reconcile()
        self._worker.start()

    def on_stop(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5)
