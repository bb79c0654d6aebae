"""Process entry shared by the three services: settings, logging, torch thread budget, infrastructure clients."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import torch

from saim.auth import Authenticator, TokenRegistry, channel
from saim.errors import SaimError
from saim.live_model import LiveModel
from saim.pool import PoolStore
from saim.rpc.metrics import serve_metrics
from saim.rpc.server import Security, run_until_signal, write_ready_file
from saim.session import SessionStore
from saim.settings import ServiceSettings, load_settings
from saim.storage import ModelRegistry, ObjectStore

log = logging.getLogger("saim.service")


class Infra:
    """Clients built from settings; passed into each service's constructor (no module globals)."""

    def __init__(self, settings: ServiceSettings, wait_s: float = 60.0):
        self.settings = settings
        self.store = ObjectStore.connect(settings.s3())
        deadline = time.monotonic() + wait_s
        while True:  # the dataset import may still be running when a service starts
            try:
                self.pool = PoolStore(self.store, settings.image_size, settings.max_slices)
                break
            except SaimError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        self.registry = ModelRegistry(self.store)

    def live_model(self) -> LiveModel:
        return LiveModel(self.registry, self.settings.device)

    def sessions(self) -> SessionStore:
        return SessionStore(self.settings.session_ttl_s)

    def publisher(self, name: str):
        from saim.events import EventPublisher

        return EventPublisher(self.settings.kafka_bootstrap, name)

    def selector_target(self) -> str | None:
        return os.environ.get("SAIM_SELECTOR_TARGET") or None

    def selector_channel(self):
        """The annotator's channel to the selector: the service token, and TLS when a CA is configured."""
        target = self.selector_target()
        if target is None:
            return None
        s = self.settings
        return channel(target, s.secret("service_token"), s.tls_ca(), s.tls_server_name)

    def security(self) -> Security:
        s = self.settings
        authenticator = None
        if s.auth:
            registry = TokenRegistry(self.store, s.token_refresh_s)
            authenticator = Authenticator(registry, s.secret("admin_token"), s.secret("service_token"))
        return Security(authenticator, s.tls_server_credentials())


def main(name: str, build: Callable) -> None:
    logging.basicConfig(
        level=os.environ.get("SAIM_LOG_LEVEL", "INFO"), format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except SaimError as exc:
        print(f"saim {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(settings.torch_threads)
    log.info("settings: %s", settings.model_dump_json())  # secrets print as '**********'
    if not settings.auth:
        log.warning("SAIM_AUTH=false: every caller may call every method (development only)")
    try:
        infra = Infra(settings)
        server, port, app = build(settings, infra)
    except SaimError as exc:
        print(f"saim {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    metrics_port = serve_metrics(settings.metrics_port)
    server.start()
    app.start()
    log.info("%s listening on %s:%d (metrics %s)", name, settings.grpc_host, port, metrics_port)
    write_ready_file(settings.ready_file, port, metrics_port)
    run_until_signal(server, app.stop)
