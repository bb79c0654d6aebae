from types import SimpleNamespace

import grpc
import pytest

from saim import errors
from saim.rpc.errors import status_of
from saim.rpc.server import Health, create_server
from saim.v1 import selector_pb2, selector_pb2_grpc


@pytest.mark.parametrize(
    "exc, code",
    [
        (errors.InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.DatasetError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.TooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_mapping(exc, code):
    assert status_of(exc) == code


class _Raising(selector_pb2_grpc.SelectorServiceServicer):
    def NextCase(self, request, context):
        if request.annotator_id == "boom":
            raise RuntimeError("secret detail")
        raise errors.NotFound(f"unknown annotator {request.annotator_id!r}")


def test_interceptor_maps_domain_errors_over_a_real_channel():
    health = Health("saim.v1.SelectorService")
    server, port = create_server(
        "selector",
        "saim.v1.SelectorService",
        lambda s: selector_pb2_grpc.add_SelectorServiceServicer_to_server(_Raising(), s),
        health,
        SimpleNamespace(grpc_host="127.0.0.1", grpc_port=0, max_message_mb=4),
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = selector_pb2_grpc.SelectorServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.NextCase(selector_pb2.NextCaseRequest(annotator_id="ann-7"), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert info.value.details() == "unknown annotator 'ann-7'"
            with pytest.raises(grpc.RpcError) as info:
                stub.NextCase(selector_pb2.NextCaseRequest(annotator_id="boom"), timeout=5)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "secret detail" not in info.value.details()
    finally:
        server.stop(0)


class _Failed(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_a_peer_service_refusal_passes_through_and_anything_else_is_unavailable():
    from saim.rpc.errors import error_of

    refused = error_of(_Failed(grpc.StatusCode.PERMISSION_DENIED, "case 'c' is leased to another annotator"), "x")
    assert isinstance(refused, errors.PermissionDenied) and "leased to another" in str(refused)
    assert isinstance(error_of(_Failed(grpc.StatusCode.FAILED_PRECONDITION, "expired"), "x"), errors.FailedPrecondition)
    assert isinstance(error_of(_Failed(grpc.StatusCode.NOT_FOUND, "no case"), "x"), errors.NotFound)
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAUTHENTICATED):
        err = error_of(_Failed(code, "detail"), "selector could not check the lease")
        assert isinstance(err, errors.Unavailable) and code.name in str(err)
