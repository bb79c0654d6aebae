"""Process entry shared by the three services: settings, logging, torch thread budget, infrastructure clients.

The runtime of a running service (server, consumer, reconciler, stop) is saim.rpc.service; this module only builds
what it is given (no module globals) and serves until SIGTERM.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import grpc
import torch

from saim.annotation import SessionStore
from saim.errors import SaimError
from saim.events import EventPublisher, check_topics
from saim.model.compute import Compute, TensorThread
from saim.registry import LiveModel, ModelRegistry
from saim.rpc.auth import Authenticator
from saim.rpc.channel import channel
from saim.rpc.server import Security, run_until_signal, write_ready_file
from saim.rpc.service import AppClass, create_service
from saim.rpc.telemetry import serve_metrics
from saim.rpc.tokens import TokenRegistry
from saim.settings import ServiceSettings, load_settings
from saim.storage.objects import ObjectStore
from saim.storage.pool import PoolStore

log = logging.getLogger("saim.service")


class Infra:
    """Clients built from settings; passed into each service's constructor (no module globals)."""

    def __init__(self, settings: ServiceSettings, wait_s: float = 60.0):
        self.settings = settings
        self.store = ObjectStore.connect(settings.s3())
        deadline = time.monotonic() + wait_s
        while True:  # the dataset import may still be running when a service starts
            try:
                self.pool = PoolStore(
                    self.store, settings.model.image_size, settings.max_slices, settings.series_cache_mb
                )
                break
            except SaimError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        self.registry = ModelRegistry(self.store)

    def every_slice_pool(self) -> PoolStore:
        """The pool with every slice of a series, whatever the scoring/training budget (annotation needs them)."""
        if self.pool.max_slices is None:
            return self.pool
        s = self.settings
        return PoolStore(self.store, s.model.image_size, None, s.series_cache_mb)

    def live_model(self, compute: Compute | None = None) -> LiveModel:
        return LiveModel(self.registry, self.settings.device, compute=compute, serving=self.settings.serving)

    def tensor_thread(self) -> TensorThread:
        """The one thread for all tensor work of a process that serves requests on many (saim.model.compute)."""
        return TensorThread(self.settings.torch_threads)

    def sessions(self) -> SessionStore:
        return SessionStore(self.settings.session_ttl_s)

    def publisher(self, name: str) -> EventPublisher:
        return EventPublisher(self.settings.kafka_bootstrap, name)

    def selector_channel(self) -> grpc.Channel | None:
        """The annotator's channel to the selector: the service token, and TLS when a CA is configured."""
        s = self.settings
        if s.selector_target is None:
            return None
        return channel(s.selector_target, s.secret("service_token"), s.tls_ca(), s.tls_server_name)

    def security(self) -> Security:
        s = self.settings
        authenticator = None
        if s.auth:
            registry = TokenRegistry(self.store, s.token_refresh_s)
            authenticator = Authenticator(registry, s.secret("admin_token"), s.secret("service_token"))
        return Security(authenticator, s.tls_server_credentials())


def main(app_cls: AppClass, build_deps: Callable[[ServiceSettings, Infra], object]) -> None:
    name = app_cls.NAME
    try:
        settings = load_settings()
    except SaimError as exc:
        print(f"saim {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=settings.log_level.upper(), format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(settings.torch_threads)
    log.info("settings: %s", settings.model_dump_json())  # secrets print as '**********'
    if not settings.auth:
        log.warning("SAIM_AUTH=false: every caller may call every method (development only)")
    try:
        check_topics(settings.kafka_bootstrap)  # partitions saim sends to: a clear error now, not a stall later
        infra = Infra(settings)
        server, port, app = create_service(app_cls, settings, build_deps(settings, infra), infra.security())
    except SaimError as exc:
        print(f"saim {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    metrics_port = serve_metrics(settings.metrics_port)
    server.start()
    app.start()
    log.info("%s listening on %s:%d (metrics %s)", name, settings.grpc_host, port, metrics_port)
    write_ready_file(settings.ready_file, port, metrics_port)
    run_until_signal(server, app.stop)
