"""Domain exceptions -> gRPC status codes, in exactly one place (a server interceptor)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

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
    errors.Conflict: grpc.StatusCode.ABORTED,
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


def around_calls(handler, around: Callable[[grpc.ServicerContext], AbstractContextManager]):
    """`handler` with each call run inside `around(context)`: a unary call, or a streamed reply consumed inside it.
    None for a handler of streamed requests (saim serves none): the server then answers UNIMPLEMENTED."""
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        def call(request, context):
            with around(context):
                return unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        streamed = handler.unary_stream

        def stream(request, context):
            with around(context):
                yield from streamed(request, context)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
    return None


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Catches domain errors in unary handlers (and streamed replies) and aborts with the mapped status and the error's
    message. Unexpected exceptions become INTERNAL with a generic message (details go to the log, not the client)."""

    def __init__(self, observe=None):
        self.observe = observe  # optional callback(method, code_name)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        return around_calls(handler, lambda context: self._mapped(method, context)) or handler

    @contextlib.contextmanager
    def _mapped(self, method: str, context):
        code = grpc.StatusCode.OK
        try:
            yield
        except Exception as exc:
            code = self._code(exc, context)
            self._abort(exc, code, context, method)
        finally:
            if self.observe is not None:
                self.observe(method, code.name)

    @staticmethod
    def _code(exc: Exception, context) -> grpc.StatusCode:
        if isinstance(exc, errors.SaimError):
            return status_of(exc)
        if context.code() not in (None, grpc.StatusCode.OK):  # already aborted by the handler itself
            return context.code()
        return grpc.StatusCode.INTERNAL

    @staticmethod
    def _abort(exc: Exception, code: grpc.StatusCode, context, method: str) -> None:
        """End the call with `code` (context.abort raises); an unexpected error's details go to the log only."""
        if isinstance(exc, errors.SaimError):
            context.abort(code, str(exc))
        if code != grpc.StatusCode.INTERNAL or context.code() not in (None, grpc.StatusCode.OK):
            raise exc
        log.exception("unhandled error in %s", method)
        context.abort(code, f"internal error in {method}")
