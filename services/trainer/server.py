"""Trainer service: retrain on the whole annotated pool when a batch completes; publish the new version.

Runs are non-preemptive: one at a time in a worker thread; a batch completion that arrives while a run is going is
queued (a replayed completion of an iteration already trained or queued changes nothing). Storage, not the topic,
is the system of record: every `reconcile_s` a reconciler looks for a completed batch without a decided model
(its event lost with a broker, or the trainer killed mid-run) and trains it. A version whose promotion was never
decided (killed between writing it and the gate) is marked abandoned and never becomes current.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import grpc

from saim.errors import InvalidInput
from saim.events import BATCH_COMPLETED, GROUP_TRAINER, MODEL_PUBLISHED, EventConsumer, EventPublisher, new_meta
from saim.periodic import Periodic
from saim.retrain import TrainingPipeline
from saim.rpc import metrics as m
from saim.rpc.server import Health, Security, create_server
from saim.settings import ServiceSettings
from saim.storage import ModelRegistry
from saim.v1 import events_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
SERVICE = "saim.v1.TrainerService"


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

    def GetStatus(self, request, context):
        s = self.app.state
        return trainer_pb2.TrainerStatus(
            state=s.state,
            current_version=self.app.deps.registry.current_version() or "",
            runs_completed=s.runs_completed,
            last_duration_seconds=s.last_duration,
            last_loss=s.last_loss,
            queued=self.app.queue.qsize(),
        )

    def ListModels(self, request, context):
        registry = self.app.deps.registry
        current = registry.current_version()
        out = []
        for version in registry.versions():
            meta = registry.metadata(version)
            metrics = {k: float(v) for k, v in meta.get("metrics", {}).items() if isinstance(v, (int, float))}
            out.append(
                trainer_pb2.ModelVersion(
                    version=version,
                    parent_version=meta.get("parent_version") or "",
                    created_at=meta.get("created_at", ""),
                    iteration=int(meta.get("iteration", 0)),
                    metrics=metrics,
                    training_series=len(meta.get("training_set", [])),
                    current=version == current,
                    status=registry.status(version),
                )
            )
        return trainer_pb2.ListModelsResponse(models=out)

    def Rollback(self, request, context):
        registry = self.app.deps.registry
        if not request.version:
            raise InvalidInput("version is required")
        previous = registry.current_version() or ""
        registry.set_current(request.version)  # NotFound for a version that is not in the registry
        self.app.announce(request.version, promoted=True, reason=f"rollback from {previous or 'none'}")
        return trainer_pb2.RollbackResponse(previous_version=previous, current_version=request.version)

    def TriggerTraining(self, request, context):
        run_id = self.app.enqueue(self.app.latest_iteration(), force=True, reason=request.reason or "manual")
        return trainer_pb2.TriggerTrainingResponse(accepted=True, run_id=run_id)


class TrainerApp:
    def __init__(self, settings: ServiceSettings, deps: TrainerDeps, health: Health):
        self.settings, self.deps, self.health = settings, deps, health
        self.state = TrainerState()
        self.queue: queue.Queue[tuple[int, str]] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="trainer-worker", daemon=True)
        # enqueue() ignores iterations already trained or queued, so this may run while a training run does
        self.reconciler = Periodic("trainer-reconcile", settings.reconcile_s, self.reconcile)
        self.consumer = EventConsumer(
            settings.kafka_bootstrap,
            GROUP_TRAINER,
            [BATCH_COMPLETED],
            self._on_event,
            dead_letter=deps.publisher,
            on_lag=lambda t, s: m.EVENT_LAG.labels(t).observe(s),
        )

    def latest_iteration(self) -> int:
        version = self.deps.registry.current_version()
        return 0 if version is None else int(self.deps.registry.metadata(version).get("iteration", 0))

    def _trained_iterations(self) -> set[int]:
        """Iterations with a decided version (promoted, rejected, or current); undecided leftovers of a killed run
        are marked abandoned and their iteration is trained again."""
        reg = self.deps.registry
        current = reg.current_version()
        done = set()
        for v in reg.versions():
            status = reg.status(v)
            if status == "unknown" and v != current:
                reg.mark(v, "abandoned", "the trainer stopped before the promotion decision; the run is retried")
                log.warning("version %s was never decided (trainer stopped mid-run): marked abandoned", v)
                continue
            if status != "abandoned":
                done.add(int(reg.metadata(v).get("iteration", 0)))
        return done

    def enqueue(self, iteration: int, force: bool = False, reason: str = "") -> str:
        with self._lock:
            if not force and iteration in self.state.planned:
                return ""
            self.state.planned.add(iteration)
            run_id = uuid.uuid4().hex[:12]
            self.queue.put((iteration, run_id))
            log.info("queued training run %s for iteration %d (%s)", run_id, iteration, reason)
            return run_id

    def _on_event(self, topic, event) -> None:
        m.EVENTS_HANDLED.labels(topic.name).inc()
        self.enqueue(event.iteration, reason=f"batch {event.iteration} completed")

    def reconcile(self) -> None:
        missed = self._unfinished_batch()
        if missed is not None:
            self.enqueue(missed, reason=f"batch {missed} is complete in storage but has no model (reconciled)")

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                iteration, run_id = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.state.state = "training"
            started = time.perf_counter()
            try:
                parent = self.deps.registry.current_version()
                run = self.deps.pipeline.run(iteration, parent)
            except Exception:
                log.exception("training run %s (iteration %d) failed", run_id, iteration)
                m.TRAINING_RUNS.labels("failed").inc()
                with self._lock:
                    self.state.planned.discard(iteration)
                self.state.state = "idle"
                continue
            duration = time.perf_counter() - started
            meta = run.metadata
            self.state.runs_completed += 1
            self.state.last_duration, self.state.last_loss = duration, float(meta["metrics"]["train_loss"])
            m.TRAINING_SECONDS.observe(duration)
            m.TRAINING_LOSS.set(self.state.last_loss)
            m.TRAINING_RUNS.labels("promoted" if run.promoted else "rejected").inc()
            try:
                self.announce(meta["version"], run.promoted, run.reason, meta)
            except Exception as exc:  # the version is stored and decided; consumers reconcile from the registry
                log.warning(
                    "ModelPublished for %s not sent (%s); services will find it in storage", meta["version"], exc
                )
            self.health.set(True)
            self.state.state = "idle"

    def announce(self, version: str, promoted: bool, reason: str, meta: dict | None = None) -> None:
        """ModelPublished for a stored version (after training, or a rollback)."""
        reg = self.deps.registry
        meta = meta or reg.metadata(version)
        if promoted:
            m.MODEL_VERSION.labels("trainer").set(m.version_number(version))
        event = events_pb2.ModelPublished(
            meta=new_meta("trainer"),
            version=version,
            parent_version=meta.get("parent_version") or "",
            weights_key=reg.weights_key(version),
            metadata_key=reg.metadata_key(version),
            iteration=int(meta.get("iteration", 0)),
            metrics={k: float(v) for k, v in meta.get("metrics", {}).items()},
            promoted=promoted,
            reason=reason,
        )
        self.deps.publisher.publish(MODEL_PUBLISHED, event)

    def _unfinished_batch(self) -> int | None:
        """A batch the selector recorded as complete but no model was trained for (e.g. the trainer stopped after
        committing the event and before training): storage, not the topic, is the system of record."""
        batch = self.deps.pipeline.pool.selector_state().get("batch")
        if batch and set(batch["cases"]) <= set(batch["done"]) and batch["iteration"] not in self.state.planned:
            return int(batch["iteration"])
        return None

    def start(self) -> None:
        self.state.planned = self._trained_iterations()
        if self.deps.registry.current_version() is not None:
            self.health.set(True)
        elif 0 not in self.state.planned:
            self.enqueue(0, reason="no model yet: pre-train on the initial split")
        self.reconcile()
        self._worker.start()
        self.reconciler.start()
        self.consumer.start()

    def stop(self) -> None:
        self._stop.set()
        self.reconciler.stop()
        self.consumer.stop()
        self._worker.join(timeout=5)
        self.deps.publisher.close()


def create_trainer(
    settings: ServiceSettings, deps: TrainerDeps, security: Security | None = None
) -> tuple[grpc.Server, int, TrainerApp]:
    health = Health(SERVICE)
    app = TrainerApp(settings, deps, health)
    servicer = TrainerServicer(app)
    server, port = create_server(
        "trainer",
        SERVICE,
        lambda s: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, s),
        health,
        settings,
        security,
    )
    return server, port, app
