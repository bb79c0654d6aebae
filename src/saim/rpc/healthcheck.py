"""`saim-healthcheck [HOST:PORT]`: exit 0 when the standard gRPC health check answers SERVING (container
HEALTHCHECK; default target 127.0.0.1:$SAIM_GRPC_PORT). When the server uses TLS, the certificate is checked
against SAIM_TLS_CA_FILE (else the server's own SAIM_TLS_CERT_FILE, enough for a self-signed one), with the name
in SAIM_TLS_SERVER_NAME when the certificate is not issued for the target's host. Health needs no token."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saim.auth import channel as open_channel


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else f"127.0.0.1:{os.environ.get('SAIM_GRPC_PORT', '50051')}"
    ca_file = os.environ.get("SAIM_TLS_CA_FILE") or os.environ.get("SAIM_TLS_CERT_FILE")
    try:
        ca = Path(ca_file).read_bytes() if ca_file else None
    except OSError as exc:
        print(f"cannot read {ca_file}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        with open_channel(target, tls_ca=ca, server_name=os.environ.get("SAIM_TLS_SERVER_NAME")) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as exc:
        print(f"{target}: {exc.code().name}", file=sys.stderr)
        return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
