"""Domain exceptions -> gRPC status codes, in exactly one place (a server interceptor)."""

from __future__ import annotations

import logging

import grpc

from saim import errors

log = logging.getLogger(__name__)

STATUS_OF: dict[type[errors.SaimError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def error_of(exc: grpc.RpcError, what: str) -> errors.SaimError:
    """The domain error behind a status another saim service answered with (the inverse of STATUS_OF), so that its
    refusal reaches our caller unchanged. Anything else -- no answer, an internal error, our own service credentials
    rejected -- is not the caller's fault: Unavailable."""
    passed_on = (
        errors.InvalidInput,
        errors.NotFound,
        errors.FailedPrecondition,
        errors.TooLarge,
        errors.PermissionDenied,
    )
    for cls in passed_on:
        if STATUS_OF[cls] == exc.code():
            return cls(exc.details())
    return errors.Unavailable(f"{what}: {exc.code().name}")


def status_of(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Catches domain errors in unary handlers and aborts with the mapped status and the error's message.
    Unexpected exceptions become INTERNAL with a generic message (details go to the log, not the client)."""

    def __init__(self, observe=None):
        self.observe = observe  # optional callback(method, code_name)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method = handler.unary_unary, handler_call_details.method

        def wrapper(request, context):
            code = grpc.StatusCode.OK
            try:
                return inner(request, context)
            except errors.SaimError as exc:
                code = status_of(exc)
                context.abort(code, str(exc))
            except Exception:
                if context.code() not in (None, grpc.StatusCode.OK):  # already aborted by the handler itself
                    code = context.code()
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method)
                context.abort(code, f"internal error in {method}")
            finally:
                if self.observe is not None:
                    self.observe(method, code.name)

        return grpc.unary_unary_rpc_method_handler(
            wrapper, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
