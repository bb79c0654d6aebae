"""A real annotator servicer on loopback gRPC over an in-memory store: for the benchmarks and the scan-space
contract tests (no Kafka, no selector: leases are not checked)."""

from __future__ import annotations

import contextlib
import time
from concurrent import futures
from types import SimpleNamespace

import grpc

from saim.annotation.session import SessionStore
from saim.model.predictor import InteractivePredictor
from saim.registry.live import LiveModel, ServedModel
from saim.registry.versions import ModelRegistry
from saim.storage.pool import PoolStore
from saim.v1 import annotator_pb2_grpc, selector_pb2, selector_pb2_grpc


class _NoEvents:
    def publish(self, *a, **k):
        pass

    def close(self):
        pass


class FixedModel:
    """LiveModel's interface around one served model that is not in a registry (e.g. tests/unit/echo.py's)."""

    def __init__(self, served: ServedModel):
        self.current = served

    def version(self) -> str:
        return self.current.version

    def load_current(self) -> bool:
        return False


@contextlib.contextmanager
def serve_annotator(
    store, predictor: InteractivePredictor, size: int, publish: bool = True, max_message_mb=64, compute=None
):
    """Serve `predictor` (published to the store's registry, or served as it is with publish=False) through the
    real AnnotatorServicer on a loopback port, its tensor work on `compute` (saim.model.compute; the request threads
    when None). Yields (port, servicer deps)."""
    from saim.rpc.peers import LeaseChecker
    from saim.rpc.server import Health, create_server
    from services.annotator.server import AnnotatorDeps, AnnotatorServicer

    if publish:
        registry = ModelRegistry(store)
        registry.publish(predictor, iteration=0)
        live = LiveModel(registry, str(predictor.device), compute=compute)
        live.load_current()
    else:
        live = FixedModel(ServedModel("v0000", predictor, {}))
    deps = AnnotatorDeps(PoolStore(store, size, None), live, SessionStore(3600), _NoEvents(), LeaseChecker(None))
    if compute is not None:
        deps.compute = compute
    server, port = create_server(
        "annotator",
        "saim.v1.AnnotatorService",
        lambda srv: annotator_pb2_grpc.add_AnnotatorServiceServicer_to_server(AnnotatorServicer(deps), srv),
        Health("x"),
        SimpleNamespace(grpc_host="127.0.0.1", grpc_port=0, max_message_mb=max_message_mb),
    )
    server.start()
    deps.stop_server = lambda: server.stop(0)  # type: ignore[attr-defined]  # a replica that dies: its Event
    try:
        yield port, deps
    finally:
        server.stop(0)


@contextlib.contextmanager
def annotator_stub(
    store, predictor: InteractivePredictor, size: int, publish: bool = True, max_message_mb=64, compute=None
):
    """serve_annotator, and a client stub to it. Yields (stub, servicer deps)."""
    with serve_annotator(store, predictor, size, publish, max_message_mb, compute) as (port, deps):
        with grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", max_message_mb * 2**20)]
        ) as channel:
            yield annotator_pb2_grpc.AnnotatorServiceStub(channel), deps


class OneCaseSelector(selector_pb2_grpc.SelectorServiceServicer):
    """A selector stand-in that hands out one case to whoever asks (no loop runs): for the gateway's unit tests and
    the browser benchmark."""

    def __init__(self, case: str, who: str = "ann", role: str = "annotator"):
        self.case, self.who, self.role = case, who, role

    def WhoAmI(self, request, context):
        return selector_pb2.WhoAmIResponse(name=self.who, role=self.role)

    def NextCase(self, request, context):
        return selector_pb2.NextCaseResponse(
            case_id=self.case, iteration=1, lease_id="any", model_version="v0000", lease_expires_at=time.time() + 900
        )


@contextlib.contextmanager
def serve_selector(servicer):
    server = grpc.server(futures.ThreadPoolExecutor(4))
    selector_pb2_grpc.add_SelectorServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)
