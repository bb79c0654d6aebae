"""Server construction shared by the services: create_server(...) -> (server, port), separate from serving."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from saim.rpc.auth import Authenticator, AuthInterceptor
from saim.rpc.channel import channel as open_channel
from saim.rpc.errors import ErrorMappingInterceptor
from saim.rpc.telemetry import REQUESTS

log = logging.getLogger(__name__)


LIVENESS = "liveness"  # always SERVING while the process runs (Kubernetes livenessProbe)


class Health:
    """The library health servicer. The overall status ("") and the service's own name are NOT_SERVING until the
    service says its model is loaded (readiness); "liveness" is SERVING as soon as the server runs."""

    def __init__(self, service_name: str):
        self.servicer = health.HealthServicer()
        self.service_name = service_name
        self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self.set(False)

    def set(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.servicer.set(self.service_name, status)
        self.servicer.set("", status)


@dataclass(frozen=True)
class Security:
    """What a server enforces: bearer-token authentication (None: open) and TLS ((key, cert chain) PEM; None:
    plaintext). Built by the service entry point from settings and passed in."""

    authenticator: Authenticator | None = None
    tls: tuple[bytes, bytes] | None = None


class ServerSettings(Protocol):
    grpc_host: str
    grpc_port: int
    max_message_mb: int


def create_server(
    service: str,
    full_name: str,
    add_servicer: Callable[[grpc.Server], None],
    health_: Health,
    settings: ServerSettings,
    security: Security | None = None,
    workers: int = 16,
) -> tuple[grpc.Server, int]:
    """A gRPC server with error mapping, request metrics, health checking and reflection, bound but not started;
    with `security`, also bearer-token access control and TLS."""
    security = security or Security()
    host, port = settings.grpc_host, settings.grpc_port
    limit = settings.max_message_mb * 1024 * 1024
    interceptors: list[grpc.ServerInterceptor] = [
        ErrorMappingInterceptor(lambda method, code: REQUESTS.labels(service, method.rsplit("/", 1)[-1], code).inc())
    ]
    if security.authenticator is not None:  # inside the error mapping: its refusals become gRPC statuses
        interceptors.append(AuthInterceptor(security.authenticator))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{service}-rpc"),
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )
    add_servicer(server)
    health_pb2_grpc.add_HealthServicer_to_server(health_.servicer, server)
    reflection.enable_server_reflection((full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if security.tls is not None:
        bound = server.add_secure_port(f"{host}:{port}", grpc.ssl_server_credentials([security.tls]))
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {host}:{port}")
    return server, bound


def write_ready_file(path: str | None, grpc_port: int, metrics_port: int | None) -> None:
    """Tell a supervising process (saim up, tests) where this process listens, once it listens."""
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(f"{grpc_port} {metrics_port or 0}\n")
        tmp.replace(path)


def run_until_signal(server: grpc.Server, on_stop: Callable[[], None] | None = None, grace: float = 5.0) -> None:
    """Block until SIGTERM/SIGINT, then stop accepting, finish in-flight requests, and run on_stop."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down")
    server.stop(grace).wait()
    if on_stop:
        on_stop()


def wait_serving(
    target: str, timeout_s: float, service: str = "", tls_ca: bytes | None = None, server_name: str | None = None
) -> bool:
    """Poll the standard health check until SERVING or the deadline."""
    deadline = time.monotonic() + timeout_s
    with open_channel(target, tls_ca=tls_ca, server_name=server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False
