"""Client channels to saim services: TLS when a CA is given, the bearer token on every call."""

from __future__ import annotations

import grpc


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, token: str):
        self._pair = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        return details._replace(metadata=list(details.metadata or []) + [self._pair])

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)


def channel(
    target: str, token: str | None = None, tls_ca: bytes | None = None, server_name: str | None = None, options=()
) -> grpc.Channel:
    """A client channel: TLS when a CA certificate is given (else plaintext), the bearer token on every call."""
    opts = list(options)
    if tls_ca is not None:
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_ca), options=opts)
    else:
        ch = grpc.insecure_channel(target, options=opts)
    return grpc.intercept_channel(ch, _Metadata(token)) if token else ch
