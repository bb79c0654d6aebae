"""python -m services.gateway — reads SAIM_* settings (saim.settings.GatewaySettings), serves HTTP until SIGTERM."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from saim.errors import SaimError
from saim.rpc.channel import channel
from saim.rpc.replicas import Replicas
from saim.rpc.server import write_ready_file
from saim.rpc.telemetry import serve_metrics
from saim.settings import load_gateway_settings

from .server import Backends, create_app


def main() -> None:
    try:
        s = load_gateway_settings()
        ca = s.tls_ca()
    except SaimError as exc:
        print(f"saim gateway: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s gateway %(levelname)s %(name)s: %(message)s")
    selector, trainer = (channel(t, None, ca, s.tls_server_name) for t in (s.selector_target, s.trainer_target))
    # every annotator replica the target resolves to (dns:///saim-annotator-pods:50051: each pod), a session's calls
    # to its own (saim.rpc.replicas); a replica that comes back is reconnected within seconds, not minutes
    backoff = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5000)]
    annotator = Replicas(s.annotator_target, lambda address: channel(address, None, ca, s.tls_server_name, backoff))
    backends = Backends.over(selector, annotator, trainer, timeout_s=s.rpc_timeout_s)
    app = create_app(backends, s.web_root, s.max_body_kb)
    sock = socket.socket(socket.AF_INET6 if ":" in s.http_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((s.http_host, s.http_port))
    metrics_port = serve_metrics(s.metrics_port)
    port = sock.getsockname()[1]
    logging.getLogger("saim.gateway").info("gateway on http://%s:%d (metrics %s)", s.http_host, port, metrics_port)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=s.log_level.lower(), access_log=False, timeout_graceful_shutdown=5)
    )
    write_ready_file(s.ready_file, port, metrics_port)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
