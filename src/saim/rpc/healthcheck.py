"""`saim-healthcheck [HOST:PORT]`: exit 0 when the standard gRPC health check answers SERVING (container
HEALTHCHECK; default target 127.0.0.1:$SAIM_GRPC_PORT). When the server uses TLS, the certificate is checked
against SAIM_TLS_CA_FILE (else the server's own SAIM_TLS_CERT_FILE, enough for a self-signed one), with the name
in SAIM_TLS_SERVER_NAME when the certificate is not issued for the target's host. Health needs no token."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saim.errors import SaimError
from saim.rpc.channel import channel as open_channel
from saim.settings import load_client_settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = load_client_settings()
        ca = settings.tls_ca(fall_back_to_cert=True)
    except SaimError as exc:
        print(exc, file=sys.stderr)
        return 1
    target = argv[0] if argv else f"127.0.0.1:{settings.grpc_port}"
    try:
        with open_channel(target, tls_ca=ca, server_name=settings.tls_server_name) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as exc:
        print(f"{target}: {exc.code().name}", file=sys.stderr)
        return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
